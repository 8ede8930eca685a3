"""Readers for speech-translation corpora. Each returns ``list[Utterance]``; the CLI writes the manifest.

Audio is never cut into files: segments become (audio, offset, duration) spans of the original recordings.

* Kaldi-style data directories (How2 ships this way): ``wav.scp`` (``<recording-id> <path>``, plain paths
  only), optional ``segments`` (``<utt-id> <recording-id> <start> <end>``), and one text file per language
  (``<utt-id> <text>``): ``text.en`` / ``text.pt``, How2's ``text.id.en`` / ``text.id.pt``, ESPnet's
  ``text.tc.en``, or Kaldi's plain ``text`` for the source side. How2's release has no wav.scp (its audio
  comes separately, one file per video): pass ``audio_dir`` and recordings are found as
  ``audio_dir/<recording-id><audio_ext>``.
* MuST-C: a split directory ``en-<tgt>/data/<split>`` holding ``txt/<split>.yaml`` (one
  ``{duration, offset, speaker_id, wav}`` entry per segment) with line-parallel ``txt/<split>.en`` and
  ``txt/<split>.<tgt>``, and ``wav/<talk>.wav``. Ids follow fairseq: ``<talk>_<index within the talk>``.
* CoVoST 2: a TSV with columns ``path``, ``sentence``, ``translation`` (and ``split`` in the full release
  files) and the Common Voice ``clips`` directory of mp3 files.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..audio import duration_of
from .manifest import Utterance

__all__ = ["kaldi_to_manifest", "mustc_to_manifest", "covost_to_manifest", "read_kaldi_table"]

log = logging.getLogger(__name__)
_SHOW = 5  # ids shown in an error message before "... and N more"


# ---------------------------------------------------------------------------------------------------
# Kaldi / How2


def read_kaldi_table(path: Path, *, min_fields: int = 2, allow_empty_value: bool = False) -> dict[str, str]:
    """``<key> <value...>`` per line -> {key: value}; errors name the file and line."""
    table: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            if len(parts) < min_fields and not (allow_empty_value and len(parts) == 1):
                raise ValueError(f"{path}:{lineno}: expected '<id> <value>', got {line!r}")
            key = parts[0]
            if key in table:
                raise ValueError(f"{path}:{lineno}: id {key!r} appears twice")
            table[key] = parts[1].strip() if len(parts) > 1 else ""
    return table


def kaldi_to_manifest(
    data_dir: str | os.PathLike,
    *,
    source_text: str | None = "text.en",
    target_text: str | None = "text.pt",
    audio_dir: str | os.PathLike | None = None,
    audio_ext: str = ".wav",
    translation_source: str = "human",
    check_audio: bool = True,
) -> list[Utterance]:
    """Utterances of a Kaldi-style data directory (How2 layout included), in ``segments`` order.

    ``source_text`` / ``target_text``: file names in ``data_dir`` (or paths) of ``<utt-id> <text>`` files;
    ``None`` leaves the field out. A ``text.<lang>`` name that does not exist falls back to How2's
    ``text.id.<lang>`` and ESPnet's ``text.tc.<lang>`` (and to Kaldi's ``text`` for the source side).
    Without ``segments`` every recording is one utterance (its duration read from the audio header).
    """
    d = Path(data_dir).expanduser()
    if not d.is_dir():
        raise FileNotFoundError(f"Kaldi data directory not found: {d}")
    recordings = _kaldi_recordings(d, audio_dir, audio_ext)
    if check_audio:
        _require_files(recordings.values(), f"recordings of {d}")

    durations: dict[str, float] = {}

    def rec_duration(rec: str) -> float:
        if rec not in durations:
            durations[rec] = duration_of(recordings[rec])
        return durations[rec]

    spans: list[tuple[str, str, float, float | None]] = []  # (utt, rec, offset, duration or None = to the end)
    seg_path = d / "segments"
    if seg_path.is_file():
        with seg_path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 4:
                    raise ValueError(
                        f"{seg_path}:{lineno}: expected '<utt-id> <recording-id> <start> <end>', got {line.strip()!r}"
                    )
                utt, rec, start_s, end_s = parts
                try:
                    start, end = float(start_s), float(end_s)
                except ValueError:
                    raise ValueError(f"{seg_path}:{lineno}: start and end must be seconds, got {start_s!r} {end_s!r}") from None
                if rec not in recordings:
                    raise ValueError(f"{seg_path}:{lineno}: recording {rec!r} is not in {_audio_origin(d, audio_dir)}")
                if end == -1:  # Kaldi: to the end of the recording
                    spans.append((utt, rec, start, None))
                    continue
                if start < 0 or end <= start:
                    raise ValueError(f"{seg_path}:{lineno}: expected 0 <= start < end, got start {start} end {end}")
                spans.append((utt, rec, start, end - start))
    else:
        if audio_dir is not None and not (d / "wav.scp").is_file():
            raise FileNotFoundError(f"{d}: neither segments nor wav.scp; with audio_dir a segments file is needed")
        spans = [(rec, rec, 0.0, None) for rec in recordings]
    if not spans:
        raise ValueError(f"{d}: no utterances (segments / wav.scp are empty)")

    src = _read_texts(d, source_text, is_source=True) if source_text else None
    tgt = _read_texts(d, target_text, is_source=False) if target_text else None
    ids = [s[0] for s in spans]
    for name, table in (("source", src), ("target", tgt)):
        if table is None:
            continue
        path, texts = table
        missing = [i for i in ids if i not in texts]
        if missing:
            raise ValueError(f"{path}: no {name} text for {len(missing)} of {len(ids)} utterances: {_few(missing)}")
        extra = len(set(texts) - set(ids))
        if extra:
            log.warning("%s: %d lines name utterances not in the data directory; ignored", path, extra)

    utts = []
    for utt, rec, offset, dur in spans:
        if dur is None:
            dur = rec_duration(rec) - offset
            if dur <= 0:
                raise ValueError(f"{seg_path}: segment {utt!r} starts at {offset} s, past the end of {recordings[rec]}")
        utts.append(
            Utterance(
                id=utt,
                audio=str(recordings[rec]),
                offset=offset,
                duration=round(dur, 6),
                transcript=src[1][utt] if src else None,
                translation=tgt[1][utt] if tgt else None,
                translation_source=translation_source if tgt else None,
            )
        )
    return utts


def _kaldi_recordings(d: Path, audio_dir: str | os.PathLike | None, audio_ext: str) -> dict[str, Path]:
    scp = d / "wav.scp"
    if scp.is_file():
        table = read_kaldi_table(scp)
        recs: dict[str, Path] = {}
        for rec, value in table.items():
            if value.endswith("|") or " | " in value or value.startswith("|"):
                raise ValueError(
                    f"{scp}: recording {rec!r} is a piped command ({value!r}); sltalign reads audio files only: "
                    f"run the command once to write the audio (e.g. sox/ffmpeg to .wav/.flac) and list the files"
                )
            if re.search(r"\.ark:\d+$", value):
                raise ValueError(f"{scp}: recording {rec!r} points into a Kaldi archive ({value!r}); expected an audio file path")
            if len(value.split()) > 1 and not Path(value).exists():
                raise ValueError(f"{scp}: recording {rec!r}: expected one file path, got {value!r}")
            recs[rec] = _resolve_audio_path(value, d)
        return recs
    if audio_dir is None:
        raise FileNotFoundError(
            f"{d}: no wav.scp; for a How2-style directory pass audio_dir (recordings are audio_dir/<recording-id>{audio_ext})"
        )
    adir = Path(audio_dir).expanduser()
    if not adir.is_dir():
        raise FileNotFoundError(f"audio directory not found: {adir}")
    seg = d / "segments"
    rec_ids = []
    if seg.is_file():
        with seg.open(encoding="utf-8") as f:
            rec_ids = list(dict.fromkeys(line.split()[1] for line in f if len(line.split()) >= 2))
    ext = audio_ext if audio_ext.startswith(".") else "." + audio_ext
    return {rec: adir / f"{rec}{ext}" for rec in rec_ids}


def _resolve_audio_path(value: str, data_dir: Path) -> Path:
    # Kaldi resolves relative paths against the recipe directory (the working directory); data dirs moved
    # elsewhere often hold paths relative to themselves, so try both
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    for base in (Path.cwd(), data_dir):
        if (base / p).exists():
            return (base / p).resolve()
    return (data_dir / p).resolve()


def _audio_origin(d: Path, audio_dir: str | os.PathLike | None) -> str:
    return str(d / "wav.scp") if (d / "wav.scp").is_file() else f"audio_dir {audio_dir}"


def _read_texts(d: Path, name: str, *, is_source: bool) -> tuple[Path, dict[str, str]]:
    p = Path(name).expanduser()
    candidates = [p] if p.is_absolute() else [d / p]
    m = re.fullmatch(r"text\.([A-Za-z_-]+)", p.name)
    if m and not p.is_absolute():
        lang = m.group(1)
        candidates += [d / f"text.id.{lang}", d / f"text.tc.{lang}"]
        if is_source:
            candidates.append(d / "text")
    for c in candidates:
        if c.is_file():
            return c, read_kaldi_table(c, allow_empty_value=True)
    present = sorted(x.name for x in d.glob("text*"))
    raise FileNotFoundError(
        f"{d}: no {'source' if is_source else 'target'} text file {name!r} "
        f"(tried {', '.join(c.name for c in candidates)}); text files present: {present or 'none'}"
    )


# ---------------------------------------------------------------------------------------------------
# MuST-C


def mustc_to_manifest(
    split_dir: str | os.PathLike,
    *,
    target_lang: str | None = "pt",
    source_lang: str = "en",
    translation_source: str = "human",
    check_audio: bool = True,
) -> list[Utterance]:
    """Utterances of one MuST-C split directory (``.../en-<tgt>/data/<split>``), in YAML order.

    ``target_lang=None`` reads the transcripts only.
    """
    import yaml

    d = Path(split_dir).expanduser()
    txt, wav_dir = d / "txt", d / "wav"
    if not txt.is_dir():
        raise FileNotFoundError(
            f"MuST-C split directory {d}: expected a txt/ subdirectory (with <split>.yaml, .{source_lang}, .<tgt>)"
        )
    yamls = sorted(txt.glob("*.yaml"))
    if len(yamls) != 1:
        raise ValueError(f"{txt}: expected exactly one <split>.yaml, found {[y.name for y in yamls] or 'none'}")
    yml = yamls[0]
    split = yml.stem
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader: train.yaml has ~250k entries
    with yml.open(encoding="utf-8") as f:
        segments = yaml.load(f, Loader=loader)
    if not isinstance(segments, list) or not segments:
        raise ValueError(f"{yml}: expected a non-empty YAML list of segments, got {type(segments).__name__}")

    def lines_of(lang: str) -> tuple[Path, list[str]]:
        p = txt / f"{split}.{lang}"
        if not p.is_file():
            raise FileNotFoundError(f"MuST-C: expected {p} (line-parallel to {yml.name})")
        lines = p.read_text(encoding="utf-8").splitlines()
        if len(lines) != len(segments):
            raise ValueError(f"{p}: {len(lines)} lines but {yml} lists {len(segments)} segments; expected the same count")
        return p, lines

    _, src = lines_of(source_lang)
    tgt = lines_of(target_lang)[1] if target_lang else None

    utts: list[Utterance] = []
    per_talk: dict[str, int] = {}
    for i, seg in enumerate(segments):
        where = f"{yml}: segment {i} (line {i + 1} of the text files)"
        if not isinstance(seg, dict) or not {"offset", "duration", "wav"} <= set(seg):
            raise ValueError(f"{where}: expected a mapping with offset, duration and wav, got {seg!r}")
        try:
            offset, dur = float(seg["offset"]), float(seg["duration"])
        except (TypeError, ValueError):
            raise ValueError(
                f"{where}: offset and duration must be numbers, got {seg['offset']!r}, {seg['duration']!r}"
            ) from None
        wav = wav_dir / str(seg["wav"])
        talk = Path(str(seg["wav"])).stem
        k = per_talk.get(talk, 0)
        per_talk[talk] = k + 1
        try:
            utts.append(
                Utterance(
                    id=f"{talk}_{k}",
                    audio=str(wav),
                    offset=offset,
                    duration=dur,
                    transcript=src[i].strip(),
                    translation=tgt[i].strip() if tgt else None,
                    translation_source=translation_source if tgt else None,
                )
            )
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    if check_audio:
        _require_files({Path(u.audio) for u in utts}, f"talks of {yml}")
    return utts


# ---------------------------------------------------------------------------------------------------
# CoVoST 2


def covost_to_manifest(
    tsv: str | os.PathLike,
    *,
    clips_dir: str | os.PathLike,
    split: str | None = None,
    translation_source: str = "human",
    check_audio: bool = True,
    workers: int = 8,
) -> list[Utterance]:
    """Utterances of a CoVoST 2 TSV (``path``, ``sentence``, ``translation`` [, ``split``]) over a clips dir.

    ``split`` keeps only the rows whose ``split`` column matches (the full release TSVs). Durations are read
    from the mp3 headers, ``workers`` files at a time. Ids are the clip names without extension.
    """
    t = Path(tsv).expanduser()
    clips = Path(clips_dir).expanduser()
    if not t.is_file():
        raise FileNotFoundError(f"CoVoST TSV not found: {t}")
    if not clips.is_dir():
        raise FileNotFoundError(f"Common Voice clips directory not found: {clips}")
    rows = []
    with t.open(encoding="utf-8", newline="") as f:
        # CoVoST TSVs are unquoted: a '"' inside a sentence is literal text
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        cols = set(reader.fieldnames or [])
        need = {"path", "sentence", "translation"}
        if not need <= cols:
            raise ValueError(f"{t}: expected TSV columns {sorted(need)} (header line), found {sorted(cols)}")
        if split is not None and "split" not in cols:
            raise ValueError(f"{t}: split={split!r} asked but the TSV has no 'split' column")
        for lineno, row in enumerate(reader, start=2):
            if split is not None and row.get("split") != split:
                continue
            if not row.get("path"):
                raise ValueError(f"{t}:{lineno}: empty 'path'")
            rows.append((lineno, row))
    if not rows:
        raise ValueError(f"{t}: no rows" + (f" with split {split!r}" if split else ""))
    audio = [clips / row["path"] for _, row in rows]
    if check_audio:
        _require_files(audio, f"clips of {t}")
    durations = _parallel(duration_of, audio, workers)
    utts = []
    seen: dict[str, int] = {}
    for (lineno, row), a, dur in zip(rows, audio, durations):
        uid = Path(row["path"]).stem
        if uid in seen:
            raise ValueError(f"{t}:{lineno}: clip {row['path']!r} already listed on line {seen[uid]}")
        seen[uid] = lineno
        translation = (row.get("translation") or "").strip() or None
        try:
            utts.append(
                Utterance(
                    id=uid,
                    audio=str(a),
                    duration=round(dur, 6),
                    transcript=(row.get("sentence") or "").strip() or None,
                    translation=translation,
                    translation_source=translation_source if translation else None,
                )
            )
        except ValueError as err:
            raise ValueError(f"{t}:{lineno}: {err}") from None
    return utts


# ---------------------------------------------------------------------------------------------------


def _few(items: list[str]) -> str:
    shown = ", ".join(map(str, items[:_SHOW]))
    return shown + (f" ... and {len(items) - _SHOW} more" if len(items) > _SHOW else "")


def _require_files(paths: Iterable[Path], what: str) -> None:
    missing = [str(p) for p in dict.fromkeys(paths) if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} audio file(s) missing among the {what}: {_few(missing)}")


def _parallel(fn: Callable[[Path], float], items: list[Path], workers: int) -> list[float]:
    if workers <= 1 or len(items) < 32:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:  # header reads are I/O bound
        return list(pool.map(fn, items))

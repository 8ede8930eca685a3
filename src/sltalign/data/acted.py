"""Acted English speech from a packaged game, transcribed by Whisper: people's voices to train on.

A connector learns to hear from the clips it trains on, and synthetic voices alone leave it far behind the
cascade on people (docs/RESULTS.md). No package ships transcribed English speech of many speakers, but Debian
ships a freeware adventure game whose dialogue is fully voiced: *Flight of the Amazon Queen* (package
``flight-of-the-amazon-queen``, 1995; its licence allows free redistribution and modification with the notices
kept), 6,745 lines, 278 minutes, by its cast of voice actors (MP3, 11,025 Hz), packed in one table file,
``queen.1c``. Acted dialogue has what synthesis lacks: many voices, emotion, hesitations, a lo-fi channel.

Transcripts: no text that ships can be matched to the clips, so the cascade's recogniser (Whisper base,
packaged) transcribes them, and Whisper's own confidence filters its errors out (mean token log-probability,
no-speech probability, compression ratio; ``LabelFilter``). Training on these pseudo-labels distils Whisper's
hearing of people into the connector. They are training data only: never scoring references (the real-speech
test and dev sets keep human references and share no recordings or speakers with the game).

``queen.1c`` (big-endian): b"QTBL", a 6-byte version, 2 bytes, a compression byte (1: MP3), a uint16 entry
count, then per entry 21 bytes: a NUL-padded name (12), a bundle number (1), the data's offset and size (4 + 4).
Entries named ``*.SB`` are the speech clips; their bytes are plain MP3 (older, uncompressed releases are
refused by name).

    sltalign data acted --out DIR --clips 2000      # OUT/manifest.jsonl: 16 kHz clips + Whisper transcripts

The build is resumable: every labelled clip is appended to OUT/labels.jsonl (kept or not, with its
confidence) as it is made, and a rerun continues where it stopped; OUT/manifest.jsonl (the kept clips) is
rewritten atomically as it grows.

Whisper needs about a second of CPU per clip on 2 cores, so the labels of the first clips of the seed-0
choice ship with the package (acted_labels.tsv: Whisper base's output with its confidence, made by this
module); with that recogniser and seed they are read instead of recognised again, and only clips beyond them
cost recognition.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, resample, write_audio
from .manifest import Utterance, write_manifest

__all__ = [
    "PACKAGE",
    "QUEEN_TABLE",
    "SHIPPED_ASR",
    "ActedSpeechUnavailable",
    "Label",
    "LabelFilter",
    "TableEntry",
    "build_acted_manifest",
    "decode_clip",
    "read_queen_table",
    "read_shipped_labels",
    "speech_entries",
    "whisper_labeller",
    "write_shipped_labels",
]

#: the Debian package that ships the game's data
PACKAGE = "flight-of-the-amazon-queen"
#: where it installs the table file
QUEEN_TABLE = Path("/usr/share/scummvm/flight-of-the-amazon-queen/queen.1c")
_MAGIC = b"QTBL"
_HEADER = 15  # magic 4 + version 6 + 2 + compression 1 + count 2
_ENTRY = 21  # name 12 + bundle 1 + offset 4 + size 4
_MP3 = 1
#: the log-probability recorded when Whisper returns no segment at all (JSON has no infinity)
NO_LOGPROB = -99.0
#: the recogniser and seed whose labels ship with the package (acted_labels.tsv)
SHIPPED_ASR, SHIPPED_SEED = "packaged:whisper-base", 0
_SHIPPED_COLUMNS = ("id", "avg_logprob", "no_speech", "compression", "transcript")


class ActedSpeechUnavailable(FileNotFoundError):
    """The game's table file is not installed (the message names the Debian package)."""


@dataclass(frozen=True)
class TableEntry:
    name: str
    offset: int
    size: int

    @property
    def clip_id(self) -> str:
        """The manifest id: ``fotaq-`` and the entry's name without its extension."""
        return "fotaq-" + self.name.rsplit(".", 1)[0]


@dataclass(frozen=True, kw_only=True)
class LabelFilter:
    """Which clips and which of Whisper's transcripts are kept (Whisper's own thresholds for a failed
    decode are -1.0 mean log-probability, 0.6 no-speech probability and 2.4 compression ratio; the first two
    are stricter here, since a wrong label teaches the connector to mishear)."""

    min_seconds: float = 1.2
    max_seconds: float = 15.0
    min_logprob: float = -0.7
    max_no_speech: float = 0.5
    max_compression: float = 2.4

    def keeps(self, label: Label) -> bool:
        return (
            bool(label.transcript)
            and any(c.isalpha() for c in label.transcript)
            and label.avg_logprob >= self.min_logprob
            and label.no_speech <= self.max_no_speech
            and label.compression <= self.max_compression
        )


@dataclass
class Label:
    """One clip's transcript and Whisper's confidence in it (a line of OUT/labels.jsonl)."""

    id: str
    duration: float
    transcript: str
    avg_logprob: float  # the worst segment's mean token log-probability
    no_speech: float  # the highest segment's no-speech probability
    compression: float  # the highest segment's gzip compression ratio (repetition loops score high)
    kept: bool = False


#: a labeller: 16 kHz mono float32 -> (transcript, avg_logprob, no_speech, compression)
Labeller = Callable[[np.ndarray], tuple[str, float, float, float]]


def read_queen_table(path: str | os.PathLike = QUEEN_TABLE) -> list[TableEntry]:
    """The entries of a ``queen.1c`` table; errors name the file and what was expected."""
    p = Path(path)
    if not p.exists():
        raise ActedSpeechUnavailable(f"{p} does not exist: install the Debian package {PACKAGE} (apt-get install {PACKAGE})")
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(_HEADER)
        if len(head) < _HEADER or head[:4] != _MAGIC:
            raise ValueError(f"{p}: not a Flight of the Amazon Queen table (expected it to start with {_MAGIC!r})")
        compression = head[12]
        if compression != _MP3:
            raise ValueError(f"{p}: compression byte {compression}: expected {_MP3} (MP3 speech, the freeware release)")
        (count,) = struct.unpack(">H", head[13:15])
        raw = f.read(count * _ENTRY)
    if len(raw) < count * _ENTRY:
        raise ValueError(f"{p}: the header announces {count} entries but the file ends inside entry {len(raw) // _ENTRY}")
    entries = []
    for i in range(count):
        rec = raw[i * _ENTRY : (i + 1) * _ENTRY]
        name = rec[:12].split(b"\0", 1)[0].decode("ascii", "replace")
        offset, length = struct.unpack(">II", rec[13:21])
        if offset + length > size:
            raise ValueError(f"{p}: entry {i} ({name}) spans bytes {offset}-{offset + length}, past the file's end ({size})")
        entries.append(TableEntry(name, offset, length))
    return entries


def speech_entries(entries: list[TableEntry]) -> list[TableEntry]:
    """The speech clips (``*.SB``), in the table's order."""
    return [e for e in entries if e.name.upper().endswith(".SB")]


def decode_clip(path: str | os.PathLike, entry: TableEntry) -> np.ndarray:
    """One clip's audio at 16 kHz, mono float32."""
    import soundfile as sf

    with open(path, "rb") as f:
        f.seek(entry.offset)
        data = f.read(entry.size)
    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile's error types vary by version
        raise ValueError(f"{path}: entry {entry.name} is not decodable MP3 ({err})") from err
    return resample(wav.mean(axis=1), sr, SAMPLE_RATE).astype(np.float32)


def whisper_labeller(asr: str = SHIPPED_ASR, *, threads: int = 2) -> Labeller:
    """The cascade's recogniser (faster-whisper, CTranslate2 int8, greedy, no timestamps) as a labeller."""
    from faster_whisper import WhisperModel

    from ..cascade import whisper_ct2_dir, whisper_segments

    model = WhisperModel(whisper_ct2_dir(asr), device="cpu", compute_type="int8", cpu_threads=threads)

    def label(wav: np.ndarray) -> tuple[str, float, float, float]:
        segments = whisper_segments(model, wav)
        if not segments:
            return "", NO_LOGPROB, 1.0, 0.0
        text = " ".join(s.text.strip() for s in segments).strip()
        return (
            text,
            min(s.avg_logprob for s in segments),
            max(s.no_speech_prob for s in segments),
            max(s.compression_ratio for s in segments),
        )

    return label


def read_shipped_labels() -> dict[str, tuple[str, float, float, float]]:
    """The labels that ship with the package: clip id -> (transcript, avg_logprob, no_speech, compression), as
    ``whisper_labeller(SHIPPED_ASR)`` gives them. Lines starting with "#" say where they come from."""
    text = resources.files("sltalign.data").joinpath("acted_labels.tsv").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    out = {}
    for i, row in enumerate(rows, start=2):
        if None in row or any(row.get(k) is None for k in _SHIPPED_COLUMNS):
            raise ValueError(f"acted_labels.tsv: data line {i}: expected the columns {list(_SHIPPED_COLUMNS)}, got {row}")
        out[row["id"]] = (row["transcript"], float(row["avg_logprob"]), float(row["no_speech"]), float(row["compression"]))
    return out


def write_shipped_labels(path: str | os.PathLike, labels: list[Label], header: list[str]) -> Path:
    """Write labels in acted_labels.tsv's format (``header``: the "#" lines that say where they come from)."""
    p = Path(path)
    rows = ["\t".join(_SHIPPED_COLUMNS)]
    for lab in labels:
        if "\t" in lab.transcript or "\n" in lab.transcript:
            raise ValueError(f"{lab.id}: a transcript with a tab or newline cannot be written as TSV")
        rows.append(f"{lab.id}\t{lab.avg_logprob:.4f}\t{lab.no_speech:.4f}\t{lab.compression:.4f}\t{lab.transcript}")
    p.write_text("".join(f"# {h}\n" for h in header) + "\n".join(rows) + "\n", encoding="utf-8")
    return p


def _read_labels(path: Path) -> dict[str, Label]:
    """Labels written so far. A torn last line (a run killed mid-write) is cut off the file, so the next
    append starts on a line of its own, and that clip is labelled again."""
    done: dict[str, Label] = {}
    if not path.exists():
        return done
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]  # up to the last complete line
    if len(whole) < len(data):
        with open(path, "r+b") as f:
            f.truncate(len(whole))
    for n, line in enumerate(whole.decode("utf-8").splitlines(), 1):
        try:
            rec = json.loads(line)
            done[rec["id"]] = Label(**rec)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{n}: not a label line ({err}); move the file away to label again") from err
    return done


def _write_kept(out: Path, labels: dict[str, Label]) -> Path:
    kept = [lab for lab in labels.values() if lab.kept]
    return write_manifest(
        out / "manifest.jsonl",
        [
            Utterance(id=lab.id, audio=str(out / "audio" / f"{lab.id}.flac"), duration=lab.duration, transcript=lab.transcript)
            for lab in kept
        ],
    )


def build_acted_manifest(
    out: str | os.PathLike,
    *,
    clips: int = 2000,
    seed: int = 0,
    table: str | os.PathLike | None = None,
    label_filter: LabelFilter | None = None,
    labeller: Labeller | None = None,
    asr: str = SHIPPED_ASR,
    progress: bool = True,
    flush_every: int = 100,
) -> Path:
    """Label ``clips`` of the game's speech clips (a seeded random choice among those within the filter's
    duration limits) and write OUT/manifest.jsonl with the kept ones; returns its path.

    Resumable: clips already in OUT/labels.jsonl are not labelled again. ``labeller`` defaults to
    ``whisper_labeller(asr)``, made only when a clip has no shipped label (``read_shipped_labels``: used when
    ``asr`` and ``seed`` are those they were made with and no ``labeller`` is given); the audio goes to
    OUT/audio/<id>.flac (16 kHz). ``table``: the game's queen.1c (default ``QUEEN_TABLE``)."""
    from ..progress import progress_bar

    out = Path(out)
    table = Path(table) if table is not None else QUEEN_TABLE  # looked up now: where Debian installs it
    entries = speech_entries(read_queen_table(table))  # a missing game fails before anything is written
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rule = label_filter or LabelFilter()
    if not entries:
        raise ValueError(f"{table}: no speech entries (*.SB) in the table")
    order = sorted(entries, key=lambda e: e.name)  # by name, so the choice does not hang on the table's order
    random.Random(seed).shuffle(order)
    labels_path = out / "labels.jsonl"
    labels = _read_labels(labels_path)
    target = min(clips, len(order))
    done = len(labels)
    if done >= target:
        return _write_kept(out, labels)
    shipped = read_shipped_labels() if labeller is None and (asr, seed) == (SHIPPED_ASR, SHIPPED_SEED) else {}
    label = labeller
    bar = progress_bar(total=target, initial=min(done, target), enabled=progress, desc="acted speech: labelling", unit="clip")
    written_since = 0
    with open(labels_path, "a", encoding="utf-8") as log:
        for entry in order:
            if done >= target:
                break
            if entry.clip_id in labels:
                continue
            wav = decode_clip(table, entry)
            seconds = len(wav) / SAMPLE_RATE
            if not rule.min_seconds <= seconds <= rule.max_seconds:
                continue  # not counted: the choice is among clips of usable length
            if entry.clip_id in shipped:
                text, logprob, no_speech, compression = shipped[entry.clip_id]
            else:
                label = label or whisper_labeller(asr)  # loaded only when a clip needs recognising
                text, logprob, no_speech, compression = label(wav)
            lab = Label(entry.clip_id, round(seconds, 6), text, float(logprob), float(no_speech), float(compression))
            lab.kept = rule.keeps(lab)
            if lab.kept:
                write_audio(out / "audio" / f"{lab.id}.flac", wav, SAMPLE_RATE)
            # the audio is on disk before its label: a label line always has its clip
            log.write(json.dumps(asdict(lab), ensure_ascii=False) + "\n")
            log.flush()
            labels[lab.id] = lab
            done += 1
            written_since += 1
            bar.update(1)
            if written_since >= flush_every:
                _write_kept(out, labels)
                written_since = 0
    bar.close()
    return _write_kept(out, labels)

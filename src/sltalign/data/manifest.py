"""The manifest: one JSON object per line describing one utterance.

Schema::

    {"id": str,                      unique within the manifest
     "audio": str,                   path; a relative path is relative to the manifest's directory
     "offset": float >= 0,           optional, seconds into the audio file (default 0)
     "duration": float > 0,          seconds
     "transcript": str,              optional, source-language text
     "translation": str,             optional, target-language text
     "translation_source": str}      optional, where the translation came from: "human" or "mt:<model spec>"

Utterances point into audio files (``offset`` + ``duration``); corpora are never cut into pieces on disk.
``read_manifest`` validates every line and reports every problem it finds (up to a limit) as
``path:line: field 'x': expected ..., got ...``; ``write_manifest`` writes atomically.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["Utterance", "ManifestError", "read_manifest", "write_manifest", "FIELDS"]

#: every field a manifest line may hold, in the order lines are written
FIELDS = ("id", "audio", "offset", "duration", "transcript", "translation", "translation_source")
_TEXT_FIELDS = ("transcript", "translation", "translation_source")
# "human", or "<kind>:<detail>" such as "mt:packaged:bergamot-en-pt"
_SOURCE_RE = re.compile(r"^(human|[a-z][a-z0-9_+-]*:\S.*)$")
_MAX_REPORTED = 20


class ManifestError(ValueError):
    """A manifest that does not follow the schema; the message lists each problem as path:line: field: ..."""


@dataclass(frozen=True)
class Utterance:
    """One manifest line. ``audio`` is an absolute path once read from a manifest.

    The span of audio is [offset, offset + duration) seconds of the file.
    """

    id: str
    audio: str
    duration: float
    offset: float = 0.0
    transcript: str | None = None
    translation: str | None = None
    translation_source: str | None = None

    def __post_init__(self) -> None:
        # value checks shared by programmatic construction and read_manifest (which adds file:line)
        if not isinstance(self.id, str) or not self.id.strip():
            raise ValueError(f"field 'id': expected a non-empty string, got {self.id!r}")
        if any(c.isspace() for c in self.id):
            raise ValueError(f"field 'id': expected no whitespace (ids are Kaldi-style keys), got {self.id!r}")
        if not isinstance(self.audio, str) or not self.audio:
            raise ValueError(f"field 'audio': expected a non-empty path string, got {self.audio!r}")
        if not _is_number(self.duration) or not math.isfinite(self.duration) or self.duration <= 0:
            raise ValueError(f"field 'duration': expected a positive number of seconds, got {self.duration!r}")
        if not _is_number(self.offset) or not math.isfinite(self.offset) or self.offset < 0:
            raise ValueError(f"field 'offset': expected a number of seconds >= 0, got {self.offset!r}")
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"field {name!r}: expected a string, got {type(value).__name__}")
        if self.translation_source is not None:
            if not _SOURCE_RE.match(self.translation_source):
                raise ValueError(
                    f"field 'translation_source': expected 'human' or 'mt:<model>' (or '<kind>:<detail>'), "
                    f"got {self.translation_source!r}"
                )
            if self.translation is None:
                raise ValueError("field 'translation_source': given without a 'translation'")

    @property
    def end(self) -> float:
        """End of the span in the audio file, in seconds."""
        return self.offset + self.duration

    def to_json(self, base_dir: str | os.PathLike | None = None) -> dict[str, Any]:
        """The manifest line as a dict; ``audio`` is made relative to ``base_dir`` when it lies beneath it."""
        out: dict[str, Any] = {}
        for name in FIELDS:
            value = getattr(self, name)
            if value is None or (name == "offset" and value == 0):
                continue
            out[name] = value
        if base_dir is not None:
            out["audio"] = _relative_if_below(self.audio, Path(base_dir))
        return out


def read_manifest(
    path: str | os.PathLike,
    *,
    require: Sequence[str] = ("translation",),
    check_audio: bool = True,
) -> list[Utterance]:
    """Read and validate a JSONL manifest.

    ``require`` names optional fields every line must hold (non-empty), e.g. ``("transcript", "translation")``.
    With ``check_audio`` every audio file must exist. Relative audio paths are resolved against the
    manifest's directory. Raises ``FileNotFoundError`` for a missing manifest and ``ManifestError``
    (a ``ValueError``) listing every bad line (up to 20) as ``path:line: field 'x': ...``.
    """
    p = Path(path).expanduser()
    unknown = [r for r in require if r not in FIELDS]
    if unknown:
        raise ValueError(f"read_manifest: require names unknown fields {unknown}; known: {', '.join(FIELDS)}")
    if not p.is_file():
        raise FileNotFoundError(f"manifest not found: {p}")
    base = p.parent.resolve()
    problems: list[str] = []
    utts: list[Utterance] = []
    seen: dict[str, int] = {}
    missing_audio: dict[str, bool] = {}
    with p.open("rb") as f:  # bytes: a line that is not UTF-8 is reported with its number, not the file's
        for lineno, raw in enumerate(f, start=1):
            where = f"{p}:{lineno}"
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark (Windows editors)
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                problems.append(
                    f"{where}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the line); "
                    "expected UTF-8 text (re-save the manifest as UTF-8)"
                )
                if len(problems) > _MAX_REPORTED:
                    break
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"{where}: not valid JSON ({err.msg} at column {err.colno})")
                continue
            except RecursionError:
                problems.append(f"{where}: not valid JSON (nested too deeply)")
                continue
            errs, utt = _parse_record(record, base, require)
            if utt is not None and check_audio:
                if utt.audio not in missing_audio:
                    missing_audio[utt.audio] = not _is_file(utt.audio)
                if missing_audio[utt.audio]:
                    errs.append(f"field 'audio': file not found: {utt.audio}")
            if utt is not None:
                if utt.id in seen:
                    errs.append(f"field 'id': {utt.id!r} duplicates the id on line {seen[utt.id]}")
                else:
                    seen[utt.id] = lineno
            problems.extend(f"{where}: {e}" for e in errs)
            if utt is not None and not errs:
                utts.append(utt)
            if len(problems) > _MAX_REPORTED:
                break
    if problems:
        more = " (stopped after the first 20)" if len(problems) > _MAX_REPORTED else ""
        raise ManifestError(f"invalid manifest {p}{more}:\n  " + "\n  ".join(problems[:_MAX_REPORTED]))
    if not utts:
        raise ManifestError(f"invalid manifest {p}: no utterances (the file is empty)")
    return utts


def write_manifest(path: str | os.PathLike, utts: Iterable[Utterance]) -> Path:
    """Write utterances as JSONL, atomically (temporary file in the same directory, then ``os.replace``).

    Audio paths under the manifest's directory are written relative to it (the directory can be moved);
    others stay absolute. Duplicate ids are refused. Returns the path written.
    """
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    base = p.parent.resolve()
    seen: set[str] = set()
    lines: list[str] = []
    for u in utts:
        if not isinstance(u, Utterance):
            raise TypeError(f"write_manifest: expected Utterance objects, got {type(u).__name__}")
        if u.id in seen:
            raise ValueError(f"write_manifest {p}: duplicate id {u.id!r}")
        seen.add(u.id)
        lines.append(json.dumps(u.to_json(base), ensure_ascii=False))
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + ("\n" if lines else ""))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


# ---------------------------------------------------------------------------------------------------


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_file(path: str) -> bool:
    """``Path.is_file`` for a path read from a manifest: names the OS cannot even represent are not files."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def _relative_if_below(audio: str, base: Path) -> str:
    a = Path(audio)
    if not a.is_absolute():
        return audio
    try:
        return a.resolve().relative_to(base).as_posix()
    except ValueError:
        return str(a)


def _parse_record(record: Any, base: Path, require: Sequence[str]) -> tuple[list[str], Utterance | None]:
    """Type-check one decoded line; returns (problems, utterance or None)."""
    if not isinstance(record, dict):
        return [f"expected a JSON object, got {type(record).__name__}"], None
    errs: list[str] = []
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        errs.append(f"unknown field(s) {unknown}; the schema has {', '.join(FIELDS)}")
    for name in ("id", "audio", "duration"):
        if name not in record:
            errs.append(f"field {name!r}: missing (required)")
    for name in require:
        value = record.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            errs.append(f"field {name!r}: missing or empty (required here)")
    for name in ("id", "audio", *_TEXT_FIELDS):
        if name in record and record[name] is not None and not isinstance(record[name], str):
            errs.append(f"field {name!r}: expected a string, got {type(record[name]).__name__} {record[name]!r}")
    for name in ("offset", "duration"):
        if name in record and record[name] is not None and not _is_number(record[name]):
            errs.append(f"field {name!r}: expected a number of seconds, got {type(record[name]).__name__} {record[name]!r}")
    if errs:
        return errs, None
    audio_text = record["audio"]
    if "\0" in audio_text or any(0xD800 <= ord(c) <= 0xDFFF for c in audio_text):
        return [f"field 'audio': expected a file path, got {audio_text!r} (a NUL or an unpaired surrogate)"], None
    try:
        audio = Path(audio_text).expanduser()
    except RuntimeError:  # "~user/..." for a user this system does not know
        audio = Path(audio_text)
    if not audio.is_absolute():
        audio = base / audio
    try:
        duration = float(record["duration"])
        offset = float(record.get("offset") or 0.0)
    except OverflowError:
        return ["field 'duration'/'offset': expected a number of seconds, got an integer too large for a float"], None
    try:
        utt = Utterance(
            id=record["id"],
            audio=str(audio),
            duration=duration,
            offset=offset,
            transcript=record.get("transcript"),
            translation=record.get("translation"),
            translation_source=record.get("translation_source"),
        )
    except ValueError as err:
        return [str(err)], None
    return [], utt


# keep the dataclass field order and FIELDS in step (a new field must be added to both)
assert {f.name for f in fields(Utterance)} == set(FIELDS)

"""Translated segments and the files people expect from a speech tool: txt, json, srt, vtt, tsv.

The names and layouts follow openai-whisper's writers (``whisper --output_format``), so scripts and players
that read whisper's files read these:

- ``txt``: one segment per line;
- ``json``: ``{"text", "segments": [{"id", "start", "end", "text"[, "source"]}], "language", "duration", ...}``
  plus, where known, the model and decoding that produced it;
- ``srt``: SubRip cues, ``HH:MM:SS,mmm`` times, numbered from 1;
- ``vtt``: WebVTT cues, ``HH:MM:SS.mmm`` times;
- ``tsv``: ``start<TAB>end<TAB>text`` with integer milliseconds, as whisper writes it.

One module serves the command line (``sltalign translate -o DIR -f FMT``), the HTTP server and its page, so a
file downloaded from any of them is the same bytes for the same translation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the formats ``render`` and ``write_outputs`` know, in whisper's names
FORMATS = ("txt", "json", "srt", "vtt", "tsv")


@dataclass
class Segment:
    """A stretch of the input translated on its own: ``[start, end)`` in seconds from the input's start.

    ``source`` is what the connector heard (its CTC transcript, English) where the model has a CTC head, else None.
    """

    start: float
    end: float
    text: str
    source: str | None = None

    def to_dict(self, index: int) -> dict[str, Any]:
        d: dict[str, Any] = {"id": index, "start": round(self.start, 3), "end": round(self.end, 3), "text": self.text}
        if self.source is not None:
            d["source"] = self.source
        return d


@dataclass
class Translation:
    """The translation of one input: the joined text, its segments in order, and the input's duration (s)."""

    text: str
    segments: list[Segment] = field(default_factory=list)
    duration: float = 0.0
    language: str | None = None  # target language code, where the model says which

    def to_dict(self, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """JSON-ready: text, segments, language, duration, then ``meta`` (model, decoding, input name...)."""
        out: dict[str, Any] = {
            "text": self.text,
            "segments": [s.to_dict(i) for i, s in enumerate(self.segments)],
            "language": self.language,
            "duration": round(self.duration, 3),
        }
        if meta:
            out.update(meta)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Translation":
        """The inverse of ``to_dict`` (extra keys ignored)."""
        segs = [Segment(float(s["start"]), float(s["end"]), str(s["text"]), s.get("source")) for s in d.get("segments", [])]
        return cls(text=str(d.get("text", "")), segments=segs, duration=float(d.get("duration", 0.0)), language=d.get("language"))


def _timestamp(seconds: float, sep: str) -> str:
    """HH:MM:SS<sep>mmm; hours are not capped at 99 (SRT/VTT readers accept more digits)."""
    ms = max(0, int(round(seconds * 1000)))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cue_text(text: str) -> str:
    # A blank line ends a cue in SRT and VTT, and "-->" inside a VTT cue reads as a timing line: keep
    # a segment's text on one line and defuse the arrow.
    return " ".join(text.split()).replace("-->", "->")


def _cues(segments: Sequence[Segment]) -> list[Segment]:
    """Segments worth a subtitle cue: non-empty text and a positive duration (players drop the others)."""
    return [s for s in segments if s.text.strip() and s.end > s.start]


def format_txt(tr: Translation) -> str:
    """One segment per line (the whole text on one line when there are no segments)."""
    lines = [_cue_text(s.text) for s in tr.segments if s.text.strip()] or ([tr.text] if tr.text else [])
    return "".join(line + "\n" for line in lines)


def format_srt(segments: Sequence[Segment]) -> str:
    """SubRip: numbered cues with ``HH:MM:SS,mmm --> HH:MM:SS,mmm`` and the text, separated by blank lines."""
    blocks = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{_cue_text(s.text)}\n"
        for i, s in enumerate(_cues(segments), start=1)
    ]
    return "\n".join(blocks)


def format_vtt(segments: Sequence[Segment]) -> str:
    """WebVTT: the ``WEBVTT`` header, then ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` cues."""
    blocks = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{_cue_text(s.text)}\n" for s in _cues(segments)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def format_tsv(segments: Sequence[Segment]) -> str:
    """whisper's TSV: a ``start end text`` header, then integer milliseconds and the text per segment."""
    rows = ["start\tend\ttext"]
    rows += [
        f"{int(round(s.start * 1000))}\t{int(round(s.end * 1000))}\t{_cue_text(s.text).replace(chr(9), ' ')}"
        for s in segments
        if s.text.strip()
    ]
    return "\n".join(rows) + "\n"


def format_json(tr: Translation, meta: dict[str, Any] | None = None) -> str:
    """``Translation.to_dict(meta)`` as indented UTF-8 JSON (Portuguese stays readable, not \\u-escaped)."""
    return json.dumps(tr.to_dict(meta), ensure_ascii=False, indent=2) + "\n"


def render(fmt: str, tr: Translation, meta: dict[str, Any] | None = None) -> str:
    """The text of one format (``FORMATS``) for one translation."""
    if fmt == "txt":
        return format_txt(tr)
    if fmt == "json":
        return format_json(tr, meta)
    if fmt == "srt":
        return format_srt(tr.segments)
    if fmt == "vtt":
        return format_vtt(tr.segments)
    if fmt == "tsv":
        return format_tsv(tr.segments)
    raise ValueError(f"output format must be one of {', '.join(FORMATS)} (or all), got {fmt!r}")


def parse_formats(spec: str | Iterable[str]) -> list[str]:
    """``"all"``, ``"srt"``, ``"srt,vtt"`` or a list of names -> the formats, checked, in ``FORMATS`` order."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip().lower() for n in names if n.strip()]
    if "all" in names:
        return list(FORMATS)
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise ValueError(f"--output_format: expected txt, json, srt, vtt, tsv or all (comma-separated), got {spec!r}")
    return [f for f in FORMATS if f in names]


def write_outputs(
    tr: Translation, out_dir: str | Path, stem: str, formats: Sequence[str], meta: dict[str, Any] | None = None
) -> list[Path]:
    """Write ``out_dir/stem.<fmt>`` for each format (UTF-8); returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        p = out_dir / f"{stem}.{fmt}"
        p.write_text(render(fmt, tr, meta), encoding="utf-8")
        paths.append(p)
    return paths

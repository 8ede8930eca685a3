"""A real-speech English -> Portuguese test set, and a small dev set, with human references.

The audio is what Debian packages install (nothing is copied into the project or redistributed by it). The
English transcripts come from those packages, and the pt-BR translations in ``realspeech.tsv`` were written
by hand for this project (not by a machine translator). Each row of the table names its split: ``test``
(the default everywhere, and what the demo scores) or ``dev``, a small disjoint set (no recording and no
sentence shared with the test) that training may use for checkpoint selection and early stopping, never as
training audio.

Test subsets (121 utterances; several speakers, read, command, telephone and instructional speech):

* ``librivox``: 5 read sentences of Sense and Sensibility (LibriVox, one reader), 24.7 s, from
  ``pocketsphinx-testdata`` (/usr/share/pocketsphinx/test/data); transcripts from ``librivox/transcription``.
* ``cards``: 5 spoken playing-card commands ("ten of clubs", ...), 9.7 s, transcripts from ``cards/cards.transcription``.
* ``commands``: ``goforward.raw``, "go forward ten meters" (the JSGF rule the package's grammar ships for it).
* ``digits``: ``tidigits/dhd.2934z.raw``, a TIDIGITS digit string named by its content (z = zero).
* ``ivr``: 84 telephone prompts of Asterisk's core sounds ("Please enter your password followed by the pound
  key."), one professional US speaker (Allison Smith), 8 kHz audio, from ``asterisk-core-sounds-en-wav``
  (/usr/share/asterisk/sounds/en_US_f_Allison); transcripts from the package's ``core-sounds-en.txt``
  (CC-BY-SA-3.0, so are their translations here).
* ``wz2100``: 17 spoken lines of the Warzone 2100 tutorial (its narrator, game instructions, 11 kHz), 50.1 s, from
  ``warzone2100-data`` (GPL-2+): the audio is ``audio/tutorial/tut*.ogg`` inside the package's
  /usr/share/games/warzone2100/base.wz (a zip archive; the build extracts the chosen members next to the
  manifest), the text the console line ``script/tutorial.js`` pairs with each clip.
* ``alsa``: 8 loudspeaker names ("Front left.") spoken by one person, 11.4 s, the channel-test recordings
  of ``alsa-utils`` (GPL-2; /usr/share/sounds/alsa, named by their words).

Dev split (31 utterances, 128.7 s): 24 further Asterisk prompts (``ivr``, 116.9 s: the same speaker as the
test's prompts, other recordings and sentences) and 7 Warzone 2100 alerts (``wz2100``, 11.7 s: "Objective
captured.", the game's alert voice, from ``audio/memressp`` and ``audio/extra``; the text is the comment the
campaign scripts give beside the line that plays each one).

Clips whose packaged text may not be what is spoken (a packaged Whisper disagreed beyond punctuation or a
near-homophone) are left out; no transcript here comes from a recogniser. The English side holds the
package's words in written form (case and punctuation added by the project, the reader's slip "a more a
amiable" written as the book has it), so MT on gold transcripts reads them as the text an MT expects.
Headerless ``.raw`` files are 16 kHz 16-bit mono, which ``sltalign.audio`` reads.

Subsets whose package is missing: ``librivox``, ``cards``, ``commands``, ``digits`` and ``ivr`` raise
``RealSpeechUnavailable`` naming the package, as before; ``wz2100`` and ``alsa`` are left out of a build with
a note on stderr (and raise only when nothing chosen is left), so the older set still builds without them.
"""

from __future__ import annotations

import csv
import os
import sys
import zipfile
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from ..audio import duration_of
from .manifest import Utterance, write_manifest

__all__ = [
    "ALSA_ROOT",
    "DEFAULT_ROOT",
    "IVR_ROOT",
    "PACKAGES",
    "SPLITS",
    "SUBSETS",
    "WZ2100_ARCHIVE",
    "RealSpeechUnavailable",
    "build_realspeech_manifest",
    "read_realspeech_table",
    "subset_of",
]

#: where Debian's pocketsphinx-testdata installs its audio
DEFAULT_ROOT = Path("/usr/share/pocketsphinx/test/data")
#: where Debian's asterisk-core-sounds-en-wav installs its audio (the ``ivr`` subset)
IVR_ROOT = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
#: the zip archive of Debian's warzone2100-data that holds the ``wz2100`` clips
WZ2100_ARCHIVE = Path("/usr/share/games/warzone2100/base.wz")
#: where Debian's alsa-utils installs its channel-test recordings (the ``alsa`` subset)
ALSA_ROOT = Path("/usr/share/sounds/alsa")

SUBSETS = ("librivox", "cards", "commands", "digits", "ivr", "wz2100", "alsa")
SPLITS = ("test", "dev")
#: the Debian package each subset's audio comes from
PACKAGES = {
    "librivox": "pocketsphinx-testdata",
    "cards": "pocketsphinx-testdata",
    "commands": "pocketsphinx-testdata",
    "digits": "pocketsphinx-testdata",
    "ivr": "asterisk-core-sounds-en-wav",
    "wz2100": "warzone2100-data",
    "alsa": "alsa-utils",
}
#: subsets left out (with a note) rather than failing a build when their package is missing
_OPTIONAL = frozenset({"wz2100", "alsa"})
#: subsets whose rows name members of a zip archive (extracted under the manifest's directory)
_ARCHIVED = frozenset({"wz2100"})
_PREFIX_TO_SUBSET = {
    "librivox": "librivox",
    "cards": "cards",
    "goforward": "commands",
    "tidigits": "digits",
    "ivr": "ivr",
    "wz2100": "wz2100",
    "alsa": "alsa",
}
_COLUMNS = ("id", "path", "english", "portuguese", "english_source", "split")


class RealSpeechUnavailable(FileNotFoundError):
    """The audio of a chosen subset is not installed (the message names its Debian package)."""


def read_realspeech_table() -> list[dict[str, str]]:
    """Rows of realspeech.tsv: id, path (relative to the subset's root), english, portuguese, english_source, split."""
    text = resources.files("sltalign.data").joinpath("realspeech.tsv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    for i, row in enumerate(rows, start=2):
        if None in row or any(not (row.get(k) or "").strip() for k in _COLUMNS):
            raise ValueError(f"realspeech.tsv:{i}: expected the {len(_COLUMNS)} columns {list(_COLUMNS)}, all filled, got {row}")
        if row["split"] not in SPLITS:
            raise ValueError(f"realspeech.tsv:{i}: split must be one of {SPLITS}, got {row['split']!r}")
    return rows


def subset_of(utt_id: str) -> str:
    """The subset an id belongs to (one of ``SUBSETS``)."""
    return _PREFIX_TO_SUBSET[utt_id.split("-", 1)[0]]


def _roots(root, ivr_root, roots: Mapping[str, str | os.PathLike] | None) -> dict[str, Path]:
    out = {s: Path(root) for s in ("librivox", "cards", "commands", "digits")}
    out.update(ivr=Path(ivr_root), wz2100=WZ2100_ARCHIVE, alsa=ALSA_ROOT)
    for s, p in (roots or {}).items():
        if s not in SUBSETS:
            raise ValueError(f"roots: unknown subset {s!r} (expected among {SUBSETS})")
        out[s] = Path(p)
    return {s: p.expanduser() for s, p in out.items()}


def _installed(subset: str, where: Path) -> bool:
    return where.is_file() if subset in _ARCHIVED else where.is_dir()


def _unavailable(subset: str, where: Path) -> str:
    pkg = PACKAGES[subset]
    return (
        f"real-speech audio of subset {subset!r} not found at {where}: install the Debian package {pkg} (apt-get install {pkg})"
    )


def build_realspeech_manifest(
    out_dir: str | os.PathLike,
    *,
    subsets: Sequence[str] | None = None,
    split: str = "test",
    root: str | os.PathLike = DEFAULT_ROOT,
    ivr_root: str | os.PathLike = IVR_ROOT,
    roots: Mapping[str, str | os.PathLike] | None = None,
) -> Path:
    """Write ``out_dir/manifest.jsonl`` pointing at the installed audio; translation_source "human".

    ``split`` is "test" (default) or "dev". ``subsets`` picks among SUBSETS (default: every subset with rows
    in the split). ``roots`` overrides where a subset's audio is (a directory, or for ``wz2100`` the archive).
    Raises ``RealSpeechUnavailable`` (a FileNotFoundError) naming the Debian package when a chosen subset of
    the original set (librivox, cards, commands, digits, ivr) is not installed, or when nothing chosen is;
    a missing ``wz2100`` or ``alsa`` is left out with a note on stderr. Clips inside an archive are extracted
    to ``out_dir/audio/<subset>/``.
    """
    if split not in SPLITS:
        raise ValueError(f"realspeech split must be one of {SPLITS}, got {split!r}")
    where = _roots(root, ivr_root, roots)
    table = [r for r in read_realspeech_table() if r["split"] == split]
    in_split = tuple(s for s in SUBSETS if any(subset_of(r["id"]) == s for r in table))
    chosen = tuple(subsets) if subsets is not None else in_split
    unknown = [s for s in chosen if s not in SUBSETS]
    if unknown or not chosen:
        raise ValueError(f"realspeech subsets must be among {SUBSETS}, got {list(chosen)}")
    empty = [s for s in chosen if s not in in_split]
    if empty:
        raise ValueError(f"realspeech subsets {empty} have no {split} rows (the {split} split has {list(in_split)})")
    kept = []
    for s in chosen:
        if _installed(s, where[s]):
            kept.append(s)
        elif s in _OPTIONAL:
            print(f"real-speech {split} set without subset {s!r} ({_unavailable(s, where[s])})", file=sys.stderr, flush=True)
        else:
            raise RealSpeechUnavailable(_unavailable(s, where[s]))
    if not kept:
        raise RealSpeechUnavailable("; ".join(_unavailable(s, where[s]) for s in chosen))
    # Absolute, because the manifest stores extracted clips relative to itself: a relative out_dir would be
    # joined twice (out_dir/out_dir/audio/...) when the manifest is read back from another working directory.
    out_dir = Path(out_dir).expanduser().resolve()
    utts = []
    missing = []
    archives: dict[str, zipfile.ZipFile] = {}
    try:
        for row in table:
            s = subset_of(row["id"])
            if s not in kept:
                continue
            if s in _ARCHIVED:
                member = Path(row["path"])
                if member.is_absolute() or ".." in member.parts:
                    raise ValueError(
                        f"realspeech.tsv: {row['id']}: archive member {row['path']!r} must be a relative path inside it"
                    )
                audio = out_dir / "audio" / s / member  # the member's own path: no two members can collide
                zf = archives.get(s) or archives.setdefault(s, zipfile.ZipFile(where[s]))
                try:
                    info = zf.getinfo(row["path"])
                except KeyError:
                    missing.append(f"{where[s]}:{row['path']}")
                    continue
                if not (audio.is_file() and audio.stat().st_size == info.file_size):
                    audio.parent.mkdir(parents=True, exist_ok=True)
                    tmp = audio.with_name(audio.name + ".part")
                    tmp.write_bytes(zf.read(info))
                    tmp.replace(audio)
            else:
                audio = where[s] / row["path"]
                if not audio.is_file():
                    missing.append(str(audio))
                    continue
            utts.append(
                Utterance(
                    id=row["id"],
                    audio=str(audio),
                    duration=round(duration_of(audio), 6),
                    transcript=row["english"],
                    translation=row["portuguese"],
                    translation_source="human",
                )
            )
    finally:
        for zf in archives.values():
            zf.close()
    if missing:
        raise RealSpeechUnavailable(
            f"{len(missing)} real-speech audio file(s) missing (a Debian package incomplete?): {missing[:3]}"
        )
    return write_manifest(out_dir / "manifest.jsonl", utts)

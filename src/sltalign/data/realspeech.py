"""A small real-speech English -> Portuguese test set with human references.

The audio is what two Debian packages install (nothing is copied or redistributed): ``pocketsphinx-testdata``
under /usr/share/pocketsphinx/test/data and ``asterisk-core-sounds-en-wav`` under
/usr/share/asterisk/sounds/en_US_f_Allison. The English transcripts come from those packages, and the pt-BR
translations in ``realspeech.tsv`` were written by hand for this project (not by a machine translator).

Subsets (96 utterances, several speakers):

* ``librivox``: 5 read sentences of Sense and Sensibility (LibriVox, one reader), 24.7 s;
  transcripts from ``librivox/transcription``.
* ``cards``: 5 spoken playing-card commands ("ten of clubs", ...), 9.7 s, transcripts from ``cards/cards.transcription``.
* ``commands``: ``goforward.raw``, "go forward ten meters" (the JSGF rule the package's grammar ships for it).
* ``digits``: ``tidigits/dhd.2934z.raw``, a TIDIGITS digit string named by its content (z = zero).
* ``ivr``: 84 telephone prompts of Asterisk's core sounds ("Please enter your password followed by the pound
  key."), one professional US speaker (Allison Smith), 8 kHz audio; transcripts from the package's
  ``core-sounds-en.txt`` (CC-BY-SA-3.0, so are their translations here). Prompts whose text may not be what
  is spoken (a packaged Whisper disagreed beyond punctuation or a near-homophone) are left out.

The English side holds the package's words in written form (case and punctuation added by the project, and
the reader's slip "a more a amiable" written as the book has it), so MT on gold transcripts reads them as
the text an MT expects. Headerless ``.raw`` files are 16 kHz 16-bit mono, which ``sltalign.audio`` reads.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from ..audio import duration_of
from .manifest import Utterance, write_manifest

__all__ = ["DEFAULT_ROOT", "SUBSETS", "RealSpeechUnavailable", "read_realspeech_table", "build_realspeech_manifest"]

#: where Debian's pocketsphinx-testdata installs its audio
DEFAULT_ROOT = Path("/usr/share/pocketsphinx/test/data")
#: where Debian's asterisk-core-sounds-en-wav installs its audio (the ``ivr`` subset)
IVR_ROOT = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
SUBSETS = ("librivox", "cards", "commands", "digits", "ivr")
_PREFIX_TO_SUBSET = {"librivox": "librivox", "cards": "cards", "goforward": "commands", "tidigits": "digits", "ivr": "ivr"}
_PACKAGE = {"ivr": "asterisk-core-sounds-en-wav"}  # every other subset: pocketsphinx-testdata


class RealSpeechUnavailable(FileNotFoundError):
    """The audio of the test set is not installed (Debian package pocketsphinx-testdata)."""


def read_realspeech_table() -> list[dict[str, str]]:
    """Rows of realspeech.tsv: id, path (relative to the package's data dir), english, portuguese, english_source."""
    text = resources.files("sltalign.data").joinpath("realspeech.tsv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    for i, row in enumerate(rows, start=2):
        if any(not (row.get(k) or "").strip() for k in ("id", "path", "english", "portuguese", "english_source")):
            raise ValueError(f"realspeech.tsv:{i}: every column must be filled, got {row}")
    return rows


def subset_of(utt_id: str) -> str:
    """The subset an id belongs to (one of ``SUBSETS``)."""
    return _PREFIX_TO_SUBSET[utt_id.split("-", 1)[0]]


def build_realspeech_manifest(
    out_dir: str | os.PathLike,
    *,
    subsets: Sequence[str] | None = None,
    root: str | os.PathLike = DEFAULT_ROOT,
    ivr_root: str | os.PathLike = IVR_ROOT,
) -> Path:
    """Write ``out_dir/manifest.jsonl`` pointing at the installed audio; translation_source "human".

    ``subsets`` picks among SUBSETS (default: all). Raises ``RealSpeechUnavailable`` (a FileNotFoundError)
    naming the Debian package when a chosen subset's audio is not installed.
    """
    roots = {s: Path(ivr_root if s == "ivr" else root).expanduser() for s in SUBSETS}
    chosen = tuple(subsets) if subsets is not None else SUBSETS
    unknown = [s for s in chosen if s not in SUBSETS]
    if unknown or not chosen:
        raise ValueError(f"realspeech subsets must be among {SUBSETS}, got {list(chosen)}")
    for s in chosen:
        if not roots[s].is_dir():
            pkg = _PACKAGE.get(s, "pocketsphinx-testdata")
            raise RealSpeechUnavailable(
                f"real-speech test audio of subset {s!r} not found at {roots[s]}: install the Debian package {pkg} "
                f"(apt-get install {pkg})"
            )
    utts = []
    missing = []
    for row in read_realspeech_table():
        if subset_of(row["id"]) not in chosen:
            continue
        audio = roots[subset_of(row["id"])] / row["path"]
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
    if missing:
        raise RealSpeechUnavailable(f"{len(missing)} real-speech audio file(s) missing (a Debian package incomplete?): {missing[:3]}")
    return write_manifest(Path(out_dir).expanduser() / "manifest.jsonl", utts)

"""English text for the phone head's pronunciation lexicon (``connectors.phones.Lexicon``), and clip voices.

The lexicon knows the words of the text it reads, so the text decides which words a phone-head connector can
write. Sources (``model.lexicon_text`` in a training config), each one of:

- ``trans-de-en:sentences``: the English sentences of Debian's trans-de-en (what ``sltalign data synth``
  speaks by default), 3-40 words, cleaned as the synthesiser cleans them;
- ``trans-de-en:phrases``: pseudo-sentences of 3-6 English phrase entries of the same dictionary ("Carpenter's
  plane, credit point, sales policy, at legal interest."): ~60k lines of words the sentences lack;
- ``wordnet:examples``: the ~42k quoted usage examples of WordNet 3.0's glosses (Debian's wordnet-base;
  "he ran to catch the bus"): everyday English the dictionary sentences lack;
- ``fortunes:sentences``: the ~20k sentences of fortune-mod's quotation databases (Debian's fortunes-min and
  fortunes; the offensive ones are a separate package and not read): conversational and literary English;
- a path: a UTF-8 file, one line of English text per line.

Every sentence of the held-out manifests (dev, test) is removed from all sources, sentence by sentence (long
clips join several sentences; the synthesiser's record beside each clip lists them), and so is every line
that contains a held-out sentence of 4 words or more (a quotation can quote a telephone prompt), so a dev or
test score never reads a lexicon built from its own references.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from .manifest import Utterance
from .synth import _ANNOTATION, DEFAULT_SENTENCES, _clean, load_sentences

SOURCES = ("trans-de-en:sentences", "trans-de-en:phrases", "wordnet:examples", "fortunes:sentences")
#: where Debian's wordnet-base and fortunes packages put their data
WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
#: a line of another source is used if it has this many words and plain characters only (no markup, no
#: digits-and-symbols lines of ASCII art)
_LINE_WORDS = (3, 40)
_PLAIN = re.compile(r"[A-Za-z0-9 ,.'!?;:-]+")
_QUOTED = re.compile(r'"([^"]+)"')
_ATTRIBUTION = re.compile(r"\s+--\s.*$")
_WORDS = re.compile(r"[a-z0-9']+")
#: the prefixes of the named sources: "wordnet:x" is a misspelt source name, not a file name
_FAMILIES = ("trans-de-en", "wordnet", "fortunes")
_DING_MISSING = "{}: the Ding dictionary is missing (apt-get install trans-de-en)"
#: pseudo-sentences drawn from the dictionary's phrase entries for ``trans-de-en:phrases``
PHRASE_LINES = 60_000
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def clip_voice(audio: str | Path) -> tuple[str | None, str | None]:
    """(backend, voice) of a clip ``sltalign data synth`` made, from the record it writes beside the audio
    (``clip.json``); (None, None) for any other audio."""
    meta = Path(audio).with_suffix(".json")
    if not meta.is_file():
        return None, None
    try:
        rec = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None, None
    if not isinstance(rec, dict):
        return None, None
    return rec.get("backend") or "espeak", rec.get("voice")


def held_sentences(utterances: Iterable[Utterance]) -> set[str]:
    """Every sentence of the utterances' transcripts: whole transcripts, their parts split at sentence ends,
    and the sentences the synthesiser's record lists."""
    held: set[str] = set()
    for u in utterances:
        if u.transcript:
            held.add(u.transcript)
            held.update(t for t in _SENTENCE_END.split(u.transcript) if t)
        meta = Path(u.audio).with_suffix(".json")
        if meta.is_file():
            try:
                held.update(json.loads(meta.read_text(encoding="utf-8")).get("sentences", []))
            except (OSError, json.JSONDecodeError, AttributeError):
                pass
    return held


@functools.lru_cache(maxsize=2)
def _phrase_pool(path: str) -> tuple[str, ...]:
    """The dictionary's English phrase entries of 1-6 words, letters only (sorted; read once per path)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(_DING_MISSING.format(p))
    phrases: set[str] = set()
    with p.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or "::" not in line:
                continue
            for entry in line.split("::", 1)[1].split("|"):
                for alt in entry.split(";"):
                    t = _clean(_ANNOTATION.sub(" ", alt).strip())
                    if not t or t[-1:] in ".!?" or not 1 <= len(t.split()) <= 6:
                        continue
                    if all(ch.isalpha() or ch in " '-," for ch in t):
                        phrases.add(t)
    pool = tuple(sorted(phrases))
    if len(pool) < 6:
        raise ValueError(f"{p}: only {len(pool)} usable English phrase entries")
    return pool


def phrase_lines(n: int, held: set[str] | HeldOut, *, seed: int = 0, path: str | Path = DEFAULT_SENTENCES) -> list[str]:
    """``n`` pseudo-sentences of 3-6 English phrase entries of a Ding dictionary (deterministic per seed)."""
    pool = list(_phrase_pool(str(path)))
    rng = random.Random(seed)
    rng.shuffle(pool)
    out: list[str] = []
    i = 0
    while len(out) < n:
        k = rng.randint(3, 6)
        if i + k > len(pool):
            rng.shuffle(pool)
            i = 0
        line = ", ".join(pool[i : i + k])
        i += k
        line = line[0].upper() + line[1:] + "."
        if line not in held:
            out.append(line)
    return out


class HeldOut:
    """Held-out sentences, as a ``line in held`` test: true for a held sentence itself and for a line that
    contains one of ``MIN_WORDS`` words or more (compared as lower-case words, punctuation ignored)."""

    MIN_WORDS = 4

    def __init__(self, sentences: Iterable[str]) -> None:
        self.exact = set(sentences)
        # every long held sentence under its first MIN_WORDS words: a line is checked at each of its word
        # positions by one dictionary lookup, not against every held sentence
        self.by_start: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
        for sentence in self.exact:
            w = tuple(_WORDS.findall(sentence.lower()))
            if len(w) >= self.MIN_WORDS:
                self.by_start.setdefault(w[: self.MIN_WORDS], []).append(w)

    def __contains__(self, line: object) -> bool:
        if line in self.exact:
            return True
        if not self.by_start or not isinstance(line, str):
            return False
        w = tuple(_WORDS.findall(line.lower()))
        k = self.MIN_WORDS
        return any(w[i : i + len(c)] == c for i in range(len(w) - k + 1) for c in self.by_start.get(w[i : i + k], ()))


def _usable(line: str) -> bool:
    return _LINE_WORDS[0] <= len(line.split()) <= _LINE_WORDS[1] and bool(_PLAIN.fullmatch(line))


@functools.lru_cache(maxsize=2)
def wordnet_examples(path: str = str(WORDNET_DIR)) -> tuple[str, ...]:
    """The quoted usage examples in WordNet's glosses (``data.noun`` ... ``data.adv``), sorted, usable lines only."""
    out: set[str] = set()
    for f in _wordnet_files(path):
        with f.open(encoding="latin-1") as fh:
            for line in fh:
                if line.startswith("  ") or " | " not in line:  # the licence header, or no gloss
                    continue
                for quoted in _QUOTED.findall(line.split(" | ", 1)[1]):
                    t = _clean(quoted)
                    if _usable(t):
                        out.add(t)
    return tuple(sorted(out))


@functools.lru_cache(maxsize=2)
def fortune_sentences(path: str = str(FORTUNES_DIR)) -> tuple[str, ...]:
    """The sentences of the fortune databases in ``path`` (its files; the ``.dat`` indexes and ``.u8`` links
    skipped), attributions ("-- Author") dropped, sorted, usable lines only."""
    out: set[str] = set()
    for f in _fortune_files(path):
        for entry in f.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            text = _ATTRIBUTION.sub("", " ".join(entry.split()))
            for sentence in _SENTENCE_END.split(text):
                t = _clean(sentence)
                if _usable(t):
                    out.add(t)
    return tuple(sorted(out))


def _wordnet_files(path: str | Path) -> list[Path]:
    files = sorted(Path(path).glob("data.*"))
    if not files:
        raise FileNotFoundError(f"{path}: WordNet's data files are missing (apt-get install wordnet-base)")
    return files


def _fortune_files(path: str | Path) -> list[Path]:
    """The databases in ``path``: its files less the ``.dat`` indexes and the ``.u8`` links."""
    d = Path(path)
    files = (
        sorted(f for f in d.iterdir() if f.is_file() and not f.is_symlink() and f.suffix not in (".dat", ".u8"))
        if d.is_dir()
        else []
    )
    if not files:
        raise FileNotFoundError(f"{path}: the fortune databases are missing (apt-get install fortunes-min fortunes)")
    return files


def _check_source(src: str) -> None:
    """What a source can get wrong before it is read: an unknown source name, a package's missing data, a
    missing file; each raised naming it."""
    if src in SOURCES:
        if src.startswith("trans-de-en:") and not Path(DEFAULT_SENTENCES).is_file():
            raise FileNotFoundError(_DING_MISSING.format(DEFAULT_SENTENCES))
        if src == "wordnet:examples":
            _wordnet_files(WORDNET_DIR)
        if src == "fortunes:sentences":
            _fortune_files(FORTUNES_DIR)
        return
    if ":" in src and not Path(src).exists() and src.split(":", 1)[0] in _FAMILIES:
        raise ValueError(f"model.lexicon_text: unknown source {src!r}; known: {list(SOURCES)} or a text file")
    if not Path(src).expanduser().is_file():
        raise FileNotFoundError(
            f"model.lexicon_text: {Path(src).expanduser()} is not a file (expected one English line per line, or one of {list(SOURCES)})"
        )


def check_sources(sources: Sequence[str]) -> None:
    """Fail now, not after synthesis and encoding, where ``lexicon_lines`` would fail on these sources."""
    for src in sources:
        _check_source(src)


def lexicon_lines(sources: Sequence[str], held: set[str] | HeldOut, *, seed: int = 0) -> list[str]:
    """The lines of ``sources`` (see the module docstring) minus ``held`` (its sentences and the lines that
    contain one, ``HeldOut``), in order. A missing file or an unknown source name is an error naming it."""
    held = held if isinstance(held, HeldOut) else HeldOut(held)
    lines: list[str] = []
    for src in sources:
        _check_source(src)
        if src == "trans-de-en:sentences":
            lines += [s for s, _ in load_sentences(None) if s not in held]
        elif src == "trans-de-en:phrases":
            lines += phrase_lines(PHRASE_LINES, held, seed=seed)
        elif src == "wordnet:examples":
            lines += [s for s in wordnet_examples() if s not in held]
        elif src == "fortunes:sentences":
            lines += [s for s in fortune_sentences() if s not in held]
        else:  # a text file (_check_source found it)
            with Path(src).expanduser().open(encoding="utf-8") as f:
                lines += [t for t in (_clean(ln) for ln in f) if t and t not in held]
    return lines

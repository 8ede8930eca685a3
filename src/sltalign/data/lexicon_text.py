"""English text for the phone head's pronunciation lexicon (``connectors.phones.Lexicon``), and clip voices.

The lexicon knows the words of the text it reads, so the text decides which words a phone-head connector can
write. Sources (``model.lexicon_text`` in a training config), each one of:

- ``trans-de-en:sentences``: the English sentences of Debian's trans-de-en (what ``sltalign data synth``
  speaks by default), 3-40 words, cleaned as the synthesiser cleans them;
- ``trans-de-en:phrases``: pseudo-sentences of 3-6 English phrase entries of the same dictionary ("Carpenter's
  plane, credit point, sales policy, at legal interest."): ~60k lines of words the sentences lack;
- a path: a UTF-8 file, one line of English text per line.

Every sentence of the held-out manifests (dev, test) is removed from all sources, sentence by sentence (long
clips join several sentences; the synthesiser's record beside each clip lists them), so a dev or test score
never reads a lexicon built from its own references' sources.
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

SOURCES = ("trans-de-en:sentences", "trans-de-en:phrases")
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
        raise FileNotFoundError(f"{p}: the Ding dictionary is missing (apt-get install trans-de-en)")
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


def phrase_lines(n: int, held: set[str], *, seed: int = 0, path: str | Path = DEFAULT_SENTENCES) -> list[str]:
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


def lexicon_lines(sources: Sequence[str], held: set[str], *, seed: int = 0) -> list[str]:
    """The lines of ``sources`` (see the module docstring) minus ``held``, in order. A missing file or an
    unknown source name is an error naming it."""
    lines: list[str] = []
    for src in sources:
        if src == "trans-de-en:sentences":
            lines += [s for s, _ in load_sentences(None) if s not in held]
        elif src == "trans-de-en:phrases":
            lines += phrase_lines(PHRASE_LINES, held, seed=seed)
        elif ":" in src and not Path(src).exists() and src.split(":", 1)[0] == "trans-de-en":
            raise ValueError(f"model.lexicon_text: unknown source {src!r}; known: {list(SOURCES)} or a text file")
        else:
            p = Path(src).expanduser()
            if not p.is_file():
                raise FileNotFoundError(
                    f"model.lexicon_text: {p} is not a file (expected one English line per line, or one of {list(SOURCES)})"
                )
            with p.open(encoding="utf-8") as f:
                lines += [t for t in (_clean(ln) for ln in f) if t and t not in held]
    return lines

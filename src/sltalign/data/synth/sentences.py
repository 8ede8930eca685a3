"""English sentences for the synthetic corpus: Debian's trans-de-en dictionary or a plain file (+ translations)."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["DEFAULT_SENTENCES", "ding_sentences", "load_sentences"]

#: English sentences: the Ding dictionary of Debian's trans-de-en ("german :: english" per line)
DEFAULT_SENTENCES = Path("/usr/share/trans/de-en")

_ANNOTATION = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "})


def _clean(text: str) -> str:
    return " ".join(_ANNOTATION.sub(" ", text).translate(_QUOTES).split())


def ding_sentences(path: str | os.PathLike) -> list[str]:
    """English sentences of a Ding dictionary file (Debian trans-de-en): ``german :: english`` per line.

    The English side holds ``|``-separated entries of ``;``-separated alternatives; ``{...}`` and ``[...]``
    annotations are removed. Only whole sentences are kept (a capital first letter, a final ``.``, ``!`` or
    ``?``, no ``/`` alternatives or parenthesised glosses); dictionary phrases are not sentences.
    """
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or "::" not in line:
                continue
            english = line.split("::", 1)[1]
            if "." not in english and "!" not in english and "?" not in english:
                continue
            for entry in english.split("|"):
                for alt in entry.split(";"):
                    # cheap tests first: 200k lines hold ~550k alternatives, few of them sentences
                    if "{" in alt or "[" in alt:
                        alt = _ANNOTATION.sub(" ", alt)
                    s = alt.strip()
                    if s[:1].isupper() and s[-1:] in ".!?" and "/" not in s and "(" not in s and ")" not in s:
                        out.append(_clean(s))
    return out


def load_sentences(
    path: str | os.PathLike | None = None,
    *,
    translations: str | os.PathLike | None = None,
    min_words: int = 3,
    max_words: int = 40,
) -> list[tuple[str, str | None]]:
    """(English sentence, human translation or None) pairs: cleaned, filtered by length, first copy kept.

    ``path`` is a plain file (one sentence per line) or a Ding dictionary (detected by its `` :: `` lines);
    None reads Debian's trans-de-en. ``translations`` must have exactly as many lines as ``path``.
    """
    p = Path(path).expanduser() if path else DEFAULT_SENTENCES
    if not p.is_file():
        if path is None:
            raise FileNotFoundError(
                f"default English sentences not found at {p}: install the Debian package trans-de-en "
                f"(apt-get install trans-de-en) or pass sentences=<file with one English sentence per line>"
            )
        raise FileNotFoundError(f"sentences file not found: {p}")
    with p.open(encoding="utf-8") as f:
        head = [next(f, "") for _ in range(50)]
    is_ding = sum(" :: " in line for line in head) > len([h for h in head if h.strip()]) // 2
    if is_ding:
        if translations:
            raise ValueError(f"{p} is a Ding dictionary; translations must pair with a plain sentence file")
        raw: list[tuple[str, str | None]] = [(s, None) for s in ding_sentences(p)]
    else:
        english = p.read_text(encoding="utf-8").splitlines()
        targets: list[str | None] = [None] * len(english)
        if translations:
            t = Path(translations).expanduser()
            if not t.is_file():
                raise FileNotFoundError(f"translations file not found: {t}")
            targets = list(t.read_text(encoding="utf-8").splitlines())
            if len(targets) != len(english):
                raise ValueError(f"{t} has {len(targets)} lines but {p} has {len(english)}; expected line-parallel files")
        raw = [(_clean(e), _clean(x) if x is not None else None) for e, x in zip(english, targets)]
    seen: set[str] = set()
    pairs = []
    for en, tr in raw:
        n = len(en.split())
        if not (min_words <= n <= max_words) or en in seen or (translations and not tr):
            continue
        seen.add(en)
        pairs.append((en, tr))
    if not pairs:
        raise ValueError(f"{p}: no sentences of {min_words}-{max_words} words")
    return pairs

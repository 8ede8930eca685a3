"""A human-translated domain corpus from gettext catalogs: software interface strings, English -> pt-BR.

Every Debian package with a user interface installs its translators' work as compiled gettext catalogs,
``/usr/share/locale/<locale>/LC_MESSAGES/<domain>.mo``: English message ids paired with human translations.
For the connector-as-domain-adapter experiment (bench/domain_adapter.py) they are a domain the MT was not tuned
for (menu items, option help, error messages) with references written by people, not by a machine.

    pairs = gettext_pairs(locale="pt_BR")             # [GettextPair(domain, english, target), ...]
    write_parallel(pairs, out_dir)                     # en.txt, <lang>.txt (line-parallel), sources.tsv

Then ``sltalign data synth --sentences DIR/en.txt --translations DIR/pt.txt`` speaks the English side and
keeps the human targets (manifests mark them ``translation_source: "human"``).

What is kept (each rule has a reason a TTS + MT corpus needs): translated, non-fuzzy, singular entries
(plural forms pair one English string with several targets); no printf/brace/shell placeholders, markup,
accelerator marks or escapes (TTS would read ``%s`` aloud and the reference would not contain what was said);
3-30 words starting with a capital letter; the first copy of each English string (catalogs of one program
family repeat strings). Entries come in catalog order (a .mo file is sorted by msgid). Domains that are name lists rather than interface text (ISO code tables, keyboard
layout names) are left out by default. Catalogs are read with polib; the order is deterministic (domains
sorted by name, entries in catalog order).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import polib

__all__ = ["DEFAULT_ROOT", "DEFAULT_EXCLUDE", "GettextPair", "read_catalog", "gettext_pairs", "write_parallel"]

#: where Debian installs compiled catalogs
DEFAULT_ROOT = Path("/usr/share/locale")
#: domains (fnmatch patterns) that list names (countries, languages, currencies, keyboard layouts), not UI text
DEFAULT_EXCLUDE: tuple[str, ...] = ("iso_*", "xkeyboard-config")

# Anything a speaker would not say as written, or that the reference would not contain as spoken:
# printf (%s, %1$d), brace ({name}) and shell ($VAR) placeholders, markup (<b>), accelerators (_File, &File),
# escapes and control characters, URLs, paths and option syntax.
_UNSPEAKABLE = re.compile(r"[%{}<>\\$@|_&=*#\[\]~^`/]|[\n\t\r]|https?:|--|\.\.\.|…")
_LETTER = re.compile(r"[A-Za-z]")


@dataclass(frozen=True)
class GettextPair:
    domain: str  # catalog name (the .mo/.po file stem), e.g. "coreutils"
    english: str  # msgid
    target: str  # msgstr, written by the package's translators


def _norm(text: str) -> str:
    return " ".join(text.split())


def read_catalog(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(msgid, msgstr) of the translated, non-fuzzy, non-obsolete singular entries of a .mo or .po file.

    Raises ValueError naming the file when polib cannot parse it.
    """
    p = Path(path)
    try:
        cat = polib.mofile(str(p)) if p.suffix == ".mo" else polib.pofile(str(p))
    except (OSError, ValueError, UnicodeDecodeError, IndexError) as e:  # polib raises IOError/ValueError on junk
        raise ValueError(f"{p}: not a readable gettext catalog ({e})") from e
    out = []
    for e in cat:
        # .mo files never hold fuzzy entries (msgfmt drops them); .po entries carry the flag
        if e.obsolete or getattr(e, "fuzzy", False) or e.msgid_plural or not e.msgid or not e.msgstr:
            continue
        out.append((e.msgid, e.msgstr))
    return out


def _speakable(english: str, target: str, min_words: int, max_words: int) -> bool:
    if _UNSPEAKABLE.search(english) or _UNSPEAKABLE.search(target):
        return False
    if not (min_words <= len(english.split()) <= max_words) or not english[:1].isupper():
        return False
    # an "translation" equal to the English (untranslated, or a proper name) teaches nothing about pt-BR
    return bool(_LETTER.search(english)) and _norm(english).casefold() != _norm(target).casefold()


def gettext_pairs(
    root: str | os.PathLike = DEFAULT_ROOT,
    locale: str = "pt_BR",
    *,
    domains: Sequence[str] | None = None,
    exclude: Iterable[str] = DEFAULT_EXCLUDE,
    min_words: int = 3,
    max_words: int = 30,
) -> list[GettextPair]:
    """Speakable English -> ``locale`` pairs from ``root/<locale>/LC_MESSAGES/*.mo`` (and ``*.po``).

    ``domains`` keeps only those catalogs (by stem); ``exclude`` drops catalogs matching any fnmatch
    pattern. Raises FileNotFoundError when the locale directory or the named domains are missing, and
    ValueError when nothing speakable is left.
    """
    if min_words < 1 or max_words < min_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words} and {max_words}")
    d = Path(root).expanduser() / locale / "LC_MESSAGES"
    if not d.is_dir():
        raise FileNotFoundError(
            f"no gettext catalogs for locale {locale!r}: {d} does not exist (packages install their translations "
            f"there; on Debian make sure dpkg does not exclude /usr/share/locale)"
        )
    files = sorted(p for p in d.iterdir() if p.suffix in (".mo", ".po") and p.is_file())
    by_stem: dict[str, Path] = {}
    for p in files:  # a domain shipped both compiled and as source: read the compiled one (what programs use)
        if p.stem not in by_stem or p.suffix == ".mo":
            by_stem[p.stem] = p
    if domains is not None:
        missing = sorted(set(domains) - set(by_stem))
        if missing:
            raise FileNotFoundError(f"{d}: no catalog for domain(s) {missing}; found {sorted(by_stem)}")
        by_stem = {k: v for k, v in by_stem.items() if k in set(domains)}
    excluded = tuple(exclude)
    seen: set[str] = set()
    pairs = []
    for stem in sorted(by_stem):
        if any(fnmatch(stem, pat) for pat in excluded):
            continue
        for msgid, msgstr in read_catalog(by_stem[stem]):
            en, tgt = _norm(msgid), _norm(msgstr)
            if en in seen or not _speakable(msgid, msgstr, min_words, max_words):  # raw: tabs/newlines count
                continue
            seen.add(en)
            pairs.append(GettextPair(stem, en, tgt))
    if not pairs:
        raise ValueError(f"{d}: no speakable translated strings of {min_words}-{max_words} words in {len(by_stem)} catalog(s)")
    return pairs


def write_parallel(pairs: Sequence[GettextPair], out_dir: str | os.PathLike, *, target_lang: str = "pt") -> dict[str, Path]:
    """Write ``en.txt`` and ``<target_lang>.txt`` (line-parallel) and ``sources.tsv`` (domain per line)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"en": out / "en.txt", target_lang: out / f"{target_lang}.txt", "sources": out / "sources.tsv"}
    rows = {
        "en": [p.english for p in pairs],
        target_lang: [p.target for p in pairs],
        "sources": ["line\tdomain"] + [f"{i}\t{p.domain}" for i, p in enumerate(pairs, start=1)],
    }
    for key, lines in rows.items():
        tmp = paths[key].with_suffix(paths[key].suffix + ".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, paths[key])  # atomic: a crash never leaves half a file that synth would read
    return paths

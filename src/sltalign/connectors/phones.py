"""A CTC head over phones, read out through a pronunciation lexicon.

The tied head (``compress.TiedCTCHead``) asks the connector to recognise 32k MT tokens, and most of its errors
are rare words it heard too few times to learn (docs/RESULTS.md, "error analysis"). Phones split the job:

1. hearing: the connector emits ~100 phone units (eSpeak NG's phonemes, the word boundary ``WORD`` among
   them), each heard thousands of times in a few hours of speech; CTC targets are eSpeak's phonemes of the
   transcript in the accent the clip was spoken in (``accent_for``), so for synthetic speech they are exactly
   what the synthesiser said;
2. spelling: a ``Lexicon`` read off eSpeak's phonemisation of English text (no training) maps each phone
   word to its most frequent written word, with every word of the text also read alone in each accent (a
   line is read in one accent only); a phone word never seen is read as the nearest entry by edit
   distance over phones, or as two entries when it splits exactly into two (a missed word boundary) and no
   entry is within one phone. Text is cheap, so the lexicon knows words no clip ever said.

The written transcript reaches the MT through its own tokenizer (hard compression through text, as for the
word-pieces head: ``AlignedST.bridge``). On the demo's data it more than doubled the tied head's
BLEU on the synthetic test at equal clips and minutes (figures: docs/RESULTS.md, "Phones in the package"); on real
voices it is only as good as the training voices are varied.

    out (B, S, D_m) -> logits (B, S, U + 1), U phone units, blank last (index U)

Needs ~20 connector outputs per second or more (English runs at ~12-15 phones/s): e.g. STE with one conv
stage (25/s from Whisper's 50 frames/s). The unit inventory and the lexicon are part of the head: they are
written beside the weights in checkpoints (``ctc_phones.json``), so a checkpoint always reads with the
lexicon it was trained with. The read-out is greedy (the argmax path, each phone word spelled as its nearest
lexicon entry) or a beam search that spells lexicon entries only, weighed by a word trigram over the
lexicon's text (``lexicon_search.py``, ``word_lm.py``; the head's ``search`` options, the LM's text in
``ctc_phones_lm.txt.gz``). Phonemisation uses ``phonemizer`` over the eSpeak NG library (the system's
``libespeak-ng``, else the one of the ``espeakng-loader`` wheel).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .ctc_head import CTCHead, CTCHeadDataError, TargetFn, register_head
from .lexicon_search import LexiconSearch, SearchOptions, available

#: file name of the units + lexicon inside a checkpoint directory
PHONES_FILE = "ctc_phones.json"
#: file name of the word LM's text (one sentence per line, gzip) beside it, when the head has one
LM_FILE = "ctc_phones_lm.txt.gz"
#: one search at a time: a flashlight decoder keeps its hypotheses in itself
_search_lock = threading.Lock()
#: the word-boundary unit (a CTC class like any phone)
WORD = "|"
#: eSpeak NG English accents phonemes are read in; other voices (Flite, Festival, human) count as en-us
ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
DEFAULT_ACCENT = "en-us"
_backends: dict[str, Any] = {}
#: (accent, text) -> phones of this process's earlier calls; eSpeak is deterministic, so a memo is exact
_memo: dict[tuple[str, str], tuple[str, ...]] = {}
_MEMO_MAX = 500_000
log = logging.getLogger(__name__)


def accent_for(backend: str | None, voice: str | None) -> str:
    """The eSpeak accent whose phonemes match a clip's voice: eSpeak voices ("en-gb-scotland+m3") by their
    language (eSpeak's plain "en" is British), anything else (Flite, Festival, unknown, real) en-us."""
    if backend in (None, "espeak", "espeak-cli") and voice:
        base = voice.split("+")[0]
        base = "en-gb" if base == "en" else base
        if base in ACCENTS:
            return base
    return DEFAULT_ACCENT


def _backend(accent: str) -> Any:
    """phonemizer's eSpeak backend for one accent, made once per process."""
    if accent not in _backends:
        from phonemizer.backend import EspeakBackend

        # phonemizer warns about every line whose word count changed (numbers, abbreviations): the lexicon
        # skips those lines on its own, so only errors are worth showing
        quiet = logging.getLogger("sltalign.phonemizer")
        quiet.setLevel(logging.ERROR)
        kw = dict(preserve_punctuation=False, with_stress=False, language_switch="remove-flags", logger=quiet)
        try:
            _backends[accent] = EspeakBackend(accent, **kw)
        except RuntimeError:
            # no system libespeak-ng: the espeakng-loader wheel's library and voice data
            import espeakng_loader
            from phonemizer.backend.espeak.wrapper import EspeakWrapper

            os.environ.setdefault("ESPEAK_DATA_PATH", espeakng_loader.get_data_path())
            EspeakWrapper.set_library(espeakng_loader.get_library_path())
            _backends[accent] = EspeakBackend(accent, **kw)
    return _backends[accent]


def phonemize(texts: Sequence[str], accents: Sequence[str] | str = DEFAULT_ACCENT) -> list[list[str]]:
    """English texts -> phone lists with ``WORD`` between words, each text in its own eSpeak accent.

    Deterministic (eSpeak's rules and dictionary). An accent outside ``ACCENTS`` is an error naming it."""
    if isinstance(accents, str):
        accents = [accents] * len(texts)
    if len(accents) != len(texts):
        raise ValueError(f"phonemize: {len(texts)} texts but {len(accents)} accents")
    bad = sorted(set(accents) - set(ACCENTS))
    if bad:
        raise ValueError(f"phonemize: unknown accent(s) {bad}; known: {list(ACCENTS)}")
    from phonemizer.separator import Separator

    sep = Separator(phone=" ", word=f" {WORD} ", syllable="")
    out: list[list[str]] = [list(_memo.get((accents[i], t), ())) for i, t in enumerate(texts)]
    for acc in sorted(set(accents)):
        # texts already read in this accent come from the memo (training reads its transcripts twice: for
        # the lexicon and for the targets)
        idx = [i for i, a in enumerate(accents) if a == acc and texts[i].strip() and (a, texts[i]) not in _memo]
        if not idx:
            continue
        res = _backend(acc).phonemize([texts[i] for i in idx], separator=sep, strip=True, njobs=1)
        if len(_memo) + len(idx) > _MEMO_MAX:
            _memo.clear()
        for i, s in zip(idx, res):
            units = s.split()
            while units and units[-1] == WORD:
                units.pop()
            while units and units[0] == WORD:
                units.pop(0)
            _memo[(acc, texts[i])] = tuple(units)
            out[i] = units
    return out


class Lexicon:
    """Phone words -> written words, read off phonemised text (no training).

    ``texts`` and their phone lists ``phones`` (from ``phonemize``): each line whose phone words (between
    ``WORD`` marks) pair one to one with its written words adds (phone word -> written word) counts; a phone
    word reads as its most frequent written word (ties: the first seen). Lines that do not pair (numbers,
    abbreviations eSpeak spells out) are skipped. Deterministic for the same lines in the same order.
    """

    _WORDS = re.compile(r"[A-Za-z0-9']+")
    #: what eSpeak reads as more than one phone word: digits, abbreviations in capitals
    _SPELLED = re.compile(r"[0-9]|\b[A-Z]{2,}\b")

    def __init__(self, table: Mapping[tuple[str, ...], str]) -> None:
        if not table:
            raise ValueError("Lexicon: empty table (no line of the text paired its words with its phone words)")
        self.table = dict(table)
        #: lines of text the table was counted from (``from_text``); 0 when built from a table
        self.lines_used = 0
        #: entries from words read alone (``from_text(word_accents=...)``)
        self.words_added = 0
        self._codes: dict[str, str] = {}
        self._by_code = {self._code(k): w for k, w in self.table.items()}
        self._keys = list(self._by_code)

    @classmethod
    def from_text(
        cls,
        texts: Sequence[str],
        phones: Sequence[Sequence[str]],
        accents: Sequence[str] | str = DEFAULT_ACCENT,
        *,
        word_accents: Sequence[str] = (),
    ) -> Lexicon:
        """Count (phone word -> written word) pairs over phonemised lines (``phones[i]`` is ``texts[i]`` read
        in ``accents[i]``).

        eSpeak joins some function words into one phone word ("in the" -> "ɪnðə"), so a line can have fewer
        phone words than words; such lines are aligned by each word's own phonemes (one phone word takes one
        to three words, the split closest in edit distance) and the joined words become one entry, which is
        what a recogniser trained on eSpeak's phonemes hears. Lines with digits or capitalised abbreviations
        are skipped (eSpeak reads "42" or "UN" as several phone words, which could offset a join and pair the
        wrong words), and so are lines with more phone words than words.

        ``word_accents``: also read every word of the text alone in each of these accents, and add the phone
        words no line gave as entries of their most frequent written form. Each line is read in one accent, so
        without them a word the text has is missing in the other accents (in en-us: "answered", "muted",
        "locate", heard then as the nearest entry: "answer", "suited", "low cut"); lines keep precedence."""
        if len(texts) != len(phones):
            raise ValueError(f"Lexicon.from_text: {len(texts)} texts but {len(phones)} phone lists")
        if isinstance(accents, str):
            accents = [accents] * len(texts)
        lines = [
            ([] if cls._SPELLED.search(t) else cls._WORDS.findall(t), split_words(p), a)
            for t, p, a in zip(texts, phones, accents)
        ]
        # each word of a joined line in isolation, phonemised once per (word, accent)
        need = sorted({(w.lower(), a) for words, groups, a in lines if 0 < len(groups) < len(words) for w in words})
        iso_ph = phonemize([w for w, _ in need], [a for _, a in need]) if need else []
        iso = {k: tuple(p for p in ph if p != WORD) for k, ph in zip(need, iso_ph)}
        counts: dict[tuple[str, ...], Counter] = defaultdict(Counter)
        kept = 0
        for words, groups, acc in lines:
            if not words or not groups or len(groups) > len(words):
                continue
            spans = (
                _align(words, groups, [iso.get((w.lower(), acc), ()) for w in words])
                if len(groups) < len(words)
                else [[w] for w in words]
            )
            if spans is None:
                continue
            kept += 1
            for k, (span, g) in enumerate(zip(spans, groups)):
                # a line's first word is capitalised by position, not by spelling: count it lower-cased
                if k == 0 and span[0] != "I" and not (len(span[0]) > 1 and span[0].isupper()):  # "I", "UN" keep case
                    span = [span[0].lower(), *span[1:]]
                counts[g][" ".join(span)] += 1
        table = {k: c.most_common(1)[0][0] for k, c in counts.items()}
        n_lines = len(table)
        if word_accents:
            for key, word in cls._isolated_words(texts, word_accents).items():
                table.setdefault(key, word)
        lex = cls(table)
        lex.lines_used = kept
        lex.words_added = len(table) - n_lines
        return lex

    @classmethod
    def _isolated_words(cls, texts: Sequence[str], accents: Sequence[str]) -> dict[tuple[str, ...], str]:
        """Phone word -> written word from each word of ``texts`` read alone in each of ``accents`` (the most
        frequent written form of a phone word wins; a line's first word counts lower-cased, as in lines)."""
        forms: Counter = Counter()
        for t in texts:
            for k, w in enumerate(cls._WORDS.findall(t)):
                if not cls._SPELLED.search(w):
                    forms[w.lower() if k == 0 and w != "I" else w] += 1
        words = list(forms)
        out: dict[tuple[str, ...], Counter] = defaultdict(Counter)
        for acc in accents:
            for w, ph in zip(words, phonemize(words, acc)):
                groups = split_words(ph)
                if len(groups) == 1:  # eSpeak reads some words as two (hyphens, spelled parts): not one entry
                    out[groups[0]][w] += forms[w]
        return {k: c.most_common(1)[0][0] for k, c in out.items()}

    def _code(self, key: Sequence[str]) -> str:
        """A phone word as one character per unit (rapidfuzz measures edit distance over characters)."""
        return "".join(self._codes.setdefault(u, chr(0xE000 + len(self._codes))) for u in key)

    def read_word(self, key: Sequence[str]) -> list[str]:
        """One phone word -> its written word (or two, for a missed word boundary)."""
        key = tuple(key)
        if key in self.table:
            return [self.table[key]]
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        code = self._code(key)
        best_code, dist, _ = process.extractOne(code, self._keys, scorer=Levenshtein.distance)
        if dist >= 2:  # two exact entries (a missed word mark) beat an entry two or more phones away
            for i in range(1, len(code)):
                if code[:i] in self._by_code and code[i:] in self._by_code:
                    return [self._by_code[code[:i]], self._by_code[code[i:]]]
        return [self._by_code[best_code]]

    def read(self, phones: Sequence[str]) -> str:
        """A phone sequence -> a sentence: its words, the first capitalised, a full stop ("" for no words)."""
        return self.sentence([w for g in split_words(phones) for w in self.read_word(g)])

    @staticmethod
    def sentence(words: Sequence[str]) -> str:
        """Written words -> a sentence: the first capitalised, a full stop ("" for no words)."""
        if not words:
            return ""
        text = " ".join(words)
        return text[:1].upper() + text[1:] + "."

    def to_json(self) -> list[list[str]]:
        """[[phone word (units joined by spaces), written word], ...]: what ``from_json`` reads back."""
        return [[" ".join(k), w] for k, w in self.table.items()]

    @classmethod
    def from_json(cls, rows: Sequence[Sequence[str]]) -> Lexicon:
        try:
            return cls({tuple(k.split()): w for k, w in rows})
        except (TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"Lexicon: expected rows of [phone word, written word], got {str(rows)[:80]!r} ({e})") from e


def _align(words: Sequence[str], groups: Sequence[tuple[str, ...]], iso: Sequence[tuple[str, ...]]) -> list[list[str]] | None:
    """Split ``words`` into len(groups) runs of 1-3 words, in order, minimising the summed edit distance
    between each phone word and its run's isolated phonemes; None when no split exists."""
    from rapidfuzz.distance import Levenshtein

    n, m = len(words), len(groups)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(m + 1)]  # best[j][i]: first j groups take the first i words
    back = [[0] * (n + 1) for _ in range(m + 1)]
    best[0][0] = 0.0
    for j in range(1, m + 1):
        for i in range(j, min(n, 3 * j) + 1):
            for k in (1, 2, 3):
                if i - k < j - 1 or best[j - 1][i - k] == inf:
                    continue
                run = [p for w in iso[i - k : i] for p in w]
                cost = best[j - 1][i - k] + Levenshtein.distance(groups[j - 1], run)
                if cost < best[j][i]:
                    best[j][i], back[j][i] = cost, k
    if best[m][n] == inf:
        return None
    spans: list[list[str]] = []
    i = n
    for j in range(m, 0, -1):
        k = back[j][i]
        spans.append(list(words[i - k : i]))
        i -= k
    return spans[::-1]


def split_words(phones: Sequence[str]) -> list[tuple[str, ...]]:
    """Phone sequence -> phone words (tuples), split at ``WORD``; empty words are dropped."""
    groups: list[tuple[str, ...]] = []
    cur: list[str] = []
    for p in phones:
        if p == WORD:
            if cur:
                groups.append(tuple(cur))
            cur = []
        else:
            cur.append(p)
    if cur:
        groups.append(tuple(cur))
    return groups


@register_head
class PhoneCTCHead(CTCHead):
    """Linear CTC head over phone units (blank last), carrying the unit inventory and the lexicon.

    ``units``: the phone units (``WORD`` among them), in class order; ``lexicon``: how heard phones are
    spelled; ``embed_dim``: the width of the connector output it reads (D_m); ``search``: how the posteriors
    are read (default greedy); ``lm_text``: the sentences of the word LM the search weighs (needed when
    ``search.lm_weight`` > 0).
    """

    KIND, TEXT, FILE = "phones", True, PHONES_FILE

    def __init__(
        self,
        *,
        embed_dim: int,
        units: Sequence[str],
        lexicon: Lexicon,
        search: SearchOptions | None = None,
        lm_text: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.search = search or SearchOptions()
        self.lm_text = [t.replace("\n", " ") for t in lm_text]  # one sentence per line in LM_FILE
        if self.search.beam and self.search.lm_weight > 0 and not self.lm_text:
            raise ValueError("PhoneCTCHead: search.lm_weight > 0 needs the LM's sentences (lm_text)")
        self._searcher: LexiconSearch | None = None  # built on first use (LM + trie: ~15 s on one core)
        if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
            raise ValueError(f"PhoneCTCHead: embed_dim must be a positive integer, got {embed_dim!r}")
        units = list(units)
        if len(set(units)) != len(units) or WORD not in units or any(not isinstance(u, str) or not u or " " in u for u in units):
            raise ValueError(
                f"PhoneCTCHead: units must be distinct non-empty strings without spaces, {WORD!r} among them; got {units[:10]}..."
            )
        self.units = units
        self.unit_ids = {u: i for i, u in enumerate(units)}
        self.lexicon = lexicon
        self.embed_dim = embed_dim
        self.vocab_size = len(units)
        self.proj = nn.Linear(embed_dim, self.vocab_size + 1)

    def config(self) -> dict[str, int | str]:
        return {"kind": "phones", "embed_dim": self.embed_dim, "vocab_size": self.vocab_size}

    def forward(self, out: torch.Tensor, embedding_matrix: torch.Tensor | None = None) -> torch.Tensor:
        """out (B, S, D_m) -> logits (B, S, U + 1), blank = index U. ``embedding_matrix`` is ignored (the head
        is not tied); it is accepted so all heads are called alike."""
        if out.shape[-1] != self.embed_dim:
            raise ValueError(f"PhoneCTCHead: out has width {out.shape[-1]}, the head was built for embed_dim={self.embed_dim}")
        return self.proj(out)

    def encode(self, texts: Sequence[str], accents: Sequence[str] | str = DEFAULT_ACCENT) -> list[list[int]]:
        """Transcripts -> phone-unit ids (CTC targets). Phones the head has no class for (a reused head, new
        data) are dropped and counted in a warning that names the first text with one."""
        phones = phonemize(texts, accents)
        unknown = [(i, p) for i, seq in enumerate(phones) for p in seq if p not in self.unit_ids]
        if unknown:
            i, p = unknown[0]
            log.warning(
                "%d phones of %d texts have no class in the phone head and are left out of the targets "
                "(first: %r in text %d, %r)",
                len(unknown),
                len({i for i, _ in unknown}),
                p,
                i,
                texts[i][:60],
            )
        return [[self.unit_ids[p] for p in seq if p in self.unit_ids] for seq in phones]

    def phones(self, ids: Sequence[Sequence[int]]) -> list[list[str]]:
        """Unit ids -> unit strings."""
        return [[self.units[int(i)] for i in row] for row in ids]

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Unit ids -> written text through the lexicon (the connector's transcript)."""
        return [self.lexicon.read(row) for row in self.phones(ids)]

    def state(self) -> dict[str, Any]:
        """What ``from_state`` needs besides the weights (JSON): units, lexicon, search options and, when the
        head has a word LM, its sentences (``lm_text``; checkpoints keep those in ``LM_FILE``)."""
        out = {
            "format": "sltalign-phones",
            "units": self.units,
            "lexicon": self.lexicon.to_json(),
            "search": self.search.to_dict(),
        }
        if self.lm_text:
            out["lm_text"] = self.lm_text
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, Any], *, embed_dim: int) -> PhoneCTCHead:
        """The head of ``state()`` (untrained weights: load them after). A state without ``search`` (heads
        made before the search existed) reads greedily, as it did."""
        if not isinstance(state, Mapping) or state.get("format") != "sltalign-phones" or not {"units", "lexicon"} <= set(state):
            raise ValueError("PhoneCTCHead: expected a mapping with format 'sltalign-phones', 'units' and 'lexicon'")
        lm_text = state.get("lm_text", [])
        if not isinstance(lm_text, list) or not all(isinstance(x, str) for x in lm_text):
            raise ValueError("PhoneCTCHead: lm_text must be a list of sentences")
        return cls(
            embed_dim=embed_dim,
            units=state["units"],
            lexicon=Lexicon.from_json(state["lexicon"]),
            search=SearchOptions.from_dict(state.get("search")),
            lm_text=lm_text,
        )

    # -- the read-out ------------------------------------------------------------------------------
    def searcher(self) -> LexiconSearch | None:
        """The lexicon search of ``self.search`` (None: read greedily: beam 0, or flashlight-text missing)."""
        if not self.search.beam or not available():
            return None
        if self._searcher is None:
            from .word_lm import TrigramLM

            t0 = time.perf_counter()
            lm = TrigramLM(self.lm_text) if self.search.lm_weight > 0 else None
            self._searcher = LexiconSearch(units=self.units, lexicon=self.lexicon, options=self.search, word_unit=WORD, lm=lm)
            log.info(
                "phone head: lexicon search ready (beam %d, LM weight %g; %.0f s)",
                self.search.beam,
                self.search.lm_weight,
                time.perf_counter() - t0,
            )
        return self._searcher

    def read_out(self) -> str:
        o = self.search
        if not o.beam:
            return "greedy, each phone word spelled as its nearest lexicon entry"
        lm = f"a word trigram over {len(self.lm_text):,} sentences, weight {o.lm_weight:g}" if o.lm_weight > 0 else "no word LM"
        return f"lexicon search (beam {o.beam}, {lm}, word score {o.word_score:g}); greedy where flashlight-text is missing"

    def warm_up(self) -> None:
        self.searcher()

    @torch.no_grad()
    def read_logits(self, logits: torch.Tensor, mask: torch.Tensor, translator: Any) -> list[str]:
        """logits (B, S, U + 1), mask (B, S) -> the transcript of each utterance: greedy, or the lexicon search
        where ``search.beam`` > 0. An utterance the greedy path hears nothing in stays empty; one the search
        spells no word for falls back to the greedy reading."""
        search = self.searcher()
        if search is None:
            return super().read_logits(logits, mask, translator)
        from .compress import ctc_segments

        seg = ctc_segments(logits, mask)  # the greedy path: where it hears nothing, nothing is spelled
        log_probs = torch.log_softmax(logits.detach().float(), -1).cpu().numpy()
        lengths = mask.sum(1).tolist()
        out = []
        with _search_lock:
            for i in range(mask.shape[0]):
                if bool(seg.no_speech[i]):
                    out.append("")
                    continue
                words = search(log_probs[i, : int(lengths[i])])
                # the greedy reading (nearest lexicon entries: the slow part, so only where needed)
                out.append(
                    Lexicon.sentence(words)
                    if words
                    else self.read([seg.labels[i, : int(seg.num_segments[i])].tolist()], translator)[0]
                )
        return out

    # -- the CTC-head interface (connectors/ctc_head.py) -------------------------------------------
    @classmethod
    def prepare(cls, *, model_cfg: Any, train_utts: Sequence[Any], held_out: Sequence[str], seed: int) -> dict[str, Any]:
        """Units and lexicon of a new head (``state()``): eSpeak's phonemes of the training transcripts (in each
        clip's accent) and of ``model_cfg.lexicon_text`` (each line in an accent drawn by ``seed``, each word
        also alone in every accent), minus every sentence of the ``held_out`` manifests. Deterministic for the
        same data and seed."""
        from ..data.lexicon_text import held_sentences, lexicon_lines
        from ..data.manifest import read_manifest

        t0 = time.perf_counter()
        held = held_sentences(u for path in held_out for u in read_manifest(path))
        if not model_cfg.lexicon_exclude:
            log.warning(
                "model.lexicon_exclude is empty: only the dev sentences are kept out of the lexicon; name the test "
                "manifest there, or test scores read a lexicon built from their own sentences' sources"
            )
        text = lexicon_lines(model_cfg.lexicon_text, held, seed=seed)
        rng = random.Random(seed)
        text_acc = [rng.choice(ACCENTS) for _ in text]
        text_ph = phonemize(text, text_acc)
        transcripts = [u.transcript or "" for u in train_utts]
        train_acc = clip_accents(train_utts)
        train_ph = phonemize(transcripts, train_acc)
        alone = ACCENTS if getattr(model_cfg, "lexicon_words_alone", True) else ()
        lexicon = Lexicon.from_text(text + transcripts, text_ph + train_ph, text_acc + train_acc, word_accents=alone)
        search = SearchOptions.from_dict(getattr(model_cfg, "phone_search", None))
        # the LM's sentences: the lexicon's text, then the training transcripts it lacks (held-out ones are
        # already out of both)
        seen = set(text)
        lm_text = text + [t for t in dict.fromkeys(transcripts) if t and t not in seen] if search.lm_weight > 0 else []
        head = cls(embed_dim=1, units=build_phone_inventory(train_ph, text_ph), lexicon=lexicon, search=search, lm_text=lm_text)
        log.info(
            "phone head: %d units; lexicon of %d phone words from %d of %d lines and %d from words read alone (%.0f s)",
            head.vocab_size,
            len(lexicon.table) - lexicon.words_added,
            lexicon.lines_used,
            len(text) + len(transcripts),
            lexicon.words_added,
            time.perf_counter() - t0,
        )
        return head.state()

    def data(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.state()))  # as a checkpoint reads it back (lists, not tuples)

    @classmethod
    def from_data(cls, *, embed_dim: int, data: Any) -> PhoneCTCHead:
        if data is None:
            raise ValueError("this CTC head is over phones: its units and lexicon are needed")
        return cls.from_state(data, embed_dim=embed_dim)

    def write_data(self, directory: Path) -> None:
        state = self.state()
        lm_text = state.pop("lm_text", None)
        (Path(directory) / PHONES_FILE).write_text(json.dumps(state, ensure_ascii=False))
        if lm_text:
            with gzip.open(Path(directory) / LM_FILE, "wt", encoding="utf-8", compresslevel=6) as f:
                f.write("\n".join(s.replace("\n", " ") for s in lm_text))

    @classmethod
    def read_data(cls, directory: Path) -> dict[str, Any]:
        f = Path(directory) / PHONES_FILE
        if not f.is_file():
            raise CTCHeadDataError(f"{directory}: its CTC head is over phones but {PHONES_FILE} is missing")
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise CTCHeadDataError(f"{f}: not valid JSON ({e})") from e
        search = data.get("search") if isinstance(data, dict) else None
        if isinstance(search, dict) and search.get("beam") and search.get("lm_weight"):
            lm = Path(directory) / LM_FILE
            if not lm.is_file():
                raise CTCHeadDataError(f"{directory}: its phone head searches with a word LM but {LM_FILE} is missing")
            try:
                with gzip.open(lm, "rt", encoding="utf-8") as fh:
                    data["lm_text"] = fh.read().split("\n")
            except (OSError, EOFError, UnicodeDecodeError) as e:
                raise CTCHeadDataError(f"{lm}: not a readable gzip text file ({e})") from e
        return data

    def targets(self, utts: Sequence[Any], translator: Any) -> TargetFn:
        """CTC targets: phones of each transcript in its clip's accent (``encode``). The tokenizer is called
        once with the transcripts of ``utts`` in order, which it checks."""
        kept = [u for u in utts if u.transcript is not None]
        transcripts = [u.transcript for u in kept]
        accents = clip_accents(kept)

        def tokenize(texts: list[str]) -> list[list[int]]:
            if list(texts) != transcripts:
                raise ValueError("phone targets: expected the transcripts of the training utterances, in order")
            return self.encode(texts, accents)

        return tokenize

    def read(self, ids: Sequence[Sequence[int]], translator: Any) -> list[str]:
        return self.decode(ids)

    @staticmethod
    def check_connector(connector: nn.Module, name: str) -> None:
        """Refuse a connector too coarse for phones (CTC would find no path and learn nothing), naming it."""
        per_10s = int(connector.output_lengths(torch.tensor([10 * WHISPER_FRAMES_PER_SECOND]))[0])
        if per_10s < 10 * MIN_PHONE_RATE:
            raise ValueError(
                f"model.connector: a CTC head over phones (model.ctc_head=phones) needs >= {MIN_PHONE_RATE} connector "
                f"outputs per second; {name!r} as configured gives {per_10s / 10:g}/s. Use model.connector=ste with "
                f"model.connector_preset=phones (25/s)"
            )


#: a phone head needs at least this many connector outputs per second of speech (English runs at ~12-15
#: phones/s, and CTC needs one output per phone, more between repeats); Whisper gives 50 frames/s
MIN_PHONE_RATE, WHISPER_FRAMES_PER_SECOND = 15, 50


def clip_accents(utts: Sequence[Any]) -> list[str]:
    """The eSpeak accent of each utterance's voice (the synthesiser's record beside the clip; else en-us)."""
    from ..data.lexicon_text import clip_voice

    return [accent_for(*clip_voice(u.audio)) for u in utts]


def build_phone_inventory(*phone_lists: Sequence[Sequence[str]]) -> list[str]:
    """Every unit of the phone lists, sorted (``WORD`` always included): the head's classes."""
    return sorted({p for lists in phone_lists for seq in lists for p in seq} | {WORD})

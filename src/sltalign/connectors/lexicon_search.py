"""The phone head's read-out as a beam search that may only spell lexicon entries.

The greedy read-out takes the argmax phone of every connector output, cuts the phones at word marks and
spells each phone word as the nearest lexicon entry. A connector that mishears a phone often still gives the
right one the second-highest posterior, and the greedy path throws that away. This search keeps the best
``beam`` partial transcripts over the CTC posteriors, each a sequence of whole lexicon entries plus the phones
of the entry being spelled, through a trie over the entries' phones (flashlight-text's lexicon decoder, the
one torchaudio's ``ctc_decoder`` wraps), so every hypothesis is made of words the lexicon knows and a word
is chosen on the evidence of all its frames rather than of each frame's winner.

A word trigram over the lexicon's English text (``word_lm.TrigramLM``) joins in with weight ``lm_weight``
(0: none) at every completed word, settling homophones and word splits the way sentences people say do;
``word_score`` (added per word) trades words split in two against words merged. On the demo's connector the
search with the LM read the 121 real recordings at 52.5-55.9 chrF against 51.0 greedy, depending on the
weights; without the LM it did not help (49.8 at best) (docs/RESULTS.md, "A word LM in the phone read-out").

    log_probs (S, U + 1) float32, U phone units, blank last (index U) -> written words

``flashlight-text`` ships wheels for CPython 3.10-3.12 on Linux and macOS; where it is not installed the
head reads greedily and says so once (``available()``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .phones import Lexicon
    from .word_lm import TrigramLM

log = logging.getLogger(__name__)
_warned = False


@dataclass(frozen=True)
class SearchOptions:
    """How the phone head reads its posteriors. ``beam`` 0: greedy (argmax path, nearest entries)."""

    beam: int = 0
    #: weight of the word trigram's log-probability at every completed word (0: no LM)
    lm_weight: float = 0.0
    #: added per word (log domain): higher prefers more, shorter words
    word_score: float = 0.0
    #: phone units tried per output position (the most probable ones)
    beam_size_token: int = 12
    #: hypotheses further than this below the best (log domain) are dropped
    beam_threshold: float = 25.0

    def __post_init__(self) -> None:
        for name in ("beam", "beam_size_token"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"search.{name}: expected an integer >= 0, got {v!r}")
        for name in ("lm_weight", "word_score", "beam_threshold"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"search.{name}: expected a finite number, got {v!r}")
        if self.beam and self.beam_size_token < 1:
            raise ValueError("search.beam_size_token: expected >= 1 when search.beam > 0")
        if self.lm_weight < 0:
            raise ValueError(f"search.lm_weight: expected >= 0, got {self.lm_weight}")

    @classmethod
    def from_dict(cls, d: Any) -> SearchOptions:
        """Options from a checkpoint's mapping; unknown keys are an error that names them."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ValueError(f"search: expected a mapping of options, got {d!r}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"search: unknown option(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def available() -> bool:
    """True when flashlight-text is importable; else warns once that the read-out is greedy."""
    global _warned
    try:
        import flashlight.lib.text.decoder  # noqa: F401
    except ImportError:
        if not _warned:
            log.warning("flashlight-text is not installed: the phone head reads greedily (pip install flashlight-text)")
            _warned = True
        return False
    return True


def _lm_adapter(lm: TrigramLM, entry_words: Sequence[Sequence[str]]) -> Any:
    """flashlight's LM interface over ``lm``: a lexicon entry (flashlight's "word") may be several LM words
    ("don't" is one, "new york" two), scored in turn; the state is the last two LM words."""
    from flashlight.lib.text.decoder import LM, LMState

    class _TrigramAdapter(LM):
        def __init__(self) -> None:
            LM.__init__(self)
            self.context: dict[Any, tuple[str, str]] = {}

        def start(self, start_with_nothing: bool) -> Any:
            self.context.clear()  # one utterance's states at a time: the map must not grow across calls
            state = LMState()
            self.context[state] = ("<s>", "<s>")
            return state

        def score(self, state: Any, word: int) -> tuple[Any, float]:
            child = state.child(word)
            a, b = self.context[state]
            total = 0.0
            for w in entry_words[word]:
                total += lm.logp(a, b, w)
                a, b = b, w
            self.context.setdefault(child, (a, b))
            return child, total

        def finish(self, state: Any) -> tuple[Any, float]:
            a, b = self.context[state]
            child = state.child(-1)
            self.context.setdefault(child, (b, "</s>"))
            return child, lm.logp(a, b, "</s>")

    return _TrigramAdapter()


class LexiconSearch:
    """Beam search over one utterance's phone posteriors, spelling lexicon entries only.

    ``units``: the head's phone units in class order (``word_unit`` among them; blank is index len(units));
    ``lexicon``: the head's lexicon (phone word -> written word); ``options``: beam and scores; ``lm``: the
    word trigram ``options.lm_weight`` weighs (needed when that is > 0).
    """

    def __init__(
        self, *, units: Sequence[str], lexicon: Lexicon, options: SearchOptions, word_unit: str, lm: TrigramLM | None = None
    ) -> None:
        from flashlight.lib.text.decoder import (
            CriterionType,
            LexiconDecoder,
            LexiconDecoderOptions,
            SmearingMode,
            Trie,
            ZeroLM,
        )

        from .word_lm import words_of

        if options.beam < 1:
            raise ValueError("LexiconSearch: options.beam must be >= 1 (0 is the greedy read-out)")
        if options.lm_weight > 0 and lm is None:
            raise ValueError("LexiconSearch: options.lm_weight > 0 needs the word LM (lm=)")
        idx = {u: i for i, u in enumerate(units)}
        self.num_classes = len(units) + 1
        sil, blank = idx[word_unit], len(units)
        # a phone word with a unit the head lacks cannot be heard: it is left out of the trie
        keys = [k for k in lexicon.table if k and all(p in idx for p in k)]
        self.words = [lexicon.table[k] for k in keys]
        use_lm = lm is not None and options.lm_weight > 0
        # kept on self: the decoder holds the LM and the trie by reference
        self._lm = _lm_adapter(lm, [words_of(w) for w in self.words]) if use_lm else ZeroLM()
        self._trie = Trie(self.num_classes, sil)
        start = self._lm.start(False)
        for w, k in enumerate(keys):
            # each entry's unigram-in-context score lets the trie smear the best word below each node
            self._trie.insert([idx[p] for p in k], w, self._lm.score(start, w)[1] if use_lm else 0.0)
        self._trie.smear(SmearingMode.MAX)
        opts = LexiconDecoderOptions(
            beam_size=options.beam,
            beam_size_token=options.beam_size_token,
            beam_threshold=options.beam_threshold,
            lm_weight=options.lm_weight if use_lm else 0.0,
            word_score=options.word_score,
            unk_score=-math.inf,
            sil_score=0.0,
            log_add=False,
            criterion_type=CriterionType.CTC,
        )
        self._decoder = LexiconDecoder(opts, self._trie, self._lm, sil, blank, -1, [], False)

    def __call__(self, log_probs: np.ndarray) -> list[str]:
        """log_probs (S, U + 1) -> the best transcript's written words ([] when it has none)."""
        e = np.ascontiguousarray(log_probs, dtype=np.float32)
        if e.ndim != 2 or e.shape[1] != self.num_classes:
            raise ValueError(f"LexiconSearch: expected log_probs (S, {self.num_classes}), got {e.shape}")
        if e.shape[0] == 0:
            return []
        results = self._decoder.decode(e.ctypes.data, e.shape[0], e.shape[1])
        return [self.words[w] for w in results[0].words if w >= 0] if results else []

"""A word trigram language model over English text, for the phone head's lexicon search.

The phone head's read-out (``lexicon_search.py``) chooses between lexicon words that sound alike ("to" /
"two", "weight" / "wait") and between splits of a phone string into words; a word trigram trained on the
same English text the lexicon reads settles most of those the way the sentences people say do. On the demo's
connector it raised chrF of the 121 real recordings from 51.0 to 52.5-55.9 depending on its weight
(docs/RESULTS.md, "A word LM in the phone read-out").

It is an interpolated trigram with absolute discounting (``discount``) on the trigram and bigram levels and
Kneser-Ney continuation counts below the top level, with an add-0.01 floor on the unigram level so an unseen
word still has a (small) probability. It is hand-written because no pip-installable n-gram toolkit fits:
KenLM's estimator is a C++ program with no wheel and flashlight-text's wheel is built without KenLM.

Words are the lower-cased runs of letters, digits and apostrophes of the text (``words_of``); ``<s>`` and
``</s>`` mark sentence ends. Building it from the demo's 78k lines takes about 5 s on one core.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Iterable

_NON_WORD = re.compile(r"[^\w']+")
#: ``logp`` remembers at most this many trigrams (a long-running server must not grow without bound)
_CACHE_LIMIT = 1_000_000


def words_of(text: str) -> list[str]:
    """The LM's words of a text: lower-cased runs of letters, digits and apostrophes."""
    return [w for w in _NON_WORD.sub(" ", text.lower()).split() if w]


class TrigramLM:
    """Interpolated Kneser-Ney-style word trigram over ``sentences`` (one sentence per string)."""

    def __init__(self, sentences: Iterable[str], discount: float = 0.75) -> None:
        if not 0.0 < discount < 1.0:
            raise ValueError(f"TrigramLM: discount must be in (0, 1), got {discount}")
        self.d = discount
        self.c3: collections.Counter = collections.Counter()
        for s in sentences:
            w = ["<s>", "<s>", *words_of(s), "</s>"]
            for i in range(2, len(w)):
                self.c3[(w[i - 2], w[i - 1], w[i])] += 1
        if not self.c3:
            raise ValueError("TrigramLM: no sentences to count")
        self.ctx, self.ctx_types = collections.Counter(), collections.Counter()
        for (a, b, _), n in self.c3.items():
            self.ctx[(a, b)] += n
            self.ctx_types[(a, b)] += 1
        self.cont2 = collections.Counter((b, c) for (_, b, c) in self.c3)  # distinct left contexts of (b, c)
        self.cont2_ctx, self.cont2_types = collections.Counter(), collections.Counter()
        for (b, _), n in self.cont2.items():
            self.cont2_ctx[b] += n
            self.cont2_types[b] += 1
        self.cont1 = collections.Counter(c for (_, c) in self.cont2)
        self.total1 = sum(self.cont1.values())
        self.vocab = set(self.cont1)
        self._cache: dict[tuple[str, str, str], float] = {}

    def _p1(self, w: str) -> float:
        return (self.cont1.get(w, 0) + 0.01) / (self.total1 + 0.01 * (len(self.vocab) + 1))

    def _p2(self, b: str, w: str) -> float:
        n = self.cont2_ctx.get(b, 0)
        if n == 0:
            return self._p1(w)
        return max(self.cont2.get((b, w), 0) - self.d, 0) / n + self.d * self.cont2_types[b] / n * self._p1(w)

    def logp(self, a: str, b: str, w: str) -> float:
        """log P(w | a b), natural log; a, b may be ``<s>``, w may be ``</s>``."""
        key = (a, b, w)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        n = self.ctx.get((a, b), 0)
        p = (
            self._p2(b, w)
            if n == 0
            else max(self.c3.get(key, 0) - self.d, 0) / n + self.d * self.ctx_types[(a, b)] / n * self._p2(b, w)
        )
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = out = math.log(p)
        return out

    def sentence_logp(self, text: str) -> float:
        """log P of a whole sentence, ``</s>`` included (what tests and callers compare texts by)."""
        a, b, total = "<s>", "<s>", 0.0
        for w in [*words_of(text), "</s>"]:
            total += self.logp(a, b, w)
            a, b = b, w
        return total

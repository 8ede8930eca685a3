"""Probe: would a word language model in the CTC read-out help? Greedy vs LM-fused beam search, then the MT.

    python3 bench/ctc_word_lm.py --model base12k/best --manifest corpus/dev.jsonl realspeech/manifest.jsonl \\
        --exclude corpus/dev.jsonl corpus/test.jsonl

Hard compression hands the frozen MT the tokens of the connector's greedy CTC path. Most of its errors are
near-homophones and misspellings of rare words (docs/RESULTS.md), which is what a word language model fixes
in speech recognition. This probe measures it without touching the package: the checkpoint's tied CTC head
gives log-probabilities over the MT's source tokens; a CTC prefix beam search adds, at every completed word,
``alpha * log P_lm(word | two previous words) + beta`` and a penalty for words (and word beginnings) the LM
has never seen; the best transcript is translated by the same frozen MT (beam 4) and scored with corpus
sacrebleu against the manifest's translations, beside the greedy transcript.

The LM is the package's word trigram (``sltalign.connectors.word_lm``), trained on
the English sentences the synthetic corpora are drawn from (Debian's trans-de-en) minus every sentence that
occurs in the ``--exclude`` manifests' transcripts, so dev and test sentences are never in it.
"""

from __future__ import annotations

import argparse
import collections
import math
from collections.abc import Iterable, Sequence

import numpy as np
import sacrebleu
import torch
from tqdm import tqdm

from sltalign.audio import load_audio
from sltalign.checkpoint import load_connector
from sltalign.connectors.word_lm import TrigramLM as _TrigramLM
from sltalign.connectors.word_lm import words_of
from sltalign.data.manifest import read_manifest
from sltalign.data.synth import load_sentences
from sltalign.evaluate import word_error_rate


class TrigramLM(_TrigramLM):
    """The package's trigram plus the set of word prefixes (the prefix search penalises a word being spelled
    that no LM word begins with)."""

    def __init__(self, sentences: Iterable[str]) -> None:
        super().__init__(sentences)
        self.prefixes = {w[:i] for w in self.vocab for i in range(1, len(w) + 1)}


def _lse(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


class WordLMBeamSearch:
    """CTC prefix beam search over SentencePiece tokens (blank = last class) with word-level shallow fusion."""

    def __init__(
        self,
        sp,
        lm: TrigramLM,
        *,
        alpha: float,
        beta: float,
        oov: float = 10.0,
        beam: int = 16,
        topk: int = 8,
        prune: float = -8.0,
    ) -> None:
        self.sp, self.lm = sp, lm
        self.alpha, self.beta, self.oov, self.beam, self.topk, self.prune = alpha, beta, oov, beam, topk, prune
        self.word_start = [sp.id_to_piece(i).startswith("\u2581") for i in range(sp.get_piece_size())]
        self._state: dict[tuple[int, ...], tuple[float, tuple[str, str], tuple[int, ...]]] = {}

    def _finish(self, score: float, ctx: tuple[str, str], word_ids: tuple[int, ...]) -> tuple[float, tuple[str, str]]:
        for w in words_of(self.sp.decode(list(word_ids))):
            score += self.alpha * self.lm.logp(ctx[0], ctx[1], w) + self.beta - (0.0 if w in self.lm.vocab else self.oov)
            ctx = (ctx[1], w)
        return score, ctx

    def _lm_state(self, prefix: tuple[int, ...]) -> tuple[float, tuple[str, str], tuple[int, ...]]:
        """(LM score of the completed words, last two words, tokens of the word being spelled)."""
        if prefix not in self._state:
            if not prefix:
                self._state[prefix] = (0.0, ("<s>", "<s>"), ())
            else:
                score, ctx, cur = self._lm_state(prefix[:-1])
                tok = prefix[-1]
                if self.word_start[tok] and cur:
                    score, ctx = self._finish(score, ctx, cur)
                    cur = ()
                self._state[prefix] = (score, ctx, cur + (tok,))
        return self._state[prefix]

    def _rank(self, prefix: tuple[int, ...]) -> float:
        score, _, cur = self._lm_state(prefix)
        if cur:
            w = words_of(self.sp.decode(list(cur)))
            if w and w[-1] not in self.lm.prefixes:  # a word no LM word begins with
                score -= self.oov
        return score

    def _final(self, prefix: tuple[int, ...]) -> float:
        score, ctx, cur = self._lm_state(prefix)
        if cur:
            score, ctx = self._finish(score, ctx, cur)
        return score + self.alpha * self.lm.logp(ctx[0], ctx[1], "</s>")

    def __call__(self, logp: np.ndarray) -> list[int]:
        """logp (S, V+1) log-probabilities -> token ids of the best transcript."""
        blank = logp.shape[1] - 1
        beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}  # prefix -> (log p_blank, log p_nonblank)
        for row in logp:
            cand = [int(c) for c in np.argpartition(-row[:blank], self.topk)[: self.topk] if row[c] > self.prune]
            nxt: dict[tuple[int, ...], list[float]] = collections.defaultdict(lambda: [-math.inf, -math.inf])
            for pre, (pb, pnb) in beams.items():
                tot = _lse(pb, pnb)
                nxt[pre][0] = _lse(nxt[pre][0], tot + row[blank])
                for c in cand:
                    ext = nxt[pre + (c,)]
                    if pre and c == pre[-1]:  # a repeat continues the token; a new copy needs a blank between
                        nxt[pre][1] = _lse(nxt[pre][1], pnb + row[c])
                        ext[1] = _lse(ext[1], pb + row[c])
                    else:
                        ext[1] = _lse(ext[1], tot + row[c])
            best = sorted(nxt.items(), key=lambda kv: _lse(*kv[1]) + self._rank(kv[0]), reverse=True)[: self.beam]
            beams = {k: (v[0], v[1]) for k, v in best}
        return list(max(beams.items(), key=lambda kv: _lse(*kv[1]) + self._final(kv[0]))[0])


def greedy(logp: np.ndarray) -> list[int]:
    path = logp.argmax(-1)
    blank = logp.shape[1] - 1
    return [int(t) for i, t in enumerate(path) if t != blank and (i == 0 or t != path[i - 1])]


def ctc_log_probs(model, manifest: str, max_duration: float) -> tuple[list[np.ndarray], list]:
    utts = [u for u in read_manifest(manifest, require=("transcript", "translation")) if u.duration <= max_duration]
    emb = model.translator.source_embedding_matrix()
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for i in tqdm(range(0, len(utts), 8), desc=manifest, unit="batch", leave=False):
            waves = [
                load_audio(u.audio, offset=u.offset, duration=u.duration) if u.offset else load_audio(u.audio)
                for u in utts[i : i + 8]
            ]
            states, mask = model.encode_audio(waves)
            o, o_mask = model.connector(states, mask)
            lp = model.ctc_head(o, emb).float().log_softmax(-1)  # (B, S, V+1)
            out += [lp[j, : int(o_mask[j].sum())].numpy() for j in range(lp.shape[0])]
    return out, utts


def lm_sentences(exclude: Sequence[str]) -> list[str]:
    held = "\n".join(u.transcript for m in exclude for u in read_manifest(m, require=("transcript",)))
    return [s for s, _ in load_sentences(None) if s not in held]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="checkpoint with a tied CTC head")
    ap.add_argument("--manifest", nargs="+", required=True, help="manifests with transcripts and translations")
    ap.add_argument("--exclude", nargs="+", default=[], help="manifests whose sentences the LM must not see")
    ap.add_argument("--weights", nargs="+", default=["0.2,0.5", "0.3,1.0", "0.5,1.5", "0.5,2.5"], help="alpha,beta pairs")
    ap.add_argument("--max_duration", type=float, default=30.0)
    args = ap.parse_args()
    torch.manual_seed(0)
    model, _ = load_connector(args.model)
    model.eval()
    sp = model.translator.sp_source
    lm = TrigramLM(lm_sentences(args.exclude or args.manifest))
    print(f"LM: {len(lm.vocab)} words, {len(lm.c3)} trigrams")
    bleu_sig = chrf_sig = None
    for man in args.manifest:
        logps, utts = ctc_log_probs(model, man, args.max_duration)
        refs = [u.transcript for u in utts]
        tgts = [u.translation for u in utts]
        print(f"\n{man} ({len(utts)} clips)\n| read-out | WER | BLEU | chrF |\n|---|---|---|---|")
        decoders = [("greedy", greedy)] + [
            (f"LM alpha {a} beta {b}", WordLMBeamSearch(sp, lm, alpha=float(a), beta=float(b)))
            for a, b in (w.split(",") for w in args.weights)
        ]
        for name, dec in decoders:
            hyps = model.translator.detokenize_source(
                [dec(lp) for lp in logps]
            )  # drops </s> and <unk> as hard compression's read-out does
            tx = model.translator.translate_text(hyps, beam=4)
            bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
            b, c = bleu.corpus_score(tx, [tgts]), chrf.corpus_score(tx, [tgts])
            bleu_sig, chrf_sig = bleu.get_signature(), chrf.get_signature()
            print(f"| {name} | {100 * word_error_rate(hyps, refs):.1f}% | {b.score:.1f} | {c.score:.1f} |", flush=True)
    print(f"\nBLEU {bleu_sig}\nchrF {chrf_sig}")


if __name__ == "__main__":
    main()

"""Probe: the phone head's read-out as a lexicon-constrained beam search over the CTC posteriors.

    python3 bench/phone_search.py --model runs/demo/connector \\
        --manifest runs/demo/realspeech_dev/manifest.jsonl runs/demo/realspeech/manifest.jsonl runs/demo/corpus/test.jsonl \\
        --out runs/phone_search

The phone recipe reads its CTC head greedily (the argmax path), cuts the phones at word marks and spells each
phone word as the nearest lexicon entry. A connector that mishears a phone still often gives the right phone
the second-highest posterior; a beam search that may only spell lexicon entries (flashlight-text's lexicon
decoder, a trie over the entries' phones) can use that, with or without a word n-gram model over the written
words. This measures greedy against the search on each manifest (the first one is the tuning set), the frozen
MT translating each read-out (beam 4), corpus sacrebleu against the manifest's references.

Log-posteriors are computed once per manifest and cached in OUT (delete OUT to recompute).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import sacrebleu
import torch
from tqdm import tqdm

from sltalign.audio import load_audio
from sltalign.api import SpeechTranslator
from sltalign.connectors.phones import WORD
from sltalign.data.lexicon_text import held_sentences, lexicon_lines
from sltalign.data.manifest import read_manifest
from sltalign.evaluate import word_error_rate

sys.path.insert(0, str(Path(__file__).parent))
from ctc_word_lm import TrigramLM, words_of  # noqa: E402


def posteriors(tr, manifest: str, cache: Path) -> list[list[np.ndarray]]:
    """Log-posteriors (S, U+1) of each clip's pieces (cut as ``SpeechTranslator.translate`` cuts long audio)."""
    if cache.exists():
        z = np.load(cache)
        out: dict[int, list] = {}
        for k in sorted(z.files, key=lambda k: tuple(map(int, k.split("_")))):
            out.setdefault(int(k.split("_")[0]), []).append(z[k])
        return [out.get(i, []) for i in range(max(out) + 1)]
    model = tr.model
    utts = read_manifest(manifest, require=("transcript",))
    res: list[list[np.ndarray]] = []
    emb = model.translator.source_embedding_matrix()
    with torch.inference_mode():
        for u in tqdm(utts, desc=Path(manifest).parent.name, unit="clip"):
            wav = load_audio(u.audio, offset=u.offset, duration=u.duration) if u.offset else load_audio(u.audio)
            pieces = []
            for a, b in tr._piece_spans(wav):
                states, mask = model.encode_audio([wav[a:b]])
                o, om = model.connector(model._speech_states(states), mask)
                pieces.append(torch.log_softmax(model.ctc_head(o, emb).float(), -1)[0, : int(om[0].sum())].numpy())
            res.append(pieces)
    np.savez(cache, **{f"{i}_{j}": a for i, ps in enumerate(res) for j, a in enumerate(ps)})
    return res


def greedy(head, lp: np.ndarray) -> str:
    blank = lp.shape[1] - 1
    path = [k for k, _ in itertools.groupby(lp.argmax(1).tolist()) if k != blank]
    return head.lexicon.read([head.units[i] for i in path])


class Search:
    """flashlight-text's lexicon decoder over the head's units; words = lexicon entries (phone words)."""

    def __init__(self, head, lm: TrigramLM | None, *, beam: int, lm_weight: float, word_score: float, sil_score: float) -> None:
        from flashlight.lib.text.decoder import (
            LM,
            CriterionType,
            LexiconDecoder,
            LexiconDecoderOptions,
            LMState,
            SmearingMode,
            Trie,
            ZeroLM,
        )

        units = list(head.units)
        idx = {u: i for i, u in enumerate(units)}
        self.head = head
        self.sil, self.blank = idx[WORD], len(units)
        keys = [k for k in head.lexicon.table if all(p in idx for p in k)]
        self.words = [head.lexicon.table[k] for k in keys]
        self.word_toks = [words_of(w) for w in self.words]

        if lm is None:
            self.lm = ZeroLM()
        else:
            outer = self

            class TriLM(LM):
                def __init__(self) -> None:
                    LM.__init__(self)
                    self.ctx: dict = {}

                def start(self, start_with_nothing: bool):
                    s = LMState()
                    self.ctx[s] = ("<s>", "<s>")
                    return s

                def score(self, state, word: int):
                    out = state.child(word)
                    a, b = self.ctx[state]
                    sc = 0.0
                    for w in outer.word_toks[word]:
                        sc += lm.logp(a, b, w)
                        a, b = b, w
                    self.ctx.setdefault(out, (a, b))
                    return out, sc

                def finish(self, state):
                    a, b = self.ctx[state]
                    out = state.child(-1)
                    self.ctx.setdefault(out, (b, "</s>"))
                    return out, lm.logp(a, b, "</s>")

            self.lm = TriLM()
        trie = Trie(len(units) + 1, self.sil)
        start = self.lm.start(False)
        for w, k in enumerate(keys):
            _, sc = self.lm.score(start, w)
            trie.insert([idx[p] for p in k], w, sc)
        trie.smear(SmearingMode.MAX)
        opts = LexiconDecoderOptions(
            beam_size=beam,
            beam_size_token=12,
            beam_threshold=25.0,
            lm_weight=lm_weight,
            word_score=word_score,
            unk_score=-math.inf,
            sil_score=sil_score,
            log_add=False,
            criterion_type=CriterionType.CTC,
        )
        self.dec = LexiconDecoder(opts, trie, self.lm, self.sil, self.blank, -1, [], False)

    def __call__(self, lp: np.ndarray) -> str:
        e = np.ascontiguousarray(lp, dtype=np.float32)
        res = self.dec.decode(e.ctypes.data, e.shape[0], e.shape[1])
        if not res:
            return ""
        words = [self.words[w] for w in res[0].words if w >= 0]
        text = " ".join(words)
        return text[:1].upper() + text[1:] + "." if text else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifest", nargs="+", required=True, help="the first is the tuning set")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--grid", default="zero", help="zero | lm | both")
    ap.add_argument("--zero_ws", nargs="+", type=float, default=[-2.0, 0.0, 2.0], help="word scores without an LM")
    ap.add_argument("--lm_pairs", nargs="+", default=["0.3,0", "0.5,1", "0.8,2"], help="lm_weight,word_score pairs")
    ap.add_argument("--beams", nargs="+", type=int, default=[32], help="beam sizes (each config is tried with each)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tr = SpeechTranslator.from_pretrained(args.model)
    model = tr.model
    head = model.ctc_head
    sets = {}
    for i, m in enumerate(args.manifest):
        utts = read_manifest(m, require=("transcript", "translation"))
        # the output limit translate() gives the longest clip (a 40 s clip needs more than 150 tokens)
        limit = max(tr.max_len_for(int(u.duration * 16000)) if u.duration else tr.max_len for u in utts)
        sets[m] = (utts, posteriors(tr, m, args.out / f"lp{i}.npz"), limit)
    lm = None
    if args.grid in ("lm", "both"):
        held = held_sentences(u for m in args.manifest for u in read_manifest(m))
        t0 = time.perf_counter()
        lm = TrigramLM(lexicon_lines(["trans-de-en:sentences", "trans-de-en:phrases"], held, seed=0))
        print(f"trigram LM over {len(lm.vocab)} words ({time.perf_counter() - t0:.0f} s)", flush=True)
    mt = model.translator
    configs: list[tuple[str, dict | None]] = [("greedy", None)]
    if args.grid in ("zero", "both"):
        configs += [(f"zero ws={ws}", dict(lm=None, lm_weight=0.0, word_score=ws, sil_score=0.0)) for ws in args.zero_ws]
    if args.grid in ("lm", "both"):
        configs += [
            (f"lm a={a} ws={ws}", dict(lm=lm, lm_weight=a, word_score=ws, sil_score=0.0))
            for a, ws in (tuple(map(float, p.split(","))) for p in args.lm_pairs)
        ]
    if args.beams != [32]:
        configs = [configs[0]] + [(f"{n} beam={b}", {**kw, "beam": b}) for n, kw in configs[1:] for b in args.beams]
    rows = {}
    for name, kw in configs:
        search = None if kw is None else Search(head, kw.pop("lm"), **{"beam": 32, **kw})
        row = {}
        for m, (utts, lps, limit) in sets.items():
            t0 = time.perf_counter()
            read = (lambda lp: greedy(head, lp)) if search is None else search
            pieces = [[read(lp) for lp in ps] for ps in lps]
            t_dec = time.perf_counter() - t0
            # each piece translated on its own and the pieces joined, as SpeechTranslator.translate does
            flat = [t for ps in pieces for t in ps if t]
            out = iter(mt.translate_text(flat, beam=4, max_len=limit) if flat else [])
            hyp = [" ".join(next(out) for t in ps if t).strip() for ps in pieces]
            src = [" ".join(t for t in ps if t) for ps in pieces]
            refs = [u.translation for u in utts]
            bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
            b, c = bleu.corpus_score(hyp, [refs]), chrf.corpus_score(hyp, [refs])
            wer = word_error_rate(src, [u.transcript for u in utts])
            row[m] = {"bleu": round(b.score, 2), "chrf": round(c.score, 2), "wer": round(100 * wer, 1), "decode_s": round(t_dec, 2),
                      "sources": src, "hyps": hyp, "sig": [str(bleu.get_signature()), str(chrf.get_signature())]}  # fmt: skip
            print(
                f"{name:22s} {Path(m).parent.name:16s} WER {100 * wer:5.1f}  BLEU {b.score:5.1f}  chrF {c.score:5.1f}  ({t_dec:.1f} s)",
                flush=True,
            )
        rows[name] = row
    (args.out / "results.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()

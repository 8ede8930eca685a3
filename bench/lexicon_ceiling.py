"""What the phone recipe's read-out costs when hearing is perfect: the frozen MT translating, for each manifest,

1. the gold transcripts (MT on gold),
2. the gold transcripts written as the lexicon writes (words only, first capitalised, a full stop),
3. the lexicon's reading of eSpeak's en-us phonemes of the gold transcripts, with the lexicon built from its
   text lines only, and with every word of the text also read alone in each accent (what training builds now).

The gap 1 -> 2 is punctuation and casing, 2 -> 3 the spelling (homophones, joined words, names the text lacks);
what a trained connector loses below row 3 is hearing. The lexicon is made as training makes it
(``model.lexicon_text``, the manifests' sentences held out, seed 0, no training transcripts).

    PYTHONPATH=src python3 bench/lexicon_ceiling.py --manifest rs/manifest.jsonl corpus/test.jsonl \
        --held_out rs_dev/manifest.jsonl --out runs/lexicon_ceiling

Writes OUT/results.json (scores with sacrebleu signatures, and every source and translation) and OUT/report.md.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

import sacrebleu

from sltalign.connectors.phones import ACCENTS, Lexicon, phonemize
from sltalign.data.lexicon_text import held_sentences, lexicon_lines
from sltalign.data.manifest import read_manifest
from sltalign.foundation import load_translator

WORDS = re.compile(r"[A-Za-z0-9']+")


def as_lexicon_writes(text: str) -> str:
    words = " ".join(WORDS.findall(text))
    return words[:1].upper() + words[1:] + "." if words else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", nargs="+", required=True, help="manifests with transcripts and references")
    ap.add_argument("--held_out", nargs="*", default=[], help="more manifests whose sentences the lexicon must not read")
    ap.add_argument("--lexicon_text", nargs="+", default=["trans-de-en:sentences", "trans-de-en:phrases"])
    ap.add_argument("--mt", default="packaged:bergamot-en-pt")
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    held = held_sentences(u for m in [*args.manifest, *args.held_out] for u in read_manifest(m))
    text = lexicon_lines(args.lexicon_text, held, seed=0)
    rng = random.Random(0)  # as PhoneCTCHead.prepare draws each line's accent
    accents = [rng.choice(ACCENTS) for _ in text]
    phones = phonemize(text, accents)
    lexicons = {
        "lexicon, lines only": Lexicon.from_text(text, phones, accents),
        "lexicon, lines + words alone": Lexicon.from_text(text, phones, accents, word_accents=ACCENTS),
    }
    print(f"lexicons from {len(text)} lines: " + ", ".join(f"{k} {len(v.table)}" for k, v in lexicons.items())
          + f" ({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    mt = load_translator(args.mt)
    results: dict[str, dict] = {}
    for man in args.manifest:
        utts = [u for u in read_manifest(man) if u.transcript and u.translation]
        gold, refs = [u.transcript for u in utts], [u.translation for u in utts]
        gold_ph = phonemize(gold, "en-us")
        sources = {"MT on gold": gold, "gold as the lexicon writes it": [as_lexicon_writes(t) for t in gold]}
        sources |= {f"{k} on eSpeak's phones of gold": [lx.read(p) for p in gold_ph] for k, lx in lexicons.items()}
        rows = {}
        for name, src in sources.items():
            hyp = mt.translate_text(src, beam=args.beam, max_len=150)
            bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
            b, c = bleu.corpus_score(hyp, [refs]), chrf.corpus_score(hyp, [refs])
            rows[name] = {"bleu": round(b.score, 2), "chrf": round(c.score, 2), "sources": src, "hyps": hyp}
            print(f"{man}: {name}: BLEU {b.score:.1f} chrF {c.score:.1f}", flush=True)
        refs_kind = sorted({u.translation_source or "unknown" for u in utts})
        results[man] = {"n": len(utts), "references": refs_kind, "rows": rows,
                        "signatures": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    lines = ["# The lexicon read-out with perfect hearing", "", "| source | " + " | ".join(
        f"{m} ({r['n']}, {'/'.join(r['references'])} refs) BLEU / chrF" for m, r in results.items()) + " |",
        "|---|" + "---|" * len(results)]  # fmt: skip
    for name in next(iter(results.values()))["rows"]:
        lines.append(f"| {name} | " + " | ".join(
            f"{r['rows'][name]['bleu']:.1f} / {r['rows'][name]['chrf']:.1f}" for r in results.values()) + " |")  # fmt: skip
    sig = next(iter(results.values()))["signatures"]
    lines += ["", f"BLEU `{sig['bleu']}`, chrF `{sig['chrf']}`", ""]
    (args.out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

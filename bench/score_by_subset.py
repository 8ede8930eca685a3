"""Corpus BLEU and chrF of hyps.jsonl files per subset of the real-speech set (test or dev).

    python3 bench/score_by_subset.py demo=runs/demo/eval/real/aligned/hyps.jsonl tokens=eval/r96_tokens/hyps.jsonl

Each argument is NAME=PATH (a ``hyps.jsonl`` written by ``sltalign evaluate`` or the demo: id, hyp, ref);
``--refs MANIFEST`` scores against that manifest's translations instead (e.g. after references were mended).
Scores are corpus-level sacrebleu over each subset's lines, never averages of sentence scores; the
signatures are printed once at the end.
"""

from __future__ import annotations

import argparse
import json

import sacrebleu

from sltalign.data.realspeech import subset_of

SUBSETS = {
    "all": lambda uid: True,
    "pocketsphinx": lambda uid: subset_of(uid) in ("librivox", "cards", "commands", "digits"),
    "ivr": lambda uid: subset_of(uid) == "ivr",
    "wz2100": lambda uid: subset_of(uid) == "wz2100",
    "alsa": lambda uid: subset_of(uid) == "alsa",
    "new voices": lambda uid: subset_of(uid) in ("wz2100", "alsa"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="NAME=PATH/hyps.jsonl")
    ap.add_argument("--refs", default=None, help="a manifest whose translations replace the files' refs (matched by id)")
    args = ap.parse_args()
    refs_by_id = None
    if args.refs:
        from sltalign.data.manifest import read_manifest

        refs_by_id = {u.id: u.translation for u in read_manifest(args.refs, require=("translation",))}
    bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
    print("| system | " + " | ".join(f"{s} BLEU / chrF (n)" for s in SUBSETS) + " |")
    print("|---|" + "---|" * len(SUBSETS))
    for arg in args.runs:
        name, _, path = arg.partition("=")
        if not path:
            raise SystemExit(f"expected NAME=PATH, got {arg!r}")
        rows = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not {"id", "hyp", "ref"} <= set(row):
                    raise SystemExit(f"{path}:{n}: expected the fields id, hyp and ref, got {sorted(row)}")
                if refs_by_id is not None:
                    if row["id"] not in refs_by_id:
                        raise SystemExit(f"{path}:{n}: id {row['id']!r} is not in {args.refs}")
                    row["ref"] = refs_by_id[row["id"]]
                rows.append(row)
        cells = []
        for keep in SUBSETS.values():
            sub = [r for r in rows if keep(r["id"])]
            if not sub:
                cells.append("-")
                continue
            hyps, refs = [r["hyp"] for r in sub], [[r["ref"] for r in sub]]
            cells.append(f"{bleu.corpus_score(hyps, refs).score:.1f} / {chrf.corpus_score(hyps, refs).score:.1f} ({len(sub)})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nBLEU `{bleu.get_signature()}`, chrF `{chrf.get_signature()}`")


if __name__ == "__main__":
    main()

"""Probe: several phone connectors over one encoding, their posteriors averaged before the lexicon search.

Real-speech scores move by 2-4 chrF between training seeds of one recipe ("Voices ablation at the demo's size" in
docs/RESULTS.md), so part of what a connector mishears in people's speech is its own seed's. Averaging the phone
posteriors of K connectors (the log of the mean probability per frame) measures how much of the gap that
variance is. The connectors must share the speech encoder, the translator and the phone units (checkpoints of
one recipe on one corpus do); the first checkpoint's lexicon search reads the average.

    PYTHONPATH=src python3 bench/ensemble_probe.py --manifest rs/manifest.jsonl --out runs/ens \\
        runs/demo/connector runs/seed1/train/best runs/seed2/train/best

Frame averaging needs members whose CTC spikes fall on the same frames: checkpoints of one run, or runs that share
the seed (and so the initialisation and data order), as this probe's did. Connectors trained with other seeds
average to mostly blank frames; the shipped form, ``sltalign ensemble`` (``sltalign.ensemble``), reads each
member on its own and translates the medoid transcript by default (docs/RESULTS.md, "Ensembles of connectors").

Prints corpus BLEU / chrF (sacrebleu, beam 4 for the MT) of the first connector alone and of the first K
averaged for K = 2..N, and writes what each heard and its translation to OUT/{single,ens2,...}.jsonl.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from sltalign.api import SpeechTranslator
from sltalign.checkpoint import load_connector
from sltalign.data.manifest import read_manifest
from sltalign.evaluate import score
from sltalign.progress import progress_bar
from sltalign.systems import load_utterances


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="connector checkpoint directories (phone heads, one recipe)")
    ap.add_argument("--manifest", required=True, help="JSONL with audio and human or MT reference translations")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    st = SpeechTranslator.from_pretrained(args.checkpoints[0])
    enc, mt = st.model.speech_encoder, st.model.translator
    models = [st.model] + [load_connector(c, speech_encoder=enc, translator=mt)[0].eval() for c in args.checkpoints[1:]]
    units = [m.ctc_head.units for m in models]
    if any(u != units[0] for u in units):
        raise SystemExit("the checkpoints' phone heads have different units: their posteriors cannot be averaged")
    head = models[0].ctc_head
    utts = read_manifest(args.manifest)  # validated; relative audio paths resolved
    emb = mt.source_embedding_matrix()
    names = ["single"] + [f"ens{k}" for k in range(2, len(models) + 1)]
    heard: dict[str, list[str]] = {n: [] for n in names}
    with torch.inference_mode():
        for u in progress_bar(utts, enabled=True, desc="hear", unit="clip"):
            states, mask = enc.encode(load_utterances([u]))  # (1, T_s, D_s), (1, T_s)
            log_probs = []
            for m in models:
                out, out_mask = m.connector(m._speech_states(states), mask)  # (1, S, D_m), (1, S)
                log_probs.append(torch.log_softmax(m.ctc_head(out, emb).float(), -1))  # (1, S, U + 1)
            for k, name in enumerate(names, start=1):
                avg = torch.logsumexp(torch.stack(log_probs[:k]), 0) - math.log(k)  # log of the mean probability
                heard[name].append(head.read_logits(avg, out_mask, mt)[0])
    refs = [u.translation for u in utts]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names, start=1):
        hyps = mt.translate_text(heard[name], beam=4)
        m = score(hyps, refs)
        print(f"{name}: BLEU {m['bleu']:.1f} chrF {m['chrf']:.1f}")
        m["checkpoints"] = args.checkpoints[:k]
        (out_dir / f"{name}.metrics.json").write_text(json.dumps(m, indent=1))
        with (out_dir / f"{name}.jsonl").open("w") as f:
            for u, h, t in zip(utts, heard[name], hyps):
                f.write(json.dumps({"id": u.id, "heard": h, "hyp": t, "ref": u.translation}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

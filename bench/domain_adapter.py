"""The connector as a domain adapter: software interface strings with human pt-BR references.

    sltalign data gettext --out runs/gettext_txt
    sltalign data synth --sentences runs/gettext_txt/en.txt --translations runs/gettext_txt/pt.txt \\
        --n_train 4000 --n_dev 150 --n_test 300 --long_fraction 0 --out runs/gettext
    python3 bench/domain_adapter.py --corpus runs/gettext --general runs/ctc16k/best \\
        --cache runs/gettext_cache --minutes 10 --out runs/domain

On the domain corpus's test split (human references, a domain Bergamot was not tuned for), side by side:

- ``mt_on_gold``: the frozen MT reading the gold English strings (what any connector feeding it could reach
  at best, since the MT stays frozen);
- ``cascade``: packaged Whisper transcribing, the same MT translating;
- ``general``: a connector trained on the general synthetic corpus (``--general``), zero-shot;
- ``scratch``: the same recipe trained on the domain's training split alone for ``--minutes``;
- ``adapted``: the general connector trained further on the domain's training split for ``--minutes``
  (``init_from``): what a user with a little in-domain speech gets.

The recipe is ``--config`` (default: the shipped configs/ctc_16k.yaml, CTC into the MT's embedding space,
hard compression), with dev evaluation every ``--eval_every`` steps so the best checkpoint and the dev CTC
WER are logged. Writes OUT/<row>/..., OUT/results.json and OUT/report.md; rerunning skips finished rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from compare_recipes import best_dev_wer, run  # same folder: one child process per run, output to a log

from sltalign.demo import preset_path

ROWS = ("mt_on_gold", "cascade", "general", "scratch", "adapted")


def evaluate(out: Path, manifest: Path, system: list[str], log: Path, beam: int) -> dict:
    done = out / "metrics.json"
    if not done.is_file():
        run(
            [
                sys.executable,
                "-m",
                "sltalign",
                "evaluate",
                *system,
                "--manifest",
                str(manifest),
                "--out",
                str(out),
                "--beam",
                str(beam),
            ],
            log,
        )
    return json.loads(done.read_text())


def train(row: Path, args, extra: list[str], log: Path) -> tuple[Path, dict]:
    best = row / "run" / "best"
    if not (row / "run" / "summary.json").is_file():
        t0 = time.perf_counter()
        overrides = [
            f"data.train={args.corpus / 'train.jsonl'}", f"data.dev={args.corpus / 'dev.jsonl'}", f"data.cache_dir={args.cache}",
            f"out={row / 'run'}", f"time_budget_minutes={args.minutes}", "num_threads=1", "stages.0.evaluate=true",
            f"eval_every={args.eval_every}", f"save_every={args.eval_every}", f"seed={args.seed}", *extra,
        ]  # fmt: skip
        run([sys.executable, "-m", "sltalign", "train", str(args.config), *overrides], log)
        (row / "train_minutes_wall.txt").write_text(f"{(time.perf_counter() - t0) / 60:.2f}\n")
    return best, json.loads((row / "run" / "summary.json").read_text())


def report(out: Path, results: dict[str, dict], args) -> Path:
    m = results["mt_on_gold"]
    lines = [
        "# The connector as a domain adapter: software interface strings, English speech -> pt-BR", "",
        f"Corpus {args.corpus} (gettext catalogs spoken by eSpeak NG); test n = {m['n']}, references written by the "
        "packages' human translators (translation_source: human). Training rows: at most "
        f"{args.minutes} min, one thread, seed {args.seed}, recipe {args.config.name}; scored with beam {args.beam}.", "",
        "| system | trained on | test BLEU | test chrF | dev CTC WER | steps |", "|---|---|---|---|---|---|",
    ]  # fmt: skip
    about = {"mt_on_gold": "- (MT reads the gold English)", "cascade": "- (Whisper transcribes)",
             "general": f"general synthetic corpus ({args.general})", "scratch": "domain train split only",
             "adapted": "general corpus, then the domain train split"}  # fmt: skip
    for name in ROWS:
        r = results[name]
        lines.append(
            f"| {name} | {about[name]} | {r['bleu']:.1f} | {r['chrf']:.1f} | {r.get('dev_ctc_wer', '-')} | {r.get('steps', '-')} |"
        )
    lines += ["", f"BLEU signature `{m['bleu_signature']}`, chrF `{m['chrf_signature']}`.", ""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True, help="train/dev/test.jsonl of the domain (human references)")
    ap.add_argument("--general", type=Path, required=True, help="checkpoint dir of a connector trained on general data")
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=preset_path("ctc_16k.yaml"))
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--eval_every", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--beam", type=int, default=4)
    args = ap.parse_args()
    for split in ("train", "dev", "test"):
        if not (args.corpus / f"{split}.jsonl").is_file():
            raise SystemExit(f"--corpus {args.corpus}: no {split}.jsonl")
    if not (args.general / "config.json").is_file():
        raise SystemExit(f"--general {args.general}: not a connector checkpoint directory (no config.json)")
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "log.txt"
    test = args.corpus / "test.jsonl"
    results: dict[str, dict] = {}
    results["mt_on_gold"] = evaluate(args.out / "mt_on_gold", test, ["--mt-on-gold"], log, args.beam)
    results["cascade"] = evaluate(args.out / "cascade", test, ["--cascade"], log, args.beam)
    results["general"] = evaluate(args.out / "general", test, ["--model", str(args.general)], log, args.beam)
    for name, extra in (("scratch", []), ("adapted", [f"init_from={args.general}"])):
        best, summary = train(args.out / name, args, extra, log)
        r = dict(evaluate(args.out / name / "test", test, ["--model", str(best)], log, args.beam))
        r.update(steps=summary["steps"], dev_ctc_wer=best_dev_wer(args.out / name / "run", summary["best_step"]))
        results[name] = r
        print(f"{name}: test BLEU {r['bleu']:.1f} chrF {r['chrf']:.1f}", flush=True)
    keep = ("bleu", "chrf", "n", "bleu_signature", "chrf_signature", "reference_source", "steps", "dev_ctc_wer")
    (args.out / "results.json").write_text(
        json.dumps({k: {f: v[f] for f in keep if f in v} for k, v in results.items()}, indent=2)
    )
    print(report(args.out, results, args).read_text())


if __name__ == "__main__":
    main()

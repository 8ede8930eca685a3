"""Train several recipes on the same data, seed and budget, then score each the same way, in one table.

    python3 bench/compare_recipes.py --recipes bench/recipes_fast_alignment.yaml --corpus CORPUS \\
        --cache CACHE --minutes 10 --out runs/compare [--only paper ctc_hard] [--max_train 4000] [--parallel 2]

CORPUS is a directory with train.jsonl, dev.jsonl and test.jsonl (``sltalign data synth`` writes one);
CACHE the encoder-output cache to share (built on first use). A recipe file is YAML: ``base`` (a config
file under configs/), ``overrides`` for every recipe, and ``recipes``: name -> {about, overrides, cache}.
A cache directory holds one encoder's states: a recipe with another speech encoder names its own with
``cache: NAME``, kept beside CACHE as CACHE-NAME. Every
recipe trains with ``sltalign train`` for at most ``--minutes`` of training (the same seed and data), and its
best checkpoint is scored with ``sltalign evaluate`` on the corpus test split and on the project's
real-speech set (human references); ``--parallel`` runs that many recipes at once, one thread each.

Writes OUT/<recipe>/{run,test,real}, OUT/results.json, OUT/report.md (the table, sacrebleu signatures,
which references are human) and OUT/dev_bleu.png (dev BLEU of every recipe against steps and minutes).
Rerunning the command skips recipes already scored and resumes unfinished training.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import yaml

from sltalign.demo import preset_path


def load_recipes(path: Path) -> tuple[Path, list[str], dict[str, dict]]:
    spec = yaml.safe_load(path.read_text())
    if not isinstance(spec, dict) or not isinstance(spec.get("recipes"), dict) or not spec["recipes"]:
        raise SystemExit(f"{path}: expected a mapping with 'recipes': {{name: {{about, overrides}}}}")
    base = preset_path(spec.get("base", "ctc_then_translate.yaml"))  # a preset shipped in the package (configs/)
    if not base.is_file():
        raise SystemExit(f"{path}: base config {base} not found")
    for name, r in spec["recipes"].items():
        if not isinstance(r, dict) or not isinstance(r.get("overrides", []), list):
            raise SystemExit(f"{path}: recipe {name!r}: expected {{about: str, overrides: [key=value, ...]}}")
    return base, list(spec.get("overrides", [])), spec["recipes"]


def run(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed with exit code {proc.returncode}; see {log}")


def subset(manifest: Path, n: int, out: Path) -> Path:
    lines = [ln for ln in manifest.read_text().splitlines() if ln.strip()]
    if n > len(lines):
        raise SystemExit(f"--max_train {n}: {manifest} has only {len(lines)} utterances")
    rows = []
    for ln in lines[:n]:  # audio paths are relative to the manifest's folder: make them absolute for the copy
        row = json.loads(ln)
        row["audio"] = str((manifest.parent / row["audio"]).resolve())
        rows.append(json.dumps(row, ensure_ascii=False))
    out.write_text("\n".join(rows) + "\n")
    return out


def cache_for(cache: Path, recipe: dict) -> Path:
    """The recipe's own cache (``cache: NAME`` -> CACHE-NAME beside CACHE) or the shared one."""
    return cache.with_name(f"{cache.name}-{recipe['cache']}") if recipe.get("cache") else cache


def one(name: str, recipe: dict, args, base: Path, common: list[str], train: Path, real: Path) -> dict:
    d = args.out / name
    d.mkdir(parents=True, exist_ok=True)
    done = d / "scores.json"
    if done.is_file():
        return json.loads(done.read_text())
    log = d / "log.txt"
    t0 = time.perf_counter()
    overrides = [
        f"data.train={train}", f"data.dev={args.corpus / 'dev.jsonl'}", f"data.cache_dir={cache_for(args.cache, recipe)}",
        f"out={d / 'run'}", f"time_budget_minutes={args.minutes}", "num_threads=1", *common, *recipe.get("overrides", []),
    ]  # fmt: skip
    run([sys.executable, "-m", "sltalign", "train", str(base), *overrides], log)
    train_min = (time.perf_counter() - t0) / 60
    summary = json.loads((d / "run" / "summary.json").read_text())
    scores = {"recipe": name, "about": recipe.get("about", ""), "overrides": recipe.get("overrides", []),
              "train_minutes_wall": train_min, "steps": summary["steps"], "best_dev_bleu": summary["best_dev_bleu"],
              "best_step": summary["best_step"]}  # fmt: skip
    for split, manifest in (("test", args.corpus / "test.jsonl"), ("real", real)):
        cmd = [sys.executable, "-m", "sltalign", "evaluate", "--model", str(d / "run" / "best"), "--manifest", str(manifest),
               "--out", str(d / split), "--beam", str(args.beam)]  # fmt: skip
        run(cmd, log)
        m = json.loads((d / split / "metrics.json").read_text())
        scores[split] = {k: m[k] for k in ("bleu", "chrf", "bleu_signature", "chrf_signature", "n", "buckets")}
    done.write_text(json.dumps(scores, indent=2))
    return scores


def dev_curves(out: Path, names: list[str]) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax_s, ax_m = fig.subplots(1, 2, sharey=True)
    for name in names:
        f = out / name / "run" / "metrics.csv"
        if not f.is_file():
            continue
        pts = [(float(r["step"]), float(r["minutes"]), float(r["value"])) for r in csv.DictReader(f.open())
               if r["split"] == "dev" and r["name"] == "bleu"]  # fmt: skip
        if pts:
            ax_s.plot([p[0] for p in pts], [p[2] for p in pts], marker=".", label=name)
            ax_m.plot([p[1] for p in pts], [p[2] for p in pts], marker=".", label=name)
    ax_s.set_xlabel("step")
    ax_m.set_xlabel("training minutes")
    ax_s.set_ylabel("dev BLEU (greedy)")
    ax_m.legend(fontsize=8)
    for ax in (ax_s, ax_m):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "dev_bleu.png", dpi=120)
    return out / "dev_bleu.png"


def best_dev_wer(run_dir: Path, step: int) -> str:
    """The dev CTC WER logged at the best checkpoint's step ("-" for models without a CTC head)."""
    f = run_dir / "metrics.csv"
    rows = [r for r in csv.DictReader(f.open()) if r["split"] == "dev" and r["name"] == "ctc_wer"] if f.is_file() else []
    at = [float(r["value"]) for r in rows if int(r["step"]) == step]
    return f"{100 * at[-1]:.0f}%" if at else "-"


def report(out: Path, results: list[dict], args) -> Path:
    refs = json.loads((out / results[0]["recipe"] / "test" / "metrics.json").read_text()).get("reference_source", ["?"])
    lines = [
        f"# Recipes compared ({args.recipes.name})", "",
        f"Corpus {args.corpus} (train {args.max_train or 'all'}), cache {args.cache}; each recipe at most {args.minutes} "
        f"min of training, one thread, seed from the base config; scored with beam {args.beam}.",
        f"Test references: {', '.join(refs)} (MT output when it says mt:..., human otherwise); real-speech references: human. "
        "Connector share: of what the aligned model loads (Whisper encoder + MT + connector).", "",
        "| recipe | connector params (share) | steps | best dev BLEU | dev CTC WER | test BLEU / chrF | <5 s | 5-10 s | 10-20 s | >20 s | real speech BLEU / chrF |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in results:
        b = r["test"]["buckets"]
        cell = lambda k: f"{b[k]['bleu']:.1f}" if k in b and b[k].get("n") else "-"  # noqa: E731
        run_dir = out / r["recipe"] / "run"
        params = json.loads((run_dir / "parameters.json").read_text())
        wer = best_dev_wer(run_dir, r["best_step"])
        lines.append(
            f"| {r['recipe']} | {params['connector'] / 1e6:.2f}M ({100 * params['connector_share']:.1f}%) | {r['steps']} | "
            f"{r['best_dev_bleu']:.1f} | {wer} | {r['test']['bleu']:.1f} / {r['test']['chrf']:.1f} | "
            f"{cell('<5s')} | {cell('5-10s')} | {cell('10-20s')} | {cell('>20s')} | {r['real']['bleu']:.1f} / {r['real']['chrf']:.1f} |"
        )
    lines += ["", "Recipes:", *[f"- `{r['recipe']}`: {r['about']} (`{' '.join(r['overrides'])}`)" for r in results], "",
              f"BLEU signature `{results[0]['test']['bleu_signature']}`, chrF `{results[0]['test']['chrf_signature']}`.", "",
              "![dev BLEU](dev_bleu.png)", ""]  # fmt: skip
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--max_train", type=int, default=0, help="use the first N training utterances (0: all)")
    ap.add_argument("--only", nargs="*", default=None, help="recipe names to run (default: all)")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--beam", type=int, default=4)
    args = ap.parse_args()

    base, common, recipes = load_recipes(args.recipes)
    names = args.only or list(recipes)
    unknown = [n for n in names if n not in recipes]
    if unknown:
        raise SystemExit(f"--only: unknown recipe(s) {unknown}; {args.recipes} has {list(recipes)}")
    for split in ("train", "dev", "test"):
        if not (args.corpus / f"{split}.jsonl").is_file():
            raise SystemExit(f"--corpus {args.corpus}: no {split}.jsonl")
    args.out.mkdir(parents=True, exist_ok=True)
    train = args.corpus / "train.jsonl"
    if args.max_train:
        train = subset(train, args.max_train, args.out / f"train_first{args.max_train}.jsonl")
    from sltalign.data.realspeech import build_realspeech_manifest

    real = build_realspeech_manifest(args.out / "realspeech")
    # The first recipe on a new cache builds it; the cache's other recipes wait for it (running them beside it
    # would encode everything twice). Builders are submitted first, so a waiting task never holds the slot
    # its builder needs.
    builders: dict[Path, str] = {}
    for n in names:
        c = cache_for(args.cache, recipes[n])
        if c not in builders and not (c / "index.jsonl").is_file():
            builders[c] = n
    results: dict[str, dict] = {}
    futures: dict[str, Future] = {}

    def after_builder(n: str) -> dict:
        b = builders.get(cache_for(args.cache, recipes[n]))
        if b is not None and b != n:
            futures[b].result()
        return one(n, recipes[n], args, base, common, train, real)

    order = [n for n in names if n in builders.values()] + [n for n in names if n not in builders.values()]
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        for n in order:
            futures[n] = pool.submit(after_builder, n)
        for n in names:
            results[n] = futures[n].result()
            print(f"{n}: test BLEU {results[n]['test']['bleu']:.1f}, real {results[n]['real']['bleu']:.1f}", flush=True)
    # The table holds every recipe of the file scored in OUT so far (an --only run adds rows to it).
    for n in recipes:
        if n not in results and (args.out / n / "scores.json").is_file():
            results[n] = json.loads((args.out / n / "scores.json").read_text())
    ordered = [results[n] for n in recipes if n in results]
    (args.out / "results.json").write_text(json.dumps(ordered, indent=2))
    dev_curves(args.out, [r["recipe"] for r in ordered])
    print((report(args.out, ordered, args)).read_text())


if __name__ == "__main__":
    main()

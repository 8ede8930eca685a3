"""Dev BLEU (and dev CTC WER, where logged) of several training runs against minutes and steps, in one figure.

    python3 bench/plot_runs.py --run 4k=runs/size4k/ctc_hard_window_decay/run \\
        --run 8k=runs/size8k/ctc_hard_window_decay/run --run 16k=runs/size16k/ctc_hard_window_decay/run \\
        --title "30 min, one thread: training clips" --out docs/img/data_size_dev_bleu.png

Each RUN is a ``sltalign train`` output directory (its metrics.csv: step, minutes, split, name, value), so
runs made by different commands (``compare_recipes.py`` into different OUTs, a demo) can be compared.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def dev_series(run: Path, name: str) -> list[tuple[int, float, float]]:
    """(step, minutes, value) of the dev metric ``name`` in RUN/metrics.csv, in order."""
    path = run / "metrics.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (expected a `sltalign train` output directory)")
    out = []
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["split"] == "dev" and row["name"] == name:
                out.append((int(row["step"]), float(row["minutes"]), float(row["value"])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="LABEL=DIR (repeat)")
    ap.add_argument("--title", default="")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    runs = []
    for item in args.run:
        label, sep, d = item.partition("=")
        if not sep:
            raise SystemExit(f"--run {item!r}: expected LABEL=DIR")
        runs.append((label, Path(d)))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row")
    for label, d in runs:
        for row, (metric, scale) in enumerate((("bleu", 1.0), ("ctc_wer", 100.0))):
            s = dev_series(d, metric)
            if not s:
                continue
            axes[row, 0].plot([m for _, m, _ in s], [v * scale for *_, v in s], marker=".", label=label)
            axes[row, 1].plot([st for st, _, _ in s], [v * scale for *_, v in s], marker=".", label=label)
    for col, xlabel in enumerate(("minutes of training", "steps")):
        axes[1, col].set_xlabel(xlabel)
    axes[0, 0].set_ylabel("dev BLEU (greedy)")
    axes[1, 0].set_ylabel("dev CTC WER (%)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()

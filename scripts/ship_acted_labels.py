"""Write src/sltalign/data/acted_labels.tsv from a `sltalign data acted` output directory's labels.jsonl.

    sltalign data acted --out runs/acted --clips 2200        # Whisper base, seed 0: ~1 s of CPU per clip
    python3 scripts/ship_acted_labels.py runs/acted

The labels ship so that anyone taking the seed-0 choice with Whisper base reads them instead of
recognising every clip again. All labelled clips are written, kept or not, so that another filter needs no
new recognition.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sltalign.data.acted import SHIPPED_ASR, SHIPPED_SEED, _read_labels, write_shipped_labels

OUT = Path(__file__).resolve().parents[1] / "src" / "sltalign" / "data" / "acted_labels.tsv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="a `sltalign data acted` --out directory made with the defaults (seed 0, Whisper base)")
    args = ap.parse_args()
    labels = list(_read_labels(Path(args.run_dir) / "labels.jsonl").values())
    header = [
        f"Transcripts by {SHIPPED_ASR} (CTranslate2 int8, greedy, no timestamps) of the first {len(labels)} speech clips "
        f"of the seed-{SHIPPED_SEED} choice of sltalign.data.acted: the voiced dialogue of Flight of the Amazon Queen, "
        "with Whisper's confidence (the worst segment's mean token log-probability, the highest no-speech "
        "probability and gzip compression ratio).",
        "Made with: sltalign data acted --out DIR --clips N; python3 scripts/ship_acted_labels.py DIR",
        "The dialogue is (C) 1995 John Passfield and Steven Stamatiadis, distributed under the game's freeware "
        "licence (free redistribution with its notices kept; Debian package flight-of-the-amazon-queen, its "
        "copyright file). These are machine transcripts of it, not the game's script: a modified work, marked as "
        "such, under clause 4 of that licence.",
        "Training labels only: they hold Whisper's errors. Never use them as references.",
    ]
    print(write_shipped_labels(OUT, labels, header), len(labels), "labels")


if __name__ == "__main__":
    main()

"""How long a piece should a connector trained on short clips translate at once? (``max_piece_seconds``)

    python3 bench/piece_seconds.py --model runs/demo/connector --manifest runs/demo/corpus/test.jsonl \\
        runs/demo/realspeech/manifest.jsonl --values 0 6 8 10 15 --out runs/piece_seconds

A connector trained on 1-6 s clips has never seen a 25-s input; given one whole, it tends to translate the
first sentence or two and stop. ``SpeechTranslator`` therefore splits audio longer than ``max_piece_seconds``
at pauses (Silero VAD) and translates the pieces in order. This runs one checkpoint over each manifest with
each value (0: split only at the encoder's 30-s window, the behaviour without the option) and scores corpus
BLEU/chrF overall and per duration bucket, side by side in one table. The model is loaded once; only the
splitting changes between rows.

``--pauses`` sweeps ``sentence_pause_seconds`` as well (each with each value): where audio is split, a pause
at least this long always ends a piece and longer pauses are cut first; a negative value packs each piece up
to the limit (greedy packing, the behaviour before the option).

Writes OUT/results.json (scores with sacrebleu signatures, per manifest and value), OUT/report.md and
OUT/piece_seconds.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sltalign.api import SpeechTranslator  # noqa: E402
from sltalign.data.manifest import read_manifest  # noqa: E402
from sltalign.evaluate import BUCKETS, score  # noqa: E402
from sltalign.systems import load_utterances  # noqa: E402


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="connector checkpoint directory")
    ap.add_argument("--manifest", type=Path, nargs="+", required=True)
    ap.add_argument("--values", type=float, nargs="+", default=[0, 6, 8, 10, 15], help="max_piece_seconds (0: window only)")
    ap.add_argument(
        "--pauses",
        type=float,
        nargs="+",
        default=None,
        help="sentence_pause_seconds values (negative: greedy packing; default: the checkpoint's)",
    )
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    st = SpeechTranslator.from_pretrained(args.model, beam=args.beam)
    stored = st.max_piece_seconds
    stored_pause = st.sentence_pause_seconds
    pauses = args.pauses if args.pauses is not None else [-1.0 if stored_pause is None else stored_pause]
    results: dict[str, dict[str, dict]] = {}
    for manifest in args.manifest:
        utts = read_manifest(manifest, require=("translation",))
        wavs = load_utterances(utts)
        refs = [u.translation for u in utts]
        durations = [u.duration for u in utts]
        rows: dict[str, dict] = {}
        for v in args.values:
            for pause in pauses:
                st.max_piece_seconds = v or None
                st.sentence_pause_seconds = pause if pause >= 0 else None
                hyps = st.translate(wavs, progress=True)
                m = score(hyps, refs, durations=durations)
                m["model_seconds"] = st.last_timings["model_seconds"]
                m["reference_source"] = sorted({u.translation_source or "unknown" for u in utts})
                m["sentence_pause_seconds"] = st.sentence_pause_seconds
                rows[f"{v:g}" if len(pauses) == 1 else f"{v:g} / {'greedy' if pause < 0 else f'{pause:g}'}"] = m
                print(
                    f"{manifest} max_piece_seconds={v:g} sentence_pause_seconds={pause:g}: "
                    f"BLEU {m['bleu']:.2f} chrF {m['chrf']:.2f}",
                    flush=True,
                )
        results[str(manifest)] = rows
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "model": str(args.model),
                "stored_max_piece_seconds": stored,
                "stored_sentence_pause_seconds": stored_pause,
                "results": results,
            },
            indent=2,
        )
    )

    names = [name for name, _, _ in BUCKETS]
    lines = [
        "# Translating long audio in pieces (max_piece_seconds)",
        "",
        f"Model {args.model} (checkpoint's own max_piece_seconds: {stored}, sentence_pause_seconds: {stored_pause}); "
        f"beam {args.beam}. 0 = split only at the encoder's 30-s window; rows 'S / P' are max_piece_seconds S with "
        "sentence_pause_seconds P (greedy: pieces packed up to S).",
        "",
    ]
    for manifest, rows in results.items():
        src = next(iter(rows.values()))["reference_source"]
        human = all(not s.startswith("mt:") for s in src)
        lines += [f"## {manifest} (references: {', '.join(src)}, {'human' if human else 'MT output'})", ""]
        lines += [
            f"| max_piece_seconds{' / sentence_pause_seconds' if len(pauses) > 1 else ''} | BLEU / chrF | "
            + " | ".join(names)
            + " | model seconds |",
            "|---" * (len(names) + 3) + "|",
        ]
        for v, m in rows.items():
            b = m["buckets"]
            lines.append(
                f"| {v} | {m['bleu']:.1f} / {m['chrf']:.1f} | "
                + " | ".join(_fmt(b[n]["bleu"]) for n in names)
                + f" | {m['model_seconds']:.0f} |"
            )
        lines.append("")
    first = next(iter(next(iter(results.values())).values()))
    lines += [
        f"BLEU signature `{first['bleu_signature']}`, chrF `{first['chrf_signature']}`.",
        "",
        "![BLEU against piece length](piece_seconds.png)",
        "",
    ]
    (args.out / "report.md").write_text("\n".join(lines))

    fig, ax = plt.subplots(figsize=(6, 4))
    for manifest, rows in results.items():
        keys = list(rows)
        ax.plot(
            range(len(keys)),
            [m["bleu"] for m in rows.values()],
            marker="o",
            label=Path(manifest).parent.name + "/" + Path(manifest).name,
        )
        ax.set_xticks(range(len(keys)), [("window" + k[1:] if k.startswith("0") else k) for k in keys], rotation=30, fontsize=7)
    ax.set_xlabel("max_piece_seconds" + (" / sentence_pause_seconds" if len(pauses) > 1 else ""))
    ax.set_ylabel("corpus BLEU")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "piece_seconds.png", dpi=120)
    print(f"-> {args.out / 'report.md'}")


if __name__ == "__main__":
    main()

"""What does a connector hear? Greedy CTC word error rate of checkpoints on manifests, side by side.

    python3 bench/ctc_wer.py --model runs/demo4/connector runs/demo5/connector \\
        --manifest corpus/dev.jsonl realspeech/manifest.jsonl

Each checkpoint's CTC head is read greedily (``AlignedST.ctc_transcribe``: the tied head's MT tokens or the
pieces head's pieces, spelled out) and scored against the manifest's transcripts with the WER that training
logs as ``ctc_wer`` (``sltalign.evaluate.word_error_rate``: jiwer on lower-cased words, punctuation removed).
Prints one table, rows = checkpoints, columns = manifests (WER and the number of clips scored; clips longer
than ``--max_duration``, one encoder window, are left out).
"""

from __future__ import annotations

import argparse

import torch
from tqdm import tqdm

from sltalign.audio import load_audio
from sltalign.checkpoint import load_connector
from sltalign.data.manifest import read_manifest
from sltalign.evaluate import word_error_rate


def ctc_wer(model, manifest: str, *, batch_size: int = 8, max_duration: float = 30.0) -> tuple[float, int]:
    """-> (WER, utterances scored): clips longer than ``max_duration`` (the encoder's window) are left out."""
    utts = [u for u in read_manifest(manifest, require=("transcript",)) if u.duration <= max_duration]
    hyps: list[str] = []
    with torch.inference_mode():
        for i in tqdm(range(0, len(utts), batch_size), desc=manifest, unit="batch", leave=False):
            chunk = utts[i : i + batch_size]
            waves = [
                load_audio(u.audio, offset=u.offset, duration=u.duration) if u.offset else load_audio(u.audio) for u in chunk
            ]
            hyps += model.ctc_transcribe(*model.encode_audio(waves))
    return word_error_rate(hyps, [u.transcript for u in utts]), len(utts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", required=True, help="checkpoint directories (with a CTC head)")
    ap.add_argument("--manifest", nargs="+", required=True, help="manifests with transcripts")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--max_duration", type=float, default=30.0, help="leave out longer clips (one encoder window)")
    args = ap.parse_args()
    print("| checkpoint | " + " | ".join(args.manifest) + " |")
    print("|---|" + "---|" * len(args.manifest))
    for path in args.model:
        model, _ = load_connector(path)
        cells = [ctc_wer(model, m, batch_size=args.batch_size, max_duration=args.max_duration) for m in args.manifest]
        print(f"| {path} | " + " | ".join(f"{100 * w:.1f}% ({n})" for w, n in cells) + " |", flush=True)


if __name__ == "__main__":
    main()

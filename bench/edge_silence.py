"""Probe: copies of a manifest's audio with digital silence added at both ends, to score a connector on them.

Many of the real-speech set's telephone prompts start on their first sample (the first 100 ms at -20 to -40 dB
against -96 dB for silence) and end within a few ms of the last word, while half of the demo's training clips
carry 0.1-1 s of leading and trailing room tone. If the trimmed encoder's first and last frames are what a
connector mishears in those recordings, padding them at inference should show it:

    PYTHONPATH=src python3 bench/edge_silence.py --manifest rs/manifest.jsonl --seconds 0.25 0.5 --out runs/edges
    sltalign evaluate --model runs/demo/connector --manifest runs/edges/0.5/manifest.jsonl --out eval/edges_0.5

Writes OUT/<seconds>/manifest.jsonl and its 16 kHz WAV files; every other field of a row is kept, the
duration grows by twice the padding.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import soundfile as sf

from sltalign.audio import SAMPLE_RATE
from sltalign.data.manifest import read_manifest, write_manifest
from sltalign.systems import load_utterances


def pad_manifest(manifest: Path, out: Path, seconds: float) -> int:
    """Write ``out``/manifest.jsonl with each clip of ``manifest`` padded by ``seconds`` of zeros at both ends."""
    (out / "audio").mkdir(parents=True, exist_ok=True)
    zeros = np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)
    padded = []
    for u in read_manifest(manifest):
        wav = load_utterances([u])[0]  # the row's [offset, offset + duration) span, as evaluation reads it
        dst = (out / "audio" / f"{u.id}.wav").resolve()
        sf.write(dst, np.concatenate([zeros, wav, zeros]), SAMPLE_RATE)
        padded.append(dataclasses.replace(u, audio=str(dst), offset=0.0, duration=round(len(wav) / SAMPLE_RATE + 2 * seconds, 3)))
    write_manifest(out / "manifest.jsonl", padded)
    return len(padded)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", required=True, type=Path)
    ap.add_argument("--seconds", type=float, nargs="+", default=[0.25, 0.5])
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    for s in args.seconds:
        n = pad_manifest(args.manifest, args.out / f"{s:g}", s)
        print(f"{n} clips padded by {s:g} s -> {args.out / f'{s:g}' / 'manifest.jsonl'}")


if __name__ == "__main__":
    main()

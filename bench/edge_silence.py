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
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from sltalign.audio import SAMPLE_RATE, load_audio


def pad_manifest(manifest: Path, out: Path, seconds: float) -> int:
    """Write ``out``/manifest.jsonl with each clip of ``manifest`` padded by ``seconds`` of zeros at both ends."""
    (out / "audio").mkdir(parents=True, exist_ok=True)
    zeros = np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    with (out / "manifest.jsonl").open("w") as f:
        for r in rows:
            src = Path(r["audio"]) if Path(r["audio"]).is_absolute() else manifest.parent / r["audio"]
            wav = np.asarray(load_audio(src), dtype=np.float32)
            dst = (out / "audio" / f"{r['id']}.wav").resolve()
            sf.write(dst, np.concatenate([zeros, wav, zeros]), SAMPLE_RATE)
            r = {**r, "audio": str(dst), "duration": round(len(wav) / SAMPLE_RATE + 2 * seconds, 3)}
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return len(rows)


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

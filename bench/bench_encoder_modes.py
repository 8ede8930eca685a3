"""Whisper encoder: trim vs pad30, and fp32 vs bf16 compute, side by side in one run.

    python3 bench/bench_encoder_modes.py [--model packaged:whisper-base] [--seconds 2 4 6 8 10] [--repeats 3]

For each clip length, encodes the same real speech (LibriVox recordings from Debian's pocketsphinx-testdata,
cut or concatenated to length) in both modes, one clip at a time (how the cache encodes a clip), and prints
the best-of-N wall time of each and the ratio pad30 / trim. Also prints how close the trimmed frames are to
the pad30 frames (cosine similarity), since trim changes what the encoder sees. A second table times trim
mode in fp32 and in bf16 (``precision="bf16"``: autocast, fast on CPUs with AMX) and prints the relative
error of the bf16 states.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from sltalign.audio import load_audio
from sltalign.foundation import load_speech_encoder

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def speech(seconds: float) -> np.ndarray:
    files = sorted(LIBRIVOX.glob("*.wav"))
    if not files:
        raise SystemExit(f"no recordings under {LIBRIVOX}: install the Debian package pocketsphinx-testdata")
    wav = np.concatenate([load_audio(f) for f in files])
    return wav[: int(seconds * 16000)]


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def side_by_side(fast, slow, wav: np.ndarray, repeats: int) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Best-of-N seconds of two encoders on one clip, and their states (T_s, D_s) for comparison."""
    t_fast = best_time(lambda: fast.encode([wav]), repeats)
    t_slow = best_time(lambda: slow.encode([wav]), repeats)
    return t_fast, t_slow, fast.encode([wav])[0][0], slow.encode([wav])[0][0]


def geomean(xs: list[float]) -> float:
    return float(np.exp(np.mean(np.log(xs))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="packaged:whisper-base")
    ap.add_argument("--seconds", type=float, nargs="+", default=[2, 4, 6, 8, 10])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    trim = load_speech_encoder(args.model, mode="trim")
    pad = load_speech_encoder(args.model, mode="pad30")
    print(f"{args.model}, torch threads {torch.get_num_threads()}, best of {args.repeats}")
    print("| clip s | trim s | pad30 s | pad30 / trim | cosine trim vs pad30 (mean, last quarter) |")
    print("|---|---|---|---|---|")
    ratios = []
    for sec in args.seconds:
        t_trim, t_pad, a, b = side_by_side(trim, pad, speech(sec), args.repeats)
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
        q = cos[3 * len(cos) // 4 :]
        ratios.append(t_pad / t_trim)
        print(f"| {sec:g} | {t_trim:.3f} | {t_pad:.3f} | {t_pad / t_trim:.1f}x | {cos.mean():.3f}, {q.mean():.3f} |")
    print(
        f"\nspeed-up pad30 / trim over {args.seconds[0]:g}-{args.seconds[-1]:g} s clips: min {min(ratios):.1f}x, "
        f"geometric mean {geomean(ratios):.1f}x (target >= 5x)"
    )

    bf16 = load_speech_encoder(args.model, mode="trim", precision="bf16")
    print("\n| clip s | trim fp32 s | trim bf16 s | fp32 / bf16 | relative error of bf16 states | cosine (min over frames) |")
    print("|---|---|---|---|---|---|")
    ratios = []
    for sec in args.seconds:
        t_16, t_32, b, a = side_by_side(bf16, trim, speech(sec), args.repeats)
        rel = float((a - b).norm() / a.norm())
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
        ratios.append(t_32 / t_16)
        print(f"| {sec:g} | {t_32:.3f} | {t_16:.3f} | {t_32 / t_16:.1f}x | {rel:.4f} | {cos.min():.4f} |")
    print(f"\nspeed-up fp32 / bf16 (trim), one clip at a time: geometric mean {geomean(ratios):.1f}x")
    # how the encoder cache runs it: batches of 8 clips (lengths spread like a corpus's, 2-5 s here)
    batch = [speech(2 + 3 * i / 7) for i in range(8)]
    t_32 = best_time(lambda: trim.encode(batch), args.repeats)
    t_16 = best_time(lambda: bf16.encode(batch), args.repeats)
    print(
        f"batch of 8 clips (2-5 s, {sum(map(len, batch)) / 16000:.0f} s of audio): fp32 {t_32:.3f} s, bf16 {t_16:.3f} s, "
        f"fp32 / bf16 {t_32 / t_16:.1f}x"
    )


if __name__ == "__main__":
    main()

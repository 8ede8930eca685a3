"""Whisper encoder engines side by side in one run: torch fp32 / bf16 and CTranslate2 int8 / float32.

    python3 bench/bench_encoder_engines.py [--model packaged:whisper-base] [--seconds 2 4 6 8 10] [--threads 2]
                                           [--repeats 3] [--batch 8]

Clips are real speech (LibriVox recordings from Debian's pocketsphinx-testdata, each length cut from its own
offset so the clips differ) or, without that package or with --synthetic, the speech-like probe signal that
``auto`` measures on. For each engine and precision (trim mode), the table gives encoding throughput in
audio-seconds per second of wall time (best of --repeats after a warm-up, the engines timed in turns):
    one at a time   each clip alone (how translate encodes a piece, and the cache a clip with no same-length peer)
    batch, equal    --batch clips of one length (4 s) in one call (the cache's length-bucketed batches)
    batch, mixed    --batch clips of 2-10 s in one call (torch pads and masks; CTranslate2, which has no
                    key-padding mask, runs one call per distinct length, here one by one)
and how close its states are to torch fp32's on the same clips: the max relative error (max |diff| / max |ref|,
worst clip; one outlier channel decides it), the relative L2 error (||diff|| / ||ref||, worst clip) and the mean
frame cosine (mean over clips of the mean over frames; what ``auto`` holds to >= 0.99). Last, what ``auto`` picks here,
measured afresh (not read from the remembered decisions). Ratios measured in one run compare even on a shared
machine; absolute figures move with the load.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from sltalign.foundation import load_speech_encoder
from sltalign.foundation.ctranslate2_encoder import _cpu_model, choose_engine, frame_agreement, probe_waveform

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
ENGINES = (("torch", "fp32"), ("torch", "bf16"), ("ctranslate2", "int8"), ("ctranslate2", "fp32"))


def speech_source(synthetic: bool) -> tuple[np.ndarray, str]:
    """(a long waveform to cut clips from, what it is)."""
    files = sorted(LIBRIVOX.glob("*.wav"))
    if files and not synthetic:
        from sltalign.audio import load_audio

        return np.concatenate([load_audio(f) for f in files]), f"real speech ({len(files)} LibriVox recordings)"
    return probe_waveform(120.0), "synthetic speech-like signal (ctranslate2_encoder.probe_waveform)"


def clip(source: np.ndarray, seconds: float, k: int) -> np.ndarray:
    """``seconds`` of ``source`` from the k-th of a spread of offsets (wrapping around)."""
    n = int(seconds * 16000)
    start = (k * 37 * 16000 // 10) % max(1, len(source) - n)
    return np.ascontiguousarray(source[start : start + n])


def round_robin(fns: dict, repeats: int) -> dict:
    """Best-of-``repeats`` wall time (s) of each function, timed in turns (one of each per round, after one
    warm-up call each), so that load from other jobs on a shared machine falls on every engine alike."""
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def cpu_line() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
        amx = "amx_tile" in flags
        bf16 = "avx512_bf16" in flags
    except OSError:
        amx = bf16 = False
    return f"{_cpu_model()} ({platform.machine()}), AMX: {'yes' if amx else 'no'}, AVX-512 BF16: {'yes' if bf16 else 'no'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="packaged:whisper-base")
    ap.add_argument("--seconds", type=float, nargs="+", default=[2, 4, 6, 8, 10])
    ap.add_argument("--threads", type=int, default=2, help="torch and CTranslate2 intra-op threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--synthetic", action="store_true", help="the probe signal instead of the LibriVox recordings")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # CTranslate2 takes torch's thread count at load
    source, what = speech_source(args.synthetic)
    singles = [clip(source, s, k) for k, s in enumerate(args.seconds)]
    equal = [clip(source, 4.0, k) for k in range(args.batch)]
    mixed = [clip(source, 2 + 8 * k / max(1, args.batch - 1), k) for k in range(args.batch)]
    secs = lambda waves: sum(len(w) for w in waves) / 16000  # noqa: E731

    encoders = {}
    for engine, precision in ENGINES:
        try:
            encoders[(engine, precision)] = load_speech_encoder(args.model, precision=precision, engine=engine)
        except (ImportError, ValueError) as e:
            print(f"{engine} {precision}: cannot run here ({e})")
    ref = encoders[("torch", "fp32")]
    ref_states = [ref.encode([w])[0][0] for w in singles]  # (T_s, D_s) each

    print(f"{args.model}, trim mode, {args.threads} threads, best of {args.repeats}; CPU: {cpu_line()}")
    print(
        f"clips: {what}; one at a time: {', '.join(f'{s:g}' for s in args.seconds)} s; batch, equal: {args.batch} x 4 s; "
        f"batch, mixed: {args.batch} clips of 2-10 s ({secs(mixed):.0f} s)"
    )
    print(
        "\n| engine | precision | one at a time (audio-s/s) | batch, equal | batch, mixed | vs torch fp32: one / equal / mixed "
        "| max rel. error | rel. L2 error | mean frame cosine |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    names = list(encoders)
    t_one = {k: 0.0 for k in names}
    for w in singles:
        for k, t in round_robin({k: (lambda e=encoders[k], w=w: e.encode([w])) for k in names}, args.repeats).items():
            t_one[k] += t
    t_eq = round_robin({k: (lambda e=encoders[k]: e.encode(equal)) for k in names}, args.repeats)
    t_mix = round_robin({k: (lambda e=encoders[k]: e.encode(mixed)) for k in names}, args.repeats)
    base = None
    for (engine, precision), enc in encoders.items():
        k = (engine, precision)
        speed = (secs(singles) / t_one[k], secs(equal) / t_eq[k], secs(mixed) / t_mix[k])
        base = base or speed
        agree = [frame_agreement(r, enc.encode([w])[0][0]) for r, w in zip(ref_states, singles)]
        rel = max(a["max_rel_err"] for a in agree)
        l2 = max(a["rel_l2"] for a in agree)
        cos = float(np.mean([a["mean_cosine"] for a in agree]))
        ratios = " / ".join(f"{s / b:.2f}x" for s, b in zip(speed, base))
        print(
            f"| {engine} | {precision} | {speed[0]:.1f} | {speed[1]:.1f} | {speed[2]:.1f} | {ratios} | {rel:.4f} | {l2:.4f} | {cos:.5f} |"
        )

    decision = choose_engine(ref, _ct2_dir(args.model), remember=False)
    print(
        f"\nauto picks: {decision['engine']} {decision['precision']} (fastest with mean frame cosine >= "
        f"{decision['min_cosine']} to torch fp32 on a {4.0:g}-s probe; measured: "
        + ", ".join(
            f"{r['engine']} {r['precision']} {r['audio_s_per_s']:.0f} audio-s/s cos {r['mean_cosine']:.4f}"
            for r in decision["measured"]
        )
        + ")"
    )


def _ct2_dir(spec: str) -> str | None:
    from sltalign.foundation.speech_encoder import _ct2_dir_for

    return _ct2_dir_for(spec)


if __name__ == "__main__":
    main()

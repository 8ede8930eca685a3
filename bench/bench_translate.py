"""Translation speed and peak memory: the aligned model vs the cascade, and the peak memory of training.

    python3 bench/bench_translate.py --model runs/demo/connector [--manifest M.jsonl] [--beam 4]

(``runs/demo/connector`` is what ``sltalign demo --out runs/demo`` writes; ``--quick`` gives one in ~4 min.)

Side by side in one run, on the same audio (default: the project's real-speech set, 12 recordings from
Debian's pocketsphinx-testdata), with the same thread count and the same MT beam:

- ``aligned``: ``SpeechTranslator.from_pretrained(model).translate(paths)``: the frozen Whisper encoder
  (trim mode), the connector, the frozen MT;
- ``cascade``: faster-whisper transcribing with the same packaged Whisper (int8, greedy), then the same MT.

Each system runs in a fresh child process, so the peak resident memory (ru_maxrss) printed is that system's
alone, from loading its models to the last translation; the real-time factor is compute seconds per second of
audio after loading, best of ``--repeats`` passes. A third child trains the same connector architecture for
``--train_steps`` steps (cache build included) with the demo recipe's objectives and reports its peak memory.
Target: the aligned model at most half the cascade's time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _aligned(model: str, paths: list[str], beam: int, repeats: int, threads: int, q: mp.Queue) -> None:
    import torch

    from sltalign.api import SpeechTranslator

    torch.set_num_threads(threads)
    st = SpeechTranslator.from_pretrained(model, beam=beam)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        st.translate(paths)
        best = min(best, time.perf_counter() - t)
    q.put({"seconds": best, "audio": st.last_timings["audio_seconds"], "peak_mb": _peak_mb(),
           "speech_encoder": st.model.speech_encoder.spec, "translator": st.model.translator.spec})


def _cascade(asr: str, mt: str, paths: list[str], beam: int, repeats: int, threads: int, q: mp.Queue) -> None:
    import torch

    from sltalign.audio import load_audio
    from sltalign.cascade import Cascade
    from sltalign.foundation import load_translator

    torch.set_num_threads(threads)
    cascade = Cascade(asr, load_translator(mt), beam=beam, cpu_threads=threads)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        cascade.translate([load_audio(p) for p in paths])  # loading counted, as the aligned model's is
        best = min(best, time.perf_counter() - t)
    q.put({"seconds": best, "peak_mb": _peak_mb()})


def _train(model: str, manifest: str, steps: int, threads: int, q: mp.Queue) -> None:
    from sltalign.checkpoint import read_config
    from sltalign.config import load_config
    from sltalign.demo import preset_path
    from sltalign.train import train

    cfg = read_config(model)
    with tempfile.TemporaryDirectory(prefix="sltalign-bench-train-") as out:
        overrides = [
            f"model.speech_encoder={cfg['speech_encoder']['spec']}", f"model.translator={cfg['translator']['spec']}",
            f"data.train={manifest}", f"data.dev={manifest}", f"data.cache_dir={out}/cache", f"out={out}/run",
            f"stages.0.steps={steps}", "stages.0.evaluate=false",
            "data.batch_size=8", f"num_threads={threads}", f"save_every={steps}",
        ]  # fmt: skip
        t = time.perf_counter()
        train(load_config(preset_path("tokens.yaml"), overrides), progress=False)
        q.put({"seconds": time.perf_counter() - t, "peak_mb": _peak_mb()})


def run_child(target, *args) -> dict:
    ctx = mp.get_context("spawn")  # a fresh interpreter: nothing loaded by the parent counts against the child
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    result = q.get()
    p.join()
    if p.exitcode:
        raise SystemExit(f"{target.__name__} failed with exit code {p.exitcode}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a connector checkpoint directory (e.g. runs/demo/connector)")
    ap.add_argument("--manifest", default=None, help="audio to translate (default: the real-speech set)")
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train_steps", type=int, default=20)
    args = ap.parse_args()

    from sltalign.checkpoint import read_config
    from sltalign.data.manifest import read_manifest
    from sltalign.data.realspeech import build_realspeech_manifest

    cfg = read_config(args.model)
    work = tempfile.TemporaryDirectory(prefix="sltalign-bench-")
    manifest = args.manifest or str(build_realspeech_manifest(work.name))
    utts = read_manifest(manifest)
    if any(u.offset for u in utts):
        raise SystemExit(f"{manifest}: this bench translates whole files; segments with offsets are not supported")
    paths = [u.audio for u in utts]
    asr, mt = cfg["speech_encoder"]["spec"], cfg["translator"]["spec"]

    aligned = run_child(_aligned, args.model, paths, args.beam, args.repeats, args.threads)
    cascade = run_child(_cascade, asr, mt, paths, args.beam, args.repeats, args.threads)
    training = run_child(_train, args.model, manifest, args.train_steps, args.threads)

    audio = aligned["audio"]
    print(f"{len(paths)} clips, {audio:.1f} s of audio; {asr} + {mt}; beam {args.beam}; {args.threads} threads; "
          f"best of {args.repeats}")
    print("\n| system | seconds | real-time factor | peak memory (MB) |")
    print("|---|---|---|---|")
    print(f"| aligned ({cfg['connector']['name']}, {cfg['arrangement']}) | {aligned['seconds']:.2f} | "
          f"{aligned['seconds'] / audio:.3f} | {aligned['peak_mb']:.0f} |")
    print(f"| cascade (faster-whisper int8 greedy -> same MT) | {cascade['seconds']:.2f} | {cascade['seconds'] / audio:.3f} | "
          f"{cascade['peak_mb']:.0f} |")
    print(f"| training, {args.train_steps} steps of the demo recipe (cache build included) | {training['seconds']:.1f} | - | "
          f"{training['peak_mb']:.0f} |")
    ratio = aligned["seconds"] / cascade["seconds"]
    print(f"\naligned / cascade time: {ratio:.2f} (target <= 0.5); cascade is {1 / ratio:.1f}x slower")


if __name__ == "__main__":
    main()

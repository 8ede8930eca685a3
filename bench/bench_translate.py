"""Translation speed and peak memory: the aligned model on each encoder engine vs the cascade, and the peak
memory of training.

    python3 bench/bench_translate.py --model runs/demo/connector [--manifest M.jsonl] [--beam 4]
        [--engines torch-fp32,torch-bf16,ctranslate2-int8,ctranslate2-fp32] [--rounds 1]

(``runs/demo/connector`` is what ``sltalign demo --out runs/demo`` writes; ``--quick`` gives one in ~4 min.)

Side by side in one run, on the same audio (default: the project's real-speech test set, built from the
installed Debian packages), with the same thread count and the same MT beam:

- ``aligned <engine> <precision>``: ``SpeechTranslator.from_pretrained(model, speech_encoder=...)``: the
  frozen Whisper encoder (trim mode) on that engine and precision (``load_speech_encoder(spec, engine=...,
  precision=...)``; the fingerprint is the torch weights', so any engine loads with any checkpoint), the
  connector, the frozen MT. ``checkpoint`` is the engine recorded in the checkpoint (what ``sltalign
  translate`` uses; the row of the engine the connector was trained on is marked in any case); engines that
  cannot run here (no ctranslate2, no CTranslate2 directory) are left out;
- ``cascade``: faster-whisper transcribing with the same packaged Whisper (int8, greedy), then the same MT.

A connector is trained on one engine's states (the checkpoint's ``speech_encoder.engine``): the other engines
feed it states it was not trained on (int8 vs fp32: mean frame cosine ~0.999), so their scores say how much
that costs, not what a connector trained on them would score. Where the manifest has translations, each
system's outputs are scored (sacreBLEU corpus BLEU and chrF, with signatures).

Each system runs in a fresh child process, so the peak resident memory (ru_maxrss) printed is that system's
alone, from loading its models to the last translation; the real-time factor is compute seconds per second of
audio after loading, best of ``--repeats`` passes (and of ``--rounds``: the whole list of systems run again in
turns, so that a load spike on a shared machine does not fall on one system alone). Ratios against the
cascade are of times measured in the same run. A last child trains the same connector architecture for
``--train_steps`` steps (cache build included) with the token recipe (configs/tokens.yaml, the demo's before the
phone recipe; torch fp32 encoder) and reports its peak memory.
Target: the aligned model at most half the cascade's time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import resource
import tempfile
import time


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


ENGINES = ("torch-fp32", "torch-bf16", "ctranslate2-int8", "ctranslate2-fp32", "checkpoint")


def _aligned(model: str, engine: str, paths: list[str], beam: int, repeats: int, threads: int, q: mp.Queue) -> None:
    import warnings

    import torch

    from sltalign.api import SpeechTranslator
    from sltalign.checkpoint import read_config
    from sltalign.foundation import load_speech_encoder

    torch.set_num_threads(threads)
    encoder = None
    if engine != "checkpoint":
        se = read_config(model)["speech_encoder"]
        name, precision = engine.split("-")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a fallback to torch fp32 would time the wrong engine: refuse it
            encoder = load_speech_encoder(se["spec"], mode=se.get("mode") or "trim", precision=precision, engine=name)
    st = SpeechTranslator.from_pretrained(model, speech_encoder=encoder, beam=beam)
    best, hyps = float("inf"), []
    for _ in range(repeats):
        t = time.perf_counter()
        hyps = st.translate(paths)
        best = min(best, time.perf_counter() - t)
    enc = st.model.speech_encoder
    q.put(
        {
            "seconds": best,
            "audio": st.last_timings["audio_seconds"],
            "peak_mb": _peak_mb(),
            "hyps": hyps,
            "engine": getattr(enc, "engine", "torch"),
            "precision": enc.precision,
        }
    )


def _cascade(asr: str, mt: str, paths: list[str], beam: int, repeats: int, threads: int, q: mp.Queue) -> None:
    import torch

    from sltalign.audio import load_audio
    from sltalign.cascade import Cascade
    from sltalign.foundation import load_translator

    torch.set_num_threads(threads)
    cascade = Cascade(asr, load_translator(mt), beam=beam, cpu_threads=threads)
    best, hyps = float("inf"), []
    for _ in range(repeats):
        t = time.perf_counter()
        hyps = cascade.translate([load_audio(p) for p in paths])  # loading counted, as the aligned model's is
        best = min(best, time.perf_counter() - t)
    q.put({"seconds": best, "peak_mb": _peak_mb(), "hyps": hyps})


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
    while True:
        try:
            result = q.get(timeout=5)
            break
        except queue.Empty:
            if not p.is_alive():  # died before answering: say so instead of waiting for ever
                raise SystemExit(f"{target.__name__}{args[:2]} failed with exit code {p.exitcode}") from None
    p.join()
    if p.exitcode:
        raise SystemExit(f"{target.__name__} failed with exit code {p.exitcode}")
    return result


def engines_here(model: str, wanted: list[str]) -> tuple[list[str], dict[str, str]]:
    """The engines of ``wanted`` that can run here, and why each other one cannot."""
    from sltalign.checkpoint import read_config
    from sltalign.foundation.ctranslate2_encoder import ctranslate2_available
    from sltalign.foundation.speech_encoder import _ct2_dir_for

    se = read_config(model)["speech_encoder"] or {}
    skipped: dict[str, str] = {}
    ok = []
    for e in wanted:
        if e not in ENGINES:
            raise SystemExit(f"--engines: unknown engine {e!r}; expected some of {ENGINES}")
        if e.startswith("ctranslate2"):
            if (se.get("mode") or "trim") != "trim":
                skipped[e] = f"the checkpoint's encoder mode is {se.get('mode')!r}; CTranslate2 encodes trimmed input only"
                continue
            if not ctranslate2_available():
                skipped[e] = "the ctranslate2 package is not installed"
                continue
            if _ct2_dir_for(se["spec"]) is None:
                skipped[e] = f"{se['spec']} has no CTranslate2 directory"
                continue
        ok.append(e)
    return ok, skipped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a connector checkpoint directory (e.g. runs/demo/connector)")
    ap.add_argument("--manifest", default=None, help="audio to translate (default: the real-speech set)")
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="run the whole list of systems this many times in turns; best of all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--engines",
        default=",".join(ENGINES[:-1]),
        help=f"comma-separated encoder engines for the aligned model, among {', '.join(ENGINES)}",
    )
    ap.add_argument("--train_steps", type=int, default=20, help="0: no training child")
    ap.add_argument("--json", default=None, help="also write every measurement and output here")
    args = ap.parse_args()

    import json
    import platform

    from sltalign.checkpoint import read_config
    from sltalign.data.manifest import read_manifest
    from sltalign.data.realspeech import build_realspeech_manifest
    from sltalign.evaluate import score

    cfg = read_config(args.model)
    work = tempfile.TemporaryDirectory(prefix="sltalign-bench-")
    manifest = args.manifest or str(build_realspeech_manifest(work.name))
    utts = read_manifest(manifest, require=())
    if any(u.offset for u in utts):
        raise SystemExit(f"{manifest}: this bench translates whole files; segments with offsets are not supported")
    paths = [u.audio for u in utts]
    refs = [u.translation for u in utts]
    asr, mt = cfg["speech_encoder"]["spec"], cfg["translator"]["spec"]
    se = cfg["speech_encoder"]
    engines, skipped = engines_here(args.model, [e.strip() for e in args.engines.split(",") if e.strip()])

    systems = [("aligned", e) for e in engines] + [("cascade", None)]
    results: dict[str, dict] = {}
    for _ in range(args.rounds):
        for kind, engine in systems:
            key = f"aligned {engine}" if kind == "aligned" else "cascade"
            if kind == "aligned":
                r = run_child(_aligned, args.model, engine, paths, args.beam, args.repeats, args.threads)
            else:
                r = run_child(_cascade, asr, mt, paths, args.beam, args.repeats, args.threads)
            prev = results.get(key)
            results[key] = (
                r if prev is None or r["seconds"] < prev["seconds"] else {**prev, "peak_mb": max(prev["peak_mb"], r["peak_mb"])}
            )
    training = run_child(_train, args.model, manifest, args.train_steps, args.threads) if args.train_steps > 0 else None

    audio = next(r["audio"] for k, r in results.items() if k.startswith("aligned")) if engines else sum(u.duration for u in utts)
    scored = all(isinstance(t, str) and t.strip() for t in refs)
    for r in results.values():
        r["scores"] = score([h or "" for h in r["hyps"]], refs) if scored else None
    cascade = results["cascade"]
    print(
        f"{len(paths)} clips, {audio:.1f} s of audio ({manifest}); {asr} + {mt}; beam {args.beam}; {args.threads} threads; "
        f"best of {args.repeats} passes x {args.rounds} round(s); the checkpoint's encoder: {se.get('engine') or 'torch'} "
        f"{se.get('precision') or 'fp32'}"
    )
    for e, why in skipped.items():
        print(f"left out: aligned {e}: {why}")
    print(
        "\n| system | encoder engine | seconds | real-time factor | time / cascade's | cascade / this | peak memory (MB) | BLEU | chrF |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        if key == "cascade":
            label, eng = "cascade (faster-whisper int8 greedy -> same MT)", "ctranslate2 int8 (faster-whisper)"
        else:
            trained = (r["engine"], r["precision"]) == (se.get("engine") or "torch", se.get("precision") or "fp32")
            mark = " (the engine it was trained on)" if trained else ""
            label, eng = f"aligned ({cfg['connector']['name']}, {cfg['arrangement']}){mark}", f"{r['engine']} {r['precision']}"
        sc = r["scores"]
        bleu, chrf = ("-", "-") if sc is None else (f"{sc['bleu']:.1f}", f"{sc['chrf']:.1f}")
        print(
            f"| {label} | {eng} | {r['seconds']:.2f} | {r['seconds'] / audio:.3f} | {r['seconds'] / cascade['seconds']:.2f} | "
            f"{cascade['seconds'] / r['seconds']:.1f}x | {r['peak_mb']:.0f} | "
            f"{bleu} | {chrf} |"
        )
    if training:
        print(
            f"| training, {args.train_steps} steps of the token recipe (cache build included) | torch fp32 | {training['seconds']:.1f} | - | - | - | "
            f"{training['peak_mb']:.0f} | - | - |"
        )
    if scored:
        sc = cascade["scores"]
        print(
            f"\nscores: sacreBLEU corpus scores against the manifest's translations; {sc['bleu_signature']}; {sc['chrf_signature']}"
        )
    print("target: aligned time / cascade's <= 0.5")
    if args.json:
        out = {
            "manifest": manifest,
            "clips": len(paths),
            "audio_seconds": audio,
            "speech_encoder": asr,
            "translator": mt,
            "checkpoint_encoder": {k: se.get(k) for k in ("engine", "precision", "mode")},
            "beam": args.beam,
            "threads": args.threads,
            "repeats": args.repeats,
            "rounds": args.rounds,
            "cpu": platform.processor(),
            "skipped": skipped,
            "systems": results,
            "training": training,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()

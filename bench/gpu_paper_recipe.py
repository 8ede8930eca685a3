"""Stages of bench/gpu_paper_recipe.sh: the paper's recipe and the demo's recipe trained on a GPU for a few minutes.

Run through the shell script, which gives every stage its own time limit and records a stage that was killed:

    bash bench/gpu_paper_recipe.sh                 # a CUDA GPU; writes $OUT (default ./gpu_out)
    SLTALIGN_GPU_SCRIPT_CPU=1 bash bench/gpu_paper_recipe.sh   # the same stages, tiny, on a CPU (~1 min)

One stage per call (``python3 bench/gpu_paper_recipe.py --out OUT [--tiny] STAGE``), in this order:

  check       the device: torch's CUDA build, the GPU's name and memory, bf16 support (no GPU: fail, unless --tiny)
  data        a synthetic corpus (eSpeak NG + Flite voices for training, eSpeak NG for dev/test; one worker per
              core; MT targets for every split, the frozen MT on the GPU where it runs there) and the project's
              real-speech test set (human pt-BR references)
  encode      the frozen Whisper encoder over every training and dev clip into the encoder cache, on the GPU
              (torch, bf16 where supported), shared by both recipes: audio-seconds per second
  train_paper the paper's recipe (configs/whisper-base_bergamot-en-pt_ste_eced_paper.yaml: STE ``paper`` preset,
              ECED, target cross-entropy alone) for a few minutes at GPU scale (bf16 mixed precision, large batches)
  eval_paper  its best checkpoint on the synthetic test and the real-speech set (sacreBLEU BLEU/chrF, signatures)
  train_demo  the demo's recipe (configs/phones.yaml with the overrides ``sltalign demo`` passes, the encoder on
              torch so that it runs on the GPU) for the same minutes
  eval_demo   as eval_paper
  report      OUT/report.md from OUT/results.json (run after every stage by the shell script)

Every stage merges what it measured into OUT/results.json as soon as it has it, so a run killed at any point
leaves the stages that finished. ``record STAGE STATUS SECONDS`` is what the shell script calls after a stage
(status "timeout" when it killed it). Scale: GPU defaults below (``GPU``), ``--tiny`` (``TINY``); environment
variables SLTALIGN_GPU_N_TRAIN and SLTALIGN_GPU_TRAIN_MINUTES override the number of training clips and the
minutes each recipe trains.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

MT = "packaged:bergamot-en-pt"
STAGES = ("check", "data", "encode", "train_paper", "eval_paper", "train_demo", "eval_demo")
#: a CUDA GPU, minutes each: batches the paper sized for a GPU (its yaml: batch 144, bf16)
GPU = {
    "asr": "packaged:whisper-base",
    "n_train": 12000,
    "n_dev": 100,
    "n_test": 100,
    "real_clips": 0,
    "train_minutes": 1.5,
    "encode_batch": 64,
    "mt_batch": 256,
    "paper_batch": 144,
    "demo_batch": 128,
    "max_frames": 100000,
    "mixed_precision": "bf16",
    "paper_preset": "paper",
    "paper_warmup": 200,
    "demo_warmup": 300,
    "lexicon_text": ["trans-de-en:sentences", "trans-de-en:phrases"],
    "long_fraction": 0.1,
    "log_every": 10,
    "eval_beam": None,
    "max_len": None,
    "num_workers": 4,
}
#: the CPU path: the same stages in about a minute (tests/bench/test_gpu_recipe.py)
TINY = {
    "asr": "packaged:whisper-tiny.en",
    "n_train": 40,
    "n_dev": 6,
    "n_test": 6,
    "real_clips": 4,
    "train_minutes": 0.15,
    "encode_batch": 8,
    "mt_batch": 64,
    "paper_batch": 8,
    "demo_batch": 8,
    "max_frames": 12000,
    "mixed_precision": "no",
    "paper_preset": "small",
    "paper_warmup": 5,
    "demo_warmup": 5,
    "lexicon_text": ["trans-de-en:sentences"],
    # short test clips and short outputs: a connector trained for seconds emits max_len tokens of noise
    "long_fraction": 0.0,
    "log_every": 1,
    "eval_beam": 1,
    "max_len": 30,
    "num_workers": 0,
}


def settings(tiny: bool) -> dict[str, Any]:
    s = dict(TINY if tiny else GPU)
    if os.environ.get("SLTALIGN_GPU_N_TRAIN"):
        s["n_train"] = int(os.environ["SLTALIGN_GPU_N_TRAIN"])
    if os.environ.get("SLTALIGN_GPU_TRAIN_MINUTES"):
        s["train_minutes"] = float(os.environ["SLTALIGN_GPU_TRAIN_MINUTES"])
    return s


# --- results.json: read, merge, write atomically --------------------------------------------------------


def load_results(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return {"stages": {}}


def merge(out: Path, stage: str, values: dict[str, Any]) -> None:
    """Merge ``values`` into results.json's entry for ``stage`` (written at once: a kill loses nothing before)."""
    doc = load_results(out)
    doc.setdefault("stages", {}).setdefault(stage, {}).update(values)
    tmp = out / f"results.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False))
    os.replace(tmp, out / "results.json")


def device_name(tiny: bool) -> str:
    import torch

    return "cuda" if torch.cuda.is_available() and not tiny else "cpu"


def gpu_peak(reset: bool = False) -> float | None:
    """torch.cuda.max_memory_allocated in MiB (None on a CPU)."""
    import torch

    if not torch.cuda.is_available():
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
        return None
    return torch.cuda.max_memory_allocated() / 2**20


# --- stages ---------------------------------------------------------------------------------------------


def stage_check(out: Path, s: dict[str, Any], tiny: bool) -> None:
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "tiny": tiny,
        "settings": s,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(
            gpu=p.name,
            gpu_memory_gib=round(p.total_memory / 2**30, 1),
            bf16=torch.cuda.is_bf16_supported(),
            gpu_count=torch.cuda.device_count(),
        )
        x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(20):
            x @ x
        torch.cuda.synchronize()
        info["bf16_matmul_tflops"] = round(20 * 2 * 4096**3 / (time.perf_counter() - t) / 1e12, 1)
    merge(out, "check", info)
    if not torch.cuda.is_available() and not tiny:
        raise SystemExit(
            "no CUDA GPU visible to torch (a CPU-only torch build, or no driver); "
            "SLTALIGN_GPU_SCRIPT_CPU=1 runs the tiny CPU path instead"
        )


def _mt_on(device: str):
    """The frozen MT, and a translate function for the synthesiser running it on ``device`` where it agrees with
    the CPU on a few sentences (the text path builds its token tensors on the CPU: moved to the model here)."""
    from sltalign.foundation import load_translator

    mt = load_translator(MT)
    if device == "cpu":
        return mt, "cpu"
    probe = ["The weather is nice today.", "Please close the door when you leave the room."]
    want = mt.translate_text(probe, beam=1)
    try:
        got = _mt_moved(mt, device).translate_text(probe, beam=1)
        if got != want:
            raise RuntimeError(f"GPU translations differ from the CPU's: {got} vs {want}")
        return mt, device
    except Exception as e:  # noqa: BLE001 - any failure: translate on the CPU, and say so
        print(f"MT on {device} failed ({e}); translating on the CPU", flush=True)
        for name in ("encode_ids", "generate"):
            mt.__dict__.pop(name, None)
        return mt.to("cpu"), "cpu"


def _mt_moved(mt, device: str):
    """``mt`` on ``device``, its text path's token tensors (built on the CPU by translate_text) moved there too."""
    mt.to(device)
    encode_ids, generate = mt.encode_ids, mt.generate
    mt.encode_ids = lambda ids, mask: encode_ids(ids.to(device), mask.to(device))
    mt.generate = lambda memory, mask, **kw: generate(memory, mask.to(memory.device), **kw)
    return mt


def stage_data(out: Path, s: dict[str, Any], tiny: bool) -> None:
    import torch

    from sltalign.data.manifest import read_manifest
    from sltalign.data.realspeech import build_realspeech_manifest
    from sltalign.data.synth import SynthConfig, synthesize_corpus
    from sltalign.data.synth.backends import make_backend

    torch.set_num_threads(os.cpu_count() or 1)
    backends = {"espeak": 1.0}
    try:
        make_backend("flite")
        backends["flite"] = 1.0
    except OSError as e:
        print(f"training voices without Flite ({e})", flush=True)
    mt, mt_device = _mt_on(device_name(tiny))
    cfg = SynthConfig(
        n_train=s["n_train"],
        n_dev=s["n_dev"],
        n_test=s["n_test"],
        train_long_fraction=0.0,
        long_fraction=s["long_fraction"],
        seed=0,
        workers=os.cpu_count() or 1,
        train_backends=backends if len(backends) > 1 else None,
        translate_batch_size=s["mt_batch"],
    )
    t = time.perf_counter()
    manifests = synthesize_corpus(
        cfg,
        out / "corpus",
        mt_spec=MT,
        progress=False,
        translate_fn=lambda texts: mt.translate_text(texts, beam=1, batch_size=s["mt_batch"]),
    )
    synth_s = time.perf_counter() - t
    audio = {k: sum(u.duration for u in read_manifest(p, require=())) for k, p in manifests.items()}
    merge(
        out,
        "data",
        {
            "manifests": {k: str(v) for k, v in manifests.items()},
            "clips": {k: len(read_manifest(v, require=())) for k, v in manifests.items()},
            "audio_hours": {k: round(v / 3600, 3) for k, v in audio.items()},
            "synthesis_seconds": round(synth_s, 1),
            "voices": sorted(backends),
            "mt_device": mt_device,
            "workers": cfg.workers,
        },
    )
    real = build_realspeech_manifest(out / "realspeech")
    if s["real_clips"]:  # the tiny path: the shortest few
        lines = sorted(real.read_text().splitlines(), key=lambda ln: json.loads(ln)["duration"])[: s["real_clips"]]
        real = out / "realspeech" / "manifest_tiny.jsonl"
        real.write_text("\n".join(lines) + "\n")
    merge(out, "data", {"real_manifest": str(real), "real_clips": len(read_manifest(real, require=()))})


def _data(out: Path) -> dict[str, Any]:
    d = load_results(out)["stages"].get("data") or {}
    if "real_manifest" not in d:
        raise SystemExit("the data stage has not finished: nothing to work on")
    return d


def recipe_config(recipe: str, out: Path, s: dict[str, Any], tiny: bool):
    """(TrainConfig, overrides) of a recipe at this scale."""
    import torch

    from sltalign.config import load_config
    from sltalign.demo import preset_path

    d = _data(out)
    m = d["manifests"]
    precision = "bf16" if not tiny and torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    common = [
        f"model.speech_encoder={s['asr']}",
        "model.encoder_engine=torch",
        f"model.encoder_precision={precision}",
        f"data.train={m['train']}",
        f"data.dev={m['dev']}",
        f"data.cache_dir={out / 'cache'}",
        "data.max_duration=20",
        f"data.max_frames={s['max_frames']}",
        "data.max_dev=100",
        f"mixed_precision='{s['mixed_precision']}'",
        f"data.num_workers={s['num_workers']}",
        f"data.encode_batch_size={s['encode_batch']}",
        f"num_threads={os.cpu_count() or 1}",
        f"time_budget_minutes={s['train_minutes']}",
        f"stages.0.max_minutes={s['train_minutes']}",
        "stages.0.time_decay=true",
        "eval_every=0",
        "save_every=500",
        f"log_every={s['log_every']}",
        f"out={out / 'train' / recipe}",
    ]
    if s["max_len"]:  # the tiny path: dev evaluation in seconds
        common += [f"max_len={s['max_len']}", f"eval_beam={s['eval_beam']}"]
    if recipe == "paper":
        preset = "whisper-base_bergamot-en-pt_ste_eced_paper.yaml"
        over = [
            *common,
            f"model.connector_preset={s['paper_preset']}",
            f"data.batch_size={s['paper_batch']}",
            f"stages.0.warmup={s['paper_warmup']}",
        ]
    else:
        preset = "phones.yaml"
        over = [
            *common,
            f"data.batch_size={s['demo_batch']}",
            f"stages.0.warmup={s['demo_warmup']}",
            f"model.lexicon_exclude=[{m['test']},{d['real_manifest']}]",
            f"model.lexicon_text=[{','.join(s['lexicon_text'])}]",
        ]
    return load_config(preset_path(preset), over), [f"preset {preset}", *over]


def stage_encode(out: Path, s: dict[str, Any], tiny: bool) -> None:
    import torch

    from sltalign.train import load_configured_speech_encoder, open_cache, select_utterances

    dev = torch.device(device_name(tiny))
    cfgs = [recipe_config(r, out, s, tiny)[0] for r in ("paper", "demo")]
    enc = load_configured_speech_encoder(cfgs[0], dev).to(dev)  # train() builds its cache on the CPU: built here first
    seen, utts = set(), []
    for cfg in cfgs:  # both recipes' training and dev clips (the same encoder, mode and precision: one cache)
        for u in (u for part in select_utterances(cfg) for u in part):
            if u.id not in seen:
                seen.add(u.id)
                utts.append(u)
    gpu_peak(reset=True)
    rep = open_cache(cfgs[0], enc).build(enc, utts, batch_size=s["encode_batch"], progress=False)
    merge(
        out,
        "encode",
        {
            "device": str(dev),
            "cache_mode": enc.cache_mode,
            "clips": rep.encoded,
            "already_cached": rep.cached,
            "audio_seconds": round(rep.audio_seconds, 1),
            "wall_seconds": round(rep.wall_seconds, 2),
            "audio_seconds_per_second": round(rep.audio_seconds / rep.wall_seconds, 1) if rep.wall_seconds else None,
            "batch_size": s["encode_batch"],
            "gpu_peak_mib": gpu_peak(),
        },
    )


def _train_rates(run: Path) -> dict[str, Any]:
    """Steps per second between the first and the last logged training step (model loading, the phone
    targets, CUDA warm-up and the final evaluation left out), from OUT/metrics.csv."""
    rows = []
    for ln in (run / "metrics.csv").read_text().splitlines()[1:]:
        step, minutes, split, *_ = ln.split(",")
        if split == "train":
            rows.append((int(step), float(minutes)))
    if len(rows) < 2 or rows[-1][1] <= rows[0][1]:
        return {"steps_per_second": None}
    (s0, m0), (s1, m1) = rows[0], rows[-1]
    return {"steps_per_second": round((s1 - s0) / ((m1 - m0) * 60), 2)}


def _mean_batch(cfg) -> float:
    """Mean clips per batch of the training sampler over the training set (lengths: 50 states per second)."""
    from sltalign.data.batching import LengthBucketSampler
    from sltalign.train import select_utterances

    utts = select_utterances(cfg)[0]
    lengths = [max(1, round(u.duration * 50)) for u in utts]
    batches = list(
        LengthBucketSampler(lengths, max_frames=cfg.data.max_frames, batch_size=cfg.data.batch_size, shuffle=True, seed=cfg.seed)
    )
    return len(utts) / max(1, len(batches))


def stage_train(recipe: str, out: Path, s: dict[str, Any], tiny: bool) -> None:
    from sltalign.train import train

    cfg, overrides = recipe_config(recipe, out, s, tiny)
    name = f"train_{recipe}"
    merge(out, name, {"overrides": overrides})
    gpu_peak(reset=True)
    t = time.perf_counter()
    summary = train(cfg, progress=False)
    wall = time.perf_counter() - t
    rates = _train_rates(Path(cfg.out))
    mean_batch = _mean_batch(cfg)
    sps = rates["steps_per_second"]
    merge(
        out,
        name,
        {
            "wall_seconds": round(wall, 1),
            "steps": summary["steps"],
            "train_minutes": round(summary["minutes"], 2),
            "best_dev_bleu": summary["best_dev_bleu"],
            "best_step": summary["best_step"],
            "checkpoint": summary["checkpoint"],
            "connector_parameters": (summary.get("parameters") or {}).get("connector"),
            **rates,
            "mean_clips_per_batch": round(mean_batch, 1),
            "clips_per_second": round(sps * mean_batch, 1) if sps else None,
            "gpu_peak_mib": gpu_peak(),
        },
    )


def stage_eval(recipe: str, out: Path, s: dict[str, Any], tiny: bool) -> None:
    import torch

    from sltalign.api import SpeechTranslator
    from sltalign.data.manifest import read_manifest
    from sltalign.evaluate import score
    from sltalign.systems import run_aligned

    name = f"eval_{recipe}"
    tr = load_results(out)["stages"].get(f"train_{recipe}") or {}
    run = out / "train" / recipe
    ckpt = next((p for p in (run / "best", run / "last") if (p / "config.json").is_file()), None)
    if ckpt is None:
        raise SystemExit(f"{run}: no checkpoint (train_{recipe} status: {tr.get('status')})")
    torch.set_num_threads(os.cpu_count() or 1)
    dev = device_name(tiny)
    decoding = {"beam": s["eval_beam"], "max_len": s["max_len"]} if s["max_len"] else {}
    st = SpeechTranslator.from_pretrained(ckpt, device=dev, **decoding)
    d = _data(out)
    failed = []
    for set_name, manifest in (("synthetic_test", d["manifests"]["test"]), ("real_speech", d["real_manifest"])):
        try:
            utts = read_manifest(manifest, require=("translation",))
            hyps, tim = run_aligned(st, utts, progress=False)
            res = score([h or "" for h in hyps], [u.translation for u in utts])
            audio = sum(u.duration for u in utts)
            merge(
                out,
                name,
                {
                    set_name: {
                        "checkpoint": str(ckpt),
                        "device": dev,
                        "n": res["n"],
                        "bleu": round(res["bleu"], 2),
                        "chrf": round(res["chrf"], 2),
                        "bleu_signature": res["bleu_signature"],
                        "chrf_signature": res["chrf_signature"],
                        "audio_seconds": round(audio, 1),
                        "compute_seconds": round(tim["compute_seconds"], 2),
                        "rtf": round(tim["rtf"], 4),
                        "decoding": decoding or "the checkpoint's",
                        "examples": [{"ref": u.translation, "hyp": (h or "")[:300]} for u, h in list(zip(utts, hyps))[:3]],
                    }
                },
            )
        except Exception as e:  # noqa: BLE001 - the other set still runs; the error is recorded
            traceback.print_exc()
            merge(out, name, {set_name: {"error": f"{type(e).__name__}: {e}"}})
            failed.append(set_name)
    if failed:
        raise SystemExit(f"{name}: {', '.join(failed)} failed")


# --- report ---------------------------------------------------------------------------------------------


def _fmt(x: Any, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def write_report(out: Path) -> None:
    doc = load_results(out)
    st = doc.get("stages", {})
    chk = st.get("check", {})
    lines = [
        "# The paper's recipe and the demo's recipe on a GPU",
        "",
        f"Device: {chk.get('gpu', 'no GPU')} ({_fmt(chk.get('gpu_memory_gib'))} GiB, bf16 {chk.get('bf16', '-')}, "
        f"bf16 matmul {_fmt(chk.get('bf16_matmul_tflops'))} TFLOPS); torch {chk.get('torch', '?')} (CUDA build {chk.get('cuda_build')}); "
        f"{chk.get('cpu_cores', '?')} CPU cores; tiny CPU path: {chk.get('tiny', '?')}.",
        "",
        "| stage | status | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {st.get(n, {}).get('status', 'not run')} | {_fmt(st.get(n, {}).get('seconds'))} |" for n in STAGES]
    d, e = st.get("data", {}), st.get("encode", {})
    clips, hours = d.get("clips") or {}, d.get("audio_hours") or {}
    lines += [
        "",
        f"Data: {' / '.join(f'{clips[k]} {k}' for k in clips) or '-'} clips ({' / '.join(f'{hours[k]}' for k in hours) or '-'} h), voices {d.get('voices', '-')}, synthesis "
        f"{_fmt(d.get('synthesis_seconds'))} s with {d.get('workers', '-')} workers, MT on {d.get('mt_device', '-')}; "
        f"real-speech set: {d.get('real_clips', '-')} recordings.",
        f"Encoding ({e.get('device', '-')}, {e.get('cache_mode', '-')}, batch {e.get('batch_size', '-')}): {e.get('clips', '-')} clips, "
        f"{_fmt(e.get('audio_seconds'))} s of audio in {_fmt(e.get('wall_seconds'), 2)} s = {_fmt(e.get('audio_seconds_per_second'))} "
        f"audio-seconds per second; GPU memory peak {_fmt(e.get('gpu_peak_mib'), 0)} MiB.",
        "",
        "| recipe | steps | steps/s | clips/batch | clips/s | GPU peak (MiB) | best dev BLEU | synthetic test BLEU / chrF | real speech BLEU / chrF |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    sigs = set()
    for r in ("paper", "demo"):
        t, v = st.get(f"train_{r}", {}), st.get(f"eval_{r}", {})
        cells = []
        for k in ("synthetic_test", "real_speech"):
            x = v.get(k) or {}
            cells.append(f"{_fmt(x.get('bleu'))} / {_fmt(x.get('chrf'))}" if "bleu" in x else x.get("error", "-"))
            if "bleu_signature" in x:
                sigs.add(f"{x['bleu_signature']}; {x['chrf_signature']}")
        lines.append(
            f"| {r} | {_fmt(t.get('steps'))} | {_fmt(t.get('steps_per_second'), 2)} | {_fmt(t.get('mean_clips_per_batch'))} | "
            f"{_fmt(t.get('clips_per_second'))} | {_fmt(t.get('gpu_peak_mib'), 0)} | {_fmt(t.get('best_dev_bleu'))} | {cells[0]} | {cells[1]} |"
        )
    lines += [
        "",
        *(f"sacreBLEU: {x}" for x in sorted(sigs)),
        "",
        "Overrides of each recipe are in results.json (stages.train_*.overrides); a stage that ran out of its time "
        "limit shows status timeout, and the stages after it ran on what it left.",
    ]
    tmp = out / f"report.md.{os.getpid()}.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "report.md")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_out")
    ap.add_argument("--tiny", action="store_true", help="the CPU path: whisper-tiny.en, tens of clips, seconds of training")
    ap.add_argument("stage", choices=(*STAGES, "report", "record"))
    ap.add_argument("rest", nargs="*", help="record: STAGE STATUS SECONDS")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.stage == "report":
        write_report(out)
        return
    if args.stage == "record":
        stage, status, seconds = args.rest
        merge(out, stage, {"status": status, "seconds": round(float(seconds), 1)})
        return
    s = settings(args.tiny)
    if args.stage not in ("check", "data"):
        _data(out)  # before any heavy import: a stage with nothing to work on fails at once
    merge(out, args.stage, {"status": "running"})
    fn = {
        "check": stage_check,
        "data": stage_data,
        "encode": stage_encode,
        "train_paper": lambda o, s, t: stage_train("paper", o, s, t),
        "eval_paper": lambda o, s, t: stage_eval("paper", o, s, t),
        "train_demo": lambda o, s, t: stage_train("demo", o, s, t),
        "eval_demo": lambda o, s, t: stage_eval("demo", o, s, t),
    }[args.stage]
    fn(out, s, args.tiny)


if __name__ == "__main__":
    main()

"""``sltalign demo``: build a speech translator from real packaged models, offline, on a laptop-sized CPU.

Steps (each shows progress; every artefact lands under OUT):
1. synthesise an English speech corpus (train / dev / test, short clips and 20-40 s ones): dev and test in
   eSpeak NG's voices, the training clips in eSpeak NG, Flite and hibari's neural voice (``TRAIN_BACKENDS``,
   each where installed: more kinds of voice make a recogniser that hears people better); dev/test targets are the frozen MT's own translations of the
   transcripts (distillation, marked ``translation_source: mt:...``), so the synthetic test measures how
   close speech input gets to text input; the training split carries transcripts only (the recipe trains by
   CTC on them);
2. the project's real-speech test set (121 recordings from Debian packages, human Portuguese references) and
   its dev set (31 other recordings), which the phone recipe's training scores at every evaluation beside the
   synthetic dev (``data.watch``: drawn in training.png, never used to pick the checkpoint);
3. cache the frozen Whisper encoder's outputs once (on the engine the recipe's ``encoder_engine: auto`` finds
   fastest within tolerance on this machine), then train the connector with the fast-alignment recipe
   (``configs/phones.yaml``: a small phone recogniser, CTC on eSpeak's phonemes of the transcripts, read
   through a pronunciation lexicon into text the frozen MT translates; ECED, hard compression through text);
4. evaluate the aligned model beside the cascade (the same Whisper transcribing, the same MT translating) and
   the MT on gold transcripts, overall and per duration bucket, with sacrebleu signatures;
5. write results.json, report.md, scores PNGs, the training curve and OUT/connector (a loadable checkpoint).

``--recipe`` picks what step 3 trains (``RECIPES``): "phones" (the default, the paper's arrangement: a
connector on the frozen Whisper *encoder*) or "soft_cascade" (``configs/soft_cascade.yaml``: a connector on
the frozen Whisper *decoder's* states along its own hypothesis, which starts as the cascade and learns
corrections; recognition costs ~1 s per clip, so it trains on 300 clips instead of 12,000).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from .config import TrainConfig, load_config, validate
from .evaluate import plot_scores, write_report, write_results

log = logging.getLogger(__name__)

# Train clips are all short (encoding is the costliest step before training); dev and test keep 10% of
# 20-40 s clips so the >20 s bucket is measured. 12,000 clips and up to 16 minutes: at equal training time the
# connector learns more from more clips than from more epochs (docs/RESULTS.md, "Quality against
# training-data size"); dropping the MT pass over the training split and encoding in bf16 where the CPU has
# AMX pay for the extra synthesis and encoding.
FULL = {
    "asr": "packaged:whisper-base",
    "n_train": 12000,
    "n_dev": 100,
    "n_test": 100,
    "minutes": 16.0,
    "lexicon_text": ["trans-de-en:sentences", "trans-de-en:phrases", "wordnet:examples", "fortunes:sentences"],
    "warmup": 300,
}
# quick: the lexicon reads the dictionary's sentences only (phonemising its 60k phrase lines takes ~25 s), and
# the warmup fits its ~100 steps (the preset's 300 would keep the learning rate low throughout)
QUICK = {
    "asr": "packaged:whisper-tiny.en",
    "n_train": 300,
    "n_dev": 30,
    "n_test": 30,
    "minutes": 1.5,
    "lexicon_text": ["trans-de-en:sentences"],
    "warmup": 20,
}
#: the recipe (src/sltalign/configs/); configs/tokens.yaml was the demo's until the phone head beat it
PRESET = "phones.yaml"
# The soft cascade: every clip costs a 30-s recognition window (~1 s of CPU), so few training clips, a short
# training (it starts from the cascade and only learns corrections) and a larger evaluation reserve.
SOFT_FULL = {"asr": "packaged:whisper-base", "n_train": 300, "n_dev": 100, "n_test": 100, "minutes": 6.0}
SOFT_QUICK = {"asr": "packaged:whisper-tiny.en", "n_train": 40, "n_dev": 12, "n_test": 12, "minutes": 0.5}
#: recipe name -> (preset file, full settings, quick settings, what a line of --help says)
RECIPES = {
    "phones": (
        PRESET,
        FULL,
        QUICK,
        "connector on the Whisper encoder, phone CTC read through a lexicon (the paper's arrangement)",
    ),
    "soft_cascade": (
        "soft_cascade.yaml",
        SOFT_FULL,
        SOFT_QUICK,
        "connector on the Whisper decoder's states along its hypothesis: the cascade plus learned corrections",
    ),
}
#: training clips' synthesisers (SynthConfig.train_backends), each where installed (eSpeak NG always): a fifth
#: of the clips in hibari's neural voice (a recogniser trained on robotic voices hears people poorly), the rest
#: half eSpeak NG, half Flite. In the voices ablation (docs/RESULTS.md) hibari helped real speech most; Piper,
#: Kokoro blends or all three did no better, at a far higher synthesis cost (hibari ~50x real time on one core,
#: Kokoro ~1x); two fifths hibari did no better than one fifth at the demo's size.
TRAIN_BACKENDS = {"espeak": 1.0, "flite": 1.0, "hibari": 0.5}
#: the training clips' channel (SynthConfig fields, training split only; dev and test stay clean): what
#: recordings of people have around the speech, light. Leading/trailing silence with breaths, clicks and room
#: tone on half the clips, tempo +-10% on half, level -20-0 dB on 30%, an image-source room on 20%, telephone
#: band on 10%, mild coloured noise (15-35 dB SNR) on 15%; no pitch shift, babble or lossy codec (the fuller
#: channel cost chrF in the small ablation rows). At the demo's size, over two training seeds, it scored 51.1
#: and 52.2 chrF on the 121 real recordings against 47.7 and 51.8 without it, the synthetic test level: better
#: on average, within what a seed moves (docs/RESULTS.md, "Voices ablation at the demo's size").
TRAIN_CHANNEL: dict[str, Any] = {
    "silence_prob": 0.5, "silence_range": (0.1, 1.0),
    "speed_perturb_prob": 0.5, "speed_perturb_range": (0.9, 1.1),
    "level_prob": 0.3, "level_db_range": (-20.0, 0.0),
    "rir_prob": 0.2, "telephone_prob": 0.1,
    "noise_prob": 0.15, "noise_snr_db": (15.0, 35.0),
    "augment_splits": ("train",),
}  # fmt: skip
VOICE_NAMES = {"espeak": "eSpeak NG", "flite": "Flite", "hibari": "hibari", "piper": "Piper", "kokoro": "Kokoro"}
#: the full demo's clock: training gets what synthesis and encoding leave of DEADLINE minutes, less what
#: evaluation and the report take (EVAL_RESERVE), within [MIN_TRAIN, MAX_TRAIN]. The recipe's encoder engine
#: is "auto" (the fastest whose states stay within tolerance on this machine: torch bf16 with AMX, CTranslate2
#: int8 without), so encoding fits on either kind of CPU and training gets at least 14 minutes
DEADLINE, EVAL_RESERVE, MIN_TRAIN, MAX_TRAIN = 27.0, 3.5, 14.0, FULL["minutes"]
#: the soft cascade's evaluation recognises every test clip in 30-s windows (~1 s each): a larger reserve
SOFT_EVAL_RESERVE, SOFT_MIN_TRAIN = 8.0, 2.0
MT = "packaged:bergamot-en-pt"


def preset_path(name: str) -> Path:
    """A YAML preset shipped inside the package (src/sltalign/configs/)."""
    return Path(str(resources.files("sltalign") / "configs" / name))


def _stage(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def run_demo(
    out: Path, *, quick: bool = False, minutes: float | None = None, workers: int = 2, recipe: str = "phones"
) -> dict[str, Any]:
    """Run the whole demo with the named recipe (``RECIPES``); returns the results dict also written to
    OUT/results.json."""
    from .foundation import load_translator
    from .train import train

    if recipe not in RECIPES:
        raise ValueError(f"unknown demo recipe {recipe!r}; expected one of {sorted(RECIPES)}")
    preset, full, quick_settings, _ = RECIPES[recipe]
    soft = recipe == "soft_cascade"
    p = quick_settings if quick else full
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    if not soft:  # the lexicon is read after synthesis and encoding: a missing package should fail now
        from .data.lexicon_text import check_sources

        check_sources(p["lexicon_text"])
    t = time.perf_counter()
    mt = load_translator(MT)
    manifests = synthesize(out, p, mt, soft=soft, workers=workers)
    timings["synthesis_seconds"] = time.perf_counter() - t

    _stage("2/5 real-speech test and dev sets (human references)")
    real_manifest = realspeech_manifest(out / "realspeech")
    # Watched while the phone recipe trains; the soft cascade would pay ~1 s of recognition per dev clip.
    real_dev = None if soft else realspeech_dev_manifest(out / "realspeech_dev")

    _stage(f"3/5 caching {p['asr']} {'decoder states' if soft else 'outputs'}, then training the connector ({recipe})")
    t = time.perf_counter()
    encode_clips(demo_config(preset, p, soft=soft, out=out, manifests=manifests, real_manifest=real_manifest, real_dev=real_dev))
    timings["encode_seconds"] = time.perf_counter() - t
    budget = p["minutes"] if minutes is None else minutes
    if minutes is None and not quick:  # what the clock leaves (see DEADLINE)
        reserve = SOFT_EVAL_RESERVE if soft else EVAL_RESERVE
        left = DEADLINE - (time.perf_counter() - t_all) / 60 - reserve
        budget = float(min(p["minutes"], max(SOFT_MIN_TRAIN if soft else MIN_TRAIN, round(left, 1))))
    log.info("training budget %.1f min", budget)
    print(f"training for {budget:g} min", flush=True)
    cfg = demo_config(
        preset, p, soft=soft, out=out, manifests=manifests, real_manifest=real_manifest, real_dev=real_dev, budget=budget
    )
    t = time.perf_counter()
    summary = train(cfg)  # every clip is cached already: training starts at once
    timings["train_seconds"] = time.perf_counter() - t
    connector = out / "connector"
    if connector.exists():
        shutil.rmtree(connector)
    shutil.copytree(Path(summary["checkpoint"]), connector)

    _stage("4/5 evaluating: aligned model, cascade, MT on gold transcripts")
    t = time.perf_counter()
    results = evaluate_systems(out, connector, mt, p["asr"], {"synthetic": manifests["test"], "real": real_manifest})
    timings["evaluate_seconds"] = time.perf_counter() - t
    _stage("5/5 report")
    timings["total_seconds"] = time.perf_counter() - t_all
    return write_outputs(
        out, results, connector=connector, asr=p["asr"], summary=summary, timings=timings, quick=quick, recipe=recipe
    )


def synthesize(out: Path, p: dict[str, Any], mt: Any, *, soft: bool, workers: int) -> dict[str, Path]:
    """Step 1: the synthetic corpus (OUT/corpus; resumable) in the installed training voices."""
    from .data.synth import SynthConfig, synthesize_corpus

    backends = train_backends()
    voices = ", ".join(VOICE_NAMES.get(b, b) for b in backends or {"espeak": 1})
    _stage(f"1/5 synthesising {p['n_train']} + {p['n_dev']} + {p['n_test']} clips with {voices}")
    # the phone recipe trains by CTC on the transcripts alone, so only dev and test need MT targets; the soft
    # cascade distils the MT along its translations of the training transcripts
    synth_cfg = SynthConfig(
        n_train=p["n_train"],
        n_dev=p["n_dev"],
        n_test=p["n_test"],
        train_long_fraction=0.0,
        seed=0,
        workers=workers,
        mt_splits=("train", "dev", "test") if soft else ("dev", "test"),
        train_backends=backends,
        # the soft cascade starts as the cascade and keeps its correction at zero: no channel measured for it
        **({} if soft else TRAIN_CHANNEL),
    )
    return synthesize_corpus(
        synth_cfg, out / "corpus", translate_fn=lambda texts: mt.translate_text(texts, beam=1, batch_size=64), mt_spec=MT
    )


def demo_config(
    preset: str,
    p: dict[str, Any],
    *,
    soft: bool,
    out: Path,
    manifests: dict[str, Path],
    real_manifest: Path,
    real_dev: Path | None = None,
    budget: float | None = None,
) -> TrainConfig:
    """The recipe's preset with the demo's data, encoder and paths (``dataclasses.replace``, then validated);
    with ``budget``, one stage that the clock ends after that many minutes; with ``real_dev``, that set is
    watched (``data.watch.real_dev``)."""
    cfg = load_config(preset_path(preset))
    model = replace(cfg.model, speech_encoder=p["asr"])
    stage = cfg.stages[0]
    if not soft:
        # the lexicon never reads a test sentence (dev is held out by train itself)
        model = replace(model, lexicon_exclude=[str(manifests["test"]), str(real_manifest)], lexicon_text=list(p["lexicon_text"]))
        stage = replace(stage, warmup=p["warmup"])
    if budget is not None:  # one stage: the whole budget (see configs/phones.yaml)
        stage = replace(stage, max_minutes=budget)
    cfg = replace(
        cfg,
        model=model,
        stages=[stage, *cfg.stages[1:]],
        out=str(out / "train"),
        time_budget_minutes=cfg.time_budget_minutes if budget is None else budget,
        # the paper's training range (0.2-20 s); longer dev clips are skipped in selection
        data=replace(
            cfg.data,
            train=str(manifests["train"]),
            dev=str(manifests["dev"]),
            watch={"real_dev": str(real_dev)} if real_dev is not None else {},
            cache_dir=str(out / "cache"),
            max_duration=20.0,
        ),
    )
    validate(cfg)
    return cfg


def evaluate_systems(out: Path, connector: Path, mt: Any, asr: str, sets: dict[str, Path]) -> dict[str, Any]:
    """Step 4: the aligned model, the cascade (the same Whisper transcribing, the same MT) and the MT on gold
    transcripts on each set; hyps and metrics under OUT/eval/<set>/<system>."""
    from .api import SpeechTranslator
    from .cascade import Cascade
    from .data.manifest import read_manifest
    from .systems import run_aligned, run_cascade, run_mt_on_gold

    st = SpeechTranslator.from_pretrained(connector, translator=mt)
    cascade = Cascade(asr, mt)
    results: dict[str, Any] = {}
    for set_name, manifest in sets.items():
        utts = read_manifest(manifest, require=("translation", "transcript"))
        systems: dict[str, tuple[list[str], dict]] = {"aligned": run_aligned(st, utts, progress=False)}
        hyps, tim, _ = run_cascade(cascade, utts, progress=False)
        systems["cascade"] = (hyps, tim)
        systems["mt_on_gold"] = run_mt_on_gold(mt, utts)
        results[set_name] = {}
        for name, (hyps, tim) in systems.items():
            res = write_results(
                out / "eval" / set_name / name,
                name,
                [u.id for u in utts],
                hyps,
                [u.translation for u in utts],
                [u.duration for u in utts],
                extra={"timings": tim},
            )
            results[set_name][name] = {
                "bleu": res["bleu"],
                "chrf": res["chrf"],
                "signatures": {"bleu": res["bleu_signature"], "chrf": res["chrf_signature"]},
                "buckets": res["buckets"],
                "n": res["n"],
                "timings": tim,
            }
    return results


def write_outputs(
    out: Path,
    results: dict[str, Any],
    *,
    connector: Path,
    asr: str,
    summary: dict[str, Any],
    timings: dict[str, float],
    quick: bool,
    recipe: str,
) -> dict[str, Any]:
    """Step 5: results.json, the reports, the plots and the training curve."""
    ckpt_cfg = json.loads((connector / "config.json").read_text())
    params = ckpt_cfg["parameters"]
    doc = {
        # The synthetic test set is the headline (its references are MT output: see "references").
        **results["synthetic"],
        "real_speech": results["real"],
        "references": {"synthetic": f"MT output (mt:{MT} on the gold transcripts)", "real_speech": "human (pt-BR)"},
        "speech_encoder": asr,
        # how it computed (mode, precision and engine: "auto" picks per machine), as the checkpoint records it
        "speech_encoder_settings": {k: v for k, v in (ckpt_cfg.get("speech_encoder") or {}).items() if k != "fingerprint"},
        "translator": MT,
        "parameters": params,
        "training": {k: v for k, v in summary.items() if k != "parameters"},
        # the real-speech dev scores at each evaluation (watched; the synthetic dev chose the checkpoint)
        "real_dev_curve": watched_curve(out / "train" / "metrics.csv", "real_dev"),
        "timings": timings,
        "quick": quick,
        "recipe": recipe,
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False))
    notes = [
        f"Speech encoder {asr}, MT {MT}; connector {params['connector']:,} parameters "
        f"({100 * params['connector_share']:.2f}% of the aligned models); trained {summary['steps']} steps in "
        f"{summary['minutes']:.1f} min (best dev BLEU {summary['best_dev_bleu']:.1f} at step {summary['best_step']}).",
        f"Total demo time {timings['total_seconds'] / 60:.1f} min.",
    ]
    read_out = (
        re.search(r"\(read-out: (.*)\); compression", (connector / "README.md").read_text(encoding="utf-8"))
        if (connector / "README.md").is_file()
        else None
    )
    if read_out:  # what the model card says the CTC head's read-out is
        notes.insert(1, f"CTC read-out: {read_out.group(1)}.")
    curve = doc["real_dev_curve"]
    at_best = [c for c in curve if c["step"] == summary["best_step"]]
    if at_best:
        top = max(curve, key=lambda c: c["chrf"])
        notes.append(
            f"Real-speech dev (31 recordings, watched, never selecting): {at_best[0]['bleu']:.1f} BLEU / "
            f"{at_best[0]['chrf']:.1f} chrF at the chosen step; its best chrF {top['chrf']:.1f} at step {top['step']}."
        )
    write_report(
        out, results["synthetic"], title="sltalign demo: synthetic test (MT references)", notes=notes, reference_kind="mt"
    )
    shutil.move(str(out / "report.md"), str(out / "report_synthetic.md"))
    write_report(
        out / "real_speech",
        results["real"],
        title="sltalign demo: real speech (human references)",
        notes=notes,
        reference_kind="human",
    )
    _combined_report(out, doc)
    plot_scores(results["synthetic"], out / "scores_synthetic.png")
    plot_scores(results["real"], out / "scores_real_speech.png")
    train_png = out / "train" / "training.png"
    if train_png.exists():
        shutil.copy(train_png, out / "training.png")
    return doc


def watched_curve(metrics_csv: Path, split: str) -> list[dict[str, float]]:
    """``split``'s BLEU and chrF at each evaluation of a run's metrics.csv, by step ([] without any)."""
    from .evaluate import _read_curve_csv  # the reader training.png is drawn from (it names a malformed row)

    by_step: dict[int, dict[str, float]] = {}
    if metrics_csv.is_file():
        for step, _, row_split, name, value in _read_curve_csv(metrics_csv):
            if row_split == split and name in ("bleu", "chrf"):
                by_step.setdefault(int(step), {})[name] = value
    return [{"step": k, **v} for k, v in sorted(by_step.items()) if {"bleu", "chrf"} <= v.keys()]


def realspeech_manifest(out: Path) -> Path:
    """The real-speech test set: every subset, or those whose Debian package is installed (said aloud)."""
    from .data.realspeech import IVR_ROOT, SUBSETS, RealSpeechUnavailable, build_realspeech_manifest

    try:
        return build_realspeech_manifest(out)
    except RealSpeechUnavailable as err:
        if IVR_ROOT.is_dir():
            raise  # the pocketsphinx recordings are missing: nothing sensible to fall back to
        print(f"real-speech set without the ivr subset ({err})", flush=True)
        return build_realspeech_manifest(out, subsets=[s for s in SUBSETS if s != "ivr"])


def realspeech_dev_manifest(out: Path) -> Path | None:
    """The real-speech dev set, or None (said aloud) where its Debian packages are not installed: the demo
    only watches it."""
    from .data.realspeech import RealSpeechUnavailable, build_realspeech_manifest

    try:
        return build_realspeech_manifest(out, split="dev")
    except RealSpeechUnavailable as err:
        print(f"training will not watch the real-speech dev set ({err})", flush=True)
        return None


def train_backends() -> dict[str, float] | None:
    """The synthesisers of ``TRAIN_BACKENDS`` that are installed (each missing one said aloud), or None when
    only eSpeak NG is (every clip in its voices)."""
    from .data.synth import make_backend

    have = {}
    for name, weight in TRAIN_BACKENDS.items():
        try:
            make_backend(name)
        except OSError as err:
            print(f"training voices: without {VOICE_NAMES.get(name, name)} ({err})", flush=True)
            continue
        have[name] = weight
    return have if set(have) - {"espeak"} else None


def encode_clips(cfg: TrainConfig) -> None:
    """Run the frozen speech encoder over every clip that training and dev selection will read, into the
    configured cache (what ``train`` would do first), so the demo knows how much time is left to train."""
    import torch
    from accelerate import PartialState

    from .train import load_configured_speech_encoder, open_cache, select_utterances, select_watch

    device = PartialState().device  # the device train() will use, and where it would encode
    enc = load_configured_speech_encoder(cfg, device)
    if isinstance(enc, torch.nn.Module):
        enc.to(device)
    train_utts, dev_utts = select_utterances(cfg)
    watched = [u for utts in select_watch(cfg).values() for u in utts]
    open_cache(cfg, enc).build(enc, train_utts + dev_utts + watched, batch_size=cfg.data.encode_batch_size, progress=True)


def _combined_report(out: Path, doc: dict[str, Any]) -> None:
    lines = ["# sltalign demo", ""]
    for key, title in (
        ("synthetic", "Synthetic test (references: MT output)"),
        ("real_speech", "Real speech (references: human)"),
    ):
        res = doc if key == "synthetic" else doc["real_speech"]
        lines += [f"## {title}", "", "| system | BLEU | chrF | n |", "|---|---|---|---|"]
        for name in ("aligned", "cascade", "mt_on_gold"):
            r = res[name]
            lines.append(f"| {name} | {r['bleu']:.1f} | {r['chrf']:.1f} | {r['n']} |")
        lines += ["", f"Signature: `{res['aligned']['signatures']['bleu']}`", ""]
    lines += [f"Per-bucket tables: report_synthetic.md, real_speech/report.md. Timings: {json.dumps(doc['timings'])}", ""]
    (out / "report.md").write_text("\n".join(lines))

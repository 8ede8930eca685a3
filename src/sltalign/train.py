"""One readable training loop for the connector: ``setup`` builds the run, ``fit`` runs its stages.

    sltalign train configs/whisper-base_bergamot-en-pt_ste_eced.yaml out=runs/x
    accelerate launch -m sltalign train CONFIG ...     # several processes / GPUs (DDP)

What happens, in order:
1. ``setup``: the frozen foundations and the connector (with its CTC head, ``connectors/ctc_head.py``) are
   built; the frozen speech encoder runs once per utterance into the encoder cache (``data/cache.py``), which
   every epoch reads after that (only the main process encodes); the run starts from OUT/last (resume),
   ``init_from`` or the model as built (``training_state.RunCheckpoints``).
2. ``fit``: stages run in order (e.g. CTC pre-training, then translation); each has its objectives, steps,
   learning rate with linear warmup and linear decay, and an optional time limit.
3. AdamW sees only parameters that require grad (the connector and CTC head), gradients are clipped,
   dev and the ``data.watch`` sets (say, real speech beside a synthetic dev) are scored every ``eval_every``
   steps; the score ``select`` names (dev BLEU by default) keeps the best connector in OUT/best, and a stage
   ends early after ``patience`` evaluations without its improvement.
4. OUT/last holds the full trainer state, written atomically every ``save_every`` steps: a killed run
   started again with the same command resumes from it (same batches, same RNG). A run holds OUT/.lock
   (a second run on the same OUT fails at once), finishes or undoes a checkpoint write a kill interrupted
   (``checkpoint.recover_dir``) and drops the metrics rows logged after the step it resumes from.
Logs: OUT/metrics.csv (long format: step, minutes, split, name, value) and OUT/training.png.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from torch import nn

from .checkpoint import build_model, ctc_head_kind, read_config, read_head_data, recover_dir
from .config import ConfigError, TrainConfig, to_dict
from .connectors.ctc_head import head_class
from .data.augment import mask_states
from .data.batching import CachedSpeechDataset, LengthBucketSampler, collate
from .data.cache import EncoderCache
from .data.manifest import Utterance, read_manifest
from .evaluate import plot_training_curve, score, word_error_rate
from .foundation.base import SpeechEncoder, resolve_precision
from .hub import check_hub_specs
from .model import IGNORE, AlignedST
from .objectives import ObjectiveConfig, Objectives
from .progress import progress_bar
from .segment import piece_seconds_for
from .training_state import (  # noqa: F401  (LoopState, MetricsLog, OutInUseError, init_from_checkpoint: public here too)
    LoopState,
    MetricsLog,
    OutInUseError,
    RunCheckpoints,
    init_from_checkpoint,
    lock_out,
    set_rng_state,
)

log = logging.getLogger(__name__)


class _Step(nn.Module):
    """Wraps model + objectives so that all computation goes through one forward (what DDP syncs on)."""

    def __init__(self, model: AlignedST, objectives: Objectives) -> None:
        super().__init__()
        self.model = model
        self.objectives = objectives

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.objectives(self.model, batch)


def lr_lambda(warmup: int, total: int):
    """Linear warmup to the peak, then linear decay to 0 at ``total`` steps."""

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def time_scale(elapsed: float, limit: float) -> float:
    """Linear decay to 0 over a stage's time limit: 1 at its start, 0 at ``limit`` minutes (no limit: 1)."""
    return max(0.0, 1.0 - elapsed / limit) if limit > 0 else 1.0


def filter_utterances(utts: list[Utterance], cfg: TrainConfig, *, need_transcript: bool) -> list[Utterance]:
    keep = [u for u in utts if cfg.data.min_duration <= u.duration <= cfg.data.max_duration]
    if need_transcript:
        missing = [u.id for u in keep if not u.transcript]
        if missing:
            raise ValueError(f"the ctc/kd objectives need transcripts; {len(missing)} utterances have none (e.g. {missing[:3]})")
    return keep


def needs_transcripts(cfg: TrainConfig) -> bool:
    """Whether some stage reads the training transcripts (the ctc and kd objectives)."""
    return any(s.objectives.get("ctc", 0) > 0 or s.objectives.get("kd", 0) > 0 for s in cfg.stages)


def needs_translations(cfg: TrainConfig) -> bool:
    """Whether some stage reads the training translations. CTC alone learns from transcripts: a recipe without
    ce/kd trains on speech recognition data (dev still needs translations, it is scored by BLEU)."""
    return any(s.objectives.get("ce", 0) > 0 or s.objectives.get("kd", 0) > 0 for s in cfg.stages)


def select_utterances(cfg: TrainConfig) -> tuple[list[Utterance], list[Utterance]]:
    """The training and dev utterances a run reads (duration limits, ``max_dev``, the fields its objectives
    need). Manifest errors name the file and line."""
    train_require = ("translation",) if needs_translations(cfg) else ("transcript",)
    train_utts = filter_utterances(
        read_manifest(cfg.data.train, require=train_require), cfg, need_transcript=needs_transcripts(cfg)
    )
    dev_utts = _dev_utterances(cfg, cfg.data.dev) if cfg.data.dev else []
    if not train_utts:
        raise ValueError(f"{cfg.data.train}: no utterance between {cfg.data.min_duration} and {cfg.data.max_duration} s")
    where = dict.fromkeys((u.id for u in train_utts), cfg.data.train)
    for name, path in cfg.data.more_train.items():
        more = filter_utterances(read_manifest(path, require=train_require), cfg, need_transcript=needs_transcripts(cfg))
        if not more:
            raise ValueError(
                f"data.more_train.{name}: {path} has no utterance between {cfg.data.min_duration} and {cfg.data.max_duration} s"
            )
        for u in more:
            if u.id in where:
                raise ValueError(f"data.more_train.{name}: {path}: utterance id {u.id!r} is also in {where[u.id]}")
            where[u.id] = path
        repeat = cfg.data.more_train_repeat.get(name, 1)
        # repeats are the same clips under other ids: the cache stores their states once (same audio, same key)
        train_utts += more + [replace(u, id=f"{u.id}~{r}") for r in range(1, repeat) for u in more]
    return train_utts, dev_utts


def _dev_utterances(cfg: TrainConfig, manifest: str) -> list[Utterance]:
    # Dev follows the training duration limits (the encoder takes at most one 30 s window per utterance).
    utts = filter_utterances(read_manifest(manifest, require=("translation",)), cfg, need_transcript=False)
    return utts[: cfg.data.max_dev] if cfg.data.max_dev else utts


def select_watch(cfg: TrainConfig) -> dict[str, list[Utterance]]:
    """The utterances of each ``data.watch`` set (dev limits), by name; a set left empty by the limits is an
    error naming its manifest, since watching nothing would pass unnoticed."""
    if cfg.data.watch and not cfg.data.dev:
        raise ValueError("data.watch: the watch sets are scored when data.dev is, so they need a data.dev")
    sets = {name: _dev_utterances(cfg, path) for name, path in cfg.data.watch.items()}
    for name, utts in sets.items():
        if not utts:
            raise ValueError(
                f"data.watch.{name}: {cfg.data.watch[name]} has no utterance between {cfg.data.min_duration} and "
                f"{cfg.data.max_duration} s"
            )
    return sets


def load_configured_speech_encoder(cfg: TrainConfig, device: torch.device) -> SpeechEncoder:
    """The frozen speech encoder of ``cfg.model``, its precision resolved for ``device`` (the training device:
    "auto" there decides the cache key, so every caller must resolve it the same way)."""
    from .foundation import load_speech_encoder

    m = cfg.model
    engine = getattr(m, "encoder_engine", "torch")
    if m.encoder_mode == "decoder":
        return load_speech_encoder(m.speech_encoder, mode=m.encoder_mode, precision="fp32")
    if engine == "auto" and torch.device(device).type == "cuda":
        # CTranslate2 runs here on the CPU: on a GPU the fastest faithful engine is torch (bf16 where supported)
        precision = resolve_precision("auto" if m.encoder_precision in ("auto", "int8") else m.encoder_precision, device)
        return load_speech_encoder(m.speech_encoder, mode=m.encoder_mode, precision=precision)
    if engine != "torch":  # ctranslate2: precision int8/fp32/auto (= int8); auto: measured, precision ignored
        return load_speech_encoder(m.speech_encoder, mode=m.encoder_mode, precision=m.encoder_precision, engine=engine)
    precision = resolve_precision(m.encoder_precision, device)
    return load_speech_encoder(m.speech_encoder, mode=m.encoder_mode, precision=precision)


def open_cache(cfg: TrainConfig, enc: SpeechEncoder) -> EncoderCache:
    """The configured encoder-output cache, keyed for this encoder (weights, mode and precision)."""
    return EncoderCache(
        Path(cfg.data.cache_dir), encoder_fingerprint=enc.fingerprint(), mode=enc.cache_mode, dtype=cfg.data.cache_dtype
    )


def build_cache(cfg: TrainConfig, model: AlignedST, utts: list[Utterance], accelerator: Accelerator) -> EncoderCache:
    enc = model.speech_encoder
    cache = open_cache(cfg, enc)
    if accelerator.is_main_process:
        cache.build(enc, utts, batch_size=cfg.data.encode_batch_size, progress=True)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:  # re-open to see what the main process wrote
        cache = open_cache(cfg, enc)
    return cache


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    # non_blocking: a pinned batch is copied to a GPU while the step goes on (a no-op on the CPU)
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate_dev(
    model: AlignedST, dataset: CachedSpeechDataset, *, beam: int, max_len: int, batch_size: int = 16
) -> dict[str, Any]:
    """Corpus BLEU/chrF of the model on cached dev states (sacrebleu, with signatures); with a CTC head and
    transcripts for every dev utterance, also ``ctc_wer``: the WER of the head's greedy transcripts, which
    tells a connector that recognises speech from one that memorised its training clips."""
    was_training = model.training
    model.eval()
    hyps: list[str] = []
    refs: list[str] = []
    heard: list[str] = []
    durations: list[float] = []
    transcripts = [u.transcript for u in dataset.utterances]
    with_wer = model.ctc_head is not None and all(transcripts)
    order = sorted(range(len(dataset)), key=lambda i: dataset.lengths[i])
    for s in range(0, len(order), batch_size):
        items = [dataset[i] for i in order[s : s + batch_size]]
        batch = collate(items, pad_id=IGNORE)
        if with_wer:  # one connector pass serves both
            translated, transcribed = model.translate_and_transcribe(
                batch["states"], batch["states_mask"], beam=beam, max_len=max_len
            )
            hyps.extend(translated)
            heard.extend(transcribed)
        else:
            hyps.extend(model.translate_states(batch["states"], batch["states_mask"], beam=beam, max_len=max_len))
        refs.extend(dataset.utterances[i].translation or "" for i in order[s : s + batch_size])
        durations.extend(batch["durations"])
    model.train(was_training)
    result = score(hyps, refs, durations=list(map(float, durations)))
    if with_wer:
        result["ctc_wer"] = word_error_rate(heard, [transcripts[i] for i in order])
    return result


def _is_main_rank() -> bool:
    """Whether this is the main process of a (possibly distributed) run, before accelerate is set up:
    launchers (accelerate, torchrun) set RANK for every process."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def prepare_head_data(cfg: TrainConfig, head_source: Path | None = None) -> Any:
    """What the configured CTC head needs besides weights (``CTCHead.prepare``): read from ``head_source`` (a
    resumed run's OUT/last or ``init_from``) when given, else made now from the training data."""
    kind = cfg.model.ctc_head
    if kind == "none" or not head_class(kind).FILE:
        return None
    if head_source is not None:
        src_cfg = read_config(head_source)
        if ctc_head_kind(src_cfg) != kind:
            raise ValueError(f"{head_source}: its CTC head is {ctc_head_kind(src_cfg)!r}, the configured one is {kind!r}")
        if kind == "phones" and head_source != Path(cfg.out) / "last":
            log.warning(
                "init_from %s: its phone units and lexicon are kept (model.lexicon_text and lexicon_exclude of this "
                "run are not read); bench/rebuild_lexicon.py makes a new lexicon for a trained connector",
                head_source,
            )
        return read_head_data(head_source, src_cfg)
    # the lexicon never reads a sentence it is scored on: dev, the watch sets, and what the config names
    held_out = ([cfg.data.dev] if cfg.data.dev else []) + list(cfg.data.watch.values()) + list(cfg.model.lexicon_exclude)
    return head_class(kind).prepare(model_cfg=cfg.model, train_utts=select_utterances(cfg)[0], held_out=held_out, seed=cfg.seed)


def build_configured_model(cfg: TrainConfig, device: torch.device, head_source: Path | None) -> AlignedST:
    """The frozen foundations of ``cfg.model`` with a new connector and CTC head (seeded by the caller)."""
    from .connectors import build_connector
    from .foundation import load_translator

    m = cfg.model
    speech = load_configured_speech_encoder(cfg, device)  # "auto": what this device does fast
    translator = load_translator(m.translator, **m.translator_kwargs)
    connector = build_connector(
        m.connector, in_dim=speech.dim, out_dim=translator.embed_dim, preset=m.connector_preset, **m.connector_args
    )
    if m.ctc_head != "none":
        head_class(m.ctc_head).check_connector(connector, m.connector)
    model = build_model(m, speech_encoder=speech, translator=translator, head_data=prepare_head_data(cfg, head_source))
    model.connector.load_state_dict(connector.state_dict())
    return model


@dataclass
class Run:
    """What ``setup`` returns and ``fit`` trains: the model, the data and the run's state."""

    cfg: TrainConfig
    accelerator: Accelerator
    model: AlignedST
    train_set: CachedSpeechDataset
    dev_set: CachedSpeechDataset | None
    #: the data.watch sets, by name: scored and logged with dev, never selecting
    watch_sets: dict[str, CachedSpeechDataset]
    sampler: LengthBucketSampler
    transcripts: dict[str, str]
    checkpoints: RunCheckpoints
    metrics: MetricsLog
    state: LoopState
    #: the resumed trainer state (optimizer, scheduler, RNG) until the stage it belongs to restores it
    trainer: dict[str, Any] | None = None
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def minutes(self) -> float:
        return (time.perf_counter() - self.t_start) / 60


def setup(cfg: TrainConfig, accelerator: Accelerator, model: AlignedST | None = None) -> Run:
    """Seed, build (or take) the model, select and cache the data, and start from OUT/last, ``init_from`` or
    scratch. OUT must exist and be locked (``train``)."""
    out, main = Path(cfg.out), accelerator.is_main_process
    if main:
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    decoding: dict[str, Any] = {"beam": cfg.decode_beam, "max_len": cfg.max_len, "length_penalty": 1.0}
    checkpoints = RunCheckpoints(
        out, init_from=cfg.init_from, decoding=decoding, translator_kwargs=cfg.model.translator_kwargs, main=main
    )
    if model is None:
        model = build_configured_model(cfg, accelerator.device, checkpoints.head_source())
    if main:
        report = model.parameter_report()
        log.info("parameters: %s", report)
        (out / "parameters.json").write_text(json.dumps(report, indent=2))

    train_utts, dev_utts = select_utterances(cfg)
    if cfg.max_piece_seconds is None:  # translate in pieces no longer than what the connector trained on
        decoding["max_piece_seconds"] = piece_seconds_for([u.duration for u in train_utts])
    else:  # 0: the encoder's window only (validated in config.validate)
        decoding["max_piece_seconds"] = cfg.max_piece_seconds or None
    model.to(accelerator.device)  # the encoder builds the cache on the training device (a GPU encodes there)
    watch_utts = select_watch(cfg)
    cache = build_cache(cfg, model, train_utts + dev_utts + [u for us in watch_utts.values() for u in us], accelerator)
    translator = model.translator
    # CTC targets: the head's own classes (MT source tokens, pieces, phones in each clip's accent)
    src_tok = model.ctc_head.targets(train_utts, translator) if model.ctc_head is not None else translator.tokenize_source
    train_set = CachedSpeechDataset(
        cache,
        train_utts,
        translator.tokenize_target if needs_translations(cfg) else None,
        src_tok if needs_transcripts(cfg) else None,
    )
    dev_set = CachedSpeechDataset(cache, dev_utts, translator.tokenize_target, None) if dev_utts else None
    watch_sets = {name: CachedSpeechDataset(cache, us, translator.tokenize_target, None) for name, us in watch_utts.items()}
    sampler = LengthBucketSampler(
        train_set.lengths, max_frames=cfg.data.max_frames, batch_size=cfg.data.batch_size, shuffle=True, seed=cfg.seed
    )

    if model.ctc_head is not None and dev_set is not None:
        # what the read-out needs (the phone head's lexicon search and word LM: seconds) is built before the
        # clock starts, not inside the first dev evaluation, where it would shorten a short budget's training
        model.ctc_head.warm_up()
    state, trainer = checkpoints.start(model)
    metrics = MetricsLog(out / "metrics.csv", main)
    # Rows logged after the state we start from (a kill came after them) would be logged again: drop them.
    dropped = metrics.truncate(state.metrics_rows if trainer else 0, state.global_step)
    if dropped:
        log.warning("%s: dropped %d rows logged after step %d, where this run resumes", metrics.path, dropped, state.global_step)
    return Run(
        cfg=cfg,
        accelerator=accelerator,
        model=model,
        train_set=train_set,
        dev_set=dev_set,
        watch_sets=watch_sets,
        sampler=sampler,
        transcripts={u.id: u.transcript or "" for u in train_utts},
        checkpoints=checkpoints,
        metrics=metrics,
        state=state,
        trainer=trainer,
        t_start=time.perf_counter() - state.minutes * 60,
    )


def fit(run: Run, *, progress: bool = True) -> dict[str, Any]:
    """Run the stages from where ``run.state`` stands; returns the summary also written to OUT/summary.json."""
    cfg, state = run.cfg, run.state
    if cfg.eval_at_start and state.global_step == 0 and state.stage == 0:
        evaluate_and_select(run)
    ran = False
    while state.stage < len(cfg.stages) and not state.finished:
        stage = cfg.stages[state.stage]
        run_stage(run, stage, progress=progress)
        ran = True
        if stage.evaluate:  # every stage's final weights compete for "best"
            evaluate_and_select(run)
        state.stage += 1
        state.stage_step, state.stage_minutes, state.bad_evals = 0, 0.0, 0
        state.minutes = run.minutes()
        save_last(run)
    state.finished = True
    summary: dict[str, Any] = {
        "steps": state.global_step,
        "minutes": run.minutes(),
        "best_dev_bleu": state.best_dev_bleu,
        "best_step": state.best_step,
        "select": cfg.select,
        "best_score": state.best_score,
    }
    if run.main:
        if run.dev_set is None or state.best_step < 0:  # no dev set: the final weights are the result
            run.checkpoints.save_best(run.model, state.global_step)
        if ran:
            save_last(run)
        summary["parameters"] = run.model.parameter_report()
        if run.accelerator.device.type == "cuda":  # what the run needed of the GPU
            summary["gpu_peak_memory_mb"] = torch.cuda.max_memory_allocated(run.accelerator.device) / 2**20
        summary["checkpoint"] = str(run.checkpoints.best)
        out = Path(cfg.out)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        try:
            plot_training_curve(out / "metrics.csv", out / "training.png")
        except Exception as e:  # a plot must never lose a finished run
            log.warning("could not plot %s: %s", out / "training.png", e)
    run.accelerator.wait_for_everyone()
    return summary


def save_last(run: Run, optimizer: Any = None, scheduler: Any = None, objectives: Objectives | None = None) -> None:
    """OUT/last from the main process (without an optimizer: at a stage boundary)."""
    if not run.main:
        return
    run.state.metrics_rows = run.metrics.rows
    run.checkpoints.save_last(
        run.model,
        run.state,
        optimizer=optimizer,
        scheduler=scheduler,
        objectives_rng=None if objectives is None else objectives.generator.get_state(),
    )


def evaluate_and_select(run: Run) -> None:
    """Dev and data.watch scores (BLEU, chrF, CTC WER) now, logged; if the score ``cfg.select`` names beats the
    best so far, this connector replaces OUT/best, else the evaluation counts against ``patience``."""
    if run.dev_set is None or not run.main:
        return
    cfg, state = run.cfg, run.state
    if state.best_on != cfg.select:  # a run resumed under another rule: its old best is not comparable
        log.warning("select changed from %s to %s: the next evaluation replaces OUT/best", state.best_on, cfg.select)
        state.best_on, state.best_score, state.bad_evals = cfg.select, -1.0, 0
    results: dict[str, dict[str, Any]] = {}
    for split, dataset in (*run.watch_sets.items(), ("dev", run.dev_set)):
        res = results[split] = evaluate_dev(run.model, dataset, beam=cfg.eval_beam, max_len=cfg.max_len)
        values = {k: res[k] for k in ("bleu", "chrf", "ctc_wer") if k in res}
        run.metrics.write(state.global_step, run.minutes(), split, values)
        log.info("step %d %s %s", state.global_step, split, " ".join(f"{k} {v:.3g}" for k, v in values.items()))
    split, _, metric = cfg.select.rpartition(".")
    value = float(results[split][metric])
    if value > state.best_score:
        state.best_score, state.best_step, state.bad_evals = value, state.global_step, 0
        state.best_dev_bleu = float(results["dev"]["bleu"])
        watched = {k: v for k, v in results.items() if k != "dev"}
        run.checkpoints.save_best(run.model, state.global_step, results["dev"], watched=watched, select=cfg.select)
    else:
        state.bad_evals += 1


@dataclass
class StageClock:
    """A stage's time limits: ``clock`` minutes end it (0: none; its own max_minutes or what the run's budget
    leaves, whichever is shorter), and with ``time_decay`` the learning rate also decays to 0 over them."""

    start: float
    clock: float
    decay: float

    @classmethod
    def of(cls, run: Run, stage: Any) -> StageClock:
        start = run.minutes() - run.state.stage_minutes  # a resumed stage keeps the minutes it already used
        limits = [stage.max_minutes] if stage.max_minutes else []
        if run.cfg.time_budget_minutes:
            limits.append(run.cfg.time_budget_minutes - start)
        clock = min(limits) if limits else 0.0
        return cls(start=start, clock=clock, decay=clock if stage.time_decay else 0.0)


def run_stage(run: Run, stage: Any, *, progress: bool) -> None:
    """Train one stage from ``run.state`` until its steps, clock, patience or the run's budget end it."""
    cfg, state, accelerator, model = run.cfg, run.state, run.accelerator, run.model
    objectives = Objectives(
        ObjectiveConfig(
            weights=stage.objectives,
            label_smoothing=cfg.label_smoothing,
            ctc_sampled_vocab=cfg.ctc_sampled_vocab,
            kd_temperature=cfg.kd_temperature,
            kd_top_k=cfg.kd_top_k,
        ),
        transcripts=run.transcripts,
        seed=cfg.seed + state.stage,
    )
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=stage.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(stage.warmup, max(1, stage.steps)))
    # The scheduler is not prepared: accelerate would step it once per process, but our schedule counts
    # optimizer steps, whatever the number of processes.
    step_module, optimizer = accelerator.prepare(_Step(model, objectives), optimizer)
    if run.trainer is not None:  # resumed: this stage's optimizer, schedule and RNG (None: saved at a stage boundary)
        if run.trainer["optimizer"] is not None:
            optimizer.load_state_dict(run.trainer["optimizer"])
            scheduler.load_state_dict(run.trainer["scheduler"])
            objectives.generator.set_state(run.trainer["objectives_rng"])
        set_rng_state(run.trainer["rng"])
        run.trainer = None
    clock = StageClock.of(run, stage)
    desc = f"stage {state.stage + 1}/{len(cfg.stages)} {stage.name}"
    if clock.clock:  # a clock ends this stage: the bar counts seconds, so its ETA is the real one
        bar = progress_bar(
            total=round(clock.clock * 60),
            initial=round((run.minutes() - clock.start) * 60),
            desc=desc,
            unit="s",
            enabled=progress and run.main,
        )
    else:
        bar = progress_bar(total=stage.steps, initial=state.stage_step, desc=desc, unit="step", enabled=progress and run.main)
    step_module.train()
    running: dict[str, float] = {}
    world, accum = accelerator.num_processes, max(1, cfg.grad_accum)
    stop = False
    while state.stage_step < stage.steps and not stop:
        run.sampler.set_epoch(state.epoch)
        batches = list(run.sampler)
        # One optimizer step consumes world x grad_accum batches of the global order: process r takes
        # micro-batches r, r + world, ... so N processes and N-fold accumulation see the same data.
        usable = len(batches) - len(batches) % (world * accum)
        starts = range(state.batch_in_epoch, usable, world * accum)
        loader = collated_batches(run, [batches[b + a * world + accelerator.process_index] for b in starts for a in range(accum)])
        for b in starts:
            terms = train_step(run, step_module, optimizer, scheduler, [next(loader) for _ in range(accum)], clock)
            state.batch_in_epoch = b + world * accum
            state.stage_step += 1
            state.global_step += 1
            for k, v in terms.items():  # logged values are means over all processes
                running[k] = running.get(k, 0.0) + float(accelerator.reduce(v, "mean") if world > 1 else v)
            bar.update(max(0, min(round((run.minutes() - clock.start) * 60), bar.total) - bar.n) if clock.clock else 1)
            if state.global_step % cfg.log_every == 0:
                log_training(run, running, optimizer, bar)
                running = {}
            stop = after_step(run, stage, clock, optimizer, scheduler, objectives, step_module)
            if stop:
                break
        else:
            state.epoch += 1
            state.batch_in_epoch = 0
    bar.close()


class _CollatedBatches(torch.utils.data.Dataset):
    """Micro-batches (lists of training-set indexes) -> collated batches, in the order given."""

    def __init__(self, dataset: CachedSpeechDataset, groups: list[list[int]]) -> None:
        self.dataset, self.groups = dataset, groups

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, j: int) -> dict[str, Any]:
        return collate([self.dataset[i] for i in self.groups[j]], pad_id=IGNORE)


def collated_batches(run: Run, groups: list[list[int]]) -> Iterator[dict[str, Any]]:
    """The collated micro-batches of ``groups`` in order: in this process (``data.num_workers`` 0), or prepared
    ahead by worker processes (pinned in memory on a GPU, so the copies overlap the step)."""
    workers = run.cfg.data.num_workers
    loader = torch.utils.data.DataLoader(
        _CollatedBatches(run.train_set, groups),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=run.accelerator.device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    return iter(loader)


def train_step(
    run: Run, step_module: nn.Module, optimizer: Any, scheduler: Any, micro_batches: list[dict[str, Any]], clock: StageClock
) -> dict[str, torch.Tensor]:
    """One optimizer step over ``micro_batches`` (collated; gradient accumulation); returns the mean loss terms."""
    cfg, accelerator = run.cfg, run.accelerator
    step_terms: dict[str, torch.Tensor] = {}
    for a, collated in enumerate(micro_batches):
        batch = to_device(collated, accelerator.device)
        batch["states"] = mask_states(batch["states"], batch["states_mask"], cfg.augment)
        sync = a == len(micro_batches) - 1  # DDP all-reduces gradients only on the last micro-batch
        with contextlib.nullcontext() if sync else accelerator.no_sync(step_module), accelerator.autocast():
            terms = step_module(batch)
            accelerator.backward(terms["total"] / len(micro_batches))
        for k, v in terms.items():
            step_terms[k] = step_terms.get(k, 0.0) + v.detach() / len(micro_batches)
    if cfg.grad_clip:
        accelerator.clip_grad_norm_(run.model.trainable_parameters(), cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    if clock.decay > 0:  # the step schedule's value, capped by the clock's (see StageConfig.time_decay)
        scale = time_scale(run.minutes() - clock.start, clock.decay)
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = min(group["lr"], base * scale)
    optimizer.zero_grad(set_to_none=True)
    return step_terms


def log_training(run: Run, running: dict[str, float], optimizer: Any, bar: Any) -> None:
    """The mean loss terms of the last ``log_every`` steps and the learning rate, to metrics.csv and the bar."""
    avg = {k: v / run.cfg.log_every for k, v in running.items()}
    avg["lr"] = optimizer.param_groups[0]["lr"]  # what the step used (time_decay may cap the schedule)
    run.metrics.write(
        run.state.global_step, run.minutes(), "train", {("lr" if k == "lr" else f"loss_{k}"): v for k, v in avg.items()}
    )
    bar.set_postfix({"step": run.state.global_step, **{k: f"{v:.3f}" for k, v in avg.items() if k != "lr"}})


def after_step(
    run: Run, stage: Any, clock: StageClock, optimizer: Any, scheduler: Any, objectives: Objectives, step_module: nn.Module
) -> bool:
    """Evaluate, save and check the limits after a step; returns whether the stage ends here."""
    cfg, state = run.cfg, run.state
    state.minutes = run.minutes()
    state.stage_minutes = state.minutes - clock.start
    stop = False
    if stage.evaluate and cfg.eval_every and state.global_step % cfg.eval_every == 0:
        evaluate_and_select(run)
        step_module.train()
        if cfg.patience and state.bad_evals >= cfg.patience:
            log.info("stage %s: no dev improvement in %d evaluations; next stage", stage.name, cfg.patience)
            stop = True
    if cfg.save_every and state.global_step % cfg.save_every == 0:
        save_last(run, optimizer, scheduler, objectives)
    over_budget = bool(cfg.time_budget_minutes) and run.minutes() >= cfg.time_budget_minutes
    over_stage = bool(stage.max_minutes) and run.minutes() - clock.start >= stage.max_minutes
    if over_budget:
        state.finished = True
    return stop or over_budget or over_stage or state.stage_step >= stage.steps


def train(cfg: TrainConfig, *, progress: bool = True, model: AlignedST | None = None) -> dict[str, Any]:
    """Train a connector as configured; returns the summary also written to OUT/summary.json.

    Before any model loads: OUT must be a directory or a new path, hub models must be reachable, and the main
    process takes OUT/.lock and repairs checkpoint writes a kill interrupted (``checkpoint.recover_dir``)."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} exists and is not a directory; expected a directory (a new one, or a run to resume)")
    if model is None:
        check_hub_specs([cfg.model.speech_encoder, cfg.model.translator])
    if not _is_main_rank():
        return _train(cfg, progress=progress, model=model)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"out: cannot create {out}: {e.strerror or e}") from e
    with lock_out(out):
        for name in ("last", "best"):
            for line in recover_dir(out / name):
                log.warning("%s", line)
        return _train(cfg, progress=progress, model=model)


def _train(cfg: TrainConfig, *, progress: bool, model: AlignedST | None) -> dict[str, Any]:
    """``train`` once OUT is locked and repaired: ``setup`` then ``fit``."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    return fit(setup(cfg, accelerator, model), progress=progress)

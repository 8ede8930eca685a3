"""One readable training loop for the connector.

    sltalign train configs/whisper-base_bergamot-en-pt_ste_eced.yaml out=runs/x
    accelerate launch -m sltalign train CONFIG ...     # several processes / GPUs (DDP)

What happens, in order:
1. The frozen speech encoder runs once per utterance and its outputs go to the encoder cache
   (``data/cache.py``); every epoch after that reads the cache. Only the main process encodes.
2. Stages run in order (e.g. CTC pre-training, then translation); each has its objectives, steps, learning
   rate with linear warmup and linear decay, and an optional time limit.
3. AdamW sees only parameters that require grad (the connector and CTC head), gradients are clipped,
   dev BLEU is measured every ``eval_every`` steps, the best connector is kept in OUT/best, and a stage ends
   early after ``patience`` evaluations without improvement.
4. OUT/last holds the full trainer state, written atomically every ``save_every`` steps: a killed run
   started again with the same command resumes from it (same batches, same RNG). A run holds OUT/.lock
   (a second run on the same OUT fails at once), finishes or undoes a checkpoint write a kill interrupted
   (``checkpoint.recover_dir``) and drops the metrics rows logged after the step it resumes from.
Logs: OUT/metrics.csv (long format: step, minutes, split, name, value) and OUT/training.png.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from torch import nn
from .progress import progress_bar

from .api import piece_seconds_for
from .checkpoint import (
    TRAINER_STATE,
    build_model,
    ctc_head_kind,
    load_connector,
    read_config,
    recover_dir,
    read_head_data,
    read_phones,
    read_pieces,
    save_connector,
)
from .connectors import connector_from_config
from .connectors.phones import ACCENTS, Lexicon, PhoneCTCHead, accent_for, build_phone_inventory, phonemize
from .connectors.pieces import PieceCTCHead, train_pieces
from .config import ConfigError, TrainConfig, to_dict
from .data.augment import mask_states
from .data.batching import CachedSpeechDataset, LengthBucketSampler, collate
from .data.cache import EncoderCache
from .data.manifest import Utterance, read_manifest
from .evaluate import plot_training_curve, score, word_error_rate
from .foundation.base import SpeechEncoder, resolve_precision
from .hub import check_hub_specs
from .model import IGNORE, AlignedST
from .objectives import ObjectiveConfig, Objectives

log = logging.getLogger(__name__)


class _Step(nn.Module):
    """Wraps model + objectives so that all computation goes through one forward (what DDP syncs on)."""

    def __init__(self, model: AlignedST, objectives: Objectives) -> None:
        super().__init__()
        self.model = model
        self.objectives = objectives

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.objectives(self.model, batch)


@dataclass
class LoopState:
    """Everything besides tensors that a resumed run needs to continue exactly where it stopped."""

    stage: int = 0
    stage_step: int = 0
    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_bleu: float = -1.0
    best_step: int = -1
    bad_evals: int = 0
    minutes: float = 0.0
    stage_minutes: float = 0.0  # minutes spent in the current stage (a resumed stage keeps its clock)
    finished: bool = False
    #: data rows metrics.csv held when this state was saved (-1: unknown, from a checkpoint older than this
    #: field); a resumed run cuts the file back to them, so steps logged after the save are not logged twice
    metrics_rows: int = -1


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
    train_utts = filter_utterances(read_manifest(cfg.data.train, require=train_require), cfg, need_transcript=needs_transcripts(cfg))
    # Dev follows the same duration limits (the encoder takes at most one 30 s window per utterance).
    dev_utts = filter_utterances(read_manifest(cfg.data.dev, require=("translation",)), cfg, need_transcript=False) if cfg.data.dev else []
    if cfg.data.max_dev and len(dev_utts) > cfg.data.max_dev:
        dev_utts = dev_utts[: cfg.data.max_dev]
    if not train_utts:
        raise ValueError(f"{cfg.data.train}: no utterance between {cfg.data.min_duration} and {cfg.data.max_duration} s")
    return train_utts, dev_utts


def load_configured_speech_encoder(cfg: TrainConfig, device: torch.device) -> SpeechEncoder:
    """The frozen speech encoder of ``cfg.model``, its precision resolved for ``device`` (the training device:
    "auto" there decides the cache key, so every caller must resolve it the same way)."""
    from .foundation import load_speech_encoder

    m = cfg.model
    engine = getattr(m, "encoder_engine", "torch")
    if m.encoder_mode == "decoder":
        return load_speech_encoder(m.speech_encoder, mode=m.encoder_mode, precision="fp32")
    if engine != "torch":  # ctranslate2: precision int8/fp32/auto (= int8); auto: measured, precision ignored
        return load_speech_encoder(m.speech_encoder, mode=m.encoder_mode, precision=m.encoder_precision, engine=engine)
    precision = resolve_precision(m.encoder_precision, device)
    return load_speech_encoder(m.speech_encoder, mode=m.encoder_mode, precision=precision)


def open_cache(cfg: TrainConfig, enc: SpeechEncoder) -> EncoderCache:
    """The configured encoder-output cache, keyed for this encoder (weights, mode and precision)."""
    return EncoderCache(Path(cfg.data.cache_dir), encoder_fingerprint=enc.fingerprint(), mode=enc.cache_mode, dtype=cfg.data.cache_dtype)


def build_cache(cfg: TrainConfig, model: AlignedST, utts: list[Utterance], accelerator: Accelerator) -> EncoderCache:
    enc = model.speech_encoder
    cache = open_cache(cfg, enc)
    if accelerator.is_main_process:
        cache.build(enc, utts, batch_size=8, progress=True)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:  # re-open to see what the main process wrote
        cache = open_cache(cfg, enc)
    return cache


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate_dev(model: AlignedST, dataset: CachedSpeechDataset, *, beam: int, max_len: int, batch_size: int = 16) -> dict[str, Any]:
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
            translated, transcribed = model.translate_and_transcribe(batch["states"], batch["states_mask"], beam=beam, max_len=max_len)
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


class MetricsLog:
    """Long-format CSV (step, minutes, split, name, value), appended and flushed per row.

    ``rows`` counts the data rows in the file, so that a checkpoint can record how far the log had got and a
    resumed run can cut it back there (``truncate``)."""

    HEADER = "step,minutes,split,name,value\n"

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.rows = 0
        if enabled and not path.exists():
            path.write_text(self.HEADER)
        elif enabled:
            self.rows = max(0, len(self._lines()) - 1)

    def _lines(self) -> list[str]:
        return self.path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)

    def truncate(self, rows: int, step: int) -> int:
        """Keep the first ``rows`` data rows, or, with ``rows`` < 0 (unknown), the rows of steps <= ``step``;
        the file is replaced atomically. Returns how many rows were dropped."""
        if not self.enabled:
            return 0
        lines = self._lines()
        data = lines[1:]
        if rows >= 0:
            keep = data[:rows]
        else:
            keep = [ln for ln in data if ln.split(",", 1)[0].strip().isdigit() and int(ln.split(",", 1)[0]) <= step]
        if keep and not keep[-1].endswith("\n"):  # a row torn by a kill
            keep = keep[:-1]
        dropped = len(data) - len(keep)
        if dropped:
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(self.HEADER + "".join(keep), encoding="utf-8")
            os.replace(tmp, self.path)
        self.rows = len(keep)
        return dropped

    def write(self, step: int, minutes: float, split: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", newline="") as f:
            w = csv.writer(f)
            for k, v in values.items():
                w.writerow([step, f"{minutes:.3f}", split, k, f"{float(v):.6g}"])
        self.rows += len(values)


class OutInUseError(ValueError):
    """Another process is training into the same OUT directory."""


@contextlib.contextmanager
def lock_out(out: Path) -> Iterator[None]:
    """Hold OUT/.lock (an exclusive ``flock``) for a whole training run, with this process's pid in it.

    A second run on the same OUT fails at once, naming the pid that holds the lock (two runs would otherwise
    rename each other's checkpoints away and interleave metrics rows). The kernel releases a lock when its
    process dies, so the lock of a killed run is simply taken over; the file itself stays."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one run per OUT is the user's job
        yield
        return
    path = out / ".lock"
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "?"
            raise OutInUseError(
                f"out: {out} is in use by pid {pid} (another sltalign train); wait for it to finish or choose another out="
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()  # releases the lock


def _is_main_rank() -> bool:
    """Whether this is the main process of a (possibly distributed) run, before accelerate is set up:
    launchers (accelerate, torchrun) set RANK for every process."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(s: dict[str, Any]) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])


def init_from_checkpoint(model: AlignedST, path: str | Path) -> None:
    """Copy a checkpoint's connector (and CTC head) weights into ``model``; the architectures must match.

    The foundations are checked by fingerprint as for any load, so a connector trained against other
    weights is refused; a different connector (name or sizes) or a missing/extra CTC head is refused too,
    naming both configurations, because a partial copy would silently train something else.
    """
    cfg = read_config(path)
    # rebuilt from its config first: sizes added since it was written take their defaults
    want, have = connector_from_config(cfg["connector"]).config(), model.connector.config()
    if want != have:
        raise ValueError(f"init_from {path}: its connector {want} differs from the configured one {have}")
    if bool(cfg.get("ctc")) != (model.ctc_head is not None):
        raise ValueError(f"init_from {path}: ctc is {bool(cfg.get('ctc'))} there but {model.ctc_head is not None} here")
    here = None if model.ctc_head is None else model.ctc_head.config().get("kind", "tied")
    if ctc_head_kind(cfg) != here:
        raise ValueError(f"init_from {path}: its CTC head is {ctc_head_kind(cfg)!r}, the configured one is {here!r}")
    if here == "pieces" and read_pieces(path) != model.ctc_head.model_proto:
        raise ValueError(f"init_from {path}: its CTC head spells with other word pieces than this run's")
    if here == "phones" and read_phones(path) != json.loads(json.dumps(model.ctc_head.state())):
        raise ValueError(f"init_from {path}: its CTC head has other phone units or another lexicon than this run's")
    loaded, _ = load_connector(path, speech_encoder=model.speech_encoder, translator=model.translator)
    model.connector.load_state_dict(loaded.connector.state_dict())
    if model.ctc_head is not None:
        model.ctc_head.load_state_dict(loaded.ctc_head.state_dict())


def run_head_data(cfg: TrainConfig, out: Path) -> dict[str, Any]:
    """What the configured CTC head needs besides its weights (``build_model``'s pieces= or phones=): the
    resumed run's (OUT/last), else ``init_from``'s, else made now from the training data."""
    m = cfg.model
    kind = "phones" if m.ctc and m.ctc_phones else "pieces" if m.ctc and m.ctc_pieces else None
    if kind is None:
        return {}
    last = out / "last"
    for src in ([last] if (last / TRAINER_STATE).is_file() else []) + ([Path(cfg.init_from)] if cfg.init_from else []):
        have = ctc_head_kind(read_config(src))
        if have != kind:
            raise ValueError(f"{src}: its CTC head is {have!r}, the configured one is {kind!r}")
        if kind == "phones" and src != last:
            log.warning("init_from %s: its phone units and lexicon are kept (model.lexicon_text and lexicon_exclude of this "
                        "run are not read); bench/rebuild_lexicon.py makes a new lexicon for a trained connector", src)
        return read_head_data(src, read_config(src))
    if kind == "pieces":
        return {"pieces": run_pieces(cfg)}
    return {"phones": make_phone_head_state(cfg)}


#: a phone head needs at least this many connector outputs per second of speech (English runs at ~12-15
#: phones/s, and CTC needs one output per phone, more between repeats); Whisper gives 50 frames/s
MIN_PHONE_RATE, WHISPER_FRAMES_PER_SECOND = 15, 50


def check_phone_rate(connector: nn.Module, name: str) -> None:
    """Refuse a connector too coarse for phones (CTC would find no path and learn nothing), naming it."""
    per_10s = int(connector.output_lengths(torch.tensor([10 * WHISPER_FRAMES_PER_SECOND]))[0])
    if per_10s < 10 * MIN_PHONE_RATE:
        raise ValueError(
            f"model.connector: a CTC head over phones (model.ctc_phones) needs >= {MIN_PHONE_RATE} connector outputs per "
            f"second; {name!r} as configured gives {per_10s / 10:g}/s. Use model.connector=ste with "
            f"model.connector_preset=phones (25/s)"
        )


def clip_accents(utts: list[Utterance]) -> list[str]:
    """The eSpeak accent of each utterance's voice (the synthesiser's record beside the clip; else en-us)."""
    from .data.lexicon_text import clip_voice

    return [accent_for(*clip_voice(u.audio)) for u in utts]


def make_phone_head_state(cfg: TrainConfig) -> dict[str, Any]:
    """Units and lexicon of a new phone head: eSpeak's phonemes of the training transcripts (in each clip's
    accent) and of ``model.lexicon_text`` (each line in an accent drawn by the run's seed), minus every
    sentence of the dev manifest and ``model.lexicon_exclude``. Deterministic for the same data and seed."""
    from .data.lexicon_text import held_sentences, lexicon_lines

    t0 = time.perf_counter()
    train_utts, _ = select_utterances(cfg)
    held_from = [cfg.data.dev] if cfg.data.dev else []
    held_from += list(cfg.model.lexicon_exclude)
    held = held_sentences(u for path in held_from for u in read_manifest(path))
    if not cfg.model.lexicon_exclude:
        log.warning("model.lexicon_exclude is empty: only the dev sentences are kept out of the lexicon; name the test "
                    "manifest there, or test scores read a lexicon built from their own sentences' sources")
    text = lexicon_lines(cfg.model.lexicon_text, held, seed=cfg.seed)
    rng = random.Random(cfg.seed)
    text_acc = [rng.choice(ACCENTS) for _ in text]
    text_ph = phonemize(text, text_acc)
    transcripts = [u.transcript or "" for u in train_utts]
    train_acc = clip_accents(train_utts)
    train_ph = phonemize(transcripts, train_acc)
    lexicon = Lexicon.from_text(text + transcripts, text_ph + train_ph, text_acc + train_acc)
    head = PhoneCTCHead(embed_dim=1, units=build_phone_inventory(train_ph, text_ph), lexicon=lexicon)
    log.info(
        "phone head: %d units; lexicon of %d phone words from %d of %d lines (%.0f s)",
        head.vocab_size, len(lexicon.table), lexicon.lines_used, len(text) + len(transcripts), time.perf_counter() - t0,
    )  # fmt: skip
    return head.state()


def run_pieces(cfg: TrainConfig) -> bytes:
    """The SentencePiece model of a new head over pieces, learned from the run's training transcripts
    (deterministic for the same transcripts)."""
    train_utts, _ = select_utterances(cfg)
    return train_pieces((u.transcript or "" for u in train_utts), vocab_size=cfg.model.ctc_pieces)


def phone_targets(head: PhoneCTCHead, utts: list[Utterance]) -> Callable[[list[str]], list[list[int]]]:
    """A source tokenizer for ``CachedSpeechDataset`` over ``utts``: their transcripts -> phone ids, each in
    its clip's accent (``PhoneCTCHead.encode``). It is called once with the transcripts of ``utts`` in order
    (which it checks)."""
    kept = [u for u in utts if u.transcript is not None]
    transcripts = [u.transcript for u in kept]
    accents = clip_accents(kept)

    def tokenize(texts: list[str]) -> list[list[int]]:
        if list(texts) != transcripts:
            raise ValueError("phone targets: expected the transcripts of the training utterances, in order")
        return head.encode(texts, accents)

    return tokenize


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
    """``train`` once OUT is locked and repaired."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    main = accelerator.is_main_process
    if main:
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    mcfg = cfg.model
    model_cfg = {
        "speech_encoder": {"spec": mcfg.speech_encoder, "mode": mcfg.encoder_mode},
        "translator": {"spec": mcfg.translator, "kwargs": mcfg.translator_kwargs},
        "arrangement": mcfg.arrangement,
        "prompt": mcfg.prompt,
        "ctc": mcfg.ctc,
        # size: what the pieces / the phone inventory have
        "ctc_head": ({"kind": "phones"} if mcfg.ctc_phones else {"kind": "pieces"} if mcfg.ctc_pieces else None) if mcfg.ctc else None,
        "compression": mcfg.compression,
        "compression_temperature": mcfg.compression_temperature,
    }
    if model is None:
        from .connectors import build_connector
        from .foundation import load_translator

        speech = load_configured_speech_encoder(cfg, accelerator.device)  # "auto": what this device does fast
        translator = load_translator(mcfg.translator, **mcfg.translator_kwargs)
        connector = build_connector(
            mcfg.connector, in_dim=speech.dim, out_dim=translator.embed_dim, preset=mcfg.connector_preset, **mcfg.connector_args
        )
        model_cfg["connector"] = connector.config()
        if mcfg.ctc and mcfg.ctc_phones:
            check_phone_rate(connector, mcfg.connector)
        model = build_model(model_cfg, speech_encoder=speech, translator=translator, **run_head_data(cfg, out))
        model.connector.load_state_dict(connector.state_dict())
    translator = model.translator
    decoding = {"beam": cfg.decode_beam, "max_len": cfg.max_len, "length_penalty": 1.0}
    if main:
        report = model.parameter_report()
        log.info("parameters: %s", report)
        (out / "parameters.json").write_text(json.dumps(report, indent=2))

    # --- data -------------------------------------------------------------------------------------
    train_utts, dev_utts = select_utterances(cfg)
    needs_text, needs_translation = needs_transcripts(cfg), needs_translations(cfg)
    if cfg.max_piece_seconds is None:  # translate in pieces no longer than what the connector trained on
        decoding["max_piece_seconds"] = piece_seconds_for([u.duration for u in train_utts])
    else:  # 0: the encoder's window only (validated in config.validate)
        decoding["max_piece_seconds"] = cfg.max_piece_seconds or None
    cache = build_cache(cfg, model, train_utts + dev_utts, accelerator)
    if isinstance(model.ctc_head, PieceCTCHead):  # CTC targets: the head's own pieces
        src_tok = model.ctc_head.encode
    elif isinstance(model.ctc_head, PhoneCTCHead):  # CTC targets: phones, each clip in its voice's accent
        src_tok = phone_targets(model.ctc_head, train_utts)
    else:  # CTC targets: the MT's source tokens
        src_tok = lambda texts: translator.tokenize_source(texts)  # noqa: E731
    train_set = CachedSpeechDataset(cache, train_utts, translator.tokenize_target if needs_translation else None, src_tok if needs_text else None)
    dev_set = CachedSpeechDataset(cache, dev_utts, translator.tokenize_target, None) if dev_utts else None
    sampler = LengthBucketSampler(
        train_set.lengths, max_frames=cfg.data.max_frames, batch_size=cfg.data.batch_size, shuffle=True, seed=cfg.seed
    )
    transcripts = {u.id: u.transcript or "" for u in train_utts}

    # --- resume -----------------------------------------------------------------------------------
    state = LoopState()
    last = out / "last"
    resume = (last / TRAINER_STATE).is_file()
    if cfg.init_from and not resume:
        init_from_checkpoint(model, cfg.init_from)
        if main:
            log.info("connector initialised from %s", cfg.init_from)
    if resume:
        trainer = torch.load(last / TRAINER_STATE, weights_only=False)
        loaded, _ = load_connector(last, speech_encoder=model.speech_encoder, translator=translator)
        model.connector.load_state_dict(loaded.connector.state_dict())
        if model.ctc_head is not None:
            model.ctc_head.load_state_dict(loaded.ctc_head.state_dict())
        state = LoopState(**trainer["loop"])
        if main:
            log.info("resuming from %s at stage %d step %d", last, state.stage, state.stage_step)
    metrics = MetricsLog(out / "metrics.csv", main)
    # Rows logged after the state we start from (a kill came after them) would be logged again: drop them.
    dropped = metrics.truncate(state.metrics_rows if resume else 0, state.global_step)
    if dropped:
        log.warning("%s: dropped %d rows logged after step %d, where this run resumes", metrics.path, dropped, state.global_step)
    device = accelerator.device
    model.to(device)
    t_start = time.perf_counter() - state.minutes * 60

    def minutes() -> float:
        return (time.perf_counter() - t_start) / 60

    def save_last(optimizer, scheduler, *, stage_done: bool = False) -> None:
        """Write OUT/last. After a finished stage the next stage starts fresh (new optimizer, schedule and
        objective RNG), so only the loop position and global RNG are kept then."""
        if not main:
            return
        state.metrics_rows = metrics.rows
        trainer_state = {
            "loop": vars(state).copy(),
            "optimizer": None if stage_done else optimizer.state_dict(),
            "scheduler": None if stage_done else scheduler.state_dict(),
            "rng": _rng_state(),
            "objectives_rng": None if stage_done else objectives.generator.get_state(),
        }
        save_connector(accelerator.unwrap_model(step_module).model, last, decoding=decoding, trainer_state=trainer_state,
                       translator_kwargs=mcfg.translator_kwargs, extra={"loop": vars(state).copy()})

    def evaluate_and_select() -> None:
        if dev_set is None or not main:
            return
        res = evaluate_dev(model, dev_set, beam=cfg.eval_beam, max_len=cfg.max_len)
        values = {k: res[k] for k in ("bleu", "chrf", "ctc_wer") if k in res}
        metrics.write(state.global_step, minutes(), "dev", values)
        log.info("step %d dev %s", state.global_step, " ".join(f"{k} {v:.3g}" for k, v in values.items()))
        if res["bleu"] > state.best_bleu:
            state.best_bleu, state.best_step, state.bad_evals = res["bleu"], state.global_step, 0
            save_connector(model, out / "best", decoding=decoding, translator_kwargs=mcfg.translator_kwargs,
                           extra={"step": state.global_step, "dev": res})
        else:
            state.bad_evals += 1

    step_module = None
    if cfg.eval_at_start and state.global_step == 0 and state.stage == 0:
        evaluate_and_select()
    while state.stage < len(cfg.stages) and not state.finished:
        stage = cfg.stages[state.stage]
        objectives = Objectives(
            ObjectiveConfig(
                weights=stage.objectives,
                label_smoothing=cfg.label_smoothing,
                ctc_sampled_vocab=cfg.ctc_sampled_vocab,
                kd_temperature=cfg.kd_temperature,
                kd_top_k=cfg.kd_top_k,
            ),
            transcripts=transcripts,
            seed=cfg.seed + state.stage,
        )
        step_module = _Step(model, objectives)
        optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=stage.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(stage.warmup, max(1, stage.steps)))
        # The scheduler is not prepared: accelerate would step it once per process, but our schedule counts
        # optimizer steps, whatever the number of processes.
        step_module, optimizer = accelerator.prepare(step_module, optimizer)
        if resume:
            if trainer["optimizer"] is not None:  # None: saved at a stage boundary
                optimizer.load_state_dict(trainer["optimizer"])
                scheduler.load_state_dict(trainer["scheduler"])
                objectives.generator.set_state(trainer["objectives_rng"])
            _set_rng_state(trainer["rng"])
            resume = False
        stage_start = minutes() - state.stage_minutes  # a resumed stage keeps the minutes it already used
        # The stage's time limit: its own max_minutes and what the run's budget leaves, whichever is shorter.
        limits = [stage.max_minutes] if stage.max_minutes else []
        if cfg.time_budget_minutes:
            limits.append(cfg.time_budget_minutes - stage_start)
        clock = min(limits) if limits else 0.0
        time_limit = clock if stage.time_decay else 0.0
        desc = f"stage {state.stage + 1}/{len(cfg.stages)} {stage.name}"
        if clock:
            # A clock ends this stage (its step count is only a cap): the bar counts seconds, so its ETA is
            # the real one; the step and the loss go in the postfix.
            bar = progress_bar(total=round(clock * 60), initial=round((minutes() - stage_start) * 60), desc=desc, unit="s",
                               enabled=progress and main)
        else:
            bar = progress_bar(total=stage.steps, initial=state.stage_step, desc=desc, unit="step", enabled=progress and main)
        step_module.train()
        running: dict[str, float] = {}
        stop_stage = False
        while state.stage_step < stage.steps and not stop_stage:
            sampler.set_epoch(state.epoch)
            batches = list(sampler)
            # One optimizer step consumes world x grad_accum batches of the global order: process r takes
            # micro-batches r, r + world, ... so N processes and N-fold accumulation see the same data.
            world, rank, accum = accelerator.num_processes, accelerator.process_index, max(1, cfg.grad_accum)
            per_step = world * accum
            usable = len(batches) - len(batches) % per_step
            for b in range(state.batch_in_epoch, usable, per_step):
                step_terms: dict[str, torch.Tensor] = {}
                for a in range(accum):
                    batch = to_device(collate([train_set[i] for i in batches[b + a * world + rank]], pad_id=IGNORE), device)
                    batch["states"] = mask_states(batch["states"], batch["states_mask"], cfg.augment)
                    sync = a == accum - 1  # DDP all-reduces gradients only on the last micro-batch
                    with (contextlib.nullcontext() if sync else accelerator.no_sync(step_module)), accelerator.autocast():
                        terms = step_module(batch)
                        accelerator.backward(terms["total"] / accum)
                    for k, v in terms.items():
                        step_terms[k] = step_terms.get(k, 0.0) + v.detach() / accum
                if cfg.grad_clip:
                    accelerator.clip_grad_norm_(model.trainable_parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                if time_limit > 0:  # the step schedule's value, capped by the clock's (see StageConfig.time_decay)
                    scale = time_scale(minutes() - stage_start, time_limit)
                    for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
                        group["lr"] = min(group["lr"], base * scale)
                optimizer.zero_grad(set_to_none=True)
                state.batch_in_epoch = b + per_step
                state.stage_step += 1
                state.global_step += 1
                for k, v in step_terms.items():  # logged values are means over all processes
                    running[k] = running.get(k, 0.0) + float(accelerator.reduce(v, "mean") if world > 1 else v)
                if clock:
                    bar.update(max(0, min(round((minutes() - stage_start) * 60), bar.total) - bar.n))
                else:
                    bar.update(1)
                if state.global_step % cfg.log_every == 0:
                    avg = {k: v / cfg.log_every for k, v in running.items()}
                    avg["lr"] = optimizer.param_groups[0]["lr"]  # what the step used (time_decay may cap the schedule)
                    metrics.write(state.global_step, minutes(), "train", {("lr" if k == "lr" else f"loss_{k}"): v for k, v in avg.items()})
                    bar.set_postfix({"step": state.global_step, **{k: f"{v:.3f}" for k, v in avg.items() if k != "lr"}})
                    running = {}
                state.minutes = minutes()
                state.stage_minutes = state.minutes - stage_start
                if stage.evaluate and cfg.eval_every and state.global_step % cfg.eval_every == 0:
                    evaluate_and_select()
                    step_module.train()
                    if cfg.patience and state.bad_evals >= cfg.patience:
                        log.info("stage %s: no dev improvement in %d evaluations; next stage", stage.name, cfg.patience)
                        stop_stage = True
                if cfg.save_every and state.global_step % cfg.save_every == 0:
                    save_last(optimizer, scheduler)
                over_budget = cfg.time_budget_minutes and minutes() >= cfg.time_budget_minutes
                over_stage = stage.max_minutes and minutes() - stage_start >= stage.max_minutes
                if over_budget:
                    state.finished = True
                if state.stage_step >= stage.steps or stop_stage or over_budget or over_stage:
                    stop_stage = True
                    break
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
        bar.close()
        # End of stage: evaluate once more so every stage's final weights compete for "best".
        if stage.evaluate:
            evaluate_and_select()
        state.stage += 1
        state.stage_step = 0
        state.stage_minutes = 0.0
        state.bad_evals = 0
        state.minutes = minutes()
        save_last(optimizer, scheduler, stage_done=True)

    state.finished = True
    summary: dict[str, Any] = {"steps": state.global_step, "minutes": minutes(), "best_dev_bleu": state.best_bleu, "best_step": state.best_step}
    if main:
        if dev_set is None or state.best_step < 0:
            # No dev set: the final weights are the result.
            save_connector(model, out / "best", decoding=decoding, translator_kwargs=mcfg.translator_kwargs, extra={"step": state.global_step})
        if step_module is not None:
            save_last(optimizer, scheduler, stage_done=True)
        summary["parameters"] = model.parameter_report()
        summary["checkpoint"] = str(out / "best")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        try:
            plot_training_curve(out / "metrics.csv", out / "training.png")
        except Exception as e:  # a plot must never lose a finished run
            log.warning("could not plot %s: %s", out / "training.png", e)
    accelerator.wait_for_everyone()
    return summary


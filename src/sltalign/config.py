"""Typed, documented training configs. YAML presets live under configs/; the CLI takes dotted overrides.

    sltalign train configs/whisper-base_bergamot-en-pt_ste_eced.yaml train.stages.0.steps=200 out=runs/x

A config is plain data (dataclasses): no objects are built inside YAML. ``load_config`` reads YAML, applies
``key=value`` overrides (values parsed as YAML scalars), and validates every field, naming the offending
dotted key and what was expected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import re
import warnings
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .connectors.ctc_head import CTC_HEADS
from .data.augment import AugmentConfig
from .foundation.base import ENCODER_PRECISIONS

log = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    """What to align and how."""

    speech_encoder: str = "packaged:whisper-base"
    #: "trim" (encode only real frames) or "pad30" (the paper's: pad to 30 s, keep frames of real audio), or
    #: "decoder": the soft cascade's source, the frozen Whisper decoder's states along its own 1-best
    #: hypothesis (foundation/whisper_decoder.py; pair it with connector "hypothesis")
    encoder_mode: str = "trim"
    #: how the frozen speech encoder computes: "fp32", "bf16" (autocast; 1.7-2.8x faster encoding on CPUs with
    #: AMX, states within ~1% of fp32) or "auto" (bf16 where the device has native bf16 matrix units).
    #: The precision used is recorded in checkpoints, so translation computes the same way.
    encoder_precision: str = "fp32"
    #: what computes the frozen Whisper encoder: "torch" (fp32/bf16, every mode), "ctranslate2" (trim mode;
    #: encoder_precision "int8" or "fp32", "auto" meaning int8: on a 2-core Zen 4 without AMX int8 encoded
    #: 74-84 audio-s/s against torch fp32's 41-47, states at a mean frame cosine of ~0.997 to fp32) or "auto"
    #: (the fastest engine and precision whose states keep a mean frame cosine >= 0.99 to torch fp32 on this
    #: machine, measured once and remembered; encoder_precision is then ignored). Recorded in checkpoints.
    encoder_engine: str = "torch"
    translator: str = "packaged:bergamot-en-pt"
    #: extra arguments for the translator loader (e.g. source_prefix, target_lang)
    translator_kwargs: dict[str, Any] = field(default_factory=dict)
    connector: str = "ste"
    #: connector size preset: "small" (CPU-sized) or "paper" (the sizes of arXiv 2411.18294)
    connector_preset: str | None = "small"
    connector_args: dict[str, Any] = field(default_factory=dict)
    #: "eced" (connector -> MT encoder -> decoder) or "ecd" (connector -> MT decoder)
    arrangement: str = "eced"
    #: text prompt embedded before the connector output in ECED (e.g. ">>por<<"); null for none
    prompt: str | None = None
    #: the CTC head on the connector output (connectors/ctc_head.py), needed by the ctc objective and by
    #: compression: "none"; "tied" (the MT's source vocabulary, scored against its frozen embeddings);
    #: "pieces" (a linear head over ``ctc_vocab_size`` SentencePiece pieces learned from the training
    #: transcripts: rare words are spelled from common pieces, but on the demo's data 512 pieces did worse than
    #: the tied head, docs/RESULTS.md); "phones" (a linear head over eSpeak NG's ~100 phones, read out through
    #: a pronunciation lexicon built from English text, connectors/phones.py; needs a connector with >= ~20
    #: outputs per second, e.g. STE with conv_stages 1). Pieces and phones reach the MT as text through its own
    #: tokenizer (compression "hard" only).
    ctc_head: str = "none"
    #: the pieces head's vocabulary size (>= 8); 0 for the other heads, whose size follows from the MT or data
    ctc_vocab_size: int = 0
    #: the lexicon's English text besides the training transcripts: "trans-de-en:sentences",
    #: "trans-de-en:phrases" or paths of text files (data/lexicon_text.py)
    lexicon_text: list[str] = field(default_factory=lambda: ["trans-de-en:sentences", "trans-de-en:phrases"])
    #: manifests whose sentences the lexicon must not read (data.dev is always excluded; add the test set)
    lexicon_exclude: list[str] = field(default_factory=list)
    #: also read every word of the lexicon's text alone in each accent (each line is read in one accent, so a
    #: word is otherwise missing in the others); false: the text's lines only, as lexicons were built before
    lexicon_words_alone: bool = True
    #: how the phone head reads its posteriors (connectors/lexicon_search.py): ``beam`` 0 greedy, else a beam
    #: search spelling lexicon words only, weighing a word trigram over the lexicon's text by ``lm_weight``
    #: plus ``word_score`` per word (also ``beam_size_token``, ``beam_threshold``). The defaults were chosen
    #: on the real-speech dev set (docs/RESULTS.md, "A word LM in the phone read-out")
    phone_search: dict[str, Any] = field(default_factory=lambda: {"beam": 32, "lm_weight": 0.6, "word_score": -1.0})
    #: CTC compression before the MT: null, "hard", "soft" or "posterior"
    compression: str | None = None
    compression_temperature: float = 1.0


@dataclass
class DataConfig:
    train: str = ""
    dev: str = ""
    #: encoder-output cache directory (shared by runs that use the same encoder and mode)
    cache_dir: str = "cache"
    #: "float16" or "int8" cache storage
    cache_dtype: str = "float16"
    #: a batch holds at most this many padded speech frames (T_s x B) ...
    max_frames: int = 12000
    #: ... and at most this many utterances
    batch_size: int = 32
    min_duration: float = 0.2
    max_duration: float = 30.0
    #: use at most this many dev utterances for periodic evaluation (0: all)
    max_dev: int = 200
    #: more dev sets, name -> manifest (e.g. ``{real_dev: realspeech/dev.jsonl}``), scored at every evaluation
    #: and logged under their own name in metrics.csv and training.png: watched only, unless ``select`` names
    #: one to choose the checkpoint and stop early by. Same duration limits and ``max_dev`` as data.dev.
    watch: dict[str, str] = field(default_factory=dict)
    #: more training manifests, name -> manifest (e.g. ``{acted: acted/manifest.jsonl}``, people's voices beside a
    #: synthetic corpus), read after ``train`` with the same limits and required fields
    more_train: dict[str, str] = field(default_factory=dict)
    #: how many times each ``more_train`` set's clips are drawn per epoch (name -> count, default 1): the
    #: weight of a small set of real voices against a large synthetic corpus
    more_train_repeat: dict[str, int] = field(default_factory=dict)
    #: clips the frozen encoder takes at once while the cache is built (larger on a GPU, e.g. 64)
    encode_batch_size: int = 8
    #: processes that collate training batches ahead of the step (0: in the training process; on a GPU, 2-4
    #: keep it busy; batches are pinned in memory there). The order of batches does not depend on it.
    num_workers: int = 0


@dataclass
class StageConfig:
    """One training stage. Stages run in order; each has its own objectives, steps and schedule."""

    name: str = "translate"
    steps: int = 1000
    lr: float = 2e-4
    warmup: int = 100
    #: weights of the loss terms: ce (the paper's), ctc, kd
    objectives: dict[str, float] = field(default_factory=lambda: {"ce": 1.0})
    #: end this stage after this many minutes of training (0: no limit)
    max_minutes: float = 0.0
    #: decay the learning rate linearly to 0 at this stage's time limit (``max_minutes``, or what is left
    #: of ``time_budget_minutes``) as well as at ``steps``, whichever comes first. For stages a clock ends:
    #: with a step count far beyond what the budget allows, the step schedule alone never decays.
    time_decay: bool = False
    #: evaluate dev BLEU periodically in this stage (with the model's compression, if any)
    evaluate: bool = True


@dataclass
class TrainConfig:
    """Everything one ``sltalign train`` run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    #: masking of cached encoder states during training (SpecAugment after the encoder)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    out: str = "runs/train"
    #: start the connector (and CTC head) from this checkpoint directory instead of random weights: a
    #: CTC-pretrained connector, one trained on another domain or for longer. Ignored when OUT/last resumes.
    init_from: str | None = None
    seed: int = 0
    weight_decay: float = 1e-5
    grad_clip: float = 5.0
    grad_accum: int = 1
    #: "no", "bf16" or "fp16" (accelerate; bf16/fp16 only where the device supports them)
    mixed_precision: str = "no"
    label_smoothing: float = 0.0
    kd_temperature: float = 1.0
    kd_top_k: int = 16
    ctc_sampled_vocab: int = 4096
    eval_every: int = 200
    #: score the untrained connector on dev before the first step, so that a connector which starts as a
    #: working system (the soft cascade's starts as the cascade) competes for OUT/best as it is
    eval_at_start: bool = False
    save_every: int = 200
    log_every: int = 20
    #: the score that picks OUT/best and that ``patience`` watches: "SPLIT.METRIC", SPLIT "dev" or a data.watch
    #: name, METRIC "bleu" or "chrf" (higher is better). A small real-speech dev set (``real_dev.chrf``) picks
    #: for people where the synthetic dev picks for synthesisers; chrF is the steadier of the two on ~30 clips.
    select: str = "dev.bleu"
    #: stop after this many evaluations without an improvement of ``select`` (0: never)
    patience: int = 10
    #: stop all stages after this many minutes of training (0: no limit); the best checkpoint is kept
    time_budget_minutes: float = 0.0
    eval_beam: int = 1
    decode_beam: int = 4
    max_len: int = 150
    #: translation splits audio longer than this at pauses (stored in the checkpoint's decoding defaults);
    #: None: the duration the training clips reach (their 99th percentile, whole seconds, at least 10 s);
    #: 0: split only what the speech encoder cannot take in one window
    max_piece_seconds: float | None = None
    num_threads: int = 0


class ConfigError(ValueError):
    pass


#: what ``select`` may name (scores where higher is better)
SELECT_METRICS = ("bleu", "chrf")


@functools.cache
def _typing_parser(cls: type) -> Any:
    """A jsonargparse parser built from the dataclass ``cls`` (types, nesting, defaults): what checks and converts
    a config tree. Built once per class."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "cfg")
    return parser


def _typed(tree: dict, cls: type, where: str = "") -> Any:
    """``tree`` (merged YAML + overrides) as an instance of the dataclass ``cls``, types checked and converted by
    jsonargparse; a bad value is one ConfigError naming its dotted key. Stages are checked one by one, so that an
    error names the stage's index."""
    tree = _numbers_as_text(tree, cls, f"{where}." if where else "")
    stages = tree.pop("stages", None) if cls is TrainConfig else None
    parser = _typing_parser(cls)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jsonargparse's deprecation notices are not the user's business
            obj = parser.instantiate(parser.parse_object({"cfg": tree})).cfg
    except Exception as e:  # noqa: BLE001 - jsonargparse raises several types; each becomes one line naming the key
        raise ConfigError(_typing_error(e, cls, where)) from None
    if stages is not None:
        if not isinstance(stages, list):
            raise ConfigError(f"stages: expected a list of stage mappings, got {stages!r}")
        obj.stages = [_typed(st, StageConfig, f"stages.{i}") for i, st in enumerate(stages)]
    return obj


def _numbers_as_text(tree: dict, cls: type, where: str = "") -> dict:
    """A copy of ``tree`` where numbers given for text fields are text (YAML reads ``out: 2024`` as a number) and
    numbers written as text are numbers (YAML 1.1 reads ``1e-3`` and ``nan`` as text)."""
    hints = typing.get_type_hints(cls)
    out = dict(tree)
    for k, v in tree.items():
        tp = hints.get(k)
        if v is None and tp is not None and type(None) not in typing.get_args(tp) and tp is not Any:
            # jsonargparse would take null as "unset" and leave None where a value is needed
            raise ConfigError(f"{where}{k}: expected {getattr(tp, '__name__', tp)}, got null")
        if isinstance(v, dict) and dataclasses.is_dataclass(tp):
            out[k] = _numbers_as_text(v, tp, f"{where}{k}.")
        elif tp in (str, str | None) and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = str(v)
        elif tp in (float, float | None) and isinstance(v, str):
            with contextlib.suppress(ValueError):  # "nan", "inf": read, then refused as not finite (_check_finite)
                out[k] = float(v)
    return out


def _typing_error(e: Exception, cls: type, where: str) -> str:
    """jsonargparse's message as '<dotted key>: <what was expected and got>' on one line."""
    msg = " ".join(str(e).split())
    prefix = f"{where}." if where else ""
    m = re.search(r'Parser key "cfg\.([^"]+)": (.*)', msg)
    if m:
        what = re.sub(r"Expected a <class '(\w+)'>\. Got value: (.*)", r"expected \1, got \2", m.group(2))
        return f"{prefix}{m.group(1)}: {what}"
    m = re.search(r"Group 'cfg' does not accept option '([^']+)'", msg)
    if m:
        key = m.group(1)
        parent, _, name = key.rpartition(".")
        section = cls
        for part in parent.split(".") if parent else []:
            section = typing.get_type_hints(section).get(part, section)
        known = sorted(f.name for f in dataclasses.fields(section)) if dataclasses.is_dataclass(section) else []
        return f"{prefix + parent if parent else where or 'config'}: unknown key(s) ['{name}']; known: {known}"
    return f"{where or 'config'}: {msg}"


def _list_index(node: list, part: str, key: str, upto: str) -> int:
    """The index ``part`` names in a list: an existing one, or a ConfigError naming the key. Overrides never
    add list items (``stages.2.steps=3`` on a one-stage preset would otherwise insert default stages)."""
    if not part.isdigit():
        raise ConfigError(f"override {key}: {upto} is a list; expected an index 0..{len(node) - 1} there, got {part!r}")
    idx = int(part)
    if idx >= len(node):
        have = f"indexes 0..{len(node) - 1}" if node else "no items"
        raise ConfigError(f"override {key}: {upto} has {have}; to add items give the whole list (e.g. stages=[{{...}}, {{...}}])")
    return idx


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"override {key!r}: expected a dotted key such as data.batch_size (no empty parts)")
    node: Any = tree
    for i, p in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = node[_list_index(node, p, key, ".".join(parts[:i]))]
        else:
            node = node.setdefault(p, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"override {key}: {where} is not a mapping or list")
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key, ".".join(parts[:-1]))] = value
    else:
        node[last] = value


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """YAML file (optional) + ``key=value`` overrides -> a validated TrainConfig."""
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from e
        if not isinstance(tree, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
    base = to_dict(TrainConfig())
    # Stages given in the file replace the default list wholesale; each stage is filled with defaults.
    merged = _merge(base, tree, TrainConfig)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. data.batch_size=16)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            detail = " ".join(str(e).split())
            raise ConfigError(f"override {key.strip()}: the value {raw!r} is not valid YAML ({detail})") from e
        _set_dotted(merged, key.strip(), value)
    if isinstance(merged.get("model"), dict):
        _read_legacy_ctc_keys(merged["model"])
    stages = merged.get("stages", [])
    if not isinstance(stages, list):
        raise ConfigError(f"stages: expected a list of stage mappings, got {stages!r}")
    for i, st in enumerate(stages):
        if not isinstance(st, dict):
            raise ConfigError(f"stages.{i}: expected a mapping (name, steps, lr, ...), got {st!r}")
    merged["stages"] = [_merge(to_dict(StageConfig()), st, StageConfig) for st in stages]
    cfg = _typed(merged, TrainConfig)
    validate(cfg)
    return cfg


#: the three flags that named the CTC head before ``model.ctc_head``
LEGACY_CTC_KEYS = ("ctc", "ctc_pieces", "ctc_phones")


def _read_legacy_ctc_keys(model: dict) -> None:
    """Read ``ctc``/``ctc_pieces``/``ctc_phones`` (configs written before ``ctc_head``) into ``ctc_head`` and
    ``ctc_vocab_size``, in place. The rule: ``ctc: false`` is "none"; else ``ctc_phones: true`` is "phones",
    ``ctc_pieces: N`` (N > 0) is "pieces" of N, ``ctc: true`` alone keeps a pieces/phones head the file already
    names and is "tied" otherwise."""
    legacy = {k: model.pop(k) for k in LEGACY_CTC_KEYS if k in model}
    if not legacy:
        return
    for key in ("ctc", "ctc_phones"):
        if key in legacy and not isinstance(legacy[key], bool):
            raise ConfigError(f"model.{key}: expected true or false, got {legacy[key]!r} (better: model.ctc_head)")
    pieces = legacy.get("ctc_pieces", 0)
    if isinstance(pieces, bool) or not isinstance(pieces, int) or pieces < 0:
        raise ConfigError(
            f"model.ctc_pieces: expected a number of pieces >= 0, got {pieces!r} (better: model.ctc_head=pieces "
            "with model.ctc_vocab_size)"
        )
    if legacy.get("ctc_phones") and pieces:
        raise ConfigError("model.ctc_phones and model.ctc_pieces exclude each other (one CTC head vocabulary)")
    if legacy.get("ctc") is False and (legacy.get("ctc_phones") or pieces):
        raise ConfigError(
            f"model.{'ctc_phones' if legacy.get('ctc_phones') else 'ctc_pieces'} needs model.ctc: true "
            "(better: model.ctc_head=phones or pieces)"
        )
    current = model.get("ctc_head", "none")
    if not legacy.get("ctc", current != "none" or legacy.get("ctc_phones") or pieces):
        kind = "none"
    elif legacy.get("ctc_phones"):
        kind = "phones"
    elif pieces:
        kind, model["ctc_vocab_size"] = "pieces", pieces
    elif "ctc_phones" not in legacy and "ctc_pieces" not in legacy and current in ("pieces", "phones"):
        kind = current
    else:
        kind = "tied"
    model["ctc_head"] = kind
    if kind != "pieces" and "ctc_pieces" in legacy:
        model["ctc_vocab_size"] = 0
    log.warning(
        "model.%s: read as model.ctc_head=%s (the old flags still work; ctc_head replaces them)", "/".join(sorted(legacy)), kind
    )


def _merge(base: dict, new: dict, cls: type) -> dict:
    """``new`` over ``base``, recursing into the fields that are config sections (dataclasses); every other value,
    mappings such as ``objectives`` or ``connector_args`` included, is replaced whole."""
    hints = typing.get_type_hints(cls)
    out = dict(base)
    for k, v in new.items():
        sub = hints.get(k)
        if isinstance(v, dict) and isinstance(out.get(k), dict) and dataclasses.is_dataclass(sub):
            out[k] = _merge(out[k], v, sub)
        else:
            out[k] = v
    return out


def _check_finite(node: Any, where: str) -> None:
    """Every float in the config must be finite: NaN passes every ``<``/``>`` check and breaks later."""
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            _check_finite(getattr(node, f.name), f"{where}.{f.name}" if where else f.name)
    elif isinstance(node, dict):
        for k, v in node.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_finite(v, f"{where}.{i}")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{where}: expected a finite number, got {node}")


# (key, smallest allowed value, what 0 means if it is allowed): integers checked before any model loads
_INT_BOUNDS = (
    ("log_every", 1, None),
    ("eval_every", 0, "never evaluate periodically"),
    ("save_every", 0, "save OUT/last only at stage ends"),
    ("grad_accum", 1, None),
    ("patience", 0, "never stop early"),
    ("eval_beam", 1, None),
    ("decode_beam", 1, None),
    ("max_len", 1, None),
    ("kd_top_k", 1, None),
    ("ctc_sampled_vocab", 0, "the full vocabulary"),
    ("num_threads", 0, "torch's default"),
    ("data.batch_size", 1, None),
    ("data.max_frames", 1, None),
    ("data.max_dev", 0, "all"),
    ("data.encode_batch_size", 1, None),
    ("data.num_workers", 0, "collate in the training process"),
)
# (key, smallest allowed value, whether the bound itself is allowed)
_FLOAT_BOUNDS = (
    ("time_budget_minutes", 0.0, True),
    ("grad_clip", 0.0, True),
    ("weight_decay", 0.0, True),
    ("label_smoothing", 0.0, True),
    ("kd_temperature", 0.0, False),
    ("model.compression_temperature", 0.0, False),
    ("data.min_duration", 0.0, True),
    ("data.max_duration", 0.0, False),
)


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _validate_ctc_head(m: ModelConfig) -> None:
    if m.ctc_head not in CTC_HEADS:
        raise ConfigError(f"model.ctc_head: expected one of {', '.join(CTC_HEADS)}, got {m.ctc_head!r}")
    if m.compression and m.ctc_head == "none":
        raise ConfigError("model.compression needs a CTC head (segments come from it): set model.ctc_head")
    if m.ctc_head == "pieces" and m.ctc_vocab_size < 8:
        raise ConfigError(f"model.ctc_vocab_size: a CTC head over pieces needs a number of pieces >= 8, got {m.ctc_vocab_size}")
    if m.ctc_head != "pieces" and m.ctc_vocab_size:
        raise ConfigError(
            f"model.ctc_vocab_size: applies to model.ctc_head=pieces only (the {m.ctc_head!r} head's size follows "
            f"from the MT or the data); leave it 0, got {m.ctc_vocab_size}"
        )
    if m.ctc_head in ("pieces", "phones") and m.compression not in (None, "hard"):
        raise ConfigError(
            f"model.compression: a CTC head over {m.ctc_head} reaches the MT as text, so 'hard' or null; got {m.compression!r}"
        )


def validate(cfg: TrainConfig) -> None:
    _check_finite(cfg, "")
    for key, low, zero in _INT_BOUNDS:
        v = _get(cfg, key)
        if v < low:
            meaning = f" (0: {zero})" if zero else ""
            raise ConfigError(f"{key}: expected an integer >= {low}{meaning}, got {v}")
    for key, low, inclusive in _FLOAT_BOUNDS:
        v = _get(cfg, key)
        if v < low or (v == low and not inclusive):
            raise ConfigError(f"{key}: expected a number {'>=' if inclusive else '>'} {low:g}, got {v}")
    if not cfg.label_smoothing < 1:
        raise ConfigError(f"label_smoothing: expected a number in [0, 1), got {cfg.label_smoothing}")
    if cfg.data.min_duration >= cfg.data.max_duration:
        raise ConfigError(
            f"data.min_duration: expected less than data.max_duration ({cfg.data.max_duration}), got {cfg.data.min_duration}"
        )
    m = cfg.model
    if m.encoder_mode not in ("trim", "pad30", "decoder"):
        raise ConfigError(f"model.encoder_mode: expected 'trim', 'pad30' or 'decoder', got {m.encoder_mode!r}")
    if m.encoder_mode == "decoder" and m.encoder_precision == "bf16":
        raise ConfigError("model.encoder_precision: the decoder source computes in int8 (CTranslate2) or fp32; use fp32 or auto")
    if m.encoder_mode == "decoder" and cfg.augment.active:
        raise ConfigError(
            "augment: masking would zero the hypothesis tokens the decoder source carries; turn it off with model.encoder_mode=decoder"
        )
    if m.encoder_engine not in ("torch", "ctranslate2", "auto"):
        raise ConfigError(f"model.encoder_engine: expected 'torch', 'ctranslate2' or 'auto', got {m.encoder_engine!r}")
    if m.encoder_engine != "torch" and m.encoder_mode == "decoder":
        raise ConfigError("model.encoder_engine: the decoder source runs on its own engine (CTranslate2 int8); leave it 'torch'")
    if m.encoder_engine == "ctranslate2" and m.encoder_mode != "trim":
        raise ConfigError(
            f"model.encoder_engine: ctranslate2 encodes trimmed input only; set model.encoder_mode=trim (got {m.encoder_mode!r})"
        )
    if m.encoder_engine == "ctranslate2":
        if m.encoder_precision not in ("int8", "fp32", "auto"):
            raise ConfigError(
                f"model.encoder_precision: the ctranslate2 engine computes in 'int8', 'fp32' or 'auto' (int8), got {m.encoder_precision!r}"
            )
    elif m.encoder_precision not in (*ENCODER_PRECISIONS, "auto"):
        raise ConfigError(
            f"model.encoder_precision: expected one of {(*ENCODER_PRECISIONS, 'auto')}, got {m.encoder_precision!r}"
        )
    if m.arrangement not in ("ecd", "eced"):
        raise ConfigError(f"model.arrangement: expected 'ecd' or 'eced', got {m.arrangement!r}")
    if m.compression not in (None, "hard", "soft", "posterior"):
        raise ConfigError(f"model.compression: expected null, 'hard', 'soft' or 'posterior', got {m.compression!r}")
    for name in cfg.data.watch:
        if name in ("train", "dev") or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError(
                f"data.watch: expected names of letters, digits, '_', '.' or '-' other than 'train' and 'dev', got {name!r}"
            )
    for name in cfg.data.more_train:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError(f"data.more_train: expected names of letters, digits, '_', '.' or '-', got {name!r}")
    for name, count in cfg.data.more_train_repeat.items():
        if name not in cfg.data.more_train:
            raise ConfigError(
                f"data.more_train_repeat.{name}: no data.more_train set of that name (sets: {sorted(cfg.data.more_train)})"
            )
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ConfigError(f"data.more_train_repeat.{name}: expected a whole number >= 1, got {count!r}")
    split, _, metric = cfg.select.rpartition(".")
    if split not in ("dev", *cfg.data.watch) or metric not in SELECT_METRICS:
        raise ConfigError(
            f"select: expected 'SPLIT.METRIC' with SPLIT 'dev' or a data.watch name {sorted(cfg.data.watch)} and METRIC "
            f"one of {SELECT_METRICS}, got {cfg.select!r}"
        )
    if cfg.data.cache_dtype not in ("float16", "int8"):
        raise ConfigError(f"data.cache_dtype: expected 'float16' or 'int8', got {cfg.data.cache_dtype!r}")
    if not cfg.stages:
        raise ConfigError("stages: at least one stage is needed")
    for i, s in enumerate(cfg.stages):
        if s.steps < 0 or s.lr <= 0 or s.warmup < 0:
            raise ConfigError(f"stages.{i}: steps >= 0, lr > 0 and warmup >= 0 expected, got {s}")
        if s.max_minutes < 0:
            raise ConfigError(f"stages.{i}.max_minutes: expected a number of minutes >= 0 (0: no limit), got {s.max_minutes}")
        bad_weights = {k: w for k, w in s.objectives.items() if w < 0}
        if bad_weights:
            raise ConfigError(f"stages.{i}.objectives: expected weights >= 0, got {bad_weights}")
        if s.time_decay and not (s.max_minutes > 0 or cfg.time_budget_minutes > 0):
            raise ConfigError(f"stages.{i}.time_decay: needs a time limit (stages.{i}.max_minutes or time_budget_minutes)")
        unknown = set(s.objectives) - {"ce", "ctc", "kd"}
        if unknown:
            raise ConfigError(f"stages.{i}.objectives: unknown {sorted(unknown)}; known: ce, ctc, kd")
        if not any(w > 0 for w in s.objectives.values()):
            raise ConfigError(f"stages.{i}.objectives: at least one weight must be > 0")
        if s.objectives.get("ctc", 0) > 0 and m.ctc_head == "none":
            raise ConfigError(f"stages.{i}.objectives: the ctc objective needs a CTC head: model.ctc_head tied, pieces or phones")
        if m.compression == "hard" and not s.objectives.get("ctc", 0) > 0:
            # hard compression hands the MT the embedding rows of argmax tokens: no gradient reaches the connector
            raise ConfigError(
                f"stages.{i}.objectives: {sorted(k for k, w in s.objectives.items() if w > 0)} cannot train the connector "
                "through hard compression (it passes no gradient); add ctc, or use model.compression: posterior or soft"
            )
    _validate_ctc_head(m)
    try:
        from .connectors.lexicon_search import SearchOptions

        SearchOptions.from_dict(m.phone_search)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model.phone_search: {e}") from e
    for key in ("lexicon_text", "lexicon_exclude"):
        v = getattr(m, key)
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise ConfigError(f"model.{key}: expected a list of non-empty strings, got {v!r}")
    if cfg.max_piece_seconds is not None and not (cfg.max_piece_seconds == 0 or cfg.max_piece_seconds >= 2.0):
        raise ConfigError(
            f"max_piece_seconds: expected null (auto), 0 (encoder window only) or at least 2 s, got {cfg.max_piece_seconds}"
        )
    if cfg.mixed_precision not in ("no", "bf16", "fp16"):
        raise ConfigError(f"mixed_precision: expected no, bf16 or fp16, got {cfg.mixed_precision!r}")

"""Connector-only checkpoints: safetensors weights + a JSON config naming the frozen foundations.

Layout of a checkpoint directory::

    config.json          every setting needed to rebuild the AlignedST (foundation specs and fingerprints,
                         connector name + sizes, arrangement, prompt, CTC/compression, decoding defaults)
    connector.safetensors  the trainable weights only (connector.*, ctc_head.*)
    ctc_pieces.model     (CTC heads over word pieces only) the head's SentencePiece model
    ctc_phones.json      (CTC heads over phones only) the head's phone units and pronunciation lexicon
    trainer_state.pt     (training checkpoints only) optimizer, scheduler, RNG and loop state for resume

Directories are written atomically: into a sibling temporary directory first, then renamed into place, so a
crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .connectors import connector_from_config
from .connectors.compress import TiedCTCHead
from .connectors.phones import PHONES_FILE, PhoneCTCHead
from .connectors.pieces import PIECES_FILE, PieceCTCHead
from .foundation import load_speech_encoder, load_translator
from .model import AlignedST

CONFIG = "config.json"
WEIGHTS = "connector.safetensors"
TRAINER_STATE = "trainer_state.pt"


class CheckpointError(ValueError):
    pass


def model_config(model: AlignedST, *, translator_kwargs: dict | None = None, decoding: dict | None = None) -> dict[str, Any]:
    se = model.speech_encoder
    return {
        "format": "sltalign-connector",
        "sltalign_version": __version__,
        "speech_encoder": None
        if se is None
        else {"spec": se.spec, "mode": getattr(se, "mode", None), "precision": se.precision, "dim": se.dim, "fingerprint": se.fingerprint()},
        "translator": {
            "spec": model.translator.spec,
            "kwargs": translator_kwargs or {},
            "embed_dim": model.translator.embed_dim,
            "fingerprint": model.translator.fingerprint(),
        },
        "connector": model.connector.config(),
        "arrangement": model.arrangement,
        "prompt": model.prompt,
        "ctc": model.ctc_head is not None,
        # which head: absent (older checkpoints) means the head tied to the MT's embeddings
        "ctc_head": None if model.ctc_head is None else model.ctc_head.config(),
        "compression": model.compression,
        "compression_temperature": model.compression_temperature,
        "decoding": decoding or {"beam": 4, "max_len": 150, "length_penalty": 1.0},
        "parameters": model.parameter_report(),
    }


def trainable_state(model: AlignedST) -> dict[str, torch.Tensor]:
    state = {f"connector.{k}": v for k, v in model.connector.state_dict().items()}
    if model.ctc_head is not None:
        state.update({f"ctc_head.{k}": v for k, v in model.ctc_head.state_dict().items()})
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def write_dir_atomically(path: Path, fill: Callable[[Path], None]) -> Path:
    """Create ``path`` by filling a temporary sibling directory and renaming it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        fill(tmp)
        for f in tmp.iterdir():  # data reaches the disk before the rename makes it visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def save_connector(
    model: AlignedST,
    path: str | Path,
    *,
    translator_kwargs: dict | None = None,
    decoding: dict | None = None,
    extra: dict | None = None,
    trainer_state: dict | None = None,
) -> Path:
    """Write a connector checkpoint directory (atomically). Returns its path."""
    cfg = model_config(model, translator_kwargs=translator_kwargs, decoding=decoding)
    if extra:
        cfg["training"] = extra
    weights = trainable_state(model)

    def fill(tmp: Path) -> None:
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str))
        if isinstance(model.ctc_head, PieceCTCHead):
            (tmp / PIECES_FILE).write_bytes(model.ctc_head.model_proto)
        if isinstance(model.ctc_head, PhoneCTCHead):
            (tmp / PHONES_FILE).write_text(json.dumps(model.ctc_head.state(), ensure_ascii=False))
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE)

    return write_dir_atomically(Path(path), fill)


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    cfg_file = path / CONFIG
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is not a directory (expected a directory with {CONFIG} and {WEIGHTS})")
    if not cfg_file.is_file():
        raise CheckpointError(f"checkpoint {path} has no {CONFIG}; is this an sltalign connector directory?")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from e
    if cfg.get("format") != "sltalign-connector":
        raise CheckpointError(f"{cfg_file}: field 'format' should be 'sltalign-connector', got {cfg.get('format')!r}")
    for key in ("translator", "connector", "arrangement"):
        if key not in cfg:
            raise CheckpointError(f"{cfg_file}: missing field {key!r}")
    return cfg


def ctc_head_kind(cfg: dict[str, Any]) -> str | None:
    """None (no head), "tied", "pieces" or "phones" from a checkpoint/model config."""
    if not cfg.get("ctc"):
        return None
    return (cfg.get("ctc_head") or {}).get("kind", "tied")


def read_pieces(path: str | Path) -> bytes:
    """The SentencePiece model of a checkpoint whose CTC head is over pieces."""
    f = Path(path) / PIECES_FILE
    if not f.is_file():
        raise CheckpointError(f"checkpoint {path}: its CTC head is over word pieces but {PIECES_FILE} is missing")
    return f.read_bytes()


def read_phones(path: str | Path) -> dict[str, Any]:
    """The phone units and lexicon (``PhoneCTCHead.state()``) of a checkpoint whose CTC head is over phones."""
    f = Path(path) / PHONES_FILE
    if not f.is_file():
        raise CheckpointError(f"checkpoint {path}: its CTC head is over phones but {PHONES_FILE} is missing")
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from e


def read_head_data(path: str | Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """What ``build_model`` needs besides the config to rebuild a checkpoint's CTC head (pieces= or phones=)."""
    kind = ctc_head_kind(cfg)
    if kind == "pieces":
        return {"pieces": read_pieces(path)}
    if kind == "phones":
        return {"phones": read_phones(path)}
    return {}


def build_model(
    cfg: dict[str, Any],
    *,
    speech_encoder=None,
    translator=None,
    load_speech: bool = True,
    pieces: bytes | None = None,
    phones: dict[str, Any] | None = None,
) -> AlignedST:
    """An untrained AlignedST from a checkpoint/model config (foundations loaded unless passed in).

    ``pieces``: the SentencePiece model bytes, needed when the config's CTC head is over pieces;
    ``phones``: the units and lexicon (``PhoneCTCHead.state()``), needed when it is over phones."""
    if translator is None:
        translator = load_translator(cfg["translator"]["spec"], **cfg["translator"].get("kwargs", {}))
    if speech_encoder is None and load_speech and cfg.get("speech_encoder"):
        se = cfg["speech_encoder"]
        # checkpoints from before encoder precision existed computed in fp32
        speech_encoder = load_speech_encoder(se["spec"], mode=se.get("mode") or "trim", precision=se.get("precision") or "fp32")
    connector = connector_from_config(cfg["connector"])
    kind = ctc_head_kind(cfg)
    if kind == "pieces":
        if pieces is None:
            raise CheckpointError("this model's CTC head is over word pieces: pass its SentencePiece model (pieces=...)")
        ctc_head = PieceCTCHead(embed_dim=translator.embed_dim, model_proto=pieces)
        want = cfg["ctc_head"].get("vocab_size")
        if want is not None and want != ctc_head.vocab_size:
            raise CheckpointError(f"the pieces model has {ctc_head.vocab_size} pieces, the config says {want}")
    elif kind == "phones":
        if phones is None:
            raise CheckpointError("this model's CTC head is over phones: pass its units and lexicon (phones=...)")
        try:
            ctc_head = PhoneCTCHead.from_state(phones, embed_dim=translator.embed_dim)
        except ValueError as e:
            raise CheckpointError(f"{PHONES_FILE}: {e}") from e
        want = cfg["ctc_head"].get("vocab_size")
        if want is not None and want != ctc_head.vocab_size:
            raise CheckpointError(f"{PHONES_FILE} has {ctc_head.vocab_size} phone units, the config says {want}")
    elif kind == "tied":
        ctc_head = TiedCTCHead(embed_dim=translator.embed_dim)
    elif kind is None:
        ctc_head = None
    else:
        raise CheckpointError(f"field 'ctc_head.kind' should be 'tied', 'pieces' or 'phones', got {kind!r}")
    return AlignedST(
        speech_encoder=speech_encoder,
        connector=connector,
        translator=translator,
        arrangement=cfg["arrangement"],
        prompt=cfg.get("prompt"),
        ctc_head=ctc_head,
        compression=cfg.get("compression"),
        compression_temperature=cfg.get("compression_temperature", 1.0),
    )


def check_fingerprints(cfg: dict[str, Any], model: AlignedST, where: Path) -> None:
    """Refuse foundations whose weights differ from the ones the connector was trained against."""
    pairs = [("translator", model.translator)]
    if model.speech_encoder is not None and cfg.get("speech_encoder"):
        pairs.append(("speech_encoder", model.speech_encoder))
    for key, module in pairs:
        want = cfg[key].get("fingerprint")
        got = module.fingerprint()
        if want and want != got:
            raise CheckpointError(
                f"{where}: the connector was trained against {key} {cfg[key].get('spec')!r} with weight fingerprint "
                f"{want}, but the loaded {key} ({module.spec!r}) has fingerprint {got}; load the same foundation model "
                f"the connector was trained with"
            )


def load_connector(path: str | Path, *, speech_encoder=None, translator=None, load_speech: bool = True) -> tuple[AlignedST, dict]:
    """Rebuild the AlignedST of a checkpoint directory; returns (model, config). Mismatched foundations fail."""
    path = Path(path)
    cfg = read_config(path)
    try:
        model = build_model(cfg, speech_encoder=speech_encoder, translator=translator, load_speech=load_speech, **read_head_data(path, cfg))
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint {path}: {e}") from e
    check_fingerprints(cfg, model, path)
    wfile = path / WEIGHTS
    if not wfile.is_file():
        raise CheckpointError(f"checkpoint {path} has no {WEIGHTS}")
    try:
        state = load_file(str(wfile))
    except Exception as e:  # safetensors raises several types for a damaged file
        raise CheckpointError(f"{wfile}: cannot read weights ({e})") from e
    conn = {k[len("connector.") :]: v for k, v in state.items() if k.startswith("connector.")}
    head = {k[len("ctc_head.") :]: v for k, v in state.items() if k.startswith("ctc_head.")}
    try:
        model.connector.load_state_dict(conn, strict=True)
        if model.ctc_head is not None:
            model.ctc_head.load_state_dict(head, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{wfile}: weights do not match the connector described in {CONFIG}: {e}") from e
    model.eval()
    return model, cfg

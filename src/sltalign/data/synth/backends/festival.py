"""Festival's ``text2wave`` (Debian package festival): one process per sentence."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .base import CommandBackend

FESTIVAL_VOICES = ("default",)


class FestivalCommand(CommandBackend):
    """Festival's ``text2wave`` (Debian package festival); ``voice`` is a festival voice name."""

    name, program, apt = "festival", "text2wave", "festival"

    def synth(self, text: str, voice: str, rate: int, pitch: int, seed: int) -> tuple[np.ndarray, int]:  # noqa: ARG002
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.wav"
            cmd = [self.program, "-o", str(out), "-eval", f"(Parameter.set 'Duration_Stretch {175.0 / rate:.3f})"]
            if voice != "default":
                cmd += ["-eval", f"(voice_{voice})"]
            return self._decode(self._run(cmd, text, out), f"text2wave voice {voice}")

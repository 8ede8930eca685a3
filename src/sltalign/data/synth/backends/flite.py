"""CMU Flite (Debian package flite): four English voices, one process per sentence."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .base import CommandBackend

FLITE_VOICES = ("slt", "kal", "awb", "rms")


class FliteCommand(CommandBackend):
    """CMU flite (Debian package flite); rate becomes a duration stretch relative to 175 words/min."""

    name, program, apt = "flite", "flite", "flite"

    def synth(self, text: str, voice: str, rate: int, pitch: int, seed: int) -> tuple[np.ndarray, int]:  # noqa: ARG002
        with tempfile.TemporaryDirectory() as tmp:
            txt, out = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
            txt.write_text(text, encoding="utf-8")
            cmd = [
                self.program,
                "-voice",
                voice,
                "-f",
                str(txt),
                "-o",
                str(out),
                "--setf",
                f"duration_stretch={175.0 / rate:.3f}",
            ]
            return self._decode(self._run(cmd, "", out), f"flite -voice {voice}")

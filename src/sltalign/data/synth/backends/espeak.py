"""eSpeak NG: the library (espeakng-loader wheel, through a forking server) or the ``espeak-ng`` program."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .base import CommandBackend, ForkServer

#: English voices of eSpeak NG 1.51/1.52 (language/accent); all are combined with the variants below
ENGLISH_VOICES = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
#: eSpeak NG voice variants: male m1-m7, female f1-f5 (they change formants, breathiness and pitch range)
ESPEAK_VARIANTS = tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 6))
DEFAULT_VOICES = tuple(f"{v}+{x}" for v in ENGLISH_VOICES for x in ESPEAK_VARIANTS)


class EspeakLibrary:
    """libespeak-ng from the espeakng-loader wheel, through ctypes, in a small forking server process
    (:mod:`.espeak_server`).

    Every ``synth`` call starts from the library's freshly initialised state, so a clip's audio depends
    only on its request, not on what this process synthesised before.
    """

    name = "espeak"

    def __init__(self) -> None:
        import espeakng_loader

        lib_path, data_path = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        if not Path(lib_path).is_file():
            raise OSError(f"espeakng-loader ships no library at {lib_path}")
        server = Path(__file__).with_name("espeak_server.py")
        # -I -S: isolated, no site-packages: the server needs the standard library only
        self._server = ForkServer([sys.executable, "-I", "-S", str(server), lib_path, data_path], "eSpeak NG", "<i2")
        self.sample_rate = self._server.sample_rate  # 22050
        if self.sample_rate <= 0:
            raise OSError(f"espeak_Initialize failed ({self.sample_rate}) with data at {data_path}")

    def synth(self, text: str, voice: str, rate: int, pitch: int, seed: int) -> tuple[np.ndarray, int]:
        status, wav = self._server.request(
            {"text": text, "voice": voice, "rate": int(rate), "pitch": int(pitch), "seed": int(seed)}
        )
        if 1000 <= status < 2000:
            raise ValueError(f"eSpeak NG has no voice {voice!r} (names look like 'en-us' or 'en-us+f3')")
        if status != 0:
            what = {3000: "produced no audio", 4000: "crashed"}.get(status, f"failed (espeak_Synth {status - 2000})")
            raise RuntimeError(f"eSpeak NG {what} on {text[:60]!r} with voice {voice}")
        return wav, self.sample_rate

    def close(self) -> None:
        self._server.close()


class EspeakCommand(CommandBackend):
    """The ``espeak-ng`` program (Debian package espeak-ng): text on stdin, WAV on stdout."""

    name, program, apt = "espeak-cli", "espeak-ng", "espeak-ng"

    def synth(self, text: str, voice: str, rate: int, pitch: int, seed: int) -> tuple[np.ndarray, int]:  # noqa: ARG002
        cmd = [self.program, "-b", "1", "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout"]
        return self._decode(self._run(cmd, text, None), f"espeak-ng -v {voice}")

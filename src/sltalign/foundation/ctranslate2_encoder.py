"""Whisper's encoder computed by CTranslate2 (int8 or float32), and ``auto``: the fastest engine that stays faithful.

Engines of the frozen Whisper encoder (``load_speech_encoder(spec, engine=...)``):
    torch        ``WhisperSpeechEncoder``: fp32, or bf16 under autocast; modes trim and pad30.
    ctranslate2  ``CT2WhisperSpeechEncoder``: CTranslate2's own Whisper encoder on the same trimmed log-mel
                 ("int8": weights quantised at load, or "fp32"); mode trim only.
    auto         measured once per machine: the fastest of the above whose states stay within
                 ``AUTO_MIN_COSINE`` of torch fp32 (see ``choose_engine``).

Why: on a 2-core AMD EPYC (Zen 4, AVX-512 with bf16 and VNNI, no AMX), one clip at a time with 2 threads on
a quiet machine, torch fp32 encoded 41-47 audio-seconds per second, CTranslate2 int8 74-84, CTranslate2
float32 39, and torch bf16 no faster than fp32 (no AMX). CTranslate2 float32 states equal torch trim states
to float rounding (odd mel lengths included: its conv2 gives ceil(T_mel / 2) frames, as torch's does);
int8 states have a mean frame cosine of ~0.997 to fp32.

CTranslate2's encoder has no key-padding mask, so a batch only ever holds inputs of one mel length: the
batch is split into groups of equal length, each group one call, and the outputs padded afterwards. An
utterance's states therefore never depend on its batch (tests check batched == one by one).

The torch weights are loaded as well (converted from the same model.bin): they give the fingerprint that
checkpoints and caches check, so a connector trained on one engine's states loads with the other engine's
encoder, and the cache key (``cache_mode``, e.g. "trim+ctranslate2-int8") keeps the states apart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sltalign.foundation.base import SpeechEncoder
from sltalign.foundation.speech_encoder import SAMPLE_RATE, WhisperSpeechEncoder, _lengths_to_mask

log = logging.getLogger(__name__)

ENCODER_ENGINES = ("torch", "ctranslate2", "auto")
#: what the CTranslate2 engine computes in (its compute_type: "int8" or "float32")
CT2_PRECISIONS = ("int8", "fp32")
_CT2_COMPUTE_TYPE = {"int8": "int8", "fp32": "float32"}
#: ``auto`` keeps an engine only if its states' mean frame cosine to torch fp32 is at least this. CTranslate2
#: int8 measures ~0.997 on speech, torch bf16 ~0.9999 (relative error ~1%); a broken engine (torch's dynamic
#: int8 quantisation of the Linear layers: relative error ~1) falls far below.
AUTO_MIN_COSINE = 0.99
#: the candidates ``auto`` measures, (engine, precision), in order of preference on a tie
AUTO_CANDIDATES = (("torch", "fp32"), ("torch", "bf16"), ("ctranslate2", "int8"), ("ctranslate2", "fp32"))
_DECISIONS_FILE = "encoder_engine.json"


def ctranslate2_available() -> bool:
    """Whether the ctranslate2 package imports (it is optional: torch alone runs every model)."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return True


class CT2WhisperSpeechEncoder(WhisperSpeechEncoder):
    """Whisper's encoder run by CTranslate2 on trimmed input: the ``WhisperSpeechEncoder`` interface and
    features (same log-mel, same frame rule), a different forward pass.

    ``ct2_dir``: a CTranslate2 Whisper directory (one model.bin). ``precision``: "int8" or "fp32".
    ``threads``: CTranslate2's intra-op threads (default: torch's thread count at load, so ``--threads``
    applies). Output as ``WhisperSpeechEncoder.encode``: states (B, T_s, D_s) float32, mask (B, T_s) bool.
    """

    engine = "ctranslate2"

    def __init__(
        self,
        *,
        whisper_encoder_module,
        feature_extractor,
        ct2_dir: str | os.PathLike[str],
        precision: str = "int8",
        threads: int | None = None,
        spec: str = "",
    ):
        super().__init__(
            whisper_encoder_module=whisper_encoder_module, feature_extractor=feature_extractor, mode="trim", spec=spec
        )
        self.ct2_dir = str(ct2_dir)
        self.threads = threads
        self._ct2: Any = None
        self._ct2_precision: str | None = None
        self.set_precision(precision)

    def set_precision(self, precision: str) -> "CT2WhisperSpeechEncoder":
        """ "int8" or "fp32" (CTranslate2's compute types int8 / float32); reloads the CTranslate2 model."""
        if precision not in CT2_PRECISIONS:
            raise ValueError(f"the ctranslate2 engine computes in one of {CT2_PRECISIONS}, got {precision!r}")
        self.precision = precision
        if self._ct2_precision != precision:
            import ctranslate2

            threads = self.threads or torch.get_num_threads()
            # the whole Whisper is loaded (CTranslate2 has no encoder-only load); only encode() ever runs
            self._ct2 = ctranslate2.models.Whisper(
                self.ct2_dir, device="cpu", compute_type=_CT2_COMPUTE_TYPE[precision], intra_threads=threads
            )
            self._ct2_precision = precision
        return self

    @torch.no_grad()
    def encode_features(self, mel: torch.Tensor, mel_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mel (B, n_mels, T_mel), mel_lengths (B,) -> states (B, T_s, D_s) float32, mask (B, T_s) bool.

        Utterances of equal mel length go through CTranslate2 together, each group sliced to its own length
        (no padding reaches the encoder: it has no key-padding mask)."""
        import ctranslate2

        if mel.dim() != 3 or mel.shape[1] != self.num_mel_bins:
            raise ValueError(f"mel must be (B, {self.num_mel_bins}, T_mel); got {tuple(mel.shape)}")
        bad_len = (mel_lengths < 1) | (mel_lengths > mel.shape[-1])
        if mel_lengths.shape != (mel.shape[0],) or bool(bad_len.any()):
            raise ValueError(f"mel_lengths must be (B,) in 1..{mel.shape[-1]}; got {mel_lengths.tolist()}")
        if mel.shape[-1] > self.max_samples // 160:
            raise ValueError(f"at most {self.max_samples // 160} mel frames; got {mel.shape[-1]}")
        mel_np = mel.detach().to("cpu", torch.float32).numpy()
        lengths = [int(n) for n in mel_lengths.tolist()]
        frame_lengths = [(n + 1) // 2 for n in lengths]  # conv2, stride 2: ceil(T_mel / 2)
        width = max(frame_lengths)
        states = torch.zeros(len(lengths), width, self.dim)
        groups: dict[int, list[int]] = {}
        for i, n in enumerate(lengths):
            groups.setdefault(n, []).append(i)
        for n, idx in groups.items():
            x = np.ascontiguousarray(mel_np[idx, :, :n])  # (G, n_mels, n)
            out = self._ct2.encode(ctranslate2.StorageView.from_array(x), to_cpu=True)
            got = torch.from_numpy(np.array(out, dtype=np.float32))  # (G, ceil(n / 2), D_s)
            if got.shape[1] != (n + 1) // 2:
                raise RuntimeError(f"CTranslate2 returned {got.shape[1]} frames for {n} mel frames; expected {(n + 1) // 2}")
            states[idx, : got.shape[1]] = got
        device = self.device
        mask = _lengths_to_mask(torch.tensor(frame_lengths, device=device), width)
        return states.to(device), mask


# ------------------------------------------------------------------------------------------------
# auto: measure once per machine, remember
# ------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; platform's otherwise)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def decision_key(spec: str, threads: int) -> str:
    """What an ``auto`` decision depends on: CPU model, thread count, library versions and the model."""
    try:
        import ctranslate2

        ct2_version = ctranslate2.__version__
    except ImportError:
        ct2_version = "none"
    parts = [_cpu_model(), f"threads={threads}", f"torch={torch.__version__}", f"ctranslate2={ct2_version}", spec]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def decisions_path() -> Path:
    """Where ``auto`` remembers its decisions: $SLTALIGN_CACHE/encoder_engine.json (default ~/.cache/sltalign)."""
    env = os.environ.get("SLTALIGN_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "sltalign"
    return root / _DECISIONS_FILE


#: (F1, F2, F3) in Hz of the vowels /a/, /i/, /u/, /e/: the probe's spectral envelopes
_VOWEL_FORMANTS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480))


def probe_waveform(seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    """A deterministic speech-like test signal (n,) float32 at 16 kHz, what ``auto`` measures on: a voiced
    source (40 harmonics of a gliding pitch) shaped by a vowel's formants every 0.25 s, syllable-rate
    loudness, a 0.3-s pause every 1.3 s, and faint noise. The formants and pauses matter: on Whisper-base,
    CTranslate2 int8 states measured a mean frame cosine to fp32 of 0.993 on bare harmonics (close to the
    0.99 bar), 0.997 on this signal and 0.997-0.999 on 4-s pieces of LibriVox speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    source = sum(np.sin(k * phase) / k for k in range(1, 41))
    block = SAMPLE_RATE // 4
    voiced = np.zeros(n)
    for b, i in enumerate(range(0, n, block)):
        seg = source[i : i + block]
        freqs = np.fft.rfftfreq(len(seg), 1 / SAMPLE_RATE)
        envelope = sum(1 / (1 + ((freqs - f) / 80.0) ** 2) for f in _VOWEL_FORMANTS[b % len(_VOWEL_FORMANTS)])
        voiced[i : i + block] = np.fft.irfft(np.fft.rfft(seg) * envelope, n=len(seg))
    loudness = np.sin(2 * np.pi * 3.0 * t) ** 2
    loudness[(t % 1.3) > 1.0] = 0.0  # pauses: speech has silences, and the encoder's states there count too
    w = voiced * loudness
    w = 0.3 * w / max(float(np.abs(w).max()), 1e-9) + 0.003 * rng.standard_normal(n)
    return w.astype(np.float32)


def frame_agreement(ref: torch.Tensor, got: torch.Tensor) -> dict[str, float]:
    """States (T_s, D_s) of one utterance vs reference (T_s, D_s): max relative error (max |diff| / max |ref|;
    one outlier channel decides it), relative L2 error (||diff|| / ||ref||) and the mean over frames of the
    cosine between the two frames (the tolerance ``auto`` states)."""
    ref, got = ref.float(), got.float()
    cos = torch.nn.functional.cosine_similarity(ref, got, dim=-1)
    return {
        "max_rel_err": float((got - ref).abs().max() / ref.abs().max()),
        "rel_l2": float((got - ref).norm() / ref.norm()),
        "mean_cosine": float(cos.mean()),
    }


def measure_engines(
    torch_encoder: WhisperSpeechEncoder,
    ct2_dir: str | None,
    *,
    seconds: float = 4.0,
    repeats: int = 2,
    candidates: Sequence[tuple[str, str]] = AUTO_CANDIDATES,
) -> list[dict[str, Any]]:
    """Each candidate (engine, precision) on ``probe_waveform(seconds)``: audio-seconds per second (best of
    ``repeats`` after a warm-up, the candidates timed in turns so that a load spike on a shared machine does
    not fall on one alone) and its agreement with torch fp32. Candidates that cannot run here (no ctranslate2,
    no CTranslate2 directory, pad30 mode) are left out. ``torch_encoder``'s precision is restored afterwards."""
    wave = probe_waveform(seconds)
    restore = torch_encoder.precision
    try:
        torch_encoder.set_precision("fp32")
        ref = torch_encoder.encode([wave])[0][0]  # (T_s, D_s)
        ct2_ok = ct2_dir is not None and torch_encoder.mode == "trim" and ctranslate2_available()
        encoders: dict[tuple[str, str], SpeechEncoder] = {}
        for engine, precision in candidates:
            if engine == "ctranslate2" and ct2_ok:
                encoders[(engine, precision)] = CT2WhisperSpeechEncoder(
                    whisper_encoder_module=torch_encoder.encoder,
                    feature_extractor=torch_encoder.feature_extractor,
                    ct2_dir=ct2_dir,
                    precision=precision,
                    spec=torch_encoder.spec,
                )
            elif engine == "torch":
                encoders[(engine, precision)] = torch_encoder  # its precision is set before each call
        best = {k: float("inf") for k in encoders}
        states: dict[tuple[str, str], torch.Tensor] = {}
        for round_ in range(repeats + 1):  # round 0: warm-up, and the states compared
            for (engine, precision), enc in encoders.items():
                if engine == "torch":
                    enc.set_precision(precision)
                t0 = time.perf_counter()
                out = enc.encode([wave])[0][0]
                elapsed = time.perf_counter() - t0
                if round_ == 0:
                    states[(engine, precision)] = out
                else:
                    best[(engine, precision)] = min(best[(engine, precision)], elapsed)
    finally:
        torch_encoder.set_precision(restore)
    return [
        {"engine": e, "precision": p, "audio_s_per_s": seconds / best[(e, p)], **frame_agreement(ref, states[(e, p)])}
        for (e, p) in encoders
    ]


def choose_engine(
    torch_encoder: WhisperSpeechEncoder, ct2_dir: str | None, *, min_cosine: float = AUTO_MIN_COSINE, remember: bool = True
) -> dict[str, Any]:
    """``auto``: the fastest (engine, precision) whose states keep a mean frame cosine >= ``min_cosine`` to torch
    fp32 on this machine. Measured in a second or two (``measure_engines``) the first time, then read back from
    ``decisions_path()``, keyed by ``decision_key`` (CPU model, threads, torch and ctranslate2 versions, model,
    mode). Returns {"engine", "precision", "measured": rows, "cached": bool}."""
    threads = torch.get_num_threads()
    key = decision_key(
        f"{torch_encoder.spec}|{torch_encoder.mode}|ct2={'yes' if ct2_dir else 'no'}|min_cosine={min_cosine}", threads
    )
    path = decisions_path()
    table: dict[str, Any] = {}
    if remember:
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        hit = table.get(key) if isinstance(table, dict) else None
        if isinstance(hit, dict) and (hit.get("engine"), hit.get("precision")) in AUTO_CANDIDATES:
            if hit["engine"] == "torch" or (ct2_dir is not None and ctranslate2_available()):
                return {**hit, "cached": True}
    rows = measure_engines(torch_encoder, ct2_dir)
    faithful = [r for r in rows if (r["engine"], r["precision"]) == ("torch", "fp32") or r["mean_cosine"] >= min_cosine]
    best = max(faithful, key=lambda r: r["audio_s_per_s"])
    decision = {
        "engine": best["engine"],
        "precision": best["precision"],
        "measured": rows,
        "cpu": _cpu_model(),
        "threads": threads,
        "min_cosine": min_cosine,
    }
    log.info(
        "encoder engine auto: %s %s (%s)",
        best["engine"],
        best["precision"],
        ", ".join(f"{r['engine']} {r['precision']} {r['audio_s_per_s']:.0f} audio-s/s cos {r['mean_cosine']:.4f}" for r in rows),
    )
    if remember:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            table = table if isinstance(table, dict) else {}
            table[key] = decision
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(table, indent=1))
            os.replace(tmp, path)  # two processes deciding at once: one whole file wins
        except OSError as e:  # a read-only home: decide again next time, say so once
            warnings.warn(f"encoder engine auto: cannot remember the decision in {path} ({e})", stacklevel=2)
    return {**decision, "cached": False}

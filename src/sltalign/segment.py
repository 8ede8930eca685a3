"""Cut long recordings into pieces a fixed-window speech encoder can take (Whisper: 30 s).

``split_long_audio`` finds speech with Silero VAD, packs neighbouring speech regions into pieces of at
most ``max_seconds``, and cuts a region that is itself too long at its quietest point (a pause between
words), so no word is cut in half when a pause exists. It never drops audio that the VAD calls speech:
every speech sample lies inside exactly one returned span.

Spans are ``(start, end)`` sample offsets into the input, half-open, in order and non-overlapping.
    wav (N,) float 16 kHz -> [(start, end), ...]   with 0 <= start < end <= N
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from .audio import mono_float32

# Silero VAD runs on 8 or 16 kHz audio only; resample first (sltalign.audio) for other rates.
_VAD_RATES = (8000, 16000)
# Energy analysis for choosing cut points: 25 ms frames every 10 ms, smoothed over 50 ms so that a
# single quiet frame inside a stop consonant does not look like a pause between words.
_FRAME_SECONDS = 0.025
_HOP_SECONDS = 0.010
_SMOOTH_FRAMES = 5
# A point counts as a pause when its smoothed energy is below this fraction of the region's median;
# otherwise the region has no usable pause and is split evenly.
_PAUSE_RATIO = 0.3


@functools.lru_cache(maxsize=1)
def _vad_model() -> Any:
    """Load Silero VAD once per process from the files the silero-vad package ships (no network).

    The TorchScript model needs only torch; the ONNX one (needs onnxruntime) is the fallback.
    """
    try:
        from silero_vad import load_silero_vad
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("split_long_audio needs Silero VAD: `pip install silero-vad` (not its 'audio' extra)") from err
    try:
        return load_silero_vad(onnx=False)
    except Exception as jit_err:  # pragma: no cover - only when the TorchScript file cannot load
        try:
            return load_silero_vad(onnx=True)
        except Exception as onnx_err:
            raise RuntimeError(f"could not load Silero VAD (TorchScript: {jit_err}; ONNX: {onnx_err})") from onnx_err


def _check_wav(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate not in _VAD_RATES:
        raise ValueError(f"sample_rate: Silero VAD needs 8000 or 16000 Hz, got {sample_rate}; resample first")
    return mono_float32(wav, "wav")


def detect_speech(wav: np.ndarray, *, sample_rate: int = 16000, threshold: float = 0.5) -> list[tuple[int, int]]:
    """Speech regions found by Silero VAD as half-open sample spans, in order; [] when there is none.

    Regions are padded by 100 ms on each side (less where two regions are closer) so that word onsets
    and endings that the VAD scores low stay inside. Bursts shorter than 250 ms (clicks) are not speech.
    """
    wav = _check_wav(wav, sample_rate)
    if wav.size == 0:
        return []
    from silero_vad import get_speech_timestamps

    stamps = get_speech_timestamps(
        torch.from_numpy(np.ascontiguousarray(wav)),
        _vad_model(),
        sampling_rate=sample_rate,
        threshold=threshold,
        speech_pad_ms=100,
    )
    return [(int(s["start"]), int(s["end"])) for s in stamps]


def _smoothed_energy(wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int, int]:
    """Mean-square energy per frame (n_frames,), smoothed; also hop and frame length in samples.

    Frame f covers samples [f*hop, f*hop + win); computed from a running sum so it is O(N) even on an
    hour of audio.
    """
    hop = int(round(_HOP_SECONDS * sample_rate))
    win = int(round(_FRAME_SECONDS * sample_rate))
    if wav.size < win:
        return np.array([float(np.mean(wav.astype(np.float64) ** 2))]), hop, wav.size
    csum = np.concatenate([[0.0], np.cumsum(wav.astype(np.float64) ** 2)])
    starts = np.arange(0, wav.size - win + 1, hop)
    energy = (csum[starts + win] - csum[starts]) / win
    kernel = np.ones(_SMOOTH_FRAMES) / _SMOOTH_FRAMES
    return np.convolve(energy, kernel, mode="same"), hop, win


def _split_region(
    start: int, end: int, energy: np.ndarray, hop: int, win: int, max_n: int, min_n: int
) -> list[tuple[int, int]]:
    """Cut [start, end) into pieces of at most max_n samples, each cut at the quietest point available.

    Each cut lies between max_n/2 and max_n after the previous one, so pieces are never tiny (except
    that the final remainder is kept at least min_n where possible). Without a pause in that window
    the rest of the region is divided into equal parts.
    """
    pieces: list[tuple[int, int]] = []
    f_lo_region = max(0, start // hop)
    f_hi_region = max(f_lo_region + 1, min(len(energy), (end - win) // hop + 1))
    median = float(np.median(energy[f_lo_region:f_hi_region]))
    half = win // 2
    p = start
    while end - p > max_n:
        remaining = end - p
        even_cut = p + remaining // math.ceil(remaining / max_n)
        lo = p + max_n // 2
        hi = min(p + max_n, end - min_n)
        # frames whose centre (f*hop + half) lies in [lo, hi]
        f_lo = max(0, -(-(lo - half) // hop))
        f_hi = min(len(energy) - 1, (hi - half) // hop)
        cut = even_cut
        if f_hi >= f_lo:
            window = energy[f_lo : f_hi + 1]
            f_min = int(np.argmin(window))
            if window[f_min] < _PAUSE_RATIO * median:
                cut = (f_lo + f_min) * hop + half
        cut = min(max(cut, p + 1), p + max_n)
        pieces.append((p, cut))
        p = cut
    pieces.append((p, end))
    return pieces


def _pad_short(spans: list[tuple[int, int]], n: int, min_n: int) -> list[tuple[int, int]]:
    """Widen pieces shorter than min_n into the non-speech audio around them (never into a neighbour)."""
    out = list(spans)
    for i, (s, e) in enumerate(out):
        need = min_n - (e - s)
        if need <= 0:
            continue
        left_room = s - (out[i - 1][1] if i > 0 else 0)
        right_room = (out[i + 1][0] if i + 1 < len(out) else n) - e
        take_left = min(left_room, need // 2)
        take_right = min(right_room, need - take_left)
        take_left = min(left_room, need - take_right)  # give the left side what the right could not take
        out[i] = (s - take_left, e + take_right)
    return out


def split_long_audio(
    wav: np.ndarray,
    *,
    sample_rate: int = 16000,
    max_seconds: float = 28.0,
    min_seconds: float = 0.5,
    max_gap_seconds: float = 2.0,
    threshold: float = 0.5,
) -> list[tuple[int, int]]:
    """Split a long recording into spans that each fit a fixed-window encoder.

    Args:
        wav: (N,) float mono samples in [-1, 1].
        sample_rate: 16000 or 8000 (what Silero VAD accepts).
        max_seconds: no span is longer than this.
        min_seconds: spans shorter than this are widened into the surrounding non-speech audio (as far
            as it reaches), and a long region is never cut so as to leave a remainder shorter than this.
        max_gap_seconds: neighbouring speech regions are packed into one span only when the silence
            between them is at most this long, so spans do not carry long silences (Whisper tends to
            invent text on silence).
        threshold: Silero speech-probability threshold.

    Returns:
        Half-open ``(start, end)`` sample spans in order, non-overlapping, each at most ``max_seconds``.
        Every sample the VAD calls speech lies in one span. Audio no longer than ``max_seconds`` is
        returned whole as one span without running the VAD (even if it is silent); empty audio gives
        ``[]``, and so does longer audio in which the VAD finds no speech at all.
    """
    wav = _check_wav(wav, sample_rate)
    if not 0 < min_seconds < max_seconds:
        raise ValueError(f"need 0 < min_seconds < max_seconds, got min_seconds={min_seconds}, max_seconds={max_seconds}")
    if max_gap_seconds < 0:
        raise ValueError(f"max_gap_seconds must be >= 0, got {max_gap_seconds}")
    n = wav.size
    max_n = int(max_seconds * sample_rate)
    min_n = int(min_seconds * sample_rate)
    if n == 0:
        return []
    if n <= max_n:
        return [(0, n)]

    regions = detect_speech(wav, sample_rate=sample_rate, threshold=threshold)
    if not regions:
        return []

    energy, hop, win = _smoothed_energy(wav, sample_rate)
    pieces: list[tuple[int, int]] = []
    for s, e in regions:
        pieces.extend(_split_region(s, e, energy, hop, win, max_n, min_n) if e - s > max_n else [(s, e)])

    # Greedy packing: extend the current span over the next piece while the result fits and the
    # silence between them is short. Pieces of one split region never re-merge (together they are
    # longer than max_n).
    max_gap_n = int(max_gap_seconds * sample_rate)
    spans = [pieces[0]]
    for s, e in pieces[1:]:
        cur_s, cur_e = spans[-1]
        if e - cur_s <= max_n and s - cur_e <= max_gap_n:
            spans[-1] = (cur_s, e)
        else:
            spans.append((s, e))
    return [(int(s), int(e)) for s, e in _pad_short(spans, n, min_n)]

"""Cut long recordings into pieces a fixed-window speech encoder can take (Whisper: 30 s).

``split_long_audio`` finds speech with Silero VAD, packs neighbouring speech regions into pieces of at
most ``max_seconds`` (greedily, or cutting at the longest pauses first so that pieces are sentences), and
cuts a region that is itself too long at its quietest point (a pause between words), so no word is cut in
half when a pause exists. It never drops audio that the VAD calls speech:
every speech sample lies inside exactly one returned span.

Spans are ``(start, end)`` sample offsets into the input, half-open, in order and non-overlapping.
    wav (N,) float 16 kHz -> [(start, end), ...]   with 0 <= start < end <= N
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
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
# detect_speech pads each region by this much (Silero's speech_pad_ms)
_VAD_PAD_SECONDS = 0.1

#: shortest allowed ``max_piece_seconds``: a piece must hold at least a few words, and the VAD's cuts need room
MIN_PIECE_SECONDS = 2.0


def piece_seconds_for(durations: Sequence[float], *, quantile: float = 0.99, floor: float = 10.0) -> float:
    """The ``max_piece_seconds`` a connector trained on clips of these durations should translate with:
    the duration ``quantile`` of them reach (a few outliers do not count), rounded up to a whole second,
    and at least ``floor``. Why the floor of 10 s: a spoken sentence rarely runs longer, and cutting one at a
    pause between its words costs more than the connector's unfamiliarity with its length (measured with
    bench/piece_seconds.py on a connector trained on 1-6 s clips: 10-s pieces did better than 6-s ones on real
    speech and nearly as well on 20-40 s synthetic clips, and either far better than translating those whole;
    figures in docs/RESULTS.md)."""
    if not len(durations):
        raise ValueError("piece_seconds_for: no training durations")
    return float(max(floor, MIN_PIECE_SECONDS, math.ceil(float(np.quantile(np.asarray(durations, dtype=float), quantile)))))


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
        speech_pad_ms=int(_VAD_PAD_SECONDS * 1000),
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


def _split_region(start: int, end: int, energy: np.ndarray, hop: int, win: int, max_n: int, min_n: int) -> list[tuple[int, int]]:
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
    packing: str = "greedy",
    sentence_pause_seconds: float | None = None,
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
        packing: how speech regions are grouped into spans. "greedy" extends each span over the next
            region while it fits (fewest spans, for an encoder that reads long context, as Whisper does);
            "pauses" cuts at the longest silences first, so spans end where the speaker paused longest
            (sentence ends), for a system that translates each span as one sentence.
        sentence_pause_seconds: with packing="pauses", a pause at least this long always ends a span, however
            short (None: only pauses over max_gap_seconds do). Pauses are measured as the run of quiet frames
            around each boundary, not as the VAD's gap, which its 100 ms of padding per side shrinks to 0
            for most pauses between sentences.

    Returns:
        Half-open ``(start, end)`` sample spans in order, non-overlapping, each at most ``max_seconds``.
        Every sample the VAD calls speech lies in one span. Audio no longer than ``max_seconds`` is
        returned whole as one span without running the VAD (even if it is silent); empty audio gives
        ``[]``, and so does longer audio in which the VAD finds no speech at all.
    """
    wav = _check_wav(wav, sample_rate)
    if not 0 < min_seconds < max_seconds:
        raise ValueError(f"need 0 < min_seconds < max_seconds, got min_seconds={min_seconds}, max_seconds={max_seconds}")
    if packing not in ("greedy", "pauses"):
        raise ValueError(f"packing must be 'greedy' or 'pauses', got {packing!r}")
    if sentence_pause_seconds is not None and sentence_pause_seconds < 0:
        raise ValueError(f"sentence_pause_seconds must be >= 0 or None, got {sentence_pause_seconds}")
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

    max_gap_n = int(max_gap_seconds * sample_rate)
    if packing == "pauses":
        cut_n = max_gap_n if sentence_pause_seconds is None else min(max_gap_n, int(sentence_pause_seconds * sample_rate))
        pauses = _pause_lengths(pieces, energy, hop, win, int(_VAD_PAD_SECONDS * sample_rate))
        spans = _pack_at_pauses(pieces, pauses, max_n, cut_n)
    else:
        # Greedy packing: extend the current span over the next piece while the result fits and the
        # silence between them is short. Pieces of one split region never re-merge (together they are
        # longer than max_n).
        spans = [pieces[0]]
        for s, e in pieces[1:]:
            cur_s, cur_e = spans[-1]
            if e - cur_s <= max_n and s - cur_e <= max_gap_n:
                spans[-1] = (cur_s, e)
            else:
                spans.append((s, e))
    return [(int(s), int(e)) for s, e in _pad_short(spans, n, min_n)]


def _pause_lengths(pieces: list[tuple[int, int]], energy: np.ndarray, hop: int, win: int, pad_n: int) -> list[int]:
    """The silence between each pair of neighbouring pieces, in samples: the longest run of quiet frames
    (smoothed energy below _PAUSE_RATIO of the median over the pieces) around the boundary.

    The VAD's own gaps are no measure of a pause: its regions carry up to 100 ms of padding each side, so
    every pause under ~0.2 s reads as no gap at all. The search reaches pad_n into each piece for that reason.
    """
    half = win // 2
    inside = np.zeros(len(energy), dtype=bool)
    for s, e in pieces:  # frames whose centre (f*hop + half) lies in [s, e): one slice per piece, not a full pass
        inside[max(0, -(-(s - half) // hop)) : max(0, -(-(e - half) // hop))] = True
    median = float(np.median(energy[inside])) if inside.any() else float(np.median(energy))
    quiet = energy < _PAUSE_RATIO * median
    out = []
    for (_, a_end), (b_start, _) in zip(pieces, pieces[1:]):
        f_lo = max(0, (a_end - pad_n - win // 2) // hop)
        f_hi = min(len(energy), (b_start + pad_n - win // 2) // hop + 1)
        best = run = 0
        for q in quiet[f_lo:f_hi]:
            run = run + 1 if q else 0
            best = max(best, run)
        out.append(best * hop)
    return out


def _pack_at_pauses(pieces: list[tuple[int, int]], pauses: list[int], max_n: int, cut_n: int) -> list[tuple[int, int]]:
    """Group consecutive pieces into spans by cutting at the longest pauses first.

    ``pauses[i]`` is the silence between pieces i and i+1 (samples). A group is cut at its longest pause
    while it is longer than max_n or that pause is at least cut_n; otherwise it becomes one span. Speakers
    pause longest between sentences, so the cuts land on sentence ends where greedy packing cuts wherever a
    span happens to fill up (often mid-sentence), and a translator reading one piece at a time sees whole
    sentences.
    """
    spans: list[tuple[int, int]] = []
    todo = [(0, len(pieces) - 1)]
    while todo:  # depth-first, left part first, so spans come out in order
        lo, hi = todo.pop()
        if lo == hi:
            spans.append(pieces[lo])
            continue
        gaps = pauses[lo:hi]
        j = int(np.argmax(gaps))
        if pieces[hi][1] - pieces[lo][0] <= max_n and gaps[j] < cut_n:
            spans.append((pieces[lo][0], pieces[hi][1]))
            continue
        todo.append((lo + j + 1, hi))
        todo.append((lo, lo + j))
    return spans

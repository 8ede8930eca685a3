"""The three systems compared everywhere, run over a manifest: aligned model, cascade, MT on gold transcripts.

Each returns (hyps, timings) in manifest order; timings hold wall-clock seconds and the audio duration so a
real-time factor (seconds of compute per second of audio) can be reported side by side.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from .audio import SAMPLE_RATE, load_audio
from .data.manifest import Utterance
from .progress import progress_bar


def load_utterances(utts: Sequence[Utterance], *, progress: bool = False) -> list[np.ndarray]:
    """16 kHz waveforms of manifest entries: the [offset, offset + duration) span, read as the encoder cache
    reads it for training (a segment that starts at 0 is still only its duration, not the whole file)."""
    return [
        load_audio(u.audio, offset=u.offset, duration=u.duration)
        for u in progress_bar(utts, desc="load audio", unit="clip", enabled=progress)
    ]


def _timings(t0: float, t1: float, t2: float, wavs: Sequence[np.ndarray], **extra: float) -> dict[str, float]:
    audio = sum(len(w) for w in wavs) / SAMPLE_RATE
    compute = t2 - t1
    return {
        "load_seconds": t1 - t0,
        "compute_seconds": compute,
        "audio_seconds": audio,
        "rtf": compute / audio if audio else float("nan"),
        **extra,
    }


def run_aligned(
    translator, utts: Sequence[Utterance], *, beam: int | None = None, batch_size: int = 8, progress: bool = True
) -> tuple[list[str], dict]:
    """Hypotheses of a ``SpeechTranslator`` on a manifest."""
    t0 = time.perf_counter()
    wavs = load_utterances(utts)
    t1 = time.perf_counter()
    hyps = translator.translate(wavs, beam=beam, batch_size=batch_size, progress=progress)
    t2 = time.perf_counter()
    return list(hyps), _timings(t0, t1, t2, wavs)


def run_cascade(cascade, utts: Sequence[Utterance], *, progress: bool = True) -> tuple[list[str], dict, list[str]]:
    """Cascade hypotheses (``Cascade.translate_and_transcribe``: what the API's cascade gives), plus its ASR
    transcripts (for WER)."""
    t0 = time.perf_counter()
    wavs = load_utterances(utts)
    t1 = time.perf_counter()
    asr0, mt0 = cascade.asr_seconds, cascade.mt_seconds
    hyps, transcripts = cascade.translate_and_transcribe(wavs)
    t2 = time.perf_counter()
    return (
        hyps,
        _timings(t0, t1, t2, wavs, asr_seconds=cascade.asr_seconds - asr0, mt_seconds=cascade.mt_seconds - mt0),
        transcripts,
    )


def run_mt_on_gold(mt, utts: Sequence[Utterance], *, beam: int = 4, max_len: int = 150) -> tuple[list[str], dict]:
    """The ceiling for anything built on this frozen MT: the MT reading the gold transcripts."""
    missing = [u.id for u in utts if not u.transcript]
    if missing:
        raise ValueError(
            f"MT on gold transcripts needs a transcript for every utterance; missing for {len(missing)} (e.g. {missing[:3]})"
        )
    t0 = time.perf_counter()
    hyps = mt.translate_text([u.transcript for u in utts], beam=beam, max_len=max_len)
    return hyps, {"compute_seconds": time.perf_counter() - t0}

"""Planning: every clip's sentences, voice, rate, pitch, speed and channel, drawn before anything is rendered.

Everything random is drawn here, per clip, from generators seeded by (seed, split, index): the clip's main
generator (sentences of a long clip, voice, rate, pitch, the original noise and room), and, so that adding a
feature never moves what the others draw, one generator each for the backend mix (..., 1), the neural
voices' speed and Kokoro blend (..., 2) and the newer channel steps (..., 3).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .augment import draw_channel
from .backends import NEURAL, default_voices
from .backends.kokoro import draw_blend, expand_voices
from .config import CHANNEL_PROBS, SPLITS, SynthConfig

__all__ = ["ClipPlan", "plan_clips"]

log = logging.getLogger(__name__)

_LONG_CANDIDATES = 32  # sentences drawn for a long clip; it uses as many as fit its target length
_SENTENCES_PER_LONG = 8  # reserved per long clip when sizing the dev / test sentence pools
_FAST = ("espeak", "espeak-cli", "flite", "festival", "hibari")


@dataclass(frozen=True)
class ClipPlan:
    id: str
    split: str
    #: candidate sentences; a short clip speaks the one, a long clip as many as fit ``target_seconds``
    sentences: tuple[str, ...]
    long: bool
    #: a long clip stops adding sentences at target_seconds, never exceeds max_seconds, should reach min_seconds
    min_seconds: float
    target_seconds: float
    max_seconds: float
    voice: str
    rate: int
    pitch: int
    snr_db: float | None
    noise_color: float  # spectral slope: 0 white, 1 pink, 2 brown
    rt60: float | None
    seed: int  # for the gaps, noise samples, room response and eSpeak's own random generator
    #: the TTS backend (resolved name) when it is not the corpus's ``backend`` (``train_backends``)
    backend: str | None = None
    #: the neural backends' speaking speed (``speed_range``); None for the others, which use ``rate``
    speed: float | None = None
    #: the newer channel steps and their settings (see ``augment.draw_channel``); None: none
    channel: dict[str, Any] | None = None


def _split_pools(cfg: SynthConfig, n_sentences: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Disjoint sentence indices per split: test and dev take what they need, train the rest."""
    order = rng.permutation(n_sentences)
    pools: dict[str, np.ndarray] = {}
    start = 0
    for split in ("test", "dev"):
        n = cfg.counts()[split]
        n_long = round(n * cfg.long_fraction_for(split))
        need = (n - n_long) + (max(_LONG_CANDIDATES, n_long * _SENTENCES_PER_LONG) if n_long else 0)
        pools[split] = order[start : start + need]
        start += need
    pools["train"] = order[start:]
    for split, n in cfg.counts().items():
        if n and len(pools[split]) == 0:
            raise ValueError(f"not enough sentences ({n_sentences}) for the dev/test/train splits asked; lower n_dev / n_test")
    if cfg.n_train and len(pools["train"]) < cfg.n_train - round(cfg.n_train * cfg.long_fraction_for("train")):
        log.warning("train: %d sentences for %d clips; sentences repeat (with other voices)", len(pools["train"]), cfg.n_train)
    return pools


def plan_clips(
    cfg: SynthConfig, sentences: Sequence[str], voices: Sequence[str], backends: dict[str, str] | None = None
) -> list[ClipPlan]:
    """Every clip of every split, in manifest order. Depends only on the config, the sentences and, with
    ``cfg.train_backends``, the resolved backend names.

    ``backends``: resolved name of each backend of ``cfg.train_backends`` (default: the names themselves)."""
    pools = _split_pools(cfg, len(sentences), np.random.default_rng([cfg.seed, 0]))
    mix = sorted(cfg.train_backends.items()) if cfg.train_backends else []
    mix_p = np.array([w for _, w in mix], dtype=np.float64) / sum(w for _, w in mix) if mix else None
    plans = []
    styles: dict[tuple[str, ...], tuple[str, ...]] = {}
    channel_on = any(getattr(cfg, k) > 0 for k in CHANNEL_PROBS)
    # babble talkers: the corpus's fast synthesisers (Kokoro and Piper would cost more than the clip itself)
    fast = [(None, voices)] if cfg.backend in _FAST else []
    fast += [
        ((backends or {}).get(n, n), (cfg.train_voices or {}).get(n) or default_voices((backends or {}).get(n, n)))
        for n, w in mix
        if w > 0 and n != cfg.backend and n in _FAST
    ]
    fast = fast or [(None, voices)]

    def talker_for(pool: np.ndarray) -> Callable[[np.random.Generator], dict[str, Any]]:
        def talker(r: np.random.Generator) -> dict[str, Any]:
            b, vs = fast[int(r.integers(len(fast)))]
            return {
                "backend": b,
                "voice": str(vs[int(r.integers(len(vs)))]),
                "text": sentences[int(pool[r.integers(len(pool))])],
                "rate": int(r.integers(cfg.rate_range[0], cfg.rate_range[1] + 1)),
                "pitch": int(r.integers(cfg.pitch_range[0], cfg.pitch_range[1] + 1)),
                "speed": round(float(r.uniform(*cfg.speed_range)), 3),
                "seed": int(r.integers(2**31 - 1)),
            }

        return talker

    for s_idx, split in enumerate(SPLITS, start=1):
        n = cfg.counts()[split]
        pool = pools[split]
        n_long = round(n * cfg.long_fraction_for(split))
        # long clips are spread evenly through the split (not all at its end)
        is_long = np.zeros(n, dtype=bool)
        if n_long:
            is_long[np.linspace(0, n - 1, n_long).round().astype(int)] = True
        k = 0  # next unused sentence of the pool for short clips
        for i in range(n):
            rng = np.random.default_rng([cfg.seed, s_idx, i])
            if is_long[i]:
                m = min(_LONG_CANDIDATES, len(pool))
                texts = tuple(sentences[j] for j in pool[rng.choice(len(pool), size=m, replace=False)])
                lo, hi = cfg.long_range
                target = float(rng.uniform(lo, hi))
            else:
                texts = (sentences[pool[k % len(pool)]],)
                k += 1
                lo, target, hi = 0.0, 0.0, math.inf
            # a split left out of augment_splits draws as a corpus without noise would, so it is that corpus
            augment = split in cfg.augment_splits
            noisy = augment and cfg.noise_snr_db is not None and rng.random() < cfg.noise_prob
            reverb = rng.random() < cfg.reverb_prob and augment
            clip_backend, clip_voices = None, voices
            if split == "train" and mix:
                # its own generator, so a corpus without the mix draws exactly what it drew before
                name = mix[int(np.random.default_rng([cfg.seed, s_idx, i, 1]).choice(len(mix), p=mix_p))][0]
                if name != cfg.backend:
                    clip_backend = (backends or {}).get(name, name)
                    clip_voices = (cfg.train_voices or {}).get(name) or default_voices(clip_backend)
            # drawn from the main generator whatever the backend, so the draws after it stay where they were
            index = int(rng.integers(len(clip_voices)))
            voice, speed, channel = None, None, None
            kind = clip_backend or cfg.backend
            if kind in NEURAL:  # speed and blend from their own generator: the plans of other backends are untouched
                nrng = np.random.default_rng([cfg.seed, s_idx, i, 2])
                speed = round(float(nrng.uniform(*cfg.speed_range)), 3)
                if kind == "kokoro":
                    if tuple(clip_voices) not in styles:
                        styles[tuple(clip_voices)] = expand_voices(clip_voices)  # reads a voices file's names once
                    voice = draw_blend(styles[tuple(clip_voices)], nrng)
            if augment and channel_on:
                channel = draw_channel(cfg, np.random.default_rng([cfg.seed, s_idx, i, 3]), talker_for(pool))
            plans.append(
                ClipPlan(
                    id=f"{split}-{i:06d}",
                    split=split,
                    sentences=texts,
                    long=bool(is_long[i]),
                    min_seconds=lo,
                    target_seconds=target,
                    max_seconds=hi,
                    voice=voice if voice is not None else str(clip_voices[index]),
                    rate=int(rng.integers(cfg.rate_range[0], cfg.rate_range[1] + 1)),
                    pitch=int(rng.integers(cfg.pitch_range[0], cfg.pitch_range[1] + 1)),
                    snr_db=float(rng.uniform(*cfg.noise_snr_db)) if noisy and cfg.noise_snr_db else None,
                    noise_color=float(rng.choice([0.0, 1.0, 2.0])),
                    rt60=float(rng.uniform(*cfg.rt60_range)) if reverb else None,
                    seed=int(rng.integers(2**31 - 1)),
                    backend=clip_backend,
                    speed=speed,
                    channel=channel,
                )
            )
    return plans

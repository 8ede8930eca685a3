"""SpecAugment-style masking of cached encoder states, for training only.

The frozen encoder's outputs are cached once, so augmenting the audio each epoch would cost a re-encode;
masking the cached states (spans of frames, bands of channels) is free and keeps a small connector from
memorising a few thousand synthetic clips (SpecAugment, Park et al. 2019, applied after the encoder).
Randomness comes from torch's global generator, which the trainer saves and restores on resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AugmentConfig:
    #: expected share of each utterance's frames hidden by time masks (0: off)
    time_mask_ratio: float = 0.0
    #: longest time mask, in frames (Whisper: 20 ms each)
    time_mask_width: int = 10
    #: channel bands masked per utterance (0: off)
    channel_masks: int = 0
    #: widest channel band
    channel_mask_width: int = 32

    def __post_init__(self) -> None:
        if not 0.0 <= self.time_mask_ratio < 1.0:
            raise ValueError(f"augment.time_mask_ratio: expected a value in [0, 1), got {self.time_mask_ratio}")
        if self.time_mask_width < 1 or self.channel_mask_width < 1 or self.channel_masks < 0:
            raise ValueError("augment: mask widths must be >= 1 and channel_masks >= 0")

    @property
    def active(self) -> bool:
        return self.time_mask_ratio > 0 or self.channel_masks > 0


def mask_states(states: torch.Tensor, mask: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """states (B, T_s, D_s), mask (B, T_s) -> states with masked spans set to 0 (a new tensor)."""
    if not cfg.active:
        return states
    b, t, d = states.shape
    keep = torch.ones(b, t, 1, dtype=states.dtype, device=states.device)
    if cfg.time_mask_ratio > 0:
        lengths = mask.sum(1)  # (B,)
        mean_width = (cfg.time_mask_width + 1) / 2
        for i in range(b):
            n = int(torch.poisson(lengths[i].float() * cfg.time_mask_ratio / mean_width).item())
            for _ in range(n):
                w = int(torch.randint(1, cfg.time_mask_width + 1, ()).item())
                start = int(torch.randint(0, max(1, int(lengths[i]) - w + 1), ()).item())
                keep[i, start : start + w] = 0
    out = states * keep
    if cfg.channel_masks > 0:
        band = torch.ones(b, 1, d, dtype=states.dtype, device=states.device)
        for i in range(b):
            for _ in range(cfg.channel_masks):
                w = int(torch.randint(1, cfg.channel_mask_width + 1, ()).item())
                start = int(torch.randint(0, max(1, d - w + 1), ()).item())
                band[i, :, start : start + w] = 0
        out = out * band
    return out

"""SpecAugment-style masking of cached states: the configured share is masked, only in real frames,
deterministically under a seed, and nothing happens when it is off."""

import pytest
import torch

from sltalign.data.augment import AugmentConfig, mask_states


def test_time_masks_hit_the_configured_share_of_real_frames():
    torch.manual_seed(0)
    states = torch.ones(64, 200, 16)
    mask = torch.ones(64, 200, dtype=torch.bool)
    mask[:, 150:] = False
    out = mask_states(states, mask, AugmentConfig(time_mask_ratio=0.1, time_mask_width=8))
    hidden = (out.sum(-1) == 0).float()
    share = hidden[:, :150].mean().item()
    assert 0.05 < share < 0.12  # overlapping masks hide a little less than the nominal ratio
    assert hidden[:, 155:].sum() == 0  # masks start inside the real frames


def test_channel_masks_and_determinism():
    states = torch.randn(4, 30, 64)
    mask = torch.ones(4, 30, dtype=torch.bool)
    cfg = AugmentConfig(channel_masks=2, channel_mask_width=8)
    torch.manual_seed(3)
    a = mask_states(states, mask, cfg)
    torch.manual_seed(3)
    b = mask_states(states, mask, cfg)
    assert torch.equal(a, b)
    zero_channels = (a == 0).all(dim=1).sum(dim=1)  # (B,) channels zero over all frames
    assert (zero_channels >= 1).all() and (zero_channels <= 16).all()


def test_off_is_identity_and_bad_configs_fail():
    states = torch.randn(2, 5, 3)
    assert mask_states(states, torch.ones(2, 5, dtype=torch.bool), AugmentConfig()) is states
    with pytest.raises(ValueError, match="time_mask_ratio"):
        AugmentConfig(time_mask_ratio=1.5)

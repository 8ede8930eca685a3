"""Shared fixtures: tiny random foundations saved to disk and loaded back through the public loaders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Keep the suite predictable on a 2-core machine.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _tiny_whisper(root: Path, *, seed: int = 0, d_model: int = 32) -> Path:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    out = root / f"tiny-whisper-{d_model}"
    if out.exists():
        return out
    torch.manual_seed(seed)
    cfg = WhisperConfig(
        vocab_size=100,
        num_mel_bins=80,
        d_model=d_model,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=64,
        dropout=0.1,  # > 0 so tests can see that eval() holds
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    WhisperForConditionalGeneration(cfg).save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_whisper_dir(tiny_dir: Path) -> Path:
    return _tiny_whisper(tiny_dir)


@pytest.fixture(scope="session")
def tiny_marian_dir(tiny_dir: Path) -> Path:
    from tests.foundation.tiny_models import make_tiny_marian

    return make_tiny_marian(tiny_dir)


@pytest.fixture(scope="session")
def sharp_marian_dir(tiny_marian_dir: Path, tiny_dir: Path) -> Path:
    """The tiny Marian with larger random weights: default-initialised tiny models give near-uniform logits
    that barely depend on the encoder memory, which hides whether a connector can steer the MT at all."""
    import shutil

    from transformers import MarianMTModel

    out = tiny_dir / "sharp-marian"
    if out.exists():
        return out
    shutil.copytree(tiny_marian_dir, out)
    model = MarianMTModel.from_pretrained(out)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_t5_dir(tiny_dir: Path) -> Path:
    from tests.foundation.tiny_models import make_tiny_t5

    return make_tiny_t5(tiny_dir)


def speechlike(seconds: float, *, seed: int = 0, sr: int = 16000) -> np.ndarray:
    """A deterministic non-silent waveform (tones + noise), float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wav = 0.3 * np.sin(2 * np.pi * (180 + 40 * seed) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    wav += 0.05 * rng.standard_normal(t.shape)
    return wav.astype(np.float32)

"""Speech encoders: Whisper in trim and pad30 modes, other HF encoders through the Auto classes, loading.

Tiny random models are saved with save_pretrained and loaded back through ``load_speech_encoder(dir)``;
packaged tests compare the real Whispers with the CTranslate2 engine on real speech.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sltalign.foundation.base import SpeechEncoder
from sltalign.foundation.packaged import PackagedModelError
from sltalign.foundation.speech_encoder import (
    HFSpeechEncoder,
    WhisperSpeechEncoder,
    load_speech_encoder,
    whisper_frames_for,
)

SR = 16000


def wave(n: int, *, seed: int = 0, loud_tail: bool = False) -> np.ndarray:
    """A deterministic non-silent waveform of n samples (tone + noise), float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    w = 0.2 * np.sin(2 * np.pi * (150 + 30 * seed) * t) + 0.05 * rng.standard_normal(n)
    if loud_tail:  # the loudest frame at the very end: the log-mel normalising max comes from there
        w[-200:] *= 8
    return w.astype(np.float32)


@pytest.fixture(scope="module")
def whisper_dir(tiny_whisper_dir):
    return tiny_whisper_dir  # tests/conftest.py: tiny random WhisperConfig (d 32, 2 layers) + extractor


@pytest.fixture(scope="module")
def trim(whisper_dir) -> WhisperSpeechEncoder:
    return load_speech_encoder(str(whisper_dir), mode="trim")


@pytest.fixture(scope="module")
def pad30(whisper_dir) -> WhisperSpeechEncoder:
    return load_speech_encoder(str(whisper_dir), mode="pad30")


LENGTHS = [16000, 4480, 4481]  # 1 s; 14 frames exactly, and one sample more: 29 mel frames, 15 frames


# ------------------------------------------------------------------------------------------------
# Whisper
# ------------------------------------------------------------------------------------------------


def test_interface_attributes_and_frozen(trim, pad30, whisper_dir):
    for enc, mode in ((trim, "trim"), (pad30, "pad30")):
        assert isinstance(enc, SpeechEncoder) and isinstance(enc, WhisperSpeechEncoder)
        assert (enc.dim, enc.mode, enc.max_seconds, enc.spec) == (32, mode, 30.0, str(whisper_dir.resolve()))
        assert all(not p.requires_grad for p in enc.parameters())
        enc.train()
        assert not enc.training and not enc.encoder.training  # dropout 0.1 in the config never runs
    # only the encoder half is kept
    assert not any("decoder" in name for name, _ in trim.named_parameters())


def test_bf16_precision_close_to_fp32_and_keyed_apart(whisper_dir, trim):
    waves = [wave(n, seed=i) for i, n in enumerate(LENGTHS)]
    bf16 = load_speech_encoder(str(whisper_dir), mode="trim", precision="bf16")
    a, mask_a = trim.encode(waves)
    b, mask_b = bf16.encode(waves)
    assert b.dtype == torch.float32 and torch.equal(mask_a, mask_b)
    rel = float((a - b).norm() / a.norm())
    assert 0 < rel < 0.05  # it does compute in bf16 (not bit-identical) and stays close
    # one batch or one by one: bf16 keeps the batch independence of trim mode (to bf16 rounding)
    one = torch.cat([bf16.encode([w])[0][0, : int(mask_b[i].sum())] for i, w in enumerate(waves)])
    torch.testing.assert_close(one, b[mask_b], rtol=0.05, atol=0.05)
    # same weights, another cache key: states of the two precisions never mix in a cache
    assert bf16.fingerprint() == trim.fingerprint()
    assert (trim.cache_mode, bf16.cache_mode) == ("trim", "trim+bf16")
    assert trim.precision == "fp32" and not any(p.requires_grad for p in bf16.parameters())
    with pytest.raises(ValueError, match="precision"):
        load_speech_encoder(str(whisper_dir), precision="fp8")


@pytest.mark.parametrize("n", [320, 321, 640, 16000, 16001, 479_999, 480_000])
def test_frames_rule(trim, n):
    assert trim.frames_for(n) == math.ceil(n / 320) == whisper_frames_for(n)


def test_pad30_is_the_full_encoder_sliced_to_the_real_frames(pad30):
    from transformers import WhisperFeatureExtractor

    waves = [wave(n, seed=i) for i, n in enumerate(LENGTHS)]
    states, mask = pad30.encode(waves)
    counts = [math.ceil(n / 320) for n in LENGTHS]
    assert states.shape == (len(LENGTHS), max(counts), 32) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == counts
    fe = WhisperFeatureExtractor(feature_size=80)
    for i, w in enumerate(waves):
        mel = torch.from_numpy(fe(w, sampling_rate=SR, return_tensors="np").input_features)  # (1, 80, 3000)
        with torch.no_grad():
            full = pad30.encoder(mel).last_hidden_state  # (1, 1500, 32)
        assert full.shape[1] == 1500
        torch.testing.assert_close(states[i, : counts[i]], full[0, : counts[i]])
        assert (states[i, counts[i] :] == 0).all()


def test_trim_runs_the_encoder_on_the_real_frames_only(trim):
    seen: dict[str, int] = {}
    hooks = [
        trim.encoder.conv1.register_forward_hook(lambda m, args, out: seen.__setitem__("conv1", args[0].shape[-1])),
        trim.encoder.layers[0].register_forward_hook(lambda m, args, out: seen.__setitem__("layer0", args[0].shape[1])),
    ]
    try:
        n = 37_123  # 2.32 s
        states, mask = trim.encode([wave(n)])
    finally:
        for h in hooks:
            h.remove()
    assert seen == {"conv1": math.ceil(n / 160), "layer0": math.ceil(n / 320)}
    assert states.shape == (1, math.ceil(n / 320), 32) and bool(mask.all())


def test_trim_features_are_the_30s_features_cut(trim, pad30):
    waves = [wave(n, seed=i, loud_tail=i % 2 == 0) for i, n in enumerate([320, 4321, 16000, 479_700])]
    waves.append(np.zeros(8000, dtype=np.float32))
    mel_t, len_t = trim.features(waves)
    mel_p, len_p = pad30.features(waves)
    assert torch.equal(len_t, len_p) and len_t.tolist() == [math.ceil(len(w) / 160) for w in waves]
    assert mel_p.shape[-1] == 3000 and mel_t.shape[-1] == int(len_t.max())
    for i, n in enumerate(len_t.tolist()):
        # the same numbers up to float rounding (the mel matmul's blocking may differ with the frame count)
        torch.testing.assert_close(mel_t[i, :, :n], mel_p[i, :, :n], atol=1e-6, rtol=0)
        assert (mel_t[i, :, n:] == 0).all()


def test_trim_on_a_full_30s_window_equals_pad30(trim, pad30):
    w = [wave(480_000, seed=3)]
    a, ma = trim.encode(w)
    b, mb = pad30.encode(w)
    assert a.shape == (1, 1500, 32) and torch.equal(ma, mb)
    torch.testing.assert_close(a, b)  # our trimmed forward == transformers' own forward


def test_modes_same_length_finite_but_different(trim, pad30):
    waves = [wave(n, seed=i) for i, n in enumerate(LENGTHS)]
    a, ma = trim.encode(waves)
    b, mb = pad30.encode(waves)
    assert a.shape == b.shape and torch.equal(ma, mb)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    # trim does not see 30 s of padding, so its states differ (most at the end of the utterance)
    assert not torch.allclose(a[ma], b[mb], atol=1e-3)


@pytest.mark.parametrize("mode", ["trim", "pad30"])
def test_batched_equals_one_by_one(trim, pad30, mode):
    enc = trim if mode == "trim" else pad30
    waves = [wave(n, seed=i) for i, n in enumerate(LENGTHS)]
    states, mask = enc.encode(waves)
    for i, w in enumerate(waves):
        s1, m1 = enc.encode([w])
        n = int(m1.sum())
        assert int(mask[i].sum()) == n
        torch.testing.assert_close(states[i, :n], s1[0])
        assert (states[i, n:] == 0).all()


def test_silent_clip_is_defined(trim, pad30):
    for enc in (trim, pad30):
        s, m = enc.encode([np.zeros(4000, dtype=np.float32)])
        assert s.shape == (1, 13, 32) and torch.isfinite(s).all()


def test_bad_inputs_raise_clear_errors(trim, pad30):
    ok = wave(8000)
    with pytest.raises(ValueError, match="waveform 1 is empty"):
        trim.encode([ok, np.zeros(0, dtype=np.float32)])
    with pytest.raises(ValueError, match="waveform 0 is too short: 100 samples"):
        pad30.encode([ok[:100]])
    with pytest.raises(ValueError, match=r"waveform 1 is 30\.50 s long.*at most 30 s.*[Ss]plit"):
        trim.encode([ok, np.zeros(488_000, dtype=np.float32)])
    with pytest.raises(ValueError, match=r"waveform 0 has shape \(2, 8000\)"):
        trim.encode([np.stack([ok, ok])])
    with pytest.raises(ValueError, match="waveform 0 has dtype int16"):
        trim.encode([(ok * 3000).astype(np.int16)])
    bad = ok.copy()
    bad[5] = np.nan
    with pytest.raises(ValueError, match="waveform 0 contains NaN"):
        trim.encode([bad])
    with pytest.raises(ValueError, match="wrap a single one in a list"):
        trim.encode(ok)
    s, _ = trim.encode([torch.from_numpy(ok)])  # torch tensors are accepted too
    assert s.shape == (1, 25, 32)


def test_loader_errors(tmp_path, whisper_dir):
    with pytest.raises(ValueError, match="unknown speech encoder mode 'full30'"):
        load_speech_encoder(str(whisper_dir), mode="full30")
    with pytest.raises(PackagedModelError, match="unknown packaged model 'packaged:whisper-huge'"):
        load_speech_encoder("packaged:whisper-huge")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_speech_encoder(str(tmp_path / "missing" / "dir"))
    with pytest.raises(FileNotFoundError, match="neither config.json"):
        load_speech_encoder(str(tmp_path))


def test_hf_prefix_uses_the_same_from_pretrained_path(whisper_dir, trim):
    enc = load_speech_encoder(f"hf:{whisper_dir}")
    assert isinstance(enc, WhisperSpeechEncoder) and enc.spec == f"hf:{whisper_dir}"
    w = [wave(9000)]
    torch.testing.assert_close(enc.encode(w)[0], trim.encode(w)[0], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# Other transformers speech encoders through the Auto classes
# ------------------------------------------------------------------------------------------------


def _save_tiny_hf_encoder(kind: str, root):
    import transformers as tf

    torch.manual_seed(0)
    out = root / kind
    if kind == "speech2text":
        cfg = tf.Speech2TextConfig(
            vocab_size=50,
            d_model=32,
            encoder_layers=2,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            conv_channels=32,
            input_feat_per_channel=80,
            max_source_positions=1000,
            max_target_positions=50,
        )
        tf.Speech2TextForConditionalGeneration(cfg).save_pretrained(out)
        tf.Speech2TextFeatureExtractor(feature_size=80, num_mel_bins=80).save_pretrained(out)
        return out
    common = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 4, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        vocab_size=10,
    )
    cfg_cls, model_cls = {
        "wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model),
        "hubert": (tf.HubertConfig, tf.HubertModel),
        "wavlm": (tf.WavLMConfig, tf.WavLMModel),
    }[kind]
    extra = {"num_buckets": 32, "max_bucket_distance": 100} if kind == "wavlm" else {}
    model_cls(cfg_cls(**common, **extra)).save_pretrained(out)
    tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, do_normalize=True).save_pretrained(out)
    return out


@pytest.mark.parametrize("kind", ["speech2text", "wav2vec2", "hubert", "wavlm"])
def test_hf_speech_encoders_through_auto_classes(tmp_path, kind):
    enc = load_speech_encoder(str(_save_tiny_hf_encoder(kind, tmp_path)))
    assert isinstance(enc, HFSpeechEncoder) and enc.dim == 32 and enc.mode == "full"
    assert all(not p.requires_grad for p in enc.parameters())
    if kind == "speech2text":  # the decoder is dropped
        assert not any("decoder" in name for name, _ in enc.named_parameters())
    lengths = [16000, 4321, 16000, 9000]
    waves = [wave(n, seed=i) for i, n in enumerate(lengths)]
    states, mask = enc.encode(waves)
    frames = [enc.frames_for(n) for n in lengths]

    # the model's own length rule: wav2vec2 conv front end; Speech2Text 10 ms fbank then two stride-2 convs
    def conv(length: int, kernel: int, stride: int, padding: int = 0) -> int:
        return (length + 2 * padding - kernel) // stride + 1

    if kind == "speech2text":
        expected = [conv(conv(1 + (n - 400) // 160, 5, 2, 2), 5, 2, 2) for n in lengths]
    else:
        expected = [conv(conv(conv(n, 10, 5), 4, 4), 4, 4) for n in lengths]
    assert frames == expected
    assert states.shape == (4, max(frames), 32) and mask.sum(1).tolist() == frames
    for i, w in enumerate(waves):
        s1, m1 = enc.encode([w])
        torch.testing.assert_close(states[i, : frames[i]], s1[0])
        assert (states[i, frames[i] :] == 0).all()
    silent, _ = enc.encode([np.zeros(8000, dtype=np.float32)])
    assert torch.isfinite(silent).all()
    with pytest.raises(ValueError, match="waveform 0 is too short"):
        enc.encode([np.ones(399, dtype=np.float32)])


# ------------------------------------------------------------------------------------------------
# The real packaged Whispers against the CTranslate2 engine
# ------------------------------------------------------------------------------------------------


@pytest.mark.packaged  # faster-whisper comes with the offline extra
def test_whisper_mel_matches_faster_whisper_80_and_128_bins():
    from faster_whisper.feature_extractor import FeatureExtractor
    from transformers import WhisperFeatureExtractor

    w = np.zeros(480_000, dtype=np.float32)
    w[:60_000] = wave(60_000, seed=2)
    for bins in (80, 128):
        ours = WhisperFeatureExtractor(feature_size=bins)(w, sampling_rate=SR, return_tensors="np").input_features[0]
        ref = FeatureExtractor(feature_size=bins)(w, padding=0)[:, :3000]  # faster-whisper follows openai/whisper
        assert ours.shape == ref.shape == (bins, 3000)
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


@pytest.mark.packaged
@pytest.mark.parametrize("name", ["whisper-tiny.en", "whisper-base"])
def test_packaged_whisper_encoder_matches_ctranslate2(name):
    import ctranslate2

    from sltalign.foundation import packaged
    from tests.foundation.test_ctranslate2 import in_memory_files, read_librivox

    _, dirs = packaged.resolve(f"packaged:{name}")
    engine = ctranslate2.models.Whisper(
        name, device="cpu", compute_type="float32", intra_threads=torch.get_num_threads(), files=in_memory_files(dirs)
    )
    waves = read_librivox()

    def ct2_encode(mel: torch.Tensor) -> torch.Tensor:
        out = engine.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy())), to_cpu=True)
        return torch.from_numpy(np.array(out))

    def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm())

    for mode in ("pad30", "trim"):
        enc = load_speech_encoder(f"packaged:{name}", mode=mode)
        assert enc.dim == {"whisper-tiny.en": 384, "whisper-base": 512}[name]
        batch = waves[:1] if mode == "pad30" else waves  # 30 s windows are costly; trim takes all five
        states, mask = enc.encode(batch)
        mel, mel_len = enc.features(batch)
        for i in range(len(batch)):
            n = int(mask[i].sum())
            assert n == math.ceil(len(batch[i]) / 320)
            m = mel[i : i + 1] if mode == "pad30" else mel[i : i + 1, :, : int(mel_len[i])]
            ref = ct2_encode(m)[0, :n]  # CTranslate2 also takes fewer than 3000 frames
            assert rel_err(states[i, :n], ref) <= 1e-3, (mode, i)


@pytest.mark.packaged
def test_bergamot_is_not_a_speech_encoder():
    with pytest.raises(ValueError, match="not a speech encoder"):
        load_speech_encoder("packaged:bergamot-en-pt")

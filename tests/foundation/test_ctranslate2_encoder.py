"""Encoder engines: CTranslate2's Whisper encoder against torch's, batching, cache keys, checkpoints, ``auto``.

Packaged tests run the real whisper-tiny.en (pip-installed CTranslate2 directory); the others use the tiny
random Whisper of tests/conftest.py, which has no CTranslate2 directory (so the engine falls back to torch).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sltalign.foundation import ctranslate2_encoder as ct2e
from sltalign.foundation.speech_encoder import load_speech_encoder
from tests.conftest import speechlike

TINY_EN = "packaged:whisper-tiny.en"
#: the int8 engine's stated tolerance: a mean frame cosine to torch fp32 of at least AUTO_MIN_COSINE (0.99;
#: measured ~0.997-0.998 on whisper-tiny.en) and a relative L2 error under 0.15 (cosine 0.997 is ~0.08).
#: Not the max relative error: one outlier channel decides it (0.06-0.57 on these clips)
INT8_MAX_REL_L2 = 0.15

pytestmark = pytest.mark.skipif(not ct2e.ctranslate2_available(), reason="ctranslate2 is not installed")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    # auto's remembered decisions go to a fresh directory per test, never the user's cache
    monkeypatch.setenv("SLTALIGN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_en():
    torch.manual_seed(0)
    return {
        "torch": load_speech_encoder(TINY_EN),
        "fp32": load_speech_encoder(TINY_EN, engine="ctranslate2", precision="fp32"),
        "int8": load_speech_encoder(TINY_EN, engine="ctranslate2", precision="int8"),
    }


# 2 s (200 mel frames, even), 2.01 s (202), 3.0 s + 1 sample (301 mel frames: odd), and 2 s again (a group of two)
LENGTHS = [32000, 32160, 48001, 32000]


def _waves():
    return [ct2e.probe_waveform(n / 16000, seed=i)[:n] for i, n in enumerate(LENGTHS)]


@pytest.mark.packaged
def test_ct2_float32_equals_torch_trim(tiny_en):
    waves = _waves()
    a, mask_a = tiny_en["torch"].encode(waves)
    b, mask_b = tiny_en["fp32"].encode(waves)
    assert a.shape == b.shape and torch.equal(mask_a, mask_b)
    assert mask_a.sum(1).tolist() == [100, 101, 151, 100]  # ceil(n / 320), odd mel lengths included
    assert float((a - b).abs().max() / a.abs().max()) < 1e-4  # float rounding only (measured ~3e-6)
    assert torch.equal(b[~mask_b], torch.zeros_like(b[~mask_b]))  # padding: exact zeros, as torch's


@pytest.mark.packaged
def test_ct2_int8_within_stated_tolerance(tiny_en):
    waves = _waves() + [speechlike(2.5, seed=3)]
    a, mask = tiny_en["torch"].encode(waves)
    q, _ = tiny_en["int8"].encode(waves)
    for i in range(len(waves)):
        n = int(mask[i].sum())
        agree = ct2e.frame_agreement(a[i, :n], q[i, :n])
        assert agree["mean_cosine"] >= ct2e.AUTO_MIN_COSINE, agree
        assert 0 < agree["rel_l2"] < INT8_MAX_REL_L2, agree  # it does quantise, and stays close


@pytest.mark.packaged
@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_batched_equals_one_by_one(tiny_en, precision):
    enc = tiny_en[precision]
    waves = _waves()
    states, mask = enc.encode(waves)
    for i, w in enumerate(waves):
        alone, alone_mask = enc.encode([w])
        n = int(alone_mask.sum())
        assert int(mask[i].sum()) == n
        # equal-length groups, never padding inside CTranslate2: the same numbers as alone to float rounding.
        # A batch of two may take other GEMM kernels than a batch of one (on an AMX Xeon: 1.2e-5 of the
        # states' largest value, deterministic): bounded at 5e-5 of it. Padding leaking in would move it by O(1)
        scale = float(alone[0, :n].abs().max())
        torch.testing.assert_close(states[i, :n], alone[0, :n], rtol=0, atol=5e-5 * scale)


def test_cache_mode_differs_by_engine(tiny_whisper_dir):
    enc = load_speech_encoder(str(tiny_whisper_dir))
    assert enc.engine == "torch" and enc.cache_mode == "trim"  # unchanged: existing caches keep their keys
    modes = {enc.cache_mode}
    for engine, precision in (("ctranslate2", "int8"), ("ctranslate2", "fp32")):
        enc.engine, enc.precision = engine, precision  # the key alone: no CTranslate2 model needed
        modes.add(enc.cache_mode)
    enc.engine, enc.precision = "torch", "bf16"
    modes.add(enc.cache_mode)
    assert modes == {"trim", "trim+ctranslate2-int8", "trim+ctranslate2-fp32", "trim+bf16"}


@pytest.mark.packaged
def test_packaged_engines_cache_modes(tiny_en):
    assert [tiny_en[k].cache_mode for k in ("torch", "fp32", "int8")] == [
        "trim",
        "trim+ctranslate2-fp32",
        "trim+ctranslate2-int8",
    ]
    # one set of weights: a connector trained on one engine's states loads with another's encoder
    assert tiny_en["torch"].fingerprint() == tiny_en["int8"].fingerprint()


def test_engine_argument_checks(tiny_whisper_dir):
    with pytest.raises(ValueError, match="engine"):
        load_speech_encoder(str(tiny_whisper_dir), engine="onnx")
    with pytest.raises(ValueError, match="trimmed input only"):
        load_speech_encoder(str(tiny_whisper_dir), mode="pad30", engine="ctranslate2")
    with pytest.raises(ValueError, match="precision"):
        load_speech_encoder(str(tiny_whisper_dir), engine="ctranslate2", precision="bf16")


def test_ctranslate2_without_a_ct2_dir_warns_and_uses_torch(tiny_whisper_dir):
    with pytest.warns(UserWarning, match="no CTranslate2 directory"):
        enc = load_speech_encoder(str(tiny_whisper_dir), engine="ctranslate2", precision="int8")
    assert (enc.engine, enc.precision) == ("torch", "fp32")


def test_auto_returns_a_valid_engine_and_caches_its_decision(tiny_whisper_dir, monkeypatch):
    calls = []
    measure = ct2e.measure_engines
    monkeypatch.setattr(ct2e, "measure_engines", lambda *a, **k: calls.append(1) or measure(*a, **k))
    enc = load_speech_encoder(str(tiny_whisper_dir), engine="auto")
    # no CTranslate2 directory for this model: auto measured torch fp32 and bf16 and kept a faithful one
    assert (enc.engine, enc.precision) in {("torch", "fp32"), ("torch", "bf16")} and calls == [1]
    table = json.loads(ct2e.decisions_path().read_text())
    (decision,) = table.values()
    assert {r["engine"] for r in decision["measured"]} == {"torch"}
    again = load_speech_encoder(str(tiny_whisper_dir), engine="auto")
    assert (again.engine, again.precision) == (enc.engine, enc.precision) and calls == [1]  # remembered


@pytest.mark.packaged
def test_auto_on_the_packaged_model_picks_a_faithful_engine(tiny_en):
    decision = ct2e.choose_engine(tiny_en["torch"], ct2e_dir(), remember=True)
    assert (decision["engine"], decision["precision"]) in ct2e.AUTO_CANDIDATES and not decision["cached"]
    rows = {(r["engine"], r["precision"]): r for r in decision["measured"]}
    assert set(rows) == set(ct2e.AUTO_CANDIDATES)
    chosen = rows[(decision["engine"], decision["precision"])]
    assert chosen["mean_cosine"] >= ct2e.AUTO_MIN_COSINE
    assert rows[("ctranslate2", "fp32")]["max_rel_err"] < 1e-4
    assert tiny_en["torch"].precision == "fp32"  # measuring left the encoder as it was
    assert ct2e.choose_engine(tiny_en["torch"], ct2e_dir())["cached"]


def ct2e_dir() -> str:
    from sltalign.cascade import whisper_ct2_dir

    return whisper_ct2_dir(TINY_EN)


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------


def _aligned(speech, mt_dir):
    from sltalign.connectors import build_connector
    from sltalign.foundation import load_translator
    from sltalign.model import AlignedST

    mt = load_translator(str(mt_dir))
    torch.manual_seed(1)
    conn = build_connector("ste", in_dim=speech.dim, out_dim=mt.embed_dim, d=32, layers=1, heads=2, ffn=64, conv_channels=32)
    return AlignedST(speech_encoder=speech, connector=conn, translator=mt, arrangement="eced").eval()


@pytest.mark.packaged
def test_checkpoint_records_the_engine_and_reloads_with_it(tiny_en, sharp_marian_dir, tmp_path):
    from sltalign.checkpoint import load_connector, read_config, save_connector

    ckpt = save_connector(_aligned(tiny_en["int8"], sharp_marian_dir), tmp_path / "ckpt")
    se = read_config(ckpt)["speech_encoder"]
    assert (se["engine"], se["precision"], se["mode"]) == ("ctranslate2", "int8", "trim")
    loaded, _ = load_connector(ckpt)
    assert (loaded.speech_encoder.engine, loaded.speech_encoder.precision) == ("ctranslate2", "int8")
    w = [speechlike(1.3, seed=2)]
    torch.testing.assert_close(loaded.encode_audio(w)[0], tiny_en["int8"].encode(w)[0], rtol=0, atol=1e-5)
    # where ctranslate2 cannot run, translation says why and uses torch fp32
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ct2e, "ctranslate2_available", lambda: False)
        with pytest.warns(UserWarning, match="ctranslate2 package is not installed"):
            fallback, _ = load_connector(ckpt)
    assert (fallback.speech_encoder.engine, fallback.speech_encoder.precision) == ("torch", "fp32")


def test_older_checkpoint_without_engine_loads_as_torch(tiny_whisper_dir, sharp_marian_dir, tmp_path):
    from sltalign.checkpoint import load_connector, read_config, save_connector

    ckpt = save_connector(_aligned(load_speech_encoder(str(tiny_whisper_dir)), sharp_marian_dir), tmp_path / "ckpt")
    assert read_config(ckpt)["speech_encoder"]["engine"] == "torch"
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg["speech_encoder"]["engine"]  # as written before the engine field existed
    (ckpt / "config.json").write_text(json.dumps(cfg))
    loaded, _ = load_connector(ckpt)
    assert (loaded.speech_encoder.engine, loaded.speech_encoder.precision, loaded.speech_encoder.cache_mode) == (
        "torch",
        "fp32",
        "trim",
    )


def test_config_engine_field(tmp_path):
    from sltalign.config import ConfigError, TrainConfig, validate

    cfg = TrainConfig()
    assert cfg.model.encoder_engine == "torch"  # existing presets and checkpoints behave as before
    cfg.model.encoder_engine, cfg.model.encoder_precision = "ctranslate2", "int8"
    validate(cfg)
    cfg.model.encoder_mode = "pad30"
    with pytest.raises(ConfigError, match="encoder_engine"):
        validate(cfg)
    cfg.model.encoder_mode, cfg.model.encoder_engine = "trim", "vulkan"
    with pytest.raises(ConfigError, match="encoder_engine"):
        validate(cfg)


def test_probe_waveform_is_deterministic_speechlike():
    a, b = ct2e.probe_waveform(2.0), ct2e.probe_waveform(2.0)
    assert a.dtype == np.float32 and a.shape == (32000,) and np.array_equal(a, b) and 0.01 < float(np.abs(a).max()) < 1


@pytest.mark.packaged
def test_training_on_ct2_int8_states_records_the_engine(tmp_path, sharp_marian_dir):
    """model.encoder_engine reaches the encoder that fills the cache, the cache key and the checkpoint."""
    from pathlib import Path

    from sltalign.checkpoint import load_connector
    from sltalign.train import train
    from tests.test_train import config

    stages = "[{name: ctc, steps: 2, lr: 0.003, warmup: 0, objectives: {ctc: 1.0}}]"
    cfg = config(
        tmp_path,
        TINY_EN,
        sharp_marian_dir,
        "run",
        stages=stages,
        **{"model.encoder_engine": "ctranslate2", "model.encoder_precision": "int8"},
    )
    train(cfg, progress=False)
    model, cfg_json = load_connector(Path(cfg.out) / "best")
    assert (cfg_json["speech_encoder"]["engine"], cfg_json["speech_encoder"]["precision"]) == ("ctranslate2", "int8")
    assert model.speech_encoder.cache_mode == "trim+ctranslate2-int8"

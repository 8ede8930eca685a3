"""sltalign.data.synth's channel: each step deterministic by seed, doing what it says, recorded per clip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sltalign.data.synth import (
    CHANNEL_PROBS,
    DEFAULT_VOICES,
    SynthConfig,
    apply_channel,
    draw_channel,
    plan_clips,
    synthesize_corpus,
)
from sltalign.data.synth.augment import PEAK, codec_round_trip, image_source_rir, pitch_shift, speed_perturb, telephone
from sltalign.data.synth.corpus import _fingerprint

SR = 16000


def _speechlike(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """A voiced buzz (140 Hz with harmonics) under a syllable-rate envelope, plus a little noise."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 25))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (0.2 * buzz * env + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum() / spec.sum())


def _channel(**steps) -> dict:
    return dict(steps)


def _apply(wav, channel, seed=5, **kw):
    args = dict(seed=seed, rng=np.random.default_rng(seed), rt60=None, snr_db=None, noise_color=1.0, channel=channel)
    args.update(kw)
    return apply_channel(wav, SR, **args)


def test_speed_perturbation_changes_length_by_the_factor():
    x = _speechlike()
    for f in (0.9, 1.1):
        y = speed_perturb(x, SR, f)
        assert len(y) == pytest.approx(len(x) / f, abs=2)
    np.testing.assert_array_equal(_apply(x, _channel(speed={"factor": 1.1})), _apply(x, _channel(speed={"factor": 1.1})))


def test_pitch_shift_moves_the_pitch_and_keeps_the_length():
    t = np.arange(SR) / SR
    x = np.sin(2 * np.pi * 200 * t).astype(np.float32)
    y = pitch_shift(x, SR, 4.0)
    assert len(y) == len(x)
    spec = np.abs(np.fft.rfft(y[2000:-2000] * np.hanning(len(y) - 4000)))
    peak = np.fft.rfftfreq(len(y) - 4000, 1 / SR)[np.argmax(spec)]
    assert peak == pytest.approx(200 * 2 ** (4 / 12), rel=0.03)  # 252 Hz
    np.testing.assert_array_equal(y, pitch_shift(x, SR, 4.0))


def test_telephone_band_has_no_energy_above_4khz():
    x = _speechlike()
    for codec in ("mulaw", "gsm"):
        y = telephone(x, SR, codec)
        assert len(y) == len(x)
        assert _band_energy(y, 4000, 8000) < 1e-4 and _band_energy(x, 4000, 8000) > 1e-3
        assert _band_energy(y, 0, 250) < _band_energy(x, 0, 250) / 5  # band-pass from 300 Hz
        np.testing.assert_array_equal(y, telephone(x, SR, codec))


def test_codec_round_trips_keep_the_signal_and_its_alignment():
    x = _speechlike(2.0)
    for fmt, q in (("mp3", 0.9), ("opus", 0.9)):
        y = codec_round_trip(x, SR, fmt, q)
        assert len(y) == len(x) and not np.array_equal(x, y)
        assert np.corrcoef(x, y)[0, 1] > 0.9  # aligned: the decoder's delay is cut
        np.testing.assert_array_equal(y, codec_round_trip(x, SR, fmt, q))
    with pytest.raises(ValueError, match="codec format"):
        codec_round_trip(x, SR, "aac", 0.5)


def test_level_change_scales_the_rms():
    x = _speechlike()
    a, b = _apply(x, None), _apply(x, _channel(level={"db": -12.0}))
    assert np.abs(a).max() == pytest.approx(PEAK, rel=1e-5)
    assert np.sqrt(np.mean(b**2)) / np.sqrt(np.mean(a**2)) == pytest.approx(10 ** (-12 / 20), rel=1e-4)


def test_silence_adds_quiet_ends_with_room_tone_breaths_and_clicks():
    x = _speechlike()
    ch = _channel(silence={"lead": 0.5, "trail": 0.3, "breaths": 2, "clicks": 2, "tone_snr_db": 45.0})
    y = _apply(x, ch)
    assert len(y) == len(x) + int(0.5 * SR) + int(0.3 * SR)
    lead, speech = y[: int(0.5 * SR)], y[int(0.5 * SR) : int(0.5 * SR) + len(x)]
    assert 0 < np.sqrt(np.mean(lead**2)) < 0.1 * np.sqrt(np.mean(speech**2))  # never digitally silent, but quiet
    np.testing.assert_array_equal(y, _apply(x, ch))
    assert not np.array_equal(y, _apply(x, ch, seed=6))  # the clip's seed shapes breaths, clicks and tone


def test_image_source_room_direct_path_then_a_decaying_tail():
    rng = lambda: np.random.default_rng(1)  # noqa: E731
    short = image_source_rir(SR, 0.3, [6, 5, 3], [1, 1, 1.5], [4, 3, 1.2], rng())
    long = image_source_rir(SR, 0.7, [6, 5, 3], [1, 1, 1.5], [4, 3, 1.2], rng())
    np.testing.assert_array_equal(short, image_source_rir(SR, 0.3, [6, 5, 3], [1, 1, 1.5], [4, 3, 1.2], rng()))
    assert np.argmax(np.abs(short)) == 0 and short[0] == pytest.approx(1.0, abs=0.05)
    energy = lambda r, a, b: float(np.sum(r[int(a * SR) : int(b * SR)] ** 2))  # noqa: E731
    assert energy(short, 0.01, 0.1) > energy(short, 0.2, 0.3) > 0  # decays
    assert energy(long, 0.001, 2) > energy(short, 0.001, 2)  # a livelier room has more reverberant energy
    x = _speechlike()
    room = _channel(room={"rt60": 0.5, "dims": [6, 5, 3], "source": [1, 1, 1.5], "mic": [4, 3, 1.2]})
    y = _apply(x, room)
    assert len(y) == len(x) and not np.allclose(y, _apply(x, None))


def test_babble_is_mixed_at_the_asked_snr():
    x = _speechlike(2.0)
    other = _speechlike(1.3, seed=9) * 3
    talkers = [{"backend": None, "voice": "v", "text": "t", "rate": 150, "pitch": 50, "speed": 1.0, "seed": k} for k in range(3)]
    ch = _channel(babble={"snr_db": 10.0, "talkers": talkers})
    y = apply_channel(
        x,
        SR,
        seed=1,
        rng=np.random.default_rng(1),
        rt60=None,
        snr_db=None,
        noise_color=1.0,
        channel=ch,
        babble=lambda t: np.roll(other, 1000 * t["seed"]),
    )
    clean = x * (PEAK / np.abs(x).max())
    scale = np.dot(y, clean) / np.dot(clean, clean)  # y = scale * (x + babble) up to the peak normalisation
    residual = y / scale - clean
    snr = 10 * np.log10(np.mean(clean**2) / np.mean(residual**2))
    assert snr == pytest.approx(10.0, abs=1.5)


def test_draw_channel_is_seeded_and_follows_the_probabilities():
    talker = lambda r: {"seed": int(r.integers(9))}  # noqa: E731
    off = SynthConfig()
    on = SynthConfig(**{k: 1.0 for k in CHANNEL_PROBS})
    assert draw_channel(off, np.random.default_rng(0), talker) is None
    a = draw_channel(on, np.random.default_rng(0), talker)
    assert a == draw_channel(on, np.random.default_rng(0), talker)
    assert set(a) == {"speed", "pitch", "silence", "room", "babble", "telephone", "codec", "level"}
    assert 3 <= len(a["babble"]["talkers"]) <= 6 and a["codec"]["format"] in ("mp3", "opus")


def test_plans_carry_the_channel_in_the_augmented_splits_only():
    sentences = [f"sentence number {i} is here" for i in range(80)]
    clean = SynthConfig(n_train=20, n_dev=4, n_test=4, long_fraction=0.0, seed=3)
    noisy = SynthConfig(
        n_train=20, n_dev=4, n_test=4, long_fraction=0.0, seed=3, augment_splits=["train"], **{k: 0.5 for k in CHANNEL_PROBS}
    )
    a, b = plan_clips(clean, sentences, DEFAULT_VOICES), plan_clips(noisy, sentences, DEFAULT_VOICES)
    assert b == plan_clips(noisy, sentences, DEFAULT_VOICES)
    assert [p for p in a if p.split != "train"] == [p for p in b if p.split != "train"]
    assert [p.channel for p in a] == [None] * len(a) and sum(p.channel is not None for p in b) >= 15
    # the rest of a clip's plan is what the clean corpus planned: the channel draws from its own generator
    assert all(p.__dict__ | {"channel": None} == q.__dict__ | {"channel": None} for p, q in zip(a, b))
    talkers = [t for p in b if p.channel and "babble" in p.channel for t in p.channel["babble"]["talkers"]]
    assert talkers and all(t["text"] in sentences and t["voice"] in DEFAULT_VOICES for t in talkers)


def test_new_settings_stay_out_of_the_fingerprint_until_used():
    base = _fingerprint(SynthConfig(), "espeak", "x")
    # exactly what synth_config.json held before the voices and the channel existed: old corpora resume
    assert base == {
        "n_train": 2000,
        "n_dev": 100,
        "n_test": 100,
        "long_fraction": 0.1,
        "train_long_fraction": None,
        "long_range": [20.0, 40.0],
        "min_words": 3,
        "max_words": 40,
        "seed": 0,
        "backend": "espeak",
        "voices": None,
        "rate_range": [130, 200],
        "pitch_range": [30, 70],
        "noise_snr_db": None,
        "noise_prob": 0.5,
        "reverb_prob": 0.0,
        "rt60_range": [0.2, 0.7],
        "sample_rate": 16000,
        "format": 1,
        "resolved_backend": "espeak",
        "sentences_sha256": "x",
    }
    assert not set(base) & {"speed_range", "train_voices", "rir_prob", "silence_range", *CHANNEL_PROBS}
    used = _fingerprint(SynthConfig(rir_prob=0.3, speed_perturb_range=(0.8, 1.2)), "espeak", "x")
    assert used["rir_prob"] == 0.3 and used["speed_perturb_range"] == [0.8, 1.2]
    for bad, match in (
        ({"telephone_prob": 1.5}, "telephone_prob must be in"),
        ({"level_db_range": (0, -3)}, "level_db_range must be"),
        ({"babble_talkers": (0, 2)}, "babble_talkers must be whole numbers"),
        ({"speed_perturb_range": (0, 1)}, "positive"),
    ):
        with pytest.raises(ValueError, match=match):
            SynthConfig(**bad)


def test_a_corpus_records_its_channel_and_renders_the_same_bytes_again(tmp_path):
    """Every step at once on eSpeak clips (babble from other eSpeak talkers); the records and
    DIR/train.clips.jsonl hold each clip's channel; the command line reaches the same settings."""
    from sltalign.cli import main

    s = tmp_path / "en.txt"
    s.write_text("\n".join(f"My sister baked fresh bread near the river on day {i}." for i in range(12)) + "\n")
    (tmp_path / "pt.txt").write_text("\n".join(f"frase {i}" for i in range(12)) + "\n")
    argv = [
        "data",
        "synth",
        "--out",
        str(tmp_path / "a"),
        "--sentences",
        str(s),
        "--translations",
        str(tmp_path / "pt.txt"),
        "--n_train",
        "3",
        "--n_dev",
        "1",
        "--n_test",
        "1",
        "--long_fraction",
        "0",
        "--workers",
        "0",
        "--seed",
        "4",
        "--augment_splits",
        "[train]",
        "--babble_talkers",
        "[2, 3]",
        "--level_db_range",
        "[-20, -10]",
    ]
    argv += [x for k in CHANNEL_PROBS for x in (f"--{k}", "1")]
    assert main(argv) == 0
    cfg = json.loads((tmp_path / "a" / "synth_config.json").read_text())
    assert (
        all(cfg[k] == 1.0 for k in CHANNEL_PROBS) and cfg["babble_talkers"] == [2, 3] and cfg["level_db_range"] == [-20.0, -10.0]
    )
    clips = [json.loads(x) for x in (tmp_path / "a" / "train.clips.jsonl").read_text().splitlines()]
    assert len(clips) == 3 and all(
        set(c["channel"]) == {"speed", "pitch", "silence", "room", "babble", "telephone", "codec", "level"} for c in clips
    )
    dev = [json.loads(x) for x in (tmp_path / "a" / "dev.clips.jsonl").read_text().splitlines()]
    assert "channel" not in dev[0]
    again = SynthConfig(
        sentences=str(s),
        translations=str(tmp_path / "pt.txt"),
        n_train=3,
        n_dev=1,
        n_test=1,
        long_fraction=0.0,
        workers=2,
        seed=4,
        augment_splits=["train"],
        babble_talkers=(2, 3),
        level_db_range=(-20, -10),
        **{k: 1.0 for k in CHANNEL_PROBS},
    )
    synthesize_corpus(again, tmp_path / "b", progress=False)
    for f in sorted((tmp_path / "a" / "audio").rglob("*.*")):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes(), f.name

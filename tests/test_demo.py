"""The demo's choices that do not need a run: which training voices it uses where some are missing, and how
it reads the watched real-speech dev curve back from a run's metrics."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "missing, expected",
    [
        (set(), {"espeak": 1.0, "flite": 1.0, "hibari": 0.5}),
        ({"hibari"}, {"espeak": 1.0, "flite": 1.0}),
        ({"flite", "hibari"}, None),  # eSpeak NG alone: every clip in its voices
    ],
)
def test_training_voices_are_the_installed_ones(monkeypatch, capsys, missing, expected):
    from sltalign import demo
    from sltalign.data import synth

    def make_backend(name):
        if name in missing:
            raise OSError(f"{name} is not installed")
        return object()

    monkeypatch.setattr(synth, "make_backend", make_backend)
    assert demo.train_backends() == expected
    said = capsys.readouterr().out
    assert all(f"without {demo.VOICE_NAMES[m]}" in said for m in missing)


def test_watched_curve_reads_one_split_by_step(tmp_path):
    from sltalign.demo import watched_curve
    from sltalign.training_state import MetricsLog

    log = MetricsLog(tmp_path / "metrics.csv", True)
    log.write(5, 1.0, "real_dev", {"bleu": 10.0, "chrf": 30.0})
    log.write(5, 1.0, "dev", {"bleu": 40.0, "chrf": 60.0})
    log.write(10, 2.0, "real_dev", {"bleu": 12.5, "chrf": 33.0, "ctc_wer": 0.5})
    log.write(10, 2.0, "train", {"loss_total": 1.0})
    assert watched_curve(tmp_path / "metrics.csv", "real_dev") == [
        {"step": 5, "bleu": 10.0, "chrf": 30.0},
        {"step": 10, "bleu": 12.5, "chrf": 33.0},
    ]
    assert watched_curve(tmp_path / "absent.csv", "real_dev") == []


@pytest.mark.parametrize("soft", [False, True])
def test_the_channel_reaches_the_phone_recipes_training_clips_only(monkeypatch, tmp_path, soft):
    from sltalign import demo
    from sltalign.data import synth

    seen = {}
    monkeypatch.setattr(demo, "train_backends", lambda: {"espeak": 1.0})
    monkeypatch.setattr(synth, "synthesize_corpus", lambda cfg, out, **kw: seen.setdefault("cfg", cfg))
    demo.synthesize(tmp_path, demo.FULL, mt=None, soft=soft, workers=1)
    cfg = seen["cfg"]
    if soft:  # the soft cascade's clips are rendered as before
        assert cfg.silence_prob == 0 and cfg.speed_perturb_prob == 0 and cfg.noise_snr_db is None
    else:
        assert cfg.augment_splits == ("train",)  # dev and test stay clean
        assert cfg.silence_prob == 0.5 and cfg.speed_perturb_prob == 0.5 and cfg.rir_prob == 0.2
        assert cfg.noise_snr_db == (15.0, 35.0) and cfg.noise_prob == 0.15
        assert cfg.babble_prob == 0 and cfg.codec_prob == 0 and cfg.pitch_shift_prob == 0

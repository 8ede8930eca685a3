"""The demo's choices that do not need a run: which training voices it uses where some are missing."""

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

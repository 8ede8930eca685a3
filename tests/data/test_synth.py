"""sltalign.data.synth: the TTS corpus builder (eSpeak NG), determinism, resume, long clips, MT batching."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sltalign.data.manifest import read_manifest
from sltalign.data.synth import (
    DEFAULT_SENTENCES,
    DEFAULT_VOICES,
    SynthConfig,
    ding_sentences,
    load_sentences,
    make_backend,
    plan_clips,
    synthesize_corpus,
)

SUBJECTS = [
    "The old farmer",
    "My sister",
    "A tired doctor",
    "The new teacher",
    "Our neighbour",
    "That small child",
    "The captain",
    "Her best friend",
]
ACTIONS = ["bought a red bicycle", "painted the kitchen door", "lost the house keys", "visited the museum", "baked fresh bread"]
PLACES = ["last summer.", "in the morning.", "after the storm.", "near the river.", "before dinner."]


def _write_sentences(d: Path, n: int = 40) -> tuple[Path, Path]:
    en, pt = [], []
    for i in range(n):
        en.append(f"{SUBJECTS[i % 8]} {ACTIONS[i % 5]} {PLACES[(i // 5) % 5]}")
        pt.append(f"frase {i} em português.")
    en.insert(3, "Too short.")  # filtered out (2 words) together with its translation
    pt.insert(3, "Curta demais.")
    s, t = d / "en.txt", d / "pt.txt"
    s.write_text("\n".join(en) + "\n", encoding="utf-8")
    t.write_text("\n".join(pt) + "\n", encoding="utf-8")
    return s, t


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def six_clips(tmp_path_factory):
    """6 clips (4 train, 1 dev, 1 test) rendered by 2 worker processes, with noise and reverb on some."""
    d = tmp_path_factory.mktemp("synth")
    s, t = _write_sentences(d)
    cfg = SynthConfig(
        sentences=str(s),
        translations=str(t),
        n_train=4,
        n_dev=1,
        n_test=1,
        long_fraction=0.0,
        seed=7,
        workers=2,
        noise_snr_db=(5.0, 20.0),
        noise_prob=0.5,
        reverb_prob=0.5,
    )
    out = d / "corpus"
    paths = synthesize_corpus(cfg, out, progress=False)
    return cfg, out, paths


def test_six_clips_with_two_workers(six_clips):
    cfg, out, paths = six_clips
    assert set(paths) == {"train", "dev", "test"}
    by_split = {split: read_manifest(p) for split, p in paths.items()}
    assert [u.id for u in by_split["train"]] == [f"train-{i:06d}" for i in range(4)]
    sentences = dict(zip(*(Path(x).read_text(encoding="utf-8").splitlines() for x in (cfg.sentences, cfg.translations))))
    seen_text = {}
    for split, utts in by_split.items():
        for u in utts:
            assert u.audio == str(out / "audio" / split / f"{u.id}.flac")
            info = sf.info(u.audio)
            assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
            assert info.frames / 16000 == pytest.approx(u.duration, abs=1e-5)
            assert 0.8 < u.duration < 10
            assert sentences[u.transcript] == u.translation and u.translation_source == "human"
            seen_text[u.transcript] = split
    assert len(seen_text) == 6  # every clip its own sentence; splits share none
    records = [json.loads(p.read_text()) for p in sorted(out.glob("audio/*/*.json"))]
    assert {r["voice"] for r in records} <= set(DEFAULT_VOICES)
    assert all(cfg.rate_range[0] <= r["rate"] <= cfg.rate_range[1] for r in records)
    assert any(r["snr_db"] is not None for r in records) and any(r["snr_db"] is None for r in records)


def test_same_seed_same_bytes_whatever_the_workers(six_clips, tmp_path):
    cfg, out, _ = six_clips
    other = tmp_path / "again"
    synthesize_corpus(SynthConfig(**{**cfg.__dict__, "workers": 0}), other, progress=False)  # in-process this time
    a, b = _snapshot(out), _snapshot(other)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []  # audio, clip records and manifests (relative paths) identical


def test_resume_renders_only_missing_clips(six_clips, tmp_path):
    cfg, out, _ = six_clips
    work = tmp_path / "copy"
    shutil.copytree(out, work)
    victim = work / "audio" / "train" / "train-000002.flac"
    original = victim.read_bytes()
    victim.unlink()
    (work / "audio" / "dev" / ".dev-000000.flac.123.tmp").write_bytes(b"half")  # debris of a crash
    others = {p: p.stat().st_mtime_ns for p in work.glob("audio/*/*") if p != victim}
    synthesize_corpus(SynthConfig(**{**cfg.__dict__, "workers": 0}), work, progress=False)
    assert victim.read_bytes() == original
    changed = [p.name for p, m in others.items() if p.exists() and p.stat().st_mtime_ns != m]
    assert changed == [] or changed == ["train-000002.json"]  # a clip is re-rendered as flac + json
    assert not list(work.glob("audio/*/.*.tmp"))
    with pytest.raises(ValueError, match="other settings.*seed"):
        synthesize_corpus(SynthConfig(**{**cfg.__dict__, "seed": 8}), work, progress=False)


def test_long_clips_and_translate_fn_batches(tmp_path):
    s, _ = _write_sentences(tmp_path, n=60)
    calls: list[list[str]] = []

    def fake_mt(batch: list[str]) -> list[str]:
        calls.append(list(batch))
        return [f"<{x}>" for x in batch]

    cfg = SynthConfig(
        sentences=str(s),
        n_train=2,
        n_dev=0,
        n_test=1,
        long_fraction=0.5,
        seed=3,
        workers=0,
        translate_batch_size=3,
        rate_range=(180, 200),
    )
    paths = synthesize_corpus(cfg, tmp_path / "c", translate_fn=fake_mt, mt_spec="fake-mt", progress=False)
    assert set(paths) == {"train", "test"}  # no dev clips: no dev manifest
    train = read_manifest(paths["train"])
    long = [u for u in train if u.duration > 15]
    assert len(long) == 1 and 20.0 <= long[0].duration <= 40.0
    record = json.loads((tmp_path / "c" / "audio" / "train" / f"{long[0].id}.json").read_text())
    assert len(record["sentences"]) >= 4
    assert long[0].transcript == " ".join(record["sentences"])
    assert long[0].translation == " ".join(f"<{x}>" for x in record["sentences"])
    assert long[0].translation_source == "mt:fake-mt"
    # MT: batches of at most 3, each needed sentence translated exactly once
    assert calls and all(1 <= len(c) <= 3 for c in calls)
    flat = [x for c in calls for x in c]
    used = {
        x
        for p in paths.values()
        for u in read_manifest(p)
        for x in json.loads((tmp_path / "c" / "audio" / u.id.split("-")[0] / f"{u.id}.json").read_text())["sentences"]
    }
    assert sorted(flat) == sorted(used)
    # Targets for dev/test only (a CTC-only recipe needs none in train): the same clips, resumed, and the MT
    # sees only the test split's sentences; train keeps its transcripts and has no translation.
    calls.clear()
    cfg2 = SynthConfig(
        sentences=str(s),
        n_train=2,
        n_dev=0,
        n_test=1,
        long_fraction=0.5,
        seed=3,
        workers=0,
        translate_batch_size=3,
        rate_range=(180, 200),
        mt_splits=["dev", "test"],
    )
    paths2 = synthesize_corpus(cfg2, tmp_path / "c", translate_fn=fake_mt, mt_spec="fake-mt", progress=False)
    train2, test2 = read_manifest(paths2["train"], require=("transcript",)), read_manifest(paths2["test"])
    assert [u.transcript for u in train2] == [u.transcript for u in train]
    assert all(u.translation is None and u.translation_source is None for u in train2)
    assert test2 == read_manifest(paths["test"])
    test_sentences = {
        x for u in test2 for x in json.loads((tmp_path / "c" / "audio" / "test" / f"{u.id}.json").read_text())["sentences"]
    }
    assert {x for c in calls for x in c} == test_sentences


def test_load_sentences_filters_and_pairs(tmp_path):
    s, t = _write_sentences(tmp_path)
    pairs = load_sentences(s, translations=t)
    assert len(pairs) == 40 and ("Too short.", "Curta demais.") not in pairs
    assert pairs[0][1] == "frase 0 em português."
    t.write_text("one line\n")
    with pytest.raises(ValueError, match="line-parallel"):
        load_sentences(s, translations=t)


def test_ding_dictionary_parser(tmp_path):
    ding = tmp_path / "de-en"
    ding.write_text(
        "# Version :: devel\n"
        "Aal {m} | Aale {pl} :: eel | eels\n"
        "Ich habe es eilig. [ugs.] :: I\u2019m in a hurry. [coll.]\n"
        "Das geht dich nichts an.; Kümmere dich um deinen Kram. :: That's none of your business.; Mind your own business!\n"
        "Sei froh. :: Be glad / thankful.\n"
        "Was nun? :: What now?\n"
        "Aalen {n} (Stufe) :: Aalenian (stage in the Earth's history)\n",
        encoding="utf-8",
    )
    assert ding_sentences(ding) == ["I'm in a hurry.", "That's none of your business.", "Mind your own business!", "What now?"]
    assert [en for en, _ in load_sentences(ding)] == [
        "I'm in a hurry.",
        "That's none of your business.",
        "Mind your own business!",
    ]


@pytest.mark.skipif(not DEFAULT_SENTENCES.is_file(), reason="Debian package trans-de-en not installed")
def test_default_sentences_from_debian():
    pairs = load_sentences()
    assert len(pairs) > 15000
    assert all(3 <= len(en.split()) <= 40 and tr is None for en, tr in pairs)
    assert not any(c in en for en, _ in pairs for c in "{}[]")
    assert len({en for en, _ in pairs}) == len(pairs)


def test_config_validation():
    with pytest.raises(ValueError, match="n_train, n_dev, n_test must be >= 0"):
        SynthConfig(n_train=-1)
    with pytest.raises(ValueError, match="long_fraction must be in"):
        SynthConfig(long_fraction=1.5)
    with pytest.raises(ValueError, match="rate_range"):
        SynthConfig(rate_range=(200, 100))
    with pytest.raises(ValueError, match="backend"):
        SynthConfig(backend="sam")
    assert SynthConfig(voices=["en-us+f3"]).voices == ("en-us+f3",)
    with pytest.raises(ValueError, match="mt_splits must name splits"):
        SynthConfig(mt_splits=("train", "valid"))


def test_espeak_library_rejects_unknown_voice():
    lib = make_backend("espeak")
    wav, sr = lib.synth("Hello there, how are you?", "en-gb-x-rp+m3", 175, 50, 0)
    assert sr > 0 and 0.8 < len(wav) / sr < 4 and np.abs(wav).max() > 0.05
    with pytest.raises(ValueError, match="no voice 'xx-nope'"):
        lib.synth("hello", "xx-nope", 175, 50, 0)


@pytest.mark.parametrize("backend,voice", [("espeak-cli", "en-us+f3"), ("flite", "slt"), ("festival", "default")])
def test_command_backends(backend, voice):
    try:
        b = make_backend(backend)
    except OSError as err:
        pytest.skip(str(err))
    a, sr = b.synth("The quick brown fox jumps over the lazy dog.", voice, 160, 40, 0)
    again, _ = b.synth("The quick brown fox jumps over the lazy dog.", voice, 160, 40, 0)
    assert 1.0 < len(a) / sr < 6.0 and np.abs(a).max() > 0.05
    np.testing.assert_array_equal(a, again)  # a fresh process per sentence: reproducible


def test_augment_splits_leave_the_other_splits_as_a_clean_corpus_would_be():
    sentences = [f"sentence number {i} is here" for i in range(40)]
    clean = SynthConfig(n_train=10, n_dev=5, n_test=5, long_fraction=0.0, seed=3)
    noisy = SynthConfig(
        n_train=10,
        n_dev=5,
        n_test=5,
        long_fraction=0.0,
        seed=3,
        noise_snr_db=(5.0, 20.0),
        noise_prob=1.0,
        reverb_prob=1.0,
        augment_splits=["train"],
    )
    a, b = plan_clips(clean, sentences, DEFAULT_VOICES), plan_clips(noisy, sentences, DEFAULT_VOICES)
    assert [p for p in a if p.split != "train"] == [p for p in b if p.split != "train"]
    assert all(p.snr_db is not None and p.rt60 is not None for p in b if p.split == "train")
    with pytest.raises(ValueError, match="augment_splits"):
        SynthConfig(augment_splits=("valid",))


def test_train_backends_mix_voices_in_training_only(tmp_path):
    """train_backends: each training clip's synthesiser is drawn by weight (deterministically); dev and test,
    and the clips that keep the main backend, are exactly what the corpus without the mix plans; a rendered
    clip's record names its backend (what the phone head reads the clip's accent from)."""
    from sltalign.data.synth import FLITE_VOICES

    sentences = [f"sentence number {i} is here" for i in range(80)]
    plain = SynthConfig(n_train=40, n_dev=5, n_test=5, long_fraction=0.0, seed=3)
    mixed = SynthConfig(n_train=40, n_dev=5, n_test=5, long_fraction=0.0, seed=3, train_backends={"espeak": 1, "flite": 1})
    a, b = plan_clips(plain, sentences, DEFAULT_VOICES), plan_clips(mixed, sentences, DEFAULT_VOICES)
    assert b == plan_clips(mixed, sentences, DEFAULT_VOICES)
    assert [p for p in a if p.split != "train"] == [p for p in b if p.split != "train"]
    flite = [q for q in b if q.backend == "flite"]
    assert all(q.split == "train" and q.voice in FLITE_VOICES for q in flite) and 10 < len(flite) < 30
    assert all(p == q for p, q in zip(a, b) if q.backend is None)
    # a backend with weight 0 is never drawn: the same plans as no mix
    assert (
        plan_clips(
            SynthConfig(n_train=40, n_dev=5, n_test=5, long_fraction=0.0, seed=3, train_backends={"espeak": 1, "flite": 0}),
            sentences,
            DEFAULT_VOICES,
        )
        == a
    )
    for bad in ({"espeak": -1.0}, {"nope": 1.0}, {"espeak": 0.0}, {}):
        with pytest.raises(ValueError, match="train_backends"):
            SynthConfig(train_backends=bad)
    try:
        make_backend("flite")
    except OSError as err:
        pytest.skip(str(err))
    cfg = SynthConfig(
        n_train=4, n_dev=0, n_test=1, long_fraction=0.0, seed=0, workers=0, train_backends={"espeak": 1, "flite": 1}
    )
    synthesize_corpus(cfg, tmp_path / "c", progress=False)
    plans = plan_clips(cfg, [s for s, _ in load_sentences(None)], DEFAULT_VOICES, {"flite": "flite"})
    for p in plans:
        rec = json.loads((tmp_path / "c" / "audio" / p.split / f"{p.id}.json").read_text())
        assert rec["backend"] == (p.backend or "espeak") and rec["voice"] == p.voice

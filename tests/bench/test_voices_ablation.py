"""bench/voices_ablation.py: the rows' planning (which voice speaks which clip), the sharing of audio between
rows, the per-clip channel draw, and that finished audio is not made again."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def va():
    spec = importlib.util.spec_from_file_location("voices_ablation", ROOT / "bench" / "voices_ablation.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["voices_ablation"] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_rows_share_sentences_and_differ_only_in_the_share(va):
    n, share, seed = 40, 0.25, 3
    added = va.added_indices(n, share, seed)
    assert len(added) == 10 and len(set(added)) == 10
    assert added == va.added_indices(n, share, seed)  # seeded
    rows = {r.name: r for r in va.ROWS}
    assert len(rows) == 10 and {r.channel for r in va.ROWS} == {False, True}
    today = va.row_sources(rows["today"], n, share, seed)
    assert today == ["base"] * n
    for voice in va.ADDED:
        src = va.row_sources(rows[voice], n, share, seed)
        assert [i for i, v in enumerate(src) if v != "base"] == sorted(added)
        assert {src[i] for i in added} == {voice}
        assert va.row_sources(rows[f"{voice}_ch"], n, share, seed) == src  # the channel rows: the same voices
    # "all": the share split equally (10 -> 4, 3, 3), each part spoken by one added voice
    src_all = va.row_sources(rows["all"], n, share, seed)
    counts = {v: src_all.count(v) for v in va.ADDED}
    assert counts == {"hibari": 4, "piper": 3, "kokoro": 3}
    assert [i for i, v in enumerate(src_all) if v != "base"] == sorted(added)


def test_audio_is_planned_once_and_clean_before_channel(va):
    n, share, seed = 40, 0.25, 0
    rows = list(va.ROWS) + list(va.ENGINE_ROWS)
    groups = va.needed_audio(rows, n, share, seed)
    items = [(v, c, i) for v, c, ix in groups for i in ix]
    assert len(items) == len(set(items))  # nothing made twice
    k = round(n * share)
    # every base clip clean and through the channel, each added voice on the share's indices only
    assert sum(1 for v, c, _ in items if v == "base") == 2 * n
    for voice in va.ADDED:
        assert sorted(i for v, c, i in items if v == voice and not c) == sorted(va.added_indices(n, share, seed))
        assert sum(1 for v, c, _ in items if v == voice and c) == k
    pos = {it: p for p, it in enumerate(items)}
    assert {c for _, c, _ in items} == {"", "full"}  # clean, and the one channel of these rows
    assert all(pos[(v, "", i)] < pos[(v, c, i)] for v, c, i in items if c)
    # the first rows wait for no Kokoro or Piper audio
    first = va.groups_of(va.ROWS[2], groups, n, share, seed)  # hibari, clean
    assert {groups[g][0] for g in first} == {"base", "hibari"} and not any(groups[g][1] for g in first)
    # the "all" row waits only for the Kokoro clips it uses, not for the Kokoro row's others
    all_row = va.groups_of(va.ROWS[4], groups, n, share, seed)
    kokoro_used = {i for g in all_row for i in groups[g][2] if groups[g][0] == "kokoro"}
    assert len(kokoro_used) == 3


def test_channel_draw_is_per_clip_and_seeded(va):
    sentences = ["One sentence here.", "Another one there."]
    draws = [va.channel_draw(i, 0, sentences) for i in range(60)]
    assert draws == [va.channel_draw(i, 0, sentences) for i in range(60)]
    assert draws != [va.channel_draw(i, 1, sentences) for i in range(60)]
    steps = [set(ch or {}) for ch, _, _ in draws]
    # every kind of step occurs at these probabilities, and babble talkers are today's voices only
    assert set().union(*steps) >= {"speed", "pitch", "silence", "room", "babble", "telephone", "codec", "level"}
    assert all(t["backend"] in va.BABBLE_BACKENDS for ch, _, _ in draws if ch and "babble" in ch for t in ch["babble"]["talkers"])
    assert any(snr is not None for _, snr, _ in draws) and any(snr is None for _, snr, _ in draws)


def test_channel_audio_is_made_once(va, tmp_path, monkeypatch):
    from sltalign.audio import write_audio

    args = argparse.Namespace(out=tmp_path, seed=0, workers=1)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "train.jsonl").write_text(json.dumps({"transcript": "A short sentence."}) + "\n")
    src = va.clip_path(tmp_path, "hibari", "", 0)
    src.parent.mkdir(parents=True)
    t = np.arange(16000) / 16000
    write_audio(src, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    src.with_suffix(".json").write_text(
        json.dumps({"id": "train-000000", "backend": "hibari", "voice": "heart", "duration": 1.0})
    )
    monkeypatch.setattr(
        va, "channel_draw", lambda i, seed, s, name="full": ({"telephone": {"codec": "mulaw"}, "level": {"db": -6.0}}, 20.0, 1.0)
    )
    va.put_through_channel(args, "hibari", (0,))
    dst = va.clip_path(tmp_path, "hibari", "full", 0)
    assert va.is_done(dst)
    rec = json.loads(dst.with_suffix(".json").read_text())
    assert rec["backend"] == "hibari" and rec["channel"]["telephone"] == {"codec": "mulaw"} and rec["snr_db"] == 20.0
    mtime = dst.stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(va, "_channel_one", lambda job: calls.append(job))
    va.put_through_channel(args, "hibari", (0,))  # a rerun: nothing to do
    assert calls == [] and dst.stat().st_mtime_ns == mtime


def test_demo_rows_share_audio_and_keep_the_light_channel_apart(va, tmp_path):
    n, share, seed = 50, 0.25, 0
    rows = {r.name: r for r in va.DEMO_ROWS}
    demo, light, more = rows["demo"], rows["demo_light"], rows["demo_hibari40"]
    src, src_more = (va.row_sources(r, n, share, seed) for r in (demo, more))
    assert src.count("hibari") == 10 and src_more.count("hibari") == 20  # the row's own share, not --share
    # the larger share holds the smaller one's clips: same sentence, same audio file
    assert all(b == "hibari" for a, b in zip(src, src_more) if a == "hibari")
    assert va.row_sources(light, n, share, seed) == src
    groups = va.needed_audio(list(va.DEMO_ROWS), n, share, seed)
    items = [(v, c, i) for v, c, ix in groups for i in ix]
    assert len(items) == len(set(items)) and {c for _, c, _ in items} == {"", "light", "pitch"}
    assert sum(1 for v, c, _ in items if v == "hibari" and not c) == 20  # 10 made for demo, 10 more for 40%
    # the light channel has its own folder and draw: never the full channel's audio
    assert va.clip_path(tmp_path, "hibari", "light", 3) != va.clip_path(tmp_path, "hibari", "full", 3)
    assert va.clip_path(tmp_path, "base", "full", 3).parent.parts[-4] == "channel"  # the first rows' folder kept
    sentences = [f"sentence {k}" for k in range(10)]
    full = [va.channel_draw(i, 0, sentences) for i in range(40)]
    lite = [va.channel_draw(i, 0, sentences, "light") for i in range(40)]
    assert lite == [va.channel_draw(i, 0, sentences, "light") for i in range(40)]  # seeded
    steps = {k for ch, _, _ in lite if ch for k in ch}
    assert steps and not steps & {"pitch", "babble", "codec"}  # the light channel leaves those out
    assert any(k in {"pitch", "babble", "codec"} for ch, _, _ in full if ch for k in ch)
    # the pitch row: the light channel's steps plus pitch shift, on the demo row's voices
    assert va.row_sources(rows["demo_pitch"], n, share, seed) == src
    pitched = [va.channel_draw(i, 0, sentences, "pitch") for i in range(40)]
    steps = {k for ch, _, _ in pitched if ch for k in ch}
    assert "pitch" in steps and not steps & {"babble", "codec"}


def test_another_training_seed_trains_the_same_audio_in_its_own_row(va, tmp_path):
    row = {r.name: r for r in va.ROWS}["hibari"]
    base = dict(out=tmp_path, n_train=40, share=0.25, seed=0, steps=10, warmup=2, eval_every=5, threads=1, tag="", set=[])
    first = argparse.Namespace(**base, train_seed=None)
    again = argparse.Namespace(**base, train_seed=3)
    assert va.row_dir(first, row) == tmp_path / "rows" / "hibari"
    assert va.row_dir(again, row) == tmp_path / "rows" / "hibari_t3"
    assert va.row_dir(argparse.Namespace(**base, train_seed=0), row) == va.row_dir(first, row)
    o1 = va.train_overrides(first, row, tmp_path / "t.jsonl", tmp_path / "real.jsonl", tmp_path / "rd.jsonl")
    o2 = va.train_overrides(again, row, tmp_path / "t.jsonl", tmp_path / "real.jsonl", tmp_path / "rd.jsonl")
    assert "seed=0" in o1 and "seed=3" in o2
    assert f"out={tmp_path / 'rows' / 'hibari_t3' / 'run'}" in o2
    # the audio is the same: only the seed and the output differ
    assert [o for o in o1 if not o.startswith(("seed=", "out="))] == [o for o in o2 if not o.startswith(("seed=", "out="))]
    assert f"data.watch.real_dev={tmp_path / 'rd.jsonl'}" in o1


def test_a_recipe_variant_trains_the_same_audio_in_rows_of_its_own(va, tmp_path):
    row = {r.name: r for r in va.DEMO_ROWS}["demo_light"]
    base = dict(out=tmp_path, n_train=40, share=0.25, seed=0, steps=10, warmup=2, eval_every=5, threads=1)
    plain = argparse.Namespace(**base, train_seed=None, tag="", set=[])
    sa = ["augment.time_mask_ratio=0.1", "augment.channel_masks=2"]
    variant = argparse.Namespace(**base, train_seed=None, tag="sa", set=sa)
    variant_t1 = argparse.Namespace(**base, train_seed=1, tag="sa", set=sa)
    assert va.row_dir(variant, row) == tmp_path / "rows" / "demo_light_sa"
    assert va.row_dir(variant_t1, row) == tmp_path / "rows" / "demo_light_sa_t1"
    o0 = va.train_overrides(plain, row, tmp_path / "t.jsonl", tmp_path / "real.jsonl")
    o1 = va.train_overrides(variant, row, tmp_path / "t.jsonl", tmp_path / "real.jsonl")
    assert o1[-2:] == sa  # last, so that they win over the bench's own settings
    assert [o for o in o1 if not o.startswith("out=")][: len(o0) - 1] == [o for o in o0 if not o.startswith("out=")]
    # a result directory belongs to the longest row name it starts with
    assert va.base_row("demo_light_sa_t1") == "demo_light" and va.base_row("demo_t1") == "demo"
    assert va.base_row("hibari_ch") == "hibari_ch"
    # a variant without a tag would write into the recipe's own rows: refused
    with pytest.raises(SystemExit, match="--tag"):
        va.main(["--out", str(tmp_path), "--set", "augment.channel_masks=2"])

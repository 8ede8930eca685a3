"""LengthBucketSampler, CachedSpeechDataset and collate."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sltalign.data.batching import CachedSpeechDataset, LengthBucketSampler, collate
from sltalign.data.cache import EncoderCache
from sltalign.data.manifest import Utterance


def lengths(n: int = 500, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(10, 1000, size=n)


def epoch_batches(sampler: LengthBucketSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("shuffle", [True, False])
def test_every_index_once_per_epoch_and_caps_hold(shuffle):
    lens = lengths()
    lens[7] = 5000  # longer than max_frames alone: its own batch
    s = LengthBucketSampler(lens, max_frames=4000, batch_size=16, shuffle=shuffle, seed=3)
    for epoch in range(3):
        batches = epoch_batches(s, epoch)
        assert len(batches) == len(s)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(lens)))
        for b in batches:
            assert 1 <= len(b) <= 16
            assert len(b) * lens[b].max() <= 4000 or len(b) == 1
            assert all(isinstance(i, int) for i in b)
        assert [7] in batches


def test_deterministic_per_seed_and_different_per_epoch():
    lens = lengths()
    a = LengthBucketSampler(lens, max_frames=6000, batch_size=None, shuffle=True, seed=1)
    b = LengthBucketSampler(lens, max_frames=6000, batch_size=None, shuffle=True, seed=1)
    c = LengthBucketSampler(lens, max_frames=6000, batch_size=None, shuffle=True, seed=2)
    assert epoch_batches(a, 0) == epoch_batches(b, 0)
    assert epoch_batches(a, 4) == epoch_batches(b, 4)
    assert epoch_batches(a, 0) != epoch_batches(c, 0)
    e0, e1 = epoch_batches(a, 0), epoch_batches(a, 1)
    assert e0 != e1
    # not only the order: jitter changes which utterances share a batch
    assert {tuple(sorted(x)) for x in e0} != {tuple(sorted(x)) for x in e1}
    assert epoch_batches(a, 0) == e0  # going back to an epoch repeats it (resume)


def test_no_shuffle_is_sorted_and_stable():
    lens = lengths(100)
    s = LengthBucketSampler(lens, max_frames=None, batch_size=8, shuffle=False, seed=0)
    e0 = epoch_batches(s, 0)
    assert e0 == epoch_batches(s, 5)
    flat = [i for b in e0 for i in b]
    assert list(lens[flat]) == sorted(lens)
    assert [len(b) for b in e0] == [8] * 12 + [4]


def test_length_grouping_cuts_padding():
    lens = lengths(2000)
    s = LengthBucketSampler(lens, max_frames=None, batch_size=32, shuffle=True, seed=0)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(lens))
    random_batches = [perm[i : i + 32] for i in range(0, len(perm), 32)]
    random_eff = sum(lens[b].sum() for b in random_batches) / sum(lens[b].max() * len(b) for b in random_batches)
    assert s.padding_efficiency() > 0.9 > random_eff


def test_drop_last_drops_only_the_leftover():
    lens = np.full(50, 100)
    s = LengthBucketSampler(lens, max_frames=None, batch_size=8, shuffle=True, seed=0, drop_last=True)
    batches = list(s)
    assert len(batches) == 6 and all(len(b) == 8 for b in batches)
    assert len({i for b in batches for i in b}) == 48


def test_bad_sampler_arguments():
    with pytest.raises(ValueError, match="max_frames, batch_size or both"):
        LengthBucketSampler([1, 2], max_frames=None, batch_size=None, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="negative"):
        LengthBucketSampler([1, -2], max_frames=10, batch_size=None, shuffle=False, seed=0)


def test_accelerate_shards_cover_the_epoch_and_follow_set_epoch():
    from accelerate.data_loader import BatchSamplerShard

    lens = lengths(101)
    s = LengthBucketSampler(lens, max_frames=3000, batch_size=None, shuffle=True, seed=0)
    s.set_epoch(2)
    shards = [list(BatchSamplerShard(s, num_processes=2, process_index=r)) for r in range(2)]
    assert len(shards[0]) == len(shards[1])  # even_batches: both processes step the same number of times
    seen = {i for shard in shards for b in shard for i in b}
    assert seen == set(range(101))
    assert shards[0][0] == epoch_batches(s, 2)[0] and shards[1][0] == epoch_batches(s, 2)[1]


def test_accelerate_multi_process_loader_reaches_set_epoch():
    # In a multi-process run accelerate wraps the sampler in BatchSamplerShard (which has no set_epoch)
    # and advances epochs through .batch_sampler.sampler.set_epoch: the `sampler` property must get it.
    from accelerate.data_loader import BatchSamplerShard, DataLoaderShard

    lens = lengths(60)
    s = LengthBucketSampler(lens, max_frames=2000, batch_size=None, shuffle=True, seed=0)
    loader = DataLoaderShard(
        list(range(60)), batch_sampler=BatchSamplerShard(s, num_processes=2, process_index=1), collate_fn=list
    )
    runs = [list(loader) for _ in range(2)]
    ref = LengthBucketSampler(lens, max_frames=2000, batch_size=None, shuffle=True, seed=0)
    assert runs[0][0] == epoch_batches(ref, 0)[1] and runs[1][0] == epoch_batches(ref, 1)[1]


# ---------------------------------------------------------------------------------------------
# dataset + collate on a real EncoderCache


class CountingTokenizer:
    def __init__(self, offset: int) -> None:
        self.calls = 0
        self.offset = offset

    def __call__(self, texts: list[str]) -> list[list[int]]:
        self.calls += 1
        return [[self.offset + len(w) for w in t.split()] + [0] for t in texts]


@pytest.fixture
def cached(tmp_path):
    rng = np.random.default_rng(0)
    cache = EncoderCache(tmp_path / "cache", encoder_fingerprint="fake", mode="trim")
    utts = []
    for i in range(9):
        path = tmp_path / f"{i}.wav"
        path.write_bytes(b"x" * (i + 1))  # the cache keys on path/size/mtime, never reads the audio here
        u = Utterance(
            id=f"u{i}",
            audio=str(path),
            offset=0.0,
            duration=0.5 + i,
            transcript=None if i == 4 else "a bb ccc " * (i % 3),
            translation="um dois " * (1 + i % 4),
            translation_source="human",
        )
        cache.put(cache.key_for(u), rng.normal(size=(5 + 3 * i, 6)).astype(np.float32), utt_id=u.id)
        utts.append(u)
    return cache, utts


def test_dataset_tokenises_once_and_yields_records(cached):
    cache, utts = cached
    tgt, src = CountingTokenizer(100), CountingTokenizer(200)
    ds = CachedSpeechDataset(cache, utts, tgt, src)
    ref = CountingTokenizer(100)
    assert ds.lengths == [5 + 3 * i for i in range(9)]
    for _ in range(2):
        for i in range(len(ds)):
            rec = ds[i]
            assert rec["id"] == f"u{i}" and rec["states"].dtype == torch.float32
            assert rec["states"].shape == (5 + 3 * i, 6)
            np.testing.assert_array_equal(rec["states"].numpy(), cache.get(utts[i]))
            assert rec["target_ids"] == ref([utts[i].translation])[0]
            assert rec["duration"] == pytest.approx(0.5 + i)
    assert ds[4]["source_ids"] == []  # no transcript
    assert ds[3]["source_ids"] == [0]  # empty transcript: just EOS from this tokenizer
    assert ds[1]["source_ids"] == [201, 202, 203, 0]
    assert src.calls == 1 and tgt.calls == 1  # once at construction, never per item


def test_dataset_errors_name_the_utterances(cached, tmp_path):
    cache, utts = cached
    path = tmp_path / "new.wav"
    path.write_bytes(b"y")
    stray = Utterance(id="stray", audio=str(path), duration=1.0, translation="x")
    with pytest.raises(ValueError, match="1 of 10 utterances are not in the encoder cache.*stray"):
        CachedSpeechDataset(cache, utts + [stray], CountingTokenizer(0), None)
    untranslated = [replace(u, translation=None, translation_source=None) if u.id == "u2" else u for u in utts]
    with pytest.raises(ValueError, match="'translation'.*u2"):
        CachedSpeechDataset(cache, untranslated, CountingTokenizer(0), None)
    ds = CachedSpeechDataset(cache, untranslated, None, None)  # inference: no targets needed
    assert ds[2]["target_ids"] == [] and ds[2]["source_ids"] == []


def test_collate_shapes_masks_and_padding():
    items = [
        {"id": "a", "states": torch.ones(3, 4), "target_ids": [5, 1, 0], "source_ids": [], "duration": 1.0},
        {"id": "b", "states": torch.full((5, 4), 2.0), "target_ids": [1], "source_ids": [7, 8], "duration": 2.0},
    ]
    b = collate(items, pad_id=1, source_pad_id=9)
    assert b["states"].shape == (2, 5, 4) and b["states"].dtype == torch.float32
    assert b["states_mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert torch.all(b["states"][0, 3:] == 0) and torch.all(b["states"][1] == 2)
    assert b["targets"].tolist() == [[5, 1, 0], [1, 1, 1]]
    # a real token equal to pad_id stays real: masks come from lengths
    assert b["target_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert b["sources"].tolist() == [[9, 9], [7, 8]] and b["source_mask"].tolist() == [[False, False], [True, True]]
    assert b["ids"] == ["a", "b"] and b["durations"].tolist() == [1.0, 2.0]
    empty = collate([dict(items[0], source_ids=[])], pad_id=0)
    assert empty["sources"].shape == (1, 0) and empty["source_mask"].shape == (1, 0)
    with pytest.raises(ValueError, match="one D_s"):
        collate([items[0], dict(items[1], states=torch.zeros(2, 3))], pad_id=0)


@pytest.mark.parametrize("workers", [0, 1])
def test_dataloader_end_to_end(cached, workers):
    cache, utts = cached
    ds = CachedSpeechDataset(cache, utts, CountingTokenizer(100), CountingTokenizer(200))
    sampler = LengthBucketSampler(ds.lengths, max_frames=60, batch_size=None, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=partial(collate, pad_id=1), num_workers=workers)
    seen = []
    for batch in loader:
        B, T = batch["states_mask"].shape
        assert B * T <= 60 or B == 1
        assert batch["states"].shape == (B, T, 6)
        for j, uid in enumerate(batch["ids"]):
            n = int(batch["states_mask"][j].sum())
            np.testing.assert_array_equal(batch["states"][j, :n].numpy(), cache.get(uid))
        seen += batch["ids"]
    assert sorted(seen) == sorted(u.id for u in utts)


def test_accelerate_prepared_loader_advances_epochs(cached):
    from accelerate import Accelerator

    cache, utts = cached
    ds = CachedSpeechDataset(cache, utts, CountingTokenizer(100), None)
    sampler = LengthBucketSampler(ds.lengths, max_frames=None, batch_size=2, shuffle=True, seed=0)
    loader = Accelerator(cpu=True).prepare(DataLoader(ds, batch_sampler=sampler, collate_fn=partial(collate, pad_id=1)))
    runs = [[b["ids"] for b in loader] for _ in range(2)]
    ref = LengthBucketSampler(ds.lengths, max_frames=None, batch_size=2, shuffle=True, seed=0)
    expect = [[[utts[i].id for i in b] for b in epoch_batches(ref, e)] for e in range(2)]
    assert runs == expect and runs[0] != runs[1]

"""EncoderCache: round trips, crash recovery, keys, incremental build, memory mapping."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sltalign.data.cache import EncoderCache, cache_key, dequantize_int8, quantize_int8
from sltalign.data.manifest import Utterance

SR = 16000
HOP = 320  # samples per frame: 50 frames per second like Whisper


class FakeEncoder:
    """Deterministic, batch-independent stand-in for a SpeechEncoder: per 20 ms frame, a fixed random
    projection of (mean, std, max, min) of the samples. Padding positions hold 99 so storing them shows."""

    mode = "trim"
    dim = 8
    sample_rate = SR

    def __init__(self, fp: str = "fake-v1") -> None:
        self._fp = fp
        self.calls = 0
        self.clips = 0
        self.proj = np.random.default_rng(0).normal(size=(4, self.dim)).astype(np.float32)

    def fingerprint(self) -> str:
        return self._fp

    def one(self, w: np.ndarray) -> np.ndarray:
        # numpy, not torch: tiny torch ops stall on thread contention when the machine is busy
        t = max(1, len(w) // HOP)
        x = np.pad(np.asarray(w, np.float32), (0, max(0, t * HOP - len(w))))[: t * HOP].reshape(t, HOP)
        feats = np.stack([x.mean(1), x.std(1), x.max(1), x.min(1)], axis=1) * 3.0
        return (feats @ self.proj).astype(np.float32)  # (T_s, D_s)

    def encode(self, waveforms):
        self.calls += 1
        self.clips += len(waveforms)
        outs = [torch.from_numpy(self.one(np.asarray(w))) for w in waveforms]
        width = max(o.shape[0] for o in outs)
        states = torch.full((len(outs), width, self.dim), 99.0)
        mask = torch.zeros(len(outs), width, dtype=torch.bool)
        for i, o in enumerate(outs):
            states[i, : o.shape[0]] = o
            mask[i, : o.shape[0]] = True
        return states, mask


def write_wavs(root: Path, n: int, seed: int = 0) -> list[Utterance]:
    rng = np.random.default_rng(seed)
    utts = []
    for i in range(n):
        dur = float(rng.uniform(0.2, 1.5))
        path = root / f"u{i:03d}.wav"
        sf.write(path, (rng.normal(size=int(dur * SR)) * 0.1).astype(np.float32), SR, subtype="FLOAT")
        utts.append(Utterance(id=f"u{i:03d}", audio=str(path), duration=dur))
    return utts


def expected(enc: FakeEncoder, u: Utterance) -> np.ndarray:
    w, sr = sf.read(u.audio, dtype="float32")
    start = round(u.offset * sr)
    w = w[start : start + round(u.duration * sr)]
    return enc.one(w)


def open_cache(root: Path, enc: FakeEncoder | None = None, **kw) -> EncoderCache:
    enc = enc or FakeEncoder()
    return EncoderCache(root, encoder_fingerprint=enc.fingerprint(), mode=enc.mode, **kw)


def test_fp16_round_trip_and_reopen(tmp_path):
    rng = np.random.default_rng(1)
    cache = open_cache(tmp_path / "c")
    arrays = {f"{i:064x}": rng.normal(size=(int(rng.integers(1, 40)), 8)).astype(np.float32) * 5 for i in range(6)}
    for k, a in arrays.items():
        cache.put(k, a)
    for reader in (cache, open_cache(tmp_path / "c")):  # the writer, and a fresh open of the directory
        assert len(reader) == 6 and reader.dim == 8
        for k, a in arrays.items():
            got = reader.get(k)
            assert got.dtype == np.float32 and got.shape == a.shape
            np.testing.assert_array_equal(got, a.astype(np.float16).astype(np.float32))
    st = cache.stats()
    assert st["frames"] == sum(a.shape[0] for a in arrays.values())
    assert st["bytes_per_frame"] == 16
    assert st["bytes"] >= st["frames"] * 16


def test_reads_are_memory_mapped(tmp_path):
    cache = open_cache(tmp_path / "c")
    a = np.arange(30 * 8, dtype=np.float32).reshape(30, 8) / 7
    cache.put("a" * 64, a)
    cache.put("b" * 64, a + 1)
    rows, scale = open_cache(tmp_path / "c").raw("b" * 64)
    assert isinstance(rows, np.memmap) and rows.dtype == np.float16 and rows.shape == (30, 8)
    assert scale is None
    assert rows.offset == 0 and rows.base is not None  # a view into the shard map, not a loaded copy
    got = cache.get("b" * 64)
    assert not isinstance(got, np.memmap)  # get() hands out a private float32 array
    got[:] = 0  # ...which must not write through to disk
    np.testing.assert_array_equal(cache.get("b" * 64), (a + 1).astype(np.float16).astype(np.float32))


def test_int8_within_tolerance_and_half_the_bytes(tmp_path):
    rng = np.random.default_rng(2)
    a = rng.normal(size=(50, 64)).astype(np.float32) * rng.uniform(0.1, 20, size=(50, 1)).astype(np.float32)
    a[3] = 0.0  # an all-zero row must survive (scale 0)
    c8 = open_cache(tmp_path / "i8", dtype="int8")
    c8.put("c" * 64, a)
    rows, scale = open_cache(tmp_path / "i8", dtype="int8").raw("c" * 64)
    assert rows.dtype == np.int8 and isinstance(scale, np.memmap) and scale.shape == (50,)
    got = open_cache(tmp_path / "i8", dtype="int8").get("c" * 64)
    absmax = np.abs(a).max(axis=1, keepdims=True)
    assert np.all(np.abs(got - a) <= absmax / 254 * (1 + 1e-5) + 1e-7)  # half a quantisation step per row
    np.testing.assert_array_equal(got[3], 0.0)
    rel = np.linalg.norm(got - a) / np.linalg.norm(a)
    assert rel < 0.01
    c16 = open_cache(tmp_path / "f16")
    c16.put("c" * 64, a)
    assert c8.stats()["bytes_per_frame"] == 64 + 4 and c16.stats()["bytes_per_frame"] == 128
    shard_bytes = lambda c: sum(p.stat().st_size for p in c.root.glob("shard-*"))
    assert shard_bytes(c8) / shard_bytes(c16) == pytest.approx((64 + 4) / 128)


def test_quantize_helpers_round_trip():
    x = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]], dtype=np.float32)
    q, s = quantize_int8(x)
    assert q.dtype == np.int8 and q[0, 1] == -127 and s[1] == 0
    np.testing.assert_allclose(dequantize_int8(q, s), x, atol=2.0 / 254)


def test_build_encodes_missing_only_and_matches_one_by_one(tmp_path):
    utts = write_wavs(tmp_path, 7)
    enc = FakeEncoder()
    cache = open_cache(tmp_path / "c", enc)
    report = cache.build(enc, utts, batch_size=3, progress=False)
    assert (report.encoded, report.cached) == (7, 0)
    assert enc.calls == 3 and enc.clips == 7
    assert report.audio_seconds == pytest.approx(sum(u.duration for u in utts), abs=1e-3)
    for u in utts:  # batched with padding == encoded alone, only valid frames kept, by utt / id / key
        want = expected(enc, u).astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(cache.get(u), want)
        np.testing.assert_array_equal(cache.get(u.id), want)
        np.testing.assert_array_equal(cache.get(cache.key_for(u)), want)
        assert cache.frames(u) == want.shape[0]
        assert u in cache and u.id in cache

    report = cache.build(enc, utts, batch_size=3, progress=False)
    assert (report.encoded, report.cached, enc.calls) == (0, 7, 3)
    (tmp_path / "more").mkdir()
    extra = write_wavs(tmp_path / "more", 1, seed=5)
    reopened = open_cache(tmp_path / "c", enc)
    report = reopened.build(enc, utts + extra, batch_size=3, progress=False)
    assert (report.encoded, report.cached, enc.calls) == (1, 7, 4)
    assert len(reopened) == 8


def test_build_dedupes_identical_segments_and_checks_encoder(tmp_path):
    (u,) = write_wavs(tmp_path, 1)
    twin = replace(u, id="twin")
    enc = FakeEncoder()
    cache = open_cache(tmp_path / "c", enc)
    assert cache.build(enc, [u, twin], batch_size=4, progress=False).encoded == 1
    with pytest.raises(ValueError, match="fingerprint"):
        cache.build(FakeEncoder("other"), [u], batch_size=4, progress=False)
    bf16 = FakeEncoder()
    bf16.cache_mode = f"{bf16.mode}+bf16"  # same weights computing in another precision: other states
    with pytest.raises(ValueError, match=r"mode 'trim\+bf16'"):
        cache.build(bf16, [u], batch_size=4, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        cache.build(enc, [u], batch_size=0, progress=False)


def test_key_changes_with_mtime_segment_and_encoder(tmp_path):
    (u,) = write_wavs(tmp_path, 1)
    enc = FakeEncoder()
    cache = open_cache(tmp_path / "c", enc)
    cache.build(enc, [u], batch_size=1, progress=False)
    k0 = cache.key_for(u)
    assert k0 == cache_key(u.audio, 0.0, u.duration, encoder_fingerprint="fake-v1", mode="trim")
    assert cache_key(u.audio, 0.1, u.duration, encoder_fingerprint="fake-v1", mode="trim") != k0
    assert cache_key(u.audio, 0.0, None, encoder_fingerprint="fake-v1", mode="trim") != k0
    assert cache_key(u.audio, 0.0, u.duration, encoder_fingerprint="fake-v1", mode="pad30") != k0

    st = os.stat(u.audio)
    os.utime(u.audio, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # "the file was rewritten"
    assert cache.key_for(u) != k0 and u not in cache
    assert cache.build(enc, [u], batch_size=1, progress=False).encoded == 1
    assert u in cache

    other = FakeEncoder("fake-v2")
    c2 = open_cache(tmp_path / "c", other)  # same directory, another encoder: nothing usable
    assert len(c2) == 0 and u not in c2 and u.id not in c2
    assert c2.build(other, [u], batch_size=1, progress=False).encoded == 1
    assert c2.stats()["entries_all"] == 3
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        cache_key(tmp_path / "missing.wav", encoder_fingerprint="x", mode="trim")


def test_crash_garbage_tail_and_torn_index_line(tmp_path):
    utts = write_wavs(tmp_path, 5)
    enc = FakeEncoder()
    cache = open_cache(tmp_path / "c", enc)
    cache.build(enc, utts[:4], batch_size=2, progress=False)
    before = {u.id: cache.get(u) for u in utts[:4]}
    shard = next((tmp_path / "c").glob("shard-*.f16"))
    index = tmp_path / "c" / "index.jsonl"
    good_shard, good_index = shard.stat().st_size, index.stat().st_size

    # a crash while writing utts[4]: its rows reached the shard, its index line only half way
    rows = expected(enc, utts[4]).astype(np.float16)
    with open(shard, "ab") as f:
        f.write(rows.tobytes() + b"\x13" * 7)
    line = json.dumps(
        {"k": cache.key_for(utts[4]), "id": utts[4].id, "s": 0, "o": 999, "n": len(rows), "fp": "fake-v1", "m": "trim"}
    )
    with open(index, "ab") as f:
        f.write(line[: len(line) // 2].encode())

    enc2 = FakeEncoder()
    reopened = open_cache(tmp_path / "c", enc2)
    assert shard.stat().st_size == good_shard and index.stat().st_size == good_index  # tails cut
    assert len(reopened) == 4 and utts[4] not in reopened
    for u in utts[:4]:
        np.testing.assert_array_equal(reopened.get(u), before[u.id])
    report = reopened.build(enc2, utts, batch_size=2, progress=False)
    assert (report.encoded, enc2.clips) == (1, 1)  # only the clip in flight is encoded again
    np.testing.assert_array_equal(reopened.get(utts[4]), expected(enc, utts[4]).astype(np.float16).astype(np.float32))
    assert index.read_bytes().endswith(b"\n")


def test_lost_rows_are_dropped_and_never_alias_new_rows(tmp_path):
    utts = write_wavs(tmp_path, 3)
    enc = FakeEncoder()
    cache = open_cache(tmp_path / "c", enc)
    cache.build(enc, utts, batch_size=1, progress=False)  # longest first: utts sorted by duration
    shard = next((tmp_path / "c").glob("shard-*.f16"))
    last = max(utts, key=lambda u: cache._entries[cache.key_for(u)].start)
    with open(shard, "rb+") as f:  # the shard lost its last clip's rows (e.g. copied while writing)
        f.truncate(shard.stat().st_size - 16 * 3)
    with pytest.warns(UserWarning, match="re-encoded"):
        reopened = open_cache(tmp_path / "c", enc)
    assert last not in reopened and len(reopened) == 2
    # a new, longer clip now fills the freed rows; the stale line for `last` must not point at them
    (tmp_path / "n").mkdir()
    (new,) = write_wavs(tmp_path / "n", 1, seed=9)
    reopened.build(enc, [new], batch_size=1, progress=False)
    again = open_cache(tmp_path / "c", enc)
    assert last not in again
    np.testing.assert_array_equal(again.get(new), expected(enc, new).astype(np.float16).astype(np.float32))
    assert again.build(enc, utts, batch_size=1, progress=False).encoded == 1
    for u in utts + [new]:
        np.testing.assert_array_equal(
            open_cache(tmp_path / "c", enc).get(u), expected(enc, u).astype(np.float16).astype(np.float32)
        )


def test_two_writers_share_a_directory(tmp_path):
    a = open_cache(tmp_path / "c")
    b = open_cache(tmp_path / "c")
    x, y = np.full((4, 8), 1.5, np.float32), np.full((6, 8), -2.5, np.float32)
    a.put("1" * 64, x)
    b.put("2" * 64, y)  # b sees a's rows under the lock and appends after them
    a.put("2" * 64, y + 100)  # already stored by b: kept, not duplicated
    np.testing.assert_array_equal(a.get("2" * 64), y)  # a picks up b's entry from the index
    np.testing.assert_array_equal(b.get("1" * 64), x)
    assert open_cache(tmp_path / "c").stats()["frames"] == 10


def test_shard_rollover_and_pickle(tmp_path):
    cache = open_cache(tmp_path / "c", shard_bytes=1000)
    rng = np.random.default_rng(3)
    arrays = [rng.normal(size=(20, 8)).astype(np.float32) for _ in range(10)]  # 320 B each
    for i, a in enumerate(arrays):
        cache.put(f"{i:064x}", a, utt_id=f"utt{i}")
    assert cache.stats()["shards"] >= 3
    assert all(p.stat().st_size <= 1000 for p in (tmp_path / "c").glob("shard-*"))
    cache.get("utt0")  # opens memory maps, which must not travel in the pickle
    clone = pickle.loads(pickle.dumps(cache))
    assert len(pickle.dumps(cache)) < 8000
    for i, a in enumerate(arrays):
        np.testing.assert_array_equal(clone.get(f"utt{i}"), a.astype(np.float16).astype(np.float32))


def test_audio_gone_falls_back_to_id_with_same_segment(tmp_path):
    (u,) = write_wavs(tmp_path, 1)
    enc = FakeEncoder()
    cache = open_cache(tmp_path / "c", enc)
    cache.build(enc, [u], batch_size=1, progress=False)
    want = cache.get(u)
    Path(u.audio).unlink()  # e.g. the cache was copied to a training machine without the audio
    reopened = open_cache(tmp_path / "c", enc)
    np.testing.assert_array_equal(reopened.get(u), want)
    shifted = replace(u, offset=0.5)
    assert shifted not in reopened


def test_bad_inputs_have_clear_errors(tmp_path):
    cache = open_cache(tmp_path / "c")
    cache.put("a" * 64, np.zeros((3, 8), np.float32))
    with pytest.raises(ValueError, match="D_s=8"):
        cache.put("b" * 64, np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        cache.put("b" * 64, np.full((3, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="float16 range"):
        cache.put("b" * 64, np.full((3, 8), 1e6, np.float32))
    with pytest.raises(ValueError, match=r"\(T_s, D_s\)"):
        cache.put("b" * 64, np.zeros(8, np.float32))
    with pytest.raises(KeyError, match="not in the encoder cache"):
        cache.get("nope")
    with pytest.raises(ValueError, match="dtype"):
        open_cache(tmp_path / "c", dtype="int8")
    with pytest.raises(ValueError, match="dtype must be one of"):
        open_cache(tmp_path / "d", dtype="bfloat16")
    (tmp_path / "c" / "index.jsonl").write_bytes(b'{"k": "x"}\n')
    with pytest.raises(ValueError, match="index.jsonl: corrupt line"):
        open_cache(tmp_path / "c")

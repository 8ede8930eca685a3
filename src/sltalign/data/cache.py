"""The encoder-output cache: the frozen speech encoder runs once per utterance, every epoch reads disk.

Training only moves the connector, so the speech encoder's states for an utterance never change while
the encoder, the audio file and the segment stay the same. ``EncoderCache`` stores those states once,
as fp16 (or row-scaled int8) rows in a few large append-only shard files, and reads them back through
``np.memmap`` so an epoch touches only the pages it needs and tens of thousands of clips never become
tens of thousands of files.

Layout of a cache directory::

    meta.json              {"format": 1, "dtype": "float16" | "int8", "dim": D_s}
    index.jsonl            one JSON object per stored utterance, appended, last line for a key wins
    shard-00000.f16        rows of D_s float16 values, utterances back to back  (dtype float16)
    shard-00000.i8         rows of D_s int8 values                               (dtype int8)
    shard-00000.scale.f32  one float32 scale per int8 row (row-wise absmax / 127)
    .lock                  advisory lock taken for each append (several processes may share a cache)

Crash safety: for each batch the rows are written and fsync'ed first, then the index lines, then the
index is fsync'ed. An index line therefore never points at bytes that are not on disk. A crash loses at
most the batch in flight: its rows are garbage past the last indexed row, and a torn index line has no
final newline. Opening the cache (and every append) cuts both off; the lost clips count as missing and
``build`` encodes them again.

Keys: sha256 of (encoder fingerprint, encoder mode (with its precision unless fp32), the audio file's absolute path, size and mtime_ns,
offset, duration). A re-encoded file, a changed segment or another encoder gives another key, so stale
states are never served; the old rows stay on disk until the directory is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sltalign.audio import load_audio
from sltalign.progress import progress_bar

try:  # POSIX advisory locks; elsewhere a single writer per cache is the user's job
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FORMAT_VERSION = 1
DTYPES = ("float16", "int8")
_SUFFIX = {"float16": ".f16", "int8": ".i8"}
#: a new shard starts when the current one would pass this size (keeps files copyable, memmaps small)
DEFAULT_SHARD_BYTES = 1 << 30
_FP16_MAX = float(np.finfo(np.float16).max)


class EncodableUtterance(Protocol):
    """What the cache needs from a manifest entry (``sltalign.data.manifest.Utterance`` fits)."""

    id: str
    audio: str
    offset: float
    duration: float | None


class CacheEncoder(Protocol):
    """What ``EncoderCache.build`` needs from a speech encoder (``SpeechEncoder`` fits)."""

    mode: str
    dim: int
    sample_rate: int

    def fingerprint(self) -> str: ...

    def encode(self, waveforms: Sequence[np.ndarray]) -> tuple[Any, Any]: ...


@dataclass(frozen=True)
class CacheEntry:
    """Where one utterance's states live: rows [start, start + frames) of shard ``shard``."""

    key: str
    utt_id: str | None
    shard: int
    start: int
    frames: int
    fingerprint: str
    mode: str
    offset: float
    duration: float | None


@dataclass(frozen=True)
class BuildReport:
    """What one ``EncoderCache.build`` call did."""

    encoded: int  # clips encoded now
    cached: int  # clips found in the cache already
    audio_seconds: float  # audio encoded now
    wall_seconds: float

    @property
    def clips_per_second(self) -> float:
        return self.encoded / self.wall_seconds if self.wall_seconds > 0 else math.inf

    @property
    def realtime_factor(self) -> float:
        """Wall time / audio time of the encoding done (lower is faster)."""
        return self.wall_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0


def cache_key(
    audio: str | os.PathLike[str],
    offset: float = 0.0,
    duration: float | None = None,
    *,
    encoder_fingerprint: str,
    mode: str,
) -> str:
    """The cache key of one audio segment under one encoder (64 hex chars).

    Uses the file's absolute path, size and modification time (ns) rather than its bytes: hashing every
    audio file would cost as much I/O as decoding it, while any rewrite of the file changes size or mtime.
    """
    path = Path(audio).expanduser().resolve()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"audio file {path} does not exist (needed for its encoder-cache key)") from None
    fields = [encoder_fingerprint, mode, str(path), st.st_size, st.st_mtime_ns, _num(offset), _num(duration)]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def _num(x: float | None) -> float | None:
    # 1e-6 s rounding: the same segment read from JSON twice must give the same key
    return None if x is None else round(float(x), 6)


def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise absmax int8: (T, D) float -> (q (T, D) int8, scale (T,) float32) with x ~= q * scale."""
    x = np.asarray(x, dtype=np.float32)
    absmax = np.abs(x).max(axis=1) if x.shape[0] else np.zeros(0, np.float32)
    scale = (absmax / 127.0).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)  # an all-zero row stays zero
    q = np.clip(np.rint(x / safe[:, None]), -127, 127).astype(np.int8)
    return q, scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(T, D) int8, (T,) float32 -> (T, D) float32."""
    return q.astype(np.float32) * np.asarray(scale, dtype=np.float32)[:, None]


class EncoderCache:
    """Speech-encoder states for many utterances, on disk, memory-mapped for reading.

    One cache object serves one encoder (``encoder_fingerprint`` and ``mode``); a directory may hold
    states of several encoders of the same width, told apart by their keys.

    >>> cache = EncoderCache(Path("cache/whisper-base"), encoder_fingerprint=enc.fingerprint(), mode=enc.cache_mode)
    >>> cache.build(enc, utterances, batch_size=16)          # encodes only what is missing
    >>> states = cache.get(utterances[0])                     # (T_s, D_s) float32
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        encoder_fingerprint: str,
        mode: str,
        dtype: str = "float16",
        shard_bytes: int = DEFAULT_SHARD_BYTES,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"EncoderCache dtype must be one of {DTYPES}, got {dtype!r}")
        if not encoder_fingerprint:
            raise ValueError("EncoderCache needs a non-empty encoder_fingerprint (SpeechEncoder.fingerprint())")
        self.root = Path(root)
        self.encoder_fingerprint = str(encoder_fingerprint)
        self.mode = str(mode)
        self.dtype = dtype
        self.shard_bytes = int(shard_bytes)
        self._suffix = _SUFFIX[dtype]
        self._itemsize = np.dtype(dtype).itemsize
        self.root.mkdir(parents=True, exist_ok=True)
        self._index_path = self.root / "index.jsonl"
        self._meta_path = self.root / "meta.json"
        self._entries: dict[str, CacheEntry] = {}  # every valid key in the directory
        self._by_id: dict[str, str] = {}  # utterance id -> newest key of *this* encoder
        self._covered: dict[int, int] = {}  # shard -> rows referenced by the index (kept incrementally:
        # recomputing it per appended batch would be O(entries) each time)
        self._index_pos = 0  # bytes of index.jsonl already parsed
        self._maps: dict[int, np.memmap] = {}
        self._scale_maps: dict[int, np.memmap] = {}
        self.dim: int | None = None
        with self._locked():
            self._init_meta()
            self._index_pos = 0
            self._load_index(truncate_torn_tail=True)
            self._truncate_uncovered()

    # ------------------------------------------------------------------------------------------
    # opening, recovery
    def _init_meta(self) -> None:
        if self._meta_path.exists():
            try:
                meta = json.loads(self._meta_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{self._meta_path}: not valid JSON ({e}); delete the cache directory to rebuild") from None
            if meta.get("format") != FORMAT_VERSION:
                raise ValueError(f"{self._meta_path}: cache format {meta.get('format')!r}, this sltalign reads {FORMAT_VERSION}")
            if meta.get("dtype") != self.dtype:
                raise ValueError(
                    f"{self._meta_path}: this cache stores {meta.get('dtype')!r} states but was opened with "
                    f"dtype={self.dtype!r}; open it with the same dtype or use another directory"
                )
            self.dim = meta.get("dim")
        else:
            self._write_meta()

    def _reread_dim(self) -> None:
        # another process may have stored the first states (and so fixed D_s) after we opened
        if self.dim is None and self._meta_path.exists():
            with contextlib.suppress(json.JSONDecodeError, OSError):
                self.dim = json.loads(self._meta_path.read_text()).get("dim")

    def _write_meta(self) -> None:
        tmp = self._meta_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"format": FORMAT_VERSION, "dtype": self.dtype, "dim": self.dim}))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self._meta_path)  # atomic: readers see the old or the new file, never half
        _fsync_dir(self.root)

    def _load_index(self, *, truncate_torn_tail: bool) -> None:
        """Parse index lines past ``_index_pos``. Only newline-terminated lines count: a line without its
        newline is a write in flight (another process) or torn by a crash (cut off when we hold the lock)."""
        if not self._index_path.exists():
            return
        with open(self._index_path, "rb") as f:
            f.seek(self._index_pos)
            data = f.read()
        end = data.rfind(b"\n") + 1  # 0 when no complete line
        if truncate_torn_tail and end < len(data):
            with open(self._index_path, "rb+") as f:
                f.truncate(self._index_pos + end)
                os.fsync(f.fileno())
        for n, line in enumerate(data[:end].splitlines()):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if rec.get("drop"):  # tombstone: the rows of this key were lost (see _truncate_uncovered)
                    if rec["k"] in self._entries:
                        self._drop_entry(rec["k"])
                    continue
                entry = CacheEntry(
                    key=rec["k"],
                    utt_id=rec.get("id"),
                    shard=int(rec["s"]),
                    start=int(rec["o"]),
                    frames=int(rec["n"]),
                    fingerprint=rec["fp"],
                    mode=rec["m"],
                    offset=rec.get("off", 0.0),
                    duration=rec.get("dur"),
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(
                    f"{self._index_path}: corrupt line {n + 1} after byte {self._index_pos}: "
                    f"{e}; delete the cache directory to rebuild"
                ) from None
            self._add_entry(entry)
        self._index_pos += end
        if end:
            self._reread_dim()

    def _add_entry(self, entry: CacheEntry) -> None:
        self._entries[entry.key] = entry
        self._covered[entry.shard] = max(self._covered.get(entry.shard, 0), entry.start + entry.frames)
        if entry.utt_id is not None and entry.fingerprint == self.encoder_fingerprint and entry.mode == self.mode:
            self._by_id[entry.utt_id] = entry.key

    def _shard_path(self, shard: int) -> Path:
        return self.root / f"shard-{shard:05d}{self._suffix}"

    def _scale_path(self, shard: int) -> Path:
        return self.root / f"shard-{shard:05d}.scale.f32"

    def _existing_shards(self) -> list[int]:
        out = []
        for p in self.root.glob(f"shard-*{self._suffix}"):
            try:
                out.append(int(p.name[len("shard-") : -len(self._suffix)]))
            except ValueError:
                continue
        return sorted(out)

    def _truncate_uncovered(self) -> None:
        """Cut shard bytes no index line covers (a crashed writer's rows); drop index lines whose rows are
        missing (a shard truncated or deleted by hand) so those clips count as missing. Holds the lock."""
        covered = self._covered
        row_bytes = (self.dim or 0) * self._itemsize
        for shard in sorted(set(self._existing_shards()) | set(covered)):
            path, spath = self._shard_path(shard), self._scale_path(shard)
            rows = covered.get(shard, 0)
            size = path.stat().st_size if path.exists() else 0
            have_rows = size // row_bytes if row_bytes else 0
            if self.dtype == "int8":
                have_rows = min(have_rows, (spath.stat().st_size // 4) if spath.exists() else 0)
            if have_rows < rows:
                bad = [k for k, e in self._entries.items() if e.shard == shard and e.start + e.frames > have_rows]
                warnings.warn(
                    f"encoder cache {self.root}: {path.name} holds {have_rows} rows but the index needs {rows}; "
                    f"{len(bad)} entries dropped and will be re-encoded",
                    stacklevel=3,
                )
                # tombstones first: otherwise, once new rows fill the shard again, these stale lines
                # would point at them on the next open
                tomb = "".join(json.dumps({"k": k, "drop": 1}) + "\n" for k in bad)
                with open(self._index_path, "ab") as fi:
                    fi.write(tomb.encode())
                    fi.flush()
                    os.fsync(fi.fileno())
                self._index_pos += len(tomb.encode())
                for k in bad:
                    self._drop_entry(k)
                rows = covered.get(shard, 0)
            self._truncate_file(path, rows * row_bytes)
            if self.dtype == "int8":
                self._truncate_file(spath, rows * 4)

    def _drop_entry(self, key: str) -> None:
        e = self._entries.pop(key)
        if e.utt_id is not None and self._by_id.get(e.utt_id) == key:
            del self._by_id[e.utt_id]
        self._covered[e.shard] = max(
            (x.start + x.frames for x in self._entries.values() if x.shard == e.shard), default=0
        )  # O(entries), but only on the rare loss of rows

    @staticmethod
    def _truncate_file(path: Path, nbytes: int) -> None:
        if path.exists() and path.stat().st_size > nbytes:
            with open(path, "rb+") as f:
                f.truncate(nbytes)
                os.fsync(f.fileno())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(self.root / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # ------------------------------------------------------------------------------------------
    # keys and lookup
    def key_for(self, utt: EncodableUtterance) -> str:
        """The key of an utterance under this cache's encoder (stats the audio file)."""
        return cache_key(
            utt.audio,
            getattr(utt, "offset", 0.0) or 0.0,
            getattr(utt, "duration", None),
            encoder_fingerprint=self.encoder_fingerprint,
            mode=self.mode,
        )

    def resolve(self, item: str | EncodableUtterance) -> str | None:
        """Key, utterance id or utterance -> the stored key, or None when not cached.

        An utterance whose audio file is present is looked up by its exact key (a changed file misses).
        When the audio is gone (a cache copied to a machine without the audio), it falls back to the
        newest entry of this encoder with the same id, offset and duration.
        """
        if isinstance(item, str):
            if item in self._entries:
                return item
            if item in self._by_id:
                return self._by_id[item]
            self._load_index(truncate_torn_tail=False)  # another process may have appended since
            return item if item in self._entries else self._by_id.get(item)
        if not hasattr(item, "audio") or not hasattr(item, "id"):
            raise TypeError(f"EncoderCache lookup takes a key, an utterance id or an utterance, got {type(item).__name__}")
        if Path(item.audio).expanduser().exists():
            key = self.key_for(item)
            if key not in self._entries:
                self._load_index(truncate_torn_tail=False)
            return key if key in self._entries else None
        key = self.resolve(str(item.id))
        if key is None:
            return None
        e = self._entries[key]
        same_segment = _num(e.offset) == _num(getattr(item, "offset", 0.0) or 0.0) and _num(e.duration) == _num(
            getattr(item, "duration", None)
        )
        return key if same_segment else None

    def _entry(self, item: str | EncodableUtterance) -> CacheEntry:
        key = self.resolve(item)
        if key is None:
            what = item if isinstance(item, str) else f"utterance {item.id!r} ({item.audio})"
            raise KeyError(f"{what} is not in the encoder cache at {self.root}; run EncoderCache.build() first")
        return self._entries[key]

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, str) and not (hasattr(item, "audio") and hasattr(item, "id")):
            return False
        try:
            return self.resolve(item) is not None  # type: ignore[arg-type]
        except FileNotFoundError:
            return False

    def __len__(self) -> int:
        """Number of entries stored for this cache's encoder (fingerprint and mode)."""
        return sum(1 for e in self._entries.values() if e.fingerprint == self.encoder_fingerprint and e.mode == self.mode)

    def keys(self) -> list[str]:
        """Keys of this encoder's entries."""
        return [k for k, e in self._entries.items() if e.fingerprint == self.encoder_fingerprint and e.mode == self.mode]

    def frames(self, item: str | EncodableUtterance) -> int:
        """T_s of a stored utterance, read from the index (no data access)."""
        return self._entry(item).frames

    # ------------------------------------------------------------------------------------------
    # reading
    def _map(self, shard: int, rows_needed: int) -> tuple[np.memmap, np.memmap | None]:
        m = self._maps.get(shard)
        if m is None or m.shape[0] < rows_needed:  # a memmap has a fixed length: remap after appends
            assert self.dim is not None
            rows = self._shard_path(shard).stat().st_size // (self.dim * self._itemsize)
            m = np.memmap(self._shard_path(shard), dtype=self.dtype, mode="r", shape=(rows, self.dim))
            self._maps[shard] = m
            if self.dtype == "int8":
                self._scale_maps[shard] = np.memmap(self._scale_path(shard), dtype=np.float32, mode="r", shape=(rows,))
        return m, self._scale_maps.get(shard)

    def raw(self, item: str | EncodableUtterance) -> tuple[np.memmap, np.memmap | None]:
        """The stored rows without conversion: (T_s, D_s) float16 or int8 memmap view, and for int8 the
        (T_s,) float32 row scales (None for float16). Nothing is read until the arrays are used."""
        e = self._entry(item)
        if e.frames == 0:
            empty = np.zeros((0, self.dim or 0), dtype=self.dtype)
            return empty, (np.zeros(0, np.float32) if self.dtype == "int8" else None)  # type: ignore[return-value]
        m, s = self._map(e.shard, e.start + e.frames)
        rows = m[e.start : e.start + e.frames]
        return rows, (s[e.start : e.start + e.frames] if s is not None else None)

    def get(self, item: str | EncodableUtterance) -> np.ndarray:
        """Key, utterance id or utterance -> states (T_s, D_s) float32 (a fresh array, safe to modify)."""
        rows, scale = self.raw(item)
        if scale is None:
            return np.asarray(rows, dtype=np.float32)
        return dequantize_int8(np.asarray(rows), np.asarray(scale))

    # ------------------------------------------------------------------------------------------
    # writing
    def put(
        self, key: str, states: np.ndarray, *, utt_id: str | None = None, offset: float = 0.0, duration: float | None = None
    ) -> None:
        """Store one utterance's states (T_s, D_s) under ``key`` (see ``cache_key``); durable on return."""
        self._append([(key, utt_id, offset, duration, states)])

    def _append(self, items: Sequence[tuple[str, str | None, float, float | None, np.ndarray]]) -> None:
        """Write rows, fsync them, then write and fsync their index lines: the crash-safe order."""
        arrays = []
        for key, utt_id, _, _, states in items:
            a = _as_numpy(states)
            if a.ndim != 2:
                raise ValueError(f"encoder cache: states for {utt_id or key} must be (T_s, D_s), got shape {a.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"encoder cache: states for {utt_id or key} contain NaN or inf")
            if self.dtype == "float16" and a.size and np.abs(a).max() > _FP16_MAX:
                raise ValueError(
                    f"encoder cache: states for {utt_id or key} exceed the float16 range (max |x| "
                    f"{np.abs(a).max():.3g}); use dtype='int8', whose scales are float32"
                )
            arrays.append(a)
        with self._locked():
            self._load_index(truncate_torn_tail=True)  # see what other processes appended meanwhile
            self._reread_dim()
            dim = arrays[0].shape[1] if arrays else None
            if self.dim is None and dim is not None:
                self.dim = int(dim)
                self._write_meta()
            for (key, utt_id, *_), a in zip(items, arrays):
                if a.shape[1] != self.dim:
                    raise ValueError(
                        f"encoder cache {self.root} stores D_s={self.dim} states; got D_s={a.shape[1]} for "
                        f"{utt_id or key}; use a separate cache directory per encoder width"
                    )
            todo = [(it, a) for it, a in zip(items, arrays) if it[0] not in self._entries]
            if not todo:
                return
            self._truncate_uncovered()  # drop a crashed writer's tail before appending after it
            covered = self._covered
            shards = sorted(set(self._existing_shards()) | set(covered))
            shard = shards[-1] if shards else 0
            row_bytes = self.dim * self._itemsize  # type: ignore[operator]
            start = covered.get(shard, 0)
            new_rows = sum(a.shape[0] for _, a in todo)
            if start and (start + new_rows) * row_bytes > self.shard_bytes:
                shard, start = shard + 1, 0
            lines = []
            new_file = not self._shard_path(shard).exists()
            with (
                open(self._shard_path(shard), "ab") as f,
                open(self._scale_path(shard), "ab") if self.dtype == "int8" else contextlib.nullcontext() as fs,
            ):
                for (key, utt_id, offset, duration, _), a in todo:
                    if self.dtype == "int8":
                        q, scale = quantize_int8(a)
                        f.write(np.ascontiguousarray(q).tobytes())
                        fs.write(scale.astype("<f4").tobytes())  # type: ignore[union-attr]
                    else:
                        f.write(np.ascontiguousarray(a, dtype="<f2").tobytes())
                    rec = {"k": key, "id": utt_id, "s": shard, "o": start, "n": int(a.shape[0]), "fp": self.encoder_fingerprint,
                           "m": self.mode, "off": _num(offset), "dur": _num(duration)}  # fmt: skip
                    lines.append(json.dumps(rec, separators=(",", ":")) + "\n")
                    start += int(a.shape[0])
                f.flush()
                os.fsync(f.fileno())
                if fs is not None:
                    fs.flush()
                    os.fsync(fs.fileno())
            new_file = new_file or not self._index_path.exists()
            with open(self._index_path, "ab") as fi:
                fi.write("".join(lines).encode())  # one write: a crash tears at most the tail
                fi.flush()
                os.fsync(fi.fileno())
            if new_file:
                _fsync_dir(self.root)  # a newly created file's directory entry must survive too
            self._load_index(truncate_torn_tail=False)

    # ------------------------------------------------------------------------------------------
    def build(
        self,
        encoder: CacheEncoder,
        utterances: Iterable[EncodableUtterance],
        *,
        batch_size: int = 8,
        progress: bool = True,
    ) -> BuildReport:
        """Encode every utterance not yet cached; return what was done.

        Utterances are sorted by duration (longest first, so an out-of-memory shows at once) and encoded
        ``batch_size`` at a time, which keeps padding small; only each clip's valid frames
        (``mask``) are stored. Audio for the next batch is read on a thread while the current one encodes.
        Identical segments (same key) are encoded once.
        """
        if batch_size < 1:
            raise ValueError(f"EncoderCache.build: batch_size must be >= 1, got {batch_size}")
        fp = encoder.fingerprint()
        mode = getattr(encoder, "cache_mode", getattr(encoder, "mode", self.mode))
        if fp != self.encoder_fingerprint or mode != self.mode:
            raise ValueError(
                f"EncoderCache.build: the cache at {self.root} was opened for encoder fingerprint "
                f"{self.encoder_fingerprint!r} mode {self.mode!r}, the encoder given has {fp!r} mode {mode!r}"
            )
        t0 = time.perf_counter()
        todo: dict[str, EncodableUtterance] = {}
        cached = 0
        for u in utterances:
            try:
                key = self.key_for(u)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"utterance {u.id!r}: {e}") from None
            if key in self._entries:
                cached += 1
            elif key not in todo:
                todo[key] = u
        if todo:
            self._load_index(truncate_torn_tail=False)  # a parallel builder may have done some already
            done = [k for k in todo if k in self._entries]
            for k in done:
                del todo[k]
            cached += len(done)
        order = sorted(todo.items(), key=lambda kv: -(kv[1].duration or 0.0))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        sr = int(getattr(encoder, "sample_rate", 16000))

        def load(batch: list[tuple[str, EncodableUtterance]]) -> list[np.ndarray]:
            return [
                load_audio(
                    u.audio, offset=getattr(u, "offset", 0.0) or 0.0, duration=getattr(u, "duration", None), sample_rate=sr
                )
                for _, u in batch
            ]

        audio_seconds = 0.0
        # a bar on a terminal, a line every 30 s in a log, nothing with TQDM_DISABLE (sltalign.progress)
        bar = progress_bar(total=len(order), unit="clip", desc="encoding", enabled=progress)
        with bar, ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(load, batches[0]) if batches else None
            for i, batch in enumerate(batches):
                waves = pending.result()  # type: ignore[union-attr]
                pending = pool.submit(load, batches[i + 1]) if i + 1 < len(batches) else None
                states, mask = _encode(encoder, waves)  # (B, T_s, D_s), (B, T_s)
                items = []
                for (key, u), s, m, w in zip(batch, states, mask, waves):
                    items.append((key, u.id, getattr(u, "offset", 0.0) or 0.0, getattr(u, "duration", None), s[m]))
                    audio_seconds += len(w) / sr
                self._append(items)
                bar.update(len(batch))
                elapsed = time.perf_counter() - t0
                bar.set_postfix_str(f"{audio_seconds / max(elapsed, 1e-9):.1f} audio-s/s", refresh=False)
        return BuildReport(encoded=len(order), cached=cached, audio_seconds=audio_seconds, wall_seconds=time.perf_counter() - t0)

    # ------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Sizes: entries and frames (this encoder / whole directory), bytes on disk, bytes per frame."""
        mine = [e for e in self._entries.values() if e.fingerprint == self.encoder_fingerprint and e.mode == self.mode]
        files = [p for p in self.root.iterdir() if p.is_file() and p.name.startswith(("shard-", "index"))]
        frame_bytes = (self.dim or 0) * self._itemsize + (4 if self.dtype == "int8" else 0)
        return {
            "root": str(self.root),
            "dtype": self.dtype,
            "dim": self.dim,
            "entries": len(mine),
            "frames": sum(e.frames for e in mine),
            "entries_all": len(self._entries),
            "frames_all": sum(e.frames for e in self._entries.values()),
            "shards": len(self._existing_shards()),
            "bytes": sum(p.stat().st_size for p in files),
            "bytes_per_frame": frame_bytes,
        }

    def close(self) -> None:
        """Drop the memory maps (the cache stays usable; maps reopen on the next read)."""
        self._maps.clear()
        self._scale_maps.clear()

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get a pickled copy: send the small index, not the memmaps (numpy pickles a
        # memmap as a full in-memory array)
        state = self.__dict__.copy()
        state["_maps"], state["_scale_maps"] = {}, {}
        return state

    def __repr__(self) -> str:
        return f"EncoderCache({str(self.root)!r}, dtype={self.dtype!r}, entries={len(self)}, dim={self.dim})"


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().to("cpu").float().numpy()
    return np.asarray(x, dtype=np.float32)


def _encode(encoder: CacheEncoder, waves: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """encoder.encode -> per-utterance float32 states (T_s, D_s) and bool masks (T_s,), as numpy."""
    import torch

    with torch.inference_mode():
        states, mask = encoder.encode(waves)
    states, mask = _as_numpy(states), np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask, dtype=bool)
    if states.ndim != 3 or mask.shape != states.shape[:2] or states.shape[0] != len(waves):
        raise ValueError(
            f"encoder.encode returned states {states.shape} and mask {mask.shape} for {len(waves)} waveforms; "
            "expected (B, T_s, D_s) and (B, T_s)"
        )
    return list(states), list(mask)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)

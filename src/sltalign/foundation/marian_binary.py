"""Readers and a writer for Marian's native files: model ``.bin`` / ``.npz`` and binary lexical shortlists.

Marian ``.bin`` layout (little-endian)::

    u64 version (1), u64 item count N
    N x {u64 name length (with NUL), u64 type, u64 shape rank, u64 data bytes}
    N NUL-terminated names, then N shapes (rank x int32 each)
    u64 pad length, pad bytes (so the data starts on a 256-byte boundary)
    N data blobs in header order (a blob may carry trailing alignment bytes)

Plain types are ``class | byte size`` (0x100 signed int, 0x200 unsigned, 0x400 float). The portable int8/int16
intgemm types used by Bergamot's ``*.intgemm.alphas.bin`` models (0x4101 / 0x4102 in the browsermt Marian
fork, 0x10001 / 0x10002 upstream) hold the integer matrix followed by one float32 quantMult; the real weight
is ``int / quantMult``. Every intgemm matrix except the embedding tables (``*Wemb``) is stored transposed, i.e.
its bytes are the (out, in) matrix while the shape says (in, out). CPU-specific packed layouts are refused.

The item ``special:model.yml`` holds the architecture as YAML; ``*_QuantMultA`` items are activation scales for
the native int8 engine, read but not needed for a float forward pass.

Binary shortlist (``lex.*.s2t.bin``), as read by Marian's BinaryShortlistGenerator::

    u64 magic 0xF11A48D5013417F5, u64 checksum, u64 frequent, u64 best,
    u64 offsets count (source vocab + 1), u64 words count,
    offsets[count] (u64), words[count] (u32)

The candidate targets of source word ``w`` are ``words[offsets[w]:offsets[w + 1]]``; the ``frequent`` most
frequent target ids are always allowed.

``find_model_files`` locates model, vocabularies and shortlist in a Bergamot model directory.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

BINARY_VERSION = 1
MODEL_YML = "special:model.yml"
ALIGN = 256

_PLAIN_TYPES: dict[int, np.dtype] = {
    0x101: np.dtype("<i1"),
    0x102: np.dtype("<i2"),
    0x104: np.dtype("<i4"),
    0x108: np.dtype("<i8"),
    0x201: np.dtype("<u1"),
    0x202: np.dtype("<u2"),
    0x204: np.dtype("<u4"),
    0x208: np.dtype("<u8"),
    0x402: np.dtype("<f2"),
    0x404: np.dtype("<f4"),
    0x408: np.dtype("<f8"),
}
#: portable (architecture-agnostic) intgemm types: integer matrix + trailing float32 quantMult
_INTGEMM_TYPES: dict[int, np.dtype] = {
    0x4101: np.dtype("<i1"),  # browsermt fork "intgemm8" (Bergamot / Firefox Translations models)
    0x4102: np.dtype("<i2"),
    0x10001: np.dtype("<i1"),  # upstream Marian "intgemm8"
    0x10002: np.dtype("<i2"),
}
#: the type code this module writes for int8 items (the one Bergamot's released models use)
INTGEMM8 = 0x4101
FLOAT32 = 0x404

SHORTLIST_MAGIC = 0xF11A48D5013417F5


class MarianFileError(ValueError):
    """A Marian model or shortlist file that is truncated, corrupt or of an unsupported kind."""


@dataclass
class MarianModelFile:
    """The contents of a Marian model file, every tensor as float32 (or its plain dtype) in Marian's own layout.

    ``tensors`` maps item names to arrays with the shapes Marian declares (weights (in, out), Wemb (V, D));
    intgemm matrices are already dequantized and un-transposed. ``quantized`` lists the names that were int8/int16.
    """

    path: Path
    tensors: dict[str, np.ndarray]
    config: dict[str, Any]
    yaml_text: str
    quantized: set[str] = field(default_factory=set)

    def get(self, name: str) -> np.ndarray:
        """The tensor ``name``, or a MarianFileError naming the file and the missing item."""
        if name not in self.tensors:
            raise MarianFileError(f"{self.path}: item {name!r} is missing")
        return self.tensors[name]


def _is_embedding(name: str) -> bool:
    return name == "Wemb" or name.endswith("_Wemb")


def _parse_yaml(text: str, path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as e:
        raise MarianFileError(f"{path}: item {MODEL_YML!r} is not valid YAML: {e}") from e
    if not isinstance(config, dict):
        raise MarianFileError(f"{path}: item {MODEL_YML!r} should be a YAML mapping, got {type(config).__name__}")
    return config


def read_marian_bin(path: str | Path) -> MarianModelFile:
    """Read a Marian ``.bin`` model (float or portable intgemm) into float32 numpy arrays."""
    path = Path(path)
    buf = memoryview(path.read_bytes())
    size = len(buf)

    def need(end: int, what: str) -> None:
        if end > size:
            raise MarianFileError(f"{path}: file is truncated ({size} bytes) while reading {what} (needs {end} bytes)")

    need(16, "the file header")
    version, count = struct.unpack_from("<QQ", buf, 0)
    if version != BINARY_VERSION:
        raise MarianFileError(f"{path}: not a Marian binary model (version field {version}, expected {BINARY_VERSION})")
    if count == 0 or count > 1_000_000:
        raise MarianFileError(f"{path}: implausible item count {count} in the header")
    off = 16
    need(off + 32 * count, f"{count} item headers")
    headers = [struct.unpack_from("<4Q", buf, off + 32 * i) for i in range(count)]
    off += 32 * count
    names: list[str] = []
    for i, (name_len, _, _, _) in enumerate(headers):
        need(off + name_len, f"the name of item {i}")
        raw = bytes(buf[off : off + name_len])
        if not raw.endswith(b"\0"):
            raise MarianFileError(f"{path}: name of item {i} is not NUL-terminated (corrupt header)")
        names.append(raw[:-1].decode("utf-8", errors="replace"))
        off += name_len
    shapes: list[tuple[int, ...]] = []
    for name, (_, _, rank, _) in zip(names, headers):
        need(off + 4 * rank, f"the shape of item {name!r}")
        shape = struct.unpack_from(f"<{rank}i", buf, off)
        if any(d < 0 for d in shape):
            raise MarianFileError(f"{path}: item {name!r} has a negative dimension {shape}")
        shapes.append(tuple(shape))
        off += 4 * rank
    need(off + 8, "the padding length")
    (pad,) = struct.unpack_from("<Q", buf, off)
    off += 8 + pad

    tensors: dict[str, np.ndarray] = {}
    quantized: set[str] = set()
    yaml_text = ""
    for name, (_, type_code, _, nbytes), shape in zip(names, headers, shapes):
        need(off + nbytes, f"the data of item {name!r}")
        blob = buf[off : off + nbytes]
        off += nbytes
        n = int(np.prod(shape, dtype=np.int64))
        if name == MODEL_YML:
            yaml_text = bytes(blob).split(b"\0", 1)[0].decode("utf-8")
            continue
        if type_code in _PLAIN_TYPES:
            dt = _PLAIN_TYPES[type_code]
            if nbytes < n * dt.itemsize:
                raise MarianFileError(f"{path}: item {name!r} declares shape {shape} but holds only {nbytes} bytes")
            arr = np.frombuffer(blob, dtype=dt, count=n).reshape(shape)
            tensors[name] = arr.astype(np.float32) if dt.kind == "f" else arr.copy()
        elif type_code in _INTGEMM_TYPES:
            dt = _INTGEMM_TYPES[type_code]
            if nbytes < n * dt.itemsize + 4:
                raise MarianFileError(
                    f"{path}: intgemm item {name!r} of shape {shape} needs {n * dt.itemsize + 4} bytes, holds {nbytes}"
                )
            ints = np.frombuffer(blob, dtype=dt, count=n)
            (quant_mult,) = struct.unpack_from("<f", blob, n * dt.itemsize)
            if not np.isfinite(quant_mult) or quant_mult == 0:
                raise MarianFileError(f"{path}: intgemm item {name!r} has an invalid quantMult {quant_mult}")
            w = ints.astype(np.float32) / np.float32(quant_mult)
            if len(shape) == 2 and not _is_embedding(name):
                w = w.reshape(shape[1], shape[0]).T  # stored (out, in): back to Marian's (in, out)
            tensors[name] = np.ascontiguousarray(w.reshape(shape))
            quantized.add(name)
        else:
            raise MarianFileError(
                f"{path}: item {name!r} has type 0x{type_code:x}, which this reader does not decode (supported: plain "
                "int/float types and portable intgemm8/16; CPU-specific packed layouts are not portable: convert the "
                "model with marian-conv to float32 or intgemm8 alphas)"
            )
    if off > size:  # unreachable given need(), kept as a guard against header arithmetic mistakes
        raise MarianFileError(f"{path}: data runs past the end of the file")
    if not yaml_text:
        raise MarianFileError(f"{path}: the item {MODEL_YML!r} (the architecture) is missing")
    return MarianModelFile(path, tensors, _parse_yaml(yaml_text, path), yaml_text, quantized)


def read_marian_npz(path: str | Path) -> MarianModelFile:
    """Read a float Marian ``.npz`` model (the format Marian trains into)."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        arrays = {k: data[k] for k in data.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError... all mean the same here
        raise MarianFileError(f"{path}: cannot read as a numpy .npz archive ({type(e).__name__}: {e})") from e
    if MODEL_YML not in arrays:
        raise MarianFileError(f"{path}: the item {MODEL_YML!r} (the architecture) is missing")
    yaml_text = arrays.pop(MODEL_YML).astype(np.uint8).tobytes().split(b"\0", 1)[0].decode("utf-8")
    tensors = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in arrays.items()}
    return MarianModelFile(path, tensors, _parse_yaml(yaml_text, path), yaml_text)


def read_marian_model(path: str | Path) -> MarianModelFile:
    """Read a Marian model, ``.npz`` or ``.bin`` (chosen by the file's first bytes, not its name)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Marian model file not found: {path}")
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        return read_marian_npz(path)
    return read_marian_bin(path)


def write_marian_bin(
    path: str | Path, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any] | str, *, int8: bool = False
) -> Path:
    """Write a Marian ``.bin`` model that ``read_marian_bin`` (and Marian) can read.

    ``tensors`` are float arrays in Marian's layout (weights (in, out), embeddings (V, D)). With ``int8`` every
    2-D matrix with both sides > 1 is stored as portable intgemm8 (quantMult 127 / max|W|, transposed except
    embeddings), as ``marian-conv --gemm-type intgemm8`` does; biases and LayerNorm vectors stay float32.
    """
    path = Path(path)
    yaml_text = config if isinstance(config, str) else yaml.safe_dump(dict(config), sort_keys=True)
    items: list[tuple[str, int, tuple[int, ...], bytes]] = []
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        shape = tuple(int(d) for d in arr.shape)
        if int8 and arr.ndim == 2 and min(shape) > 1 and arr.dtype.kind == "f":
            w = arr.astype(np.float32)
            quant_mult = np.float32(127.0 / max(float(np.abs(w).max()), 1e-12))
            stored = w if _is_embedding(name) else w.T  # (in, out) -> stored (out, in)
            q = np.clip(np.rint(stored * quant_mult), -127, 127).astype("<i1")
            data = q.tobytes() + struct.pack("<f", quant_mult)
            data += b"\0" * (-len(data) % ALIGN)
            items.append((name, INTGEMM8, shape, data))
        elif arr.dtype.kind == "f":
            items.append((name, FLOAT32, shape, arr.astype("<f4").tobytes()))
        else:
            code = next((c for c, dt in _PLAIN_TYPES.items() if dt == arr.dtype.newbyteorder("<")), None)
            if code is None:
                raise ValueError(f"write_marian_bin: tensor {name!r} has unsupported dtype {arr.dtype}")
            items.append((name, code, shape, arr.tobytes()))
    yml = yaml_text.encode("utf-8") + b"\0"
    items.append((MODEL_YML, 0x101, (len(yml),), yml))

    head = bytearray(struct.pack("<QQ", BINARY_VERSION, len(items)))
    for name, code, shape, data in items:
        head += struct.pack("<4Q", len(name.encode()) + 1, code, len(shape), len(data))
    for name, *_ in items:
        head += name.encode() + b"\0"
    for _, _, shape, _ in items:
        head += struct.pack(f"<{len(shape)}i", *shape)
    pad = -(len(head) + 8) % ALIGN
    head += struct.pack("<Q", pad) + b"\0" * pad
    with path.open("wb") as f:
        f.write(head)
        for *_, data in items:
            f.write(data)
    return path


@dataclass
class LexicalShortlist:
    """A Marian binary lexical shortlist: which target ids may follow from which source ids."""

    path: Path
    frequent: int
    best: int
    offsets: np.ndarray  # (V_src + 1,) uint64
    words: np.ndarray  # (total,) uint32

    @property
    def source_vocab_size(self) -> int:
        return len(self.offsets) - 1

    def allowed(self, source_ids: Iterable[int], target_vocab_size: int, *, multiple_of: int = 8) -> np.ndarray:
        """Sorted target ids allowed for a sentence (or the union for a batch) of source ids.

        As Marian: the ``frequent`` first ids, plus every listed translation of each source id, then padded with
        the next unused ids after ``frequent`` to a multiple of ``multiple_of`` (intgemm needs multiples of 8).
        """
        table = np.zeros(target_vocab_size, dtype=bool)
        table[: min(self.frequent, target_vocab_size)] = True
        src = np.unique(np.fromiter((int(i) for i in source_ids), dtype=np.int64))
        src = src[(src >= 0) & (src < self.source_vocab_size)]
        for w in src:
            table[self.words[int(self.offsets[w]) : int(self.offsets[w + 1])]] = True
        missing = (-int(table.sum())) % multiple_of
        if missing:
            free = np.flatnonzero(~table[self.frequent :])[:missing] + self.frequent
            table[free] = True
        return np.flatnonzero(table)


def read_shortlist(path: str | Path, *, target_vocab_size: int | None = None) -> LexicalShortlist:
    """Read a Marian binary lexical shortlist (``lex.*.s2t.bin``), checking its structure."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"shortlist file not found: {path}")
    buf = path.read_bytes()
    if len(buf) < 48:
        raise MarianFileError(f"{path}: too short ({len(buf)} bytes) for a binary shortlist header (48 bytes)")
    magic, _checksum, frequent, best, n_offsets, n_words = struct.unpack_from("<6Q", buf, 0)
    if magic != SHORTLIST_MAGIC:
        raise MarianFileError(
            f"{path}: not a Marian binary shortlist (magic 0x{magic:x}, expected 0x{SHORTLIST_MAGIC:x}); text "
            "shortlists must be converted with marian-conv --shortlist"
        )
    expected = 48 + 8 * n_offsets + 4 * n_words
    if expected != len(buf):
        raise MarianFileError(f"{path}: header says the file holds {expected} bytes but it has {len(buf)} (truncated?)")
    offsets = np.frombuffer(buf, dtype="<u8", count=n_offsets, offset=48)
    words = np.frombuffer(buf, dtype="<u4", count=n_words, offset=48 + 8 * n_offsets)
    if n_offsets < 2 or int(offsets[-1]) != n_words or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise MarianFileError(f"{path}: corrupt offset table (must rise monotonically to the word count {n_words})")
    if target_vocab_size is not None and n_words and int(words.max()) >= target_vocab_size:
        raise MarianFileError(f"{path}: target id {int(words.max())} is outside the vocabulary of {target_vocab_size}")
    return LexicalShortlist(path, int(frequent), int(best), offsets, words)


def find_model_files(path: Path) -> tuple[Path, list[Path], Path | None]:
    """(model, [source vocab, target vocab], shortlist or None) for a model file or a Bergamot directory.

    A ``config*.yml`` next to the model (Bergamot ships one) names the files; otherwise they are found by pattern.
    """
    folder = path if path.is_dir() else path.parent
    model = path if path.is_file() else None
    vocabs: list[Path] = []
    lex: Path | None = None
    for cfg_path in sorted(folder.glob("config*.yml")):
        try:
            cfg = yaml.safe_load(cfg_path.read_text()) or {}
        except yaml.YAMLError:
            continue
        if not isinstance(cfg, dict):
            continue
        if model is None and cfg.get("models"):
            model = folder / cfg["models"][0]
        if cfg.get("vocabs"):
            vocabs = [folder / v for v in cfg["vocabs"]]
        if cfg.get("shortlist"):
            lex = folder / cfg["shortlist"][0]
        break
    if model is None:
        found = sorted(folder.glob("model*.bin")) + sorted(folder.glob("model*.npz"))
        if not found:
            raise FileNotFoundError(f"no Marian model (model*.bin or model*.npz) in {folder}")
        model = found[0]
    if not vocabs:
        src, trg = sorted(folder.glob("srcvocab*.spm")), sorted(folder.glob("trgvocab*.spm"))
        if src and trg:
            vocabs = [src[0], trg[0]]
        else:
            spms = sorted(folder.glob("vocab*.spm")) or sorted(folder.glob("*.spm"))
            if len(spms) != 1:
                names = [p.name for p in spms]
                raise FileNotFoundError(f"need one vocab*.spm, or srcvocab + trgvocab*.spm, in {folder}; found {names}")
            vocabs = [spms[0], spms[0]]
    if lex is None:
        found = sorted(folder.glob("lex*.s2t.bin")) or sorted(folder.glob("lex*.bin"))
        lex = found[0] if found else None
    for p in [model, *vocabs]:
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing (named by the config in, or expected in, {folder})")
    return model, vocabs, lex

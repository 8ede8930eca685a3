"""faster-whisper / CTranslate2 Whisper directories -> transformers ``WhisperForConditionalGeneration``.

The packaged Whisper weights (``packaged:whisper-tiny.en``, ``packaged:whisper-base``) are CTranslate2
directories: ``model.bin`` (fp16 here), ``config.json`` (suppressed tokens, alignment heads, language ids),
``tokenizer.json`` and ``vocabulary.{json,txt}``. Whisper-base ships ``model.bin`` split as
``model.bin.part1`` / ``model.bin.part2`` in two different pip packages; the parts are read one after the
other as one stream, so no concatenated copy is ever written.

model.bin layout (little-endian), as read by CTranslate2's own loader (``src/models/model.cc``)::

    u32 version
    version >= 2: string spec name ("WhisperSpec"), u32 spec revision
    u32 variable count, then per variable:
        string name, u8 rank, rank x u32 dims,
        version >= 4: u8 dtype (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16), u32 byte count
        version <  4: u8 item size (4 f32, 2 i16, 1 i8), u32 item count
        raw bytes
    version >= 3: u32 alias count, then (alias, target) string pairs
    string = u16 length (counting the trailing NUL) + bytes

The variables map one-to-one onto transformers' Whisper (see ``_whisper_name_map``): CTranslate2 fuses the
self-attention projections as rows ``[q; k; v]`` (its k bias is zero: Whisper's k projection has none) and
the cross-attention key/value as ``[k; v]``. Every weight is returned as float32 whatever it was stored as;
int8/int16 weights (``ct2-transformers-converter --quantization int8``) are divided by their ``weight_scale``.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch

if TYPE_CHECKING:  # transformers is imported lazily: `import sltalign` stays cheap
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizer
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

#: the newest model.bin format version this reader understands (CTranslate2 4.x writes 6)
MAX_BINARY_VERSION = 6

# dtype id -> (numpy dtype used to read the bytes, torch dtype of the stored values)
_DTYPES: dict[int, tuple[np.dtype, torch.dtype]] = {
    0: (np.dtype("<f4"), torch.float32),
    1: (np.dtype("i1"), torch.int8),
    2: (np.dtype("<i2"), torch.int16),
    3: (np.dtype("<i4"), torch.int32),
    4: (np.dtype("<f2"), torch.float16),
    5: (np.dtype("<i2"), torch.bfloat16),  # numpy has no bfloat16: read the bits as int16, view as bf16
}
_ITEM_SIZE_TO_DTYPE = {4: 0, 2: 2, 1: 1}  # format versions < 4 store an item size instead of a dtype id

PathLike = Path | str


# ------------------------------------------------------------------------------------------------
# Finding the files
# ------------------------------------------------------------------------------------------------


def _as_dirs(dirs: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(dirs, (str, Path)):
        return [Path(dirs)]
    out = [Path(d) for d in dirs]
    if not out:
        raise ValueError("no CTranslate2 directory given")
    return out


def find_model_bin_parts(dirs: PathLike | Iterable[PathLike]) -> list[Path]:
    """The file(s) that make up ``model.bin``, in reading order.

    Either one ``model.bin`` in one of ``dirs``, or ``model.bin.part1`` .. ``model.bin.partN`` spread over
    any of ``dirs`` (each part found exactly once, numbered without gaps).
    """
    dirs = _as_dirs(dirs)
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"CTranslate2 model directory {d} does not exist")
    whole = [d / "model.bin" for d in dirs if (d / "model.bin").is_file()]
    parts: dict[int, list[Path]] = {}
    for d in dirs:
        for p in d.glob("model.bin.part*"):
            m = re.fullmatch(r"model\.bin\.part(\d+)", p.name)
            if m:
                parts.setdefault(int(m.group(1)), []).append(p)
    if whole and parts:
        raise ValueError(f"both {whole[0]} and model.bin.part* files found in {', '.join(map(str, dirs))}: keep one")
    if len(whole) > 1:
        raise ValueError(f"more than one model.bin in the given directories: {', '.join(map(str, whole))}")
    if whole:
        return whole
    if not parts:
        raise FileNotFoundError(f"no model.bin (or model.bin.part1, .part2, ...) in {', '.join(map(str, dirs))}")
    dup = {i: ps for i, ps in parts.items() if len(ps) > 1}
    if dup:
        raise ValueError(f"model.bin part(s) found more than once: {dup}")
    numbers = sorted(parts)
    if numbers != list(range(1, len(numbers) + 1)):
        missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
        raise FileNotFoundError(
            f"model.bin is split in parts but part(s) {missing} are missing (found {[str(parts[i][0]) for i in numbers]})"
        )
    return [parts[i][0] for i in numbers]


def is_ctranslate2_dir(path: PathLike) -> bool:
    """True when ``path`` is a directory holding ``model.bin`` or ``model.bin.part*``."""
    p = Path(path)
    return p.is_dir() and ((p / "model.bin").is_file() or any(p.glob("model.bin.part*")))


def _find_file(dirs: list[Path], name: str) -> Path | None:
    for d in dirs:
        if (d / name).is_file():
            return d / name
    return None


# ------------------------------------------------------------------------------------------------
# Reading model.bin
# ------------------------------------------------------------------------------------------------


class _ChainedReader:
    """Reads several files back to back as one stream (the split model.bin), without copying them."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self._index = 0
        self._file: BinaryIO | None = None
        self.offset = 0  # bytes consumed so far over all parts
        self.size = sum(p.stat().st_size for p in paths)

    def describe(self) -> str:
        return " + ".join(str(p) for p in self.paths)

    def _current(self) -> BinaryIO | None:
        if self._file is None and self._index < len(self.paths):
            self._file = open(self.paths[self._index], "rb")  # noqa: SIM115 - closed in close()/on advance
        return self._file

    def _advance(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
        self._index += 1

    def readinto(self, buf: memoryview, what: str) -> None:
        got = 0
        while got < len(buf):
            f = self._current()
            if f is None:
                raise ValueError(
                    f"{self.describe()}: truncated or corrupt CTranslate2 model.bin: unexpected end of file while "
                    f"reading {what} ({len(buf)} bytes needed at offset {self.offset - got})"
                )
            n = f.readinto(buf[got:])
            if not n:
                self._advance()
                continue
            got += n
            self.offset += n

    def read(self, n: int, what: str) -> bytes:
        buf = bytearray(n)
        self.readinto(memoryview(buf), what)
        return bytes(buf)

    def skip(self, n: int, what: str) -> None:
        while n > 0:
            f = self._current()
            if f is None:
                raise ValueError(f"{self.describe()}: truncated CTranslate2 model.bin: file ends inside {what}")
            pos = f.tell()
            end = f.seek(0, 2)
            step = min(n, end - pos)
            f.seek(pos + step)
            n -= step
            self.offset += step
            if n > 0:
                self._advance()

    def at_end(self) -> bool:
        while True:
            f = self._current()
            if f is None:
                return True
            if f.read(1):
                return False
            self._advance()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._index = len(self.paths)

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt), what))

    def string(self, what: str) -> str:
        (n,) = self.unpack("H", what)
        raw = self.read(n, what)
        if n == 0 or raw[-1] != 0:
            raise ValueError(f"{self.describe()}: corrupt CTranslate2 model.bin: {what} is not a NUL-terminated string")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{self.describe()}: corrupt CTranslate2 model.bin: {what} is not UTF-8") from e


@dataclass
class VariableInfo:
    """One variable's header: shape and stored dtype (its data may not have been loaded)."""

    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass
class CTranslate2Model:
    """The content of a model.bin: a flat name -> tensor dictionary, as stored (no dtype conversion)."""

    binary_version: int
    spec_name: str
    spec_revision: int
    #: every variable's shape and dtype, including those whose data was skipped
    info: dict[str, VariableInfo]
    #: the loaded tensors (all of them unless ``include`` filtered some out)
    variables: dict[str, torch.Tensor]
    #: alias -> target name (e.g. decoder/projection/weight -> decoder/embeddings/weight)
    aliases: dict[str, str] = field(default_factory=dict)
    #: the file(s) read, for error messages
    source: str = "model.bin"

    def resolve(self, name: str) -> str:
        return self.aliases.get(name, name)


def read_ctranslate2_model(
    dirs: PathLike | Iterable[PathLike], *, include: Callable[[str, tuple[int, ...]], bool] | None = None
) -> CTranslate2Model:
    """Parse model.bin (or its parts, in order) from ``dirs``.

    ``include(name, shape)`` selects which variables' data to load; the others are skipped on disk but their
    shapes are still recorded in ``info`` (so a config can be derived without loading the decoder).
    Raises ValueError naming the file on any inconsistency (bad version, unknown dtype, size mismatch,
    truncation, trailing bytes).
    """
    paths = find_model_bin_parts(dirs)
    r = _ChainedReader(paths)
    try:
        (version,) = r.unpack("I", "the format version")
        if not 1 <= version <= MAX_BINARY_VERSION:
            raise ValueError(
                f"{r.describe()}: not a CTranslate2 model.bin this reader understands (format version {version}; "
                f"supported 1-{MAX_BINARY_VERSION})"
            )
        spec_name, revision = "", 1
        if version >= 2:
            spec_name = r.string("the spec name")
            (revision,) = r.unpack("I", "the spec revision")
        (count,) = r.unpack("I", "the variable count")
        info: dict[str, VariableInfo] = {}
        variables: dict[str, torch.Tensor] = {}
        for i in range(count):
            name = r.string(f"the name of variable {i}")
            (rank,) = r.unpack("B", f"the rank of {name!r}")
            shape = r.unpack("I" * rank, f"the shape of {name!r}") if rank else ()
            if version >= 4:
                dtype_id, nbytes = r.unpack("BI", f"the dtype of {name!r}")
            else:
                item_size, items = r.unpack("BI", f"the item size of {name!r}")
                if item_size not in _ITEM_SIZE_TO_DTYPE:
                    raise ValueError(f"{r.describe()}: variable {name!r} has unknown item size {item_size}")
                dtype_id, nbytes = _ITEM_SIZE_TO_DTYPE[item_size], item_size * items
            if dtype_id not in _DTYPES:
                raise ValueError(
                    f"{r.describe()}: variable {name!r} has unknown dtype id {dtype_id} (expected one of {sorted(_DTYPES)})"
                )
            np_dtype, torch_dtype = _DTYPES[dtype_id]
            numel = int(np.prod(shape)) if shape else 1
            if nbytes != numel * np_dtype.itemsize:
                raise ValueError(
                    f"{r.describe()}: corrupt variable {name!r}: shape {tuple(shape)} x {np_dtype.itemsize} bytes "
                    f"!= stored byte count {nbytes}"
                )
            if r.offset + nbytes > r.size:  # before allocating: a corrupt header could claim gigabytes
                raise ValueError(
                    f"{r.describe()}: truncated or corrupt CTranslate2 model.bin: unexpected end of file in "
                    f"variable {name!r} ({nbytes} bytes claimed, {r.size - r.offset} left)"
                )
            info[name] = VariableInfo(tuple(shape), torch_dtype)
            if include is not None and not include(name, tuple(shape)):
                r.skip(nbytes, f"variable {name!r}")
                continue
            buf = bytearray(nbytes)
            r.readinto(memoryview(buf), f"the data of {name!r}")
            t = torch.from_numpy(np.frombuffer(buf, dtype=np_dtype).reshape(shape))
            if torch_dtype == torch.bfloat16:
                t = t.view(torch.bfloat16)
            variables[name] = t
        aliases: dict[str, str] = {}
        if version >= 3:
            (n_alias,) = r.unpack("I", "the alias count")
            for i in range(n_alias):
                alias = r.string(f"alias {i}")
                aliases[alias] = r.string(f"the target of alias {alias!r}")
        if not r.at_end():
            raise ValueError(f"{r.describe()}: corrupt CTranslate2 model.bin: unexpected bytes after the last record")
    except struct.error as e:  # pragma: no cover - read() already checks lengths
        raise ValueError(f"{r.describe()}: corrupt CTranslate2 model.bin ({e})") from e
    finally:
        r.close()
    for alias, target in aliases.items():
        if target not in info:
            raise ValueError(f"{' + '.join(map(str, paths))}: alias {alias!r} points to missing variable {target!r}")
    return CTranslate2Model(version, spec_name, revision, info, variables, aliases, source=r.describe())


# ------------------------------------------------------------------------------------------------
# Whisper: config, name mapping, conversion
# ------------------------------------------------------------------------------------------------


def _count_layers(model: CTranslate2Model, prefix: str) -> int:
    ids = {int(m.group(1)) for n in model.info if (m := re.match(rf"{prefix}/layer_(\d+)/", n))}
    if ids != set(range(len(ids))):
        raise ValueError(f"{model.source}: {prefix} layers are not numbered 0..N-1: {sorted(ids)}")
    return len(ids)


def _scalar(model: CTranslate2Model, name: str, where: str) -> int:
    if name not in model.variables:
        raise ValueError(f"{where}: model.bin has no {name!r}; is this a CTranslate2 Whisper model (WhisperSpec)?")
    return int(model.variables[name].reshape(-1)[0].item())


def _read_vocabulary(dirs: list[Path]) -> list[str] | None:
    path = _find_file(dirs, "vocabulary.json")
    if path is not None:
        try:
            tokens = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(tokens, list):
            raise ValueError(f"{path}: expected a JSON list of tokens, got {type(tokens).__name__}")
        return [str(t) for t in tokens]
    path = _find_file(dirs, "vocabulary.txt")
    if path is not None:
        lines = path.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines = lines[:-1]
        return lines
    return None


def _read_ct2_config(dirs: list[Path]) -> dict:
    path = _find_file(dirs, "config.json")
    if path is None:
        return {}
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return cfg


@dataclass(frozen=True)
class _Specials:
    eot: int | None
    sot: int | None
    translate: int | None
    transcribe: int | None
    prev: int | None
    no_timestamps: int | None
    lang_to_id: dict[str, int]


def _special_ids(vocab: list[str] | None, vocab_size: int) -> _Specials:
    """Whisper's special token ids, from the vocabulary when present, else from the standard layout."""
    if vocab is not None:
        index = {t: i for i, t in enumerate(vocab)}
        sot = index.get("<|startoftranscript|>")
        translate = index.get("<|translate|>")
        langs: dict[str, int] = {}
        if sot is not None and translate is not None:
            langs = {t: i for t, i in index.items() if sot < i < translate and re.fullmatch(r"<\|[a-z]{2,3}\|>", t)}
        return _Specials(
            index.get("<|endoftext|>"),
            sot,
            translate,
            index.get("<|transcribe|>"),
            index.get("<|startofprev|>"),
            index.get("<|notimestamps|>"),
            langs,
        )
    if vocab_size >= 51864:  # openai layout: text tokens, <|endoftext|>, <|startoftranscript|>, languages, tasks
        multilingual = vocab_size >= 51865
        eot = 50257 if multilingual else 50256
        n_lang = vocab_size - 51765 - int(multilingual)  # 99 (base), 100 (large-v3)
        translate = eot + 2 + n_lang
        return _Specials(eot, eot + 1, translate, translate + 1, translate + 3, translate + 5, {})
    return _Specials(None, None, None, None, None, None, {})


def whisper_config_from_ctranslate2(
    model: CTranslate2Model, dirs: PathLike | Iterable[PathLike] | None = None
) -> tuple[WhisperConfig, GenerationConfig]:
    """(``WhisperConfig``, ``GenerationConfig``) from the variables' shapes plus the directory's
    config.json (suppressed tokens, alignment heads) and vocabulary (special token ids), when present."""
    from transformers import GenerationConfig, WhisperConfig

    dirs = _as_dirs(dirs) if dirs is not None else []
    where = model.source
    if model.spec_name and model.spec_name != "WhisperSpec":
        raise ValueError(f"{where}: model.bin holds a {model.spec_name}, not a Whisper model (WhisperSpec)")
    info = model.info

    def shape(name: str) -> tuple[int, ...]:
        name = model.resolve(name)
        if name not in info:
            raise ValueError(f"{where}: model.bin has no variable {name!r}; is this a CTranslate2 Whisper model?")
        return info[name].shape

    d_model, n_mels, _ = shape("encoder/conv1/weight")
    vocab_size = shape("decoder/embeddings/weight")[0]
    enc_layers = _count_layers(model, "encoder")
    dec_layers = _count_layers(model, "decoder")
    if enc_layers == 0 or dec_layers == 0:
        raise ValueError(f"{where}: model.bin has no encoder or decoder layers")
    activation = _scalar(model, "decoder/activation", where) if "decoder/activation" in model.variables else 3
    if activation != 3:  # CTranslate2 ActivationType: 3 = GELU (erf), Whisper's activation
        raise ValueError(f"{where}: decoder/activation is {activation}; Whisper uses GELU (3)")
    proj = model.resolve("decoder/projection/weight")
    tied = proj == "decoder/embeddings/weight" or proj not in info
    ct2_cfg = _read_ct2_config(dirs)
    vocab = _read_vocabulary(dirs)
    sp = _special_ids(vocab, vocab_size)
    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=enc_layers,
        decoder_layers=dec_layers,
        encoder_attention_heads=_scalar(model, "encoder/num_heads", where),
        decoder_attention_heads=_scalar(model, "decoder/num_heads", where),
        encoder_ffn_dim=shape("encoder/layer_0/ffn/linear_0/weight")[0],
        decoder_ffn_dim=shape("decoder/layer_0/ffn/linear_0/weight")[0],
        max_source_positions=shape("encoder/position_encodings/encodings")[0],
        max_target_positions=shape("decoder/position_encodings/encodings")[0],
        activation_function="gelu",
        pad_token_id=sp.eot,
        bos_token_id=sp.eot,
        eos_token_id=sp.eot,
        decoder_start_token_id=sp.sot,
        suppress_tokens=ct2_cfg.get("suppress_ids"),
        begin_suppress_tokens=ct2_cfg.get("suppress_ids_begin"),
        tie_word_embeddings=tied,
    )
    multilingual = vocab_size >= 51865
    gen = GenerationConfig(
        decoder_start_token_id=sp.sot,
        bos_token_id=sp.eot,
        eos_token_id=sp.eot,
        pad_token_id=sp.eot,
        max_length=config.max_target_positions,
        suppress_tokens=ct2_cfg.get("suppress_ids"),
        begin_suppress_tokens=ct2_cfg.get("suppress_ids_begin"),
        is_multilingual=multilingual,
        no_timestamps_token_id=sp.no_timestamps,
        prev_sot_token_id=sp.prev,
        max_initial_timestamp_index=50,  # 1.0 s, Whisper's default
        return_timestamps=False,
    )
    if ct2_cfg.get("alignment_heads"):
        gen.alignment_heads = [list(map(int, h)) for h in ct2_cfg["alignment_heads"]]
    if multilingual and sp.lang_to_id:
        gen.lang_to_id = sp.lang_to_id
    if multilingual and sp.transcribe is not None and sp.translate is not None:
        gen.task_to_id = {"transcribe": sp.transcribe, "translate": sp.translate}
    return config, gen


def _whisper_name_map(enc_layers: int, dec_layers: int) -> list[tuple[str, str | list[str]]]:
    """(CTranslate2 name, transformers name or the names its rows split into, in order)."""
    m: list[tuple[str, str | list[str]]] = []

    def linear(ct2: str, hf: str | list[str]) -> None:
        for p in ("weight", "bias"):
            m.append((f"{ct2}/{p}", [f"{h}.{p}" for h in hf] if isinstance(hf, list) else f"{hf}.{p}"))

    def norm(ct2: str, hf: str) -> None:
        m.append((f"{ct2}/gamma", f"{hf}.weight"))
        m.append((f"{ct2}/beta", f"{hf}.bias"))

    for side, n_layers in (("encoder", enc_layers), ("decoder", dec_layers)):
        hf = f"model.{side}"
        for i in range(n_layers):
            c, h = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            linear(f"{c}/self_attention/linear_0", [f"{h}.self_attn.{x}_proj" for x in "qkv"])
            linear(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
            norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
            if side == "decoder":
                linear(f"{c}/attention/linear_0", f"{h}.encoder_attn.q_proj")
                linear(f"{c}/attention/linear_1", [f"{h}.encoder_attn.k_proj", f"{h}.encoder_attn.v_proj"])
                linear(f"{c}/attention/linear_2", f"{h}.encoder_attn.out_proj")
                norm(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
            linear(f"{c}/ffn/linear_0", f"{h}.fc1")
            linear(f"{c}/ffn/linear_1", f"{h}.fc2")
            norm(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
        m.append((f"{side}/position_encodings/encodings", f"{hf}.embed_positions.weight"))
        norm(f"{side}/layer_norm", f"{hf}.layer_norm")
    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    m.append(("decoder/embeddings/weight", "model.decoder.embed_tokens.weight"))
    return m


def _dequantized(model: CTranslate2Model, name: str) -> torch.Tensor:
    """A variable as float32; int8/int16 weights are divided by their scale (per row for int8)."""
    t = model.variables[model.resolve(name)]
    if t.dtype in (torch.int8, torch.int16):
        scale_name = model.resolve(name) + "_scale"
        if scale_name not in model.variables:
            raise ValueError(f"{model.source}: quantized variable {name!r} has no {scale_name!r}")
        scale = model.variables[scale_name].to(torch.float32)
        scale = scale.reshape(-1, *([1] * (t.dim() - 1))) if scale.numel() > 1 else scale.reshape(())
        return t.to(torch.float32) / scale
    return t.to(torch.float32)


def whisper_state_dict_from_ctranslate2(
    model: CTranslate2Model, config: WhisperConfig, *, encoder_only: bool = False
) -> dict[str, torch.Tensor]:
    """CTranslate2 Whisper variables -> transformers ``WhisperForConditionalGeneration`` state dict (float32).

    With ``encoder_only`` only ``model.encoder.*`` keys are produced (and only those variables are needed).
    Raises ValueError on a missing variable or a non-scalar variable that has no place in Whisper.
    """
    sd: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for ct2, hf in _whisper_name_map(config.encoder_layers, config.decoder_layers):
        if encoder_only and not ct2.startswith("encoder/"):
            continue
        name = model.resolve(ct2)
        if name not in model.variables:
            raise ValueError(f"{model.source}: missing variable {ct2!r} (needed for {hf})")
        used.update({name, name + "_scale"})
        t = _dequantized(model, ct2)
        if isinstance(hf, str):
            sd[hf] = t
            continue
        chunks = torch.chunk(t, len(hf), dim=0)
        if any(c.shape[0] != config.d_model for c in chunks):
            raise ValueError(f"{model.source}: {ct2!r} has shape {tuple(t.shape)}; expected {len(hf)} x {config.d_model} rows")
        for key, chunk in zip(hf, chunks):
            # k_proj has no bias in Whisper; CTranslate2 stores zeros there
            if key.endswith("k_proj.bias"):
                continue
            sd[key] = chunk.clone()
    if not encoder_only:
        proj = model.resolve("decoder/projection/weight")
        if proj != "decoder/embeddings/weight" and proj in model.variables:
            sd["proj_out.weight"] = _dequantized(model, "decoder/projection/weight")
            used.add(proj)
        else:
            sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]
    # anything non-scalar left over would be silently lost: refuse (scalars are CTranslate2 config flags)
    leftovers = [
        n
        for n, t in model.variables.items()
        if n not in used
        and t.dim() > 0
        and (n.startswith("encoder/") or not encoder_only)
        and not (n == "decoder/projection/bias" and not t.any())  # all zeros in converted Whisper models
    ]
    if leftovers:
        raise ValueError(f"{model.source}: variables with no place in transformers' Whisper: {leftovers[:8]}")
    return sd


def _instantiate(cls, config, state_dict: dict[str, torch.Tensor], prefix: str = ""):
    """Build ``cls(config)`` on the meta device and assign the weights (no wasted random init)."""
    with torch.device("meta"):
        module = cls(config)
    sd = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    missing, unexpected = module.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"CTranslate2 -> transformers Whisper: missing {missing[:8]}, unexpected {unexpected[:8]}")
    if getattr(config, "tie_word_embeddings", False) and hasattr(module, "tie_weights"):
        module.tie_weights()
    still_meta = [n for n, p in list(module.named_parameters()) + list(module.named_buffers()) if p.is_meta]
    if still_meta:
        raise ValueError(f"CTranslate2 -> transformers Whisper: tensors left without values: {still_meta[:8]}")
    return module.eval()


def load_ctranslate2_whisper(dirs: PathLike | Iterable[PathLike]) -> WhisperForConditionalGeneration:
    """A CTranslate2 (faster-whisper) Whisper directory -> ``transformers.WhisperForConditionalGeneration``.

    ``dirs``: one directory, or several whose files together form the model (the packaged whisper-base keeps
    ``model.bin.part1`` in one directory and ``model.bin.part2`` + config/tokenizer in another). All weights
    become float32; the generation config is filled from config.json (suppressed tokens, alignment heads)
    and the vocabulary (special and language token ids), so ``generate()`` works as for a hub checkpoint.
    """
    from transformers import WhisperForConditionalGeneration

    dirs = _as_dirs(dirs)
    ct2 = read_ctranslate2_model(dirs)
    config, gen = whisper_config_from_ctranslate2(ct2, dirs)
    sd = whisper_state_dict_from_ctranslate2(ct2, config)
    del ct2
    model = _instantiate(WhisperForConditionalGeneration, config, sd)
    model.generation_config = gen
    return model


def load_ctranslate2_whisper_encoder(dirs: PathLike | Iterable[PathLike]) -> WhisperEncoder:
    """Only the encoder half: ``transformers.models.whisper.modeling_whisper.WhisperEncoder`` (float32).

    The decoder's data is skipped on disk, never converted: this is what speech encoders load.
    """
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    dirs = _as_dirs(dirs)
    # decoder tensors are skipped on disk; scalars (num_heads, activation) are read for the config
    ct2 = read_ctranslate2_model(dirs, include=lambda name, shape: name.startswith("encoder/") or not shape)
    config, _ = whisper_config_from_ctranslate2(ct2, dirs)
    sd = whisper_state_dict_from_ctranslate2(ct2, config, encoder_only=True)
    return _instantiate(WhisperEncoder, config, sd, prefix="model.encoder.")


def load_ctranslate2_whisper_tokenizer(dirs: PathLike | Iterable[PathLike]) -> WhisperTokenizer | None:
    """The Whisper tokenizer from the directory's tokenizer.json (``transformers.WhisperTokenizer``), or None."""
    from transformers import WhisperTokenizer

    path = _find_file(_as_dirs(dirs), "tokenizer.json")
    if path is None:
        return None
    try:
        return WhisperTokenizer(tokenizer_file=str(path))
    except Exception as e:  # tokenizers raises its own exception types on a malformed file
        raise ValueError(f"{path}: not a readable tokenizer.json ({e})") from e

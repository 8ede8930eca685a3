"""Marian-native translation models (Bergamot / Firefox Translations) as a frozen PyTorch ``Translator``.

The architecture is read from the model's ``special:model.yml``: a post-norm Transformer encoder, and a decoder
whose autoregressive block is either an SSRU (``transformer-decoder-autoreg: rnn``, ``dec-cell: ssru``; the
Bergamot "tiny" students) or causal self-attention (``self-attention``; Marian "base" teachers), followed in
every decoder layer by cross-attention and an FFN. Each sublayer is ``LayerNorm(x + f(x))`` (eps 1e-6).
Embeddings are multiplied by sqrt(D_m), then Marian's sinusoidal positions are added; the decoder input is the
target shifted right with a zero vector at position 0.

Token ids: SentencePiece ids, ``</s>`` = ``eos_id`` (0 in Bergamot vocabularies), ``<unk>`` = 1.
Padding: ``pad_id`` is the ``<unk>`` id. Marian itself pads with ``</s>``, but then padding and the real final
``</s>`` of a target could not be told apart by ``targets != pad_id``, and a loss that ignores ``pad_id`` would
never train the end of sentence. ``<unk>`` is the one token Marian never lets the decoder emit (``allow-unk``
is off by default, and ``generate`` suppresses it too), so ignoring it in a loss costs nothing. Padded
positions never influence real ones: the encoder and cross-attention mask them, and the decoder is causal.

Generation follows Marian: greedy or beam search with beam width shrinking as hypotheses end with ``</s>``,
final scores normalised by ``length ** length_penalty`` (length counts the ``</s>``), ``<unk>`` suppressed,
optional lexical shortlist (``lex.*.s2t.bin``) that restricts each sentence's output vocabulary to the
translations of its source words plus the most frequent target words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F
from torch import nn

from .base import Translator, pad_id_rows
from .marian_binary import (
    LexicalShortlist,
    MarianFileError,
    MarianModelFile,
    find_model_files,
    read_marian_model,
    read_shortlist,
)
from .packaged import is_packaged, resolve

LN_EPS = 1e-6
_ACTIVATIONS = {"relu": F.relu, "swish": F.silu, "gelu": F.gelu}


@dataclass(frozen=True)
class BergamotConfig:
    """The architecture knobs of a Marian transformer that this port implements (from ``model.yml``)."""

    src_vocab_size: int
    tgt_vocab_size: int
    dim: int
    heads: int
    enc_depth: int
    dec_depth: int
    ffn_dim: int
    ffn_depth: int = 2
    dec_ffn_dim: int = 0  # 0: same as ffn_dim
    dec_ffn_depth: int = 0  # 0: same as ffn_depth
    ffn_activation: str = "relu"
    dec_autoreg: str = "rnn"  # "rnn" (SSRU) | "self-attention"
    tied: str = "all"  # "all" (src = tgt = output) | "src" (src = tgt) | "output" (tgt = output) | "none"
    output_bias: bool = True

    @classmethod
    def from_model_yml(cls, cfg: Mapping[str, Any], where: str | Path = "model.yml") -> "BergamotConfig":
        """Validate a parsed ``special:model.yml`` and keep what the forward pass needs."""

        def get(key: str, default: Any = None) -> Any:
            if key not in cfg and default is None:
                raise MarianFileError(f"{where}: model.yml has no {key!r}")
            return cfg.get(key, default)

        def expect(key: str, allowed: tuple, default: Any) -> Any:
            value = cfg.get(key, default)
            if value not in allowed:
                raise MarianFileError(f"{where}: model.yml {key}={value!r} is not supported (supported: {allowed})")
            return value

        expect("type", ("transformer",), "transformer")
        expect("transformer-postprocess", ("dan",), "dan")
        expect("transformer-preprocess", ("", None), "")
        expect("transformer-postprocess-emb", ("d", "", None), "d")
        expect("transformer-train-position-embeddings", (False,), False)
        expect("transformer-tied-layers", ([], None), [])
        autoreg = expect("transformer-decoder-autoreg", ("rnn", "self-attention"), "self-attention")
        if autoreg == "rnn":
            expect("dec-cell", ("ssru",), "ssru")
        activation = expect("transformer-ffn-activation", tuple(_ACTIVATIONS), "swish")  # Marian's default
        vocabs = get("dim-vocabs")
        if not isinstance(vocabs, list) or len(vocabs) != 2:
            raise MarianFileError(f"{where}: model.yml dim-vocabs should list 2 sizes (source, target), got {vocabs!r}")
        if cfg.get("tied-embeddings-all", False):
            tied = "all"
        elif cfg.get("tied-embeddings-src", False):
            tied = "src" if not cfg.get("tied-embeddings", False) else "all"
        elif cfg.get("tied-embeddings", False):
            tied = "output"
        else:
            tied = "none"
        dim, heads = int(get("dim-emb")), int(get("transformer-heads"))
        if dim % heads or dim % 2:
            raise MarianFileError(f"{where}: dim-emb {dim} must be even and divisible by transformer-heads {heads}")
        return cls(
            src_vocab_size=int(vocabs[0]),
            tgt_vocab_size=int(vocabs[1]),
            dim=dim,
            heads=heads,
            enc_depth=int(get("enc-depth")),
            dec_depth=int(get("dec-depth")),
            ffn_dim=int(get("transformer-dim-ffn")),
            ffn_depth=int(cfg.get("transformer-ffn-depth", 2)),
            dec_ffn_dim=int(cfg.get("transformer-dim-decoder-ffn", 0) or 0),
            dec_ffn_depth=int(cfg.get("transformer-decoder-ffn-depth", 0) or 0),
            ffn_activation=activation,
            dec_autoreg=autoreg,
            tied=tied,
            output_bias=not cfg.get("output-omit-bias", False),
        )

    def to_model_yml(self) -> dict[str, Any]:
        """The ``model.yml`` keys that reproduce this config (for writing a Marian file)."""
        return {
            "type": "transformer",
            "dim-vocabs": [self.src_vocab_size, self.tgt_vocab_size],
            "dim-emb": self.dim,
            "transformer-heads": self.heads,
            "enc-depth": self.enc_depth,
            "dec-depth": self.dec_depth,
            "transformer-dim-ffn": self.ffn_dim,
            "transformer-ffn-depth": self.ffn_depth,
            "transformer-dim-decoder-ffn": self.dec_ffn_dim,
            "transformer-decoder-ffn-depth": self.dec_ffn_depth,
            "transformer-ffn-activation": self.ffn_activation,
            "transformer-decoder-autoreg": self.dec_autoreg,
            "dec-cell": "ssru",
            "transformer-postprocess": "dan",
            "transformer-preprocess": "",
            "transformer-postprocess-emb": "d",
            "tied-embeddings-all": self.tied == "all",
            "tied-embeddings-src": self.tied == "src",
            "tied-embeddings": self.tied == "output",
            "output-omit-bias": not self.output_bias,
        }


def sinusoidal_positions(length: int, dim: int, start: int = 0) -> torch.Tensor:
    """Marian's position signal (L, D): sin half then cos half, timescales exp(-i ln(1e4) / (D/2 - 1))."""
    n = dim // 2
    pos = torch.arange(start, start + length, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(n, dtype=torch.float32) * -(math.log(10000.0) / (n - 1)))
    angle = pos * inv[None]
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


def _additive_mask(mask: torch.Tensor) -> torch.Tensor:
    # (B, S) bool -> (B, 1, 1, S) float: 0 where real, a large negative where padded (a finite value, so a fully
    # padded row yields a uniform average instead of NaN)
    return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(~mask, -1e9)[:, None, None, :]


class _LayerNorm(nn.LayerNorm):
    def __init__(self, dim: int) -> None:
        super().__init__(dim, eps=LN_EPS)


class _Attention(nn.Module):
    """Multi-head attention + residual + LayerNorm (Marian's "dan" post-processing)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ln = _LayerNorm(dim)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape  # (B, L, D) -> (B, H, L, D/H)
        return x.view(b, length, self.heads, d // self.heads).transpose(1, 2)

    def keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(self.k(memory)), self.split(self.v(memory))

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        q = self.split(self.q(x))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, L, D/H), scale 1/sqrt(D/H) as Marian
        y = y.transpose(1, 2).reshape(x.shape)
        return self.ln(x + self.o(y))


class _FFN(nn.Module):
    def __init__(self, dim: int, hidden: int, depth: int, activation: str) -> None:
        super().__init__()
        sizes = [dim] + [hidden] * (depth - 1) + [dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = _ACTIVATIONS[activation]
        self.ln = _LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for i, layer in enumerate(self.layers):
            y = layer(y)
            if i < len(self.layers) - 1:
                y = self.act(y)
        return self.ln(x + y)


class _SSRU(nn.Module):
    """Simpler Simple Recurrent Unit: f = sigmoid(x Wf + bf); c = f c_prev + (1 - f)(x W); out = LN(x + relu(c))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w = nn.Linear(dim, dim, bias=False)
        self.wf = nn.Linear(dim, dim)
        self.ln = _LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Whole sequence (B, L, D) -> (B, L, D), starting from a zero cell."""
        a = torch.sigmoid(self.wf(x))
        b = (1 - a) * self.w(x)
        # c_t = a_t c_{t-1} + b_t as a log-depth parallel scan: after the pass with shift k, (a_t, b_t) summarise
        # the 2k steps ending at t (multiplications only, so it is exact and stable)
        shift = 1
        while shift < x.shape[1]:
            b = torch.cat([b[:, :shift], b[:, shift:] + a[:, shift:] * b[:, :-shift]], dim=1)
            a = torch.cat([a[:, :shift], a[:, shift:] * a[:, :-shift]], dim=1)
            shift *= 2
        return self.ln(x + F.relu(b))

    def step(self, x: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x (N, D), cell (N, D) -> (out (N, D), new cell (N, D))."""
        f = torch.sigmoid(self.wf(x))
        cell = f * cell + (1 - f) * self.w(x)
        return self.ln(x + F.relu(cell)), cell


class _EncoderLayer(nn.Module):
    def __init__(self, c: BergamotConfig) -> None:
        super().__init__()
        self.self_attn = _Attention(c.dim, c.heads)
        self.ffn = _FFN(c.dim, c.ffn_dim, c.ffn_depth, c.ffn_activation)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        k, v = self.self_attn.keys_values(x)
        return self.ffn(self.self_attn.attend(x, k, v, bias))


class _DecoderLayer(nn.Module):
    def __init__(self, c: BergamotConfig) -> None:
        super().__init__()
        self.autoreg: nn.Module = _SSRU(c.dim) if c.dec_autoreg == "rnn" else _Attention(c.dim, c.heads)
        self.context = _Attention(c.dim, c.heads)
        self.ffn = _FFN(c.dim, c.dec_ffn_dim or c.ffn_dim, c.dec_ffn_depth or c.ffn_depth, c.ffn_activation)


class _DecoderState:
    """Incremental decoding state for N hypotheses: per layer the SSRU cell (N, D) or the self-attention keys and
    values so far (N, H, t, D/H), the cached cross-attention keys/values (N, H, S, D/H), the memory bias, and
    the position t of the next input."""

    def __init__(self, cells: list, cross: list, bias: torch.Tensor, positions: torch.Tensor, position: int = 0):
        self.cells, self.cross, self.bias = cells, cross, bias
        self.positions, self.position = positions, position  # (steps, D) position signal, next step index

    def select(self, index: torch.Tensor) -> "_DecoderState":
        """Keep / reorder hypotheses: row i of the result is row index[i] of this state."""

        def pick(x: Any) -> Any:
            if x is None:
                return None
            if isinstance(x, tuple):
                return tuple(t.index_select(0, index) for t in x)
            return x.index_select(0, index)

        cells = [pick(c) for c in self.cells]
        return _DecoderState(cells, [pick(kv) for kv in self.cross], pick(self.bias), self.positions, self.position)


@dataclass
class _Output:
    """The output layer used while decoding: all of V, or the shortlist's union V' with a per-row mask."""

    weight: torch.Tensor  # (V', D)
    bias: torch.Tensor | None  # (V',)
    ids: torch.Tensor | None  # (V',) target id of each column; None: column = id
    row_mask: torch.Tensor | None  # (B, V') 0 / -inf: each row's own shortlist inside the union
    unk_col: int | None
    eos_col: int

    def token_ids(self, cols: torch.Tensor) -> torch.Tensor:
        return cols if self.ids is None else self.ids[cols]


class BergamotTranslator(Translator):
    """A Marian-native transformer (Bergamot tiny/base) as a frozen ``Translator``.

    Build it with ``load_bergamot``; the constructor takes already-parsed parts. ``tensors`` are Marian-named
    arrays (``read_marian_model(...).tensors``); None gives a random model from torch's RNG (tests, smoke runs).
    """

    def __init__(
        self,
        *,
        config: BergamotConfig,
        source_vocab: str | Path,
        target_vocab: str | Path | None = None,
        tensors: Mapping[str, np.ndarray] | None = None,
        shortlist: LexicalShortlist | None = None,
        spec: str = "",
        where: str | Path = "<tensors>",
    ) -> None:
        super().__init__()
        self.config = config
        self.spec = spec
        self.embed_dim = config.dim
        self.sp_source = _load_spm(source_vocab)
        self.sp_target = self.sp_source if target_vocab in (None, source_vocab) else _load_spm(target_vocab)
        for side, sp, size in (
            ("source", self.sp_source, config.src_vocab_size),
            ("target", self.sp_target, config.tgt_vocab_size),
        ):
            if sp.get_piece_size() != size:
                raise ValueError(f"{side} vocabulary has {sp.get_piece_size()} pieces but the model expects {size}")
        self.eos_id = int(self.sp_target.eos_id())
        self.unk_id = int(self.sp_target.unk_id())
        if self.eos_id < 0 or self.unk_id < 0:
            raise ValueError("the SentencePiece vocabulary must define </s> and <unk> (Marian needs both)")
        self.pad_id = self.unk_id  # see the module docstring for why padding is <unk>, not Marian's </s>
        self.shortlist = shortlist

        c = config
        # tied tensors are registered once (state_dict and fingerprint see each weight once); the properties
        # tgt_embed / out_weight resolve the tying
        self.src_embed = nn.Parameter(torch.empty(c.src_vocab_size, c.dim))
        untied_tgt = c.tied not in ("all", "src")
        untied_out = c.tied not in ("all", "output")
        self.tgt_embed_own = nn.Parameter(torch.empty(c.tgt_vocab_size, c.dim)) if untied_tgt else None
        self.out_weight_own = nn.Parameter(torch.empty(c.tgt_vocab_size, c.dim)) if untied_out else None
        self.out_bias = nn.Parameter(torch.zeros(c.tgt_vocab_size)) if c.output_bias else None
        self.encoder = nn.ModuleList(_EncoderLayer(c) for _ in range(c.enc_depth))
        self.decoder = nn.ModuleList(_DecoderLayer(c) for _ in range(c.dec_depth))
        self.scale = math.sqrt(c.dim)
        if tensors is None:
            self._init_random()
        else:
            self._load_tensors(tensors, where)
        self.freeze()

    @property
    def tgt_embed(self) -> torch.Tensor:
        """(V_tgt, D_m) target embeddings (unscaled)."""
        return self.src_embed if self.tgt_embed_own is None else self.tgt_embed_own

    @property
    def out_weight(self) -> torch.Tensor:
        """(V_tgt, D_m) output layer, rows are classes; the target embedding when tied."""
        return self.tgt_embed if self.out_weight_own is None else self.out_weight_own

    # --- Marian names <-> parameters -------------------------------------------------------------
    def _marian_names(self) -> list[tuple[str, nn.Parameter, bool]]:
        """(Marian item name, parameter, transpose) for every tensor; Marian matrices are (in, out)."""
        c, out = self.config, []

        def linear(prefix: str, suffix: str, lin: nn.Linear) -> None:
            out.append((f"{prefix}_W{suffix}", lin.weight, True))
            if lin.bias is not None:
                out.append((f"{prefix}_b{suffix}", lin.bias, False))

        def ln(prefix: str, norm: nn.LayerNorm) -> None:
            out.append((f"{prefix}_ln_scale", norm.weight, False))
            out.append((f"{prefix}_ln_bias", norm.bias, False))

        def attention(prefix: str, att: _Attention) -> None:
            for s in "qkvo":
                linear(prefix, s, getattr(att, s))
            ln(f"{prefix}_Wo", att.ln)

        def ffn(prefix: str, f: _FFN) -> None:
            for j, lin in enumerate(f.layers, start=1):
                linear(f"{prefix}_ffn", str(j), lin)
            ln(f"{prefix}_ffn_ffn", f.ln)

        shared = "Wemb" if c.tied in ("all", "src") else None
        out.append((shared or "encoder_Wemb", self.src_embed, False))
        if shared is None:
            out.append(("decoder_Wemb", self.tgt_embed, False))
        if c.tied not in ("all", "output"):
            out.append(("decoder_ff_logit_out_W", self.out_weight, True))
        if self.out_bias is not None:
            out.append(("decoder_ff_logit_out_b", self.out_bias, False))
        for i, layer in enumerate(self.encoder, start=1):
            attention(f"encoder_l{i}_self", layer.self_attn)
            ffn(f"encoder_l{i}", layer.ffn)
        for i, layer in enumerate(self.decoder, start=1):
            if isinstance(layer.autoreg, _SSRU):
                out.append((f"decoder_l{i}_rnn_W", layer.autoreg.w.weight, True))
                linear(f"decoder_l{i}_rnn", "f", layer.autoreg.wf)
                ln(f"decoder_l{i}_rnn_ffn", layer.autoreg.ln)
            else:
                attention(f"decoder_l{i}_self", layer.autoreg)
            attention(f"decoder_l{i}_context", layer.context)
            ffn(f"decoder_l{i}", layer.ffn)
        return out

    def _load_tensors(self, tensors: Mapping[str, np.ndarray], where: str | Path) -> None:
        with torch.no_grad():
            for name, param, transpose in self._marian_names():
                if name not in tensors:
                    raise MarianFileError(f"{where}: item {name!r} is missing (the architecture in model.yml needs it)")
                value = torch.from_numpy(np.asarray(tensors[name], dtype=np.float32))
                value = value.T if transpose else value.reshape(-1) if param.dim() == 1 else value
                if tuple(value.shape) != tuple(param.shape):
                    expected = tuple(param.shape[::-1]) if transpose else tuple(param.shape)
                    got = tuple(tensors[name].shape)
                    raise MarianFileError(f"{where}: item {name!r} has shape {got}, model.yml implies {expected}")
                param.copy_(value)

    def _init_random(self) -> None:
        with torch.no_grad():
            for name, param, _ in self._marian_names():
                if name.endswith("_ln_scale"):
                    param.fill_(1.0)
                elif param.dim() == 1:
                    param.normal_(0.0, 0.02)
                else:
                    param.normal_(0.0, 1.0 / math.sqrt(param.shape[-1]))

    def to_marian_tensors(self) -> dict[str, np.ndarray]:
        """Marian-named float32 arrays in Marian's layout, ready for ``write_marian_bin``."""
        out = {}
        for name, param, transpose in self._marian_names():
            t = param.detach().cpu()
            out[name] = (t.T if transpose else t.reshape(1, -1) if t.dim() == 1 else t).contiguous().numpy().copy()
        return out

    # --- text side -------------------------------------------------------------------------------
    def tokenize_source(self, texts: Sequence[str]) -> list[list[int]]:
        return [ids + [self.eos_id] for ids in self.sp_source.encode(list(texts), out_type=int)]

    def tokenize_target(self, texts: Sequence[str]) -> list[list[int]]:
        return [ids + [self.eos_id] for ids in self.sp_target.encode(list(texts), out_type=int)]

    def detokenize(self, ids: Sequence[Sequence[int]]) -> list[str]:
        drop = {self.eos_id, self.unk_id}
        return [self.sp_target.decode([int(i) for i in row if int(i) not in drop]) for row in ids]

    def detokenize_source(self, ids: Sequence[Sequence[int]]) -> list[str]:
        drop = {self.eos_id, self.unk_id}
        return [self.sp_source.decode([int(i) for i in row if int(i) not in drop]) for row in ids]

    @property
    def source_vocab_size(self) -> int:
        return self.config.src_vocab_size

    @property
    def target_vocab_size(self) -> int:
        return self.config.tgt_vocab_size

    # --- embeddings ------------------------------------------------------------------------------
    def source_embedding_matrix(self) -> torch.Tensor:
        """(V, D_m) source embeddings times sqrt(D_m), as the encoder receives them."""
        return self.src_embed * self.scale

    def embed_source_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, D_m) in ``inputs_embeds`` space (scaled), without building the scaled matrix."""
        return F.embedding(ids, self.src_embed) * self.scale

    # --- encoder / decoder -----------------------------------------------------------------------
    def encode_embeddings(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, D_m) scaled embeddings + mask (B, L) -> memory (B, L, D_m); positions are added here."""
        if x.dim() != 3 or x.shape[-1] != self.embed_dim or mask.shape != x.shape[:2]:
            raise ValueError(
                f"encode_embeddings: expected x (B, L, {self.embed_dim}) and mask (B, L), "
                f"got {tuple(x.shape)} and {tuple(mask.shape)}"
            )
        h = x + sinusoidal_positions(x.shape[1], self.embed_dim).to(x)
        bias = _additive_mask(mask.bool()).to(x)
        for layer in self.encoder:
            h = layer(h, bias)
        return h

    def _target_inputs(self, targets: torch.Tensor) -> torch.Tensor:
        # (B, L) ids -> (B, L, D): embeddings of targets shifted right, zero vector at position 0, scaled, + positions
        emb = F.embedding(targets[:, :-1], self.tgt_embed) * self.scale
        emb = torch.cat([emb.new_zeros(targets.shape[0], 1, self.embed_dim), emb], dim=1)
        return emb + sinusoidal_positions(targets.shape[1], self.embed_dim).to(emb)

    def decoder_hidden(self, memory: torch.Tensor, memory_mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder states before the output layer: (B, L) targets -> (B, L, D_m)."""
        h = self._target_inputs(targets)
        bias = _additive_mask(memory_mask.bool()).to(h)
        length = targets.shape[1]
        causal = torch.full((length, length), -1e9, device=h.device, dtype=h.dtype).triu(1)
        for layer in self.decoder:
            if isinstance(layer.autoreg, _SSRU):
                h = layer.autoreg(h)
            else:
                k, v = layer.autoreg.keys_values(h)
                h = layer.autoreg.attend(h, k, v, causal)
            k, v = layer.context.keys_values(memory)
            h = layer.ffn(layer.context.attend(h, k, v, bias))
        return h

    def output_logits(self, h: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        """(..., D_m) -> (..., V) logits, or (..., len(vocab)) for a subset of target ids."""
        w = self.out_weight if vocab is None else self.out_weight.index_select(0, vocab)
        b = self.out_bias if vocab is None or self.out_bias is None else self.out_bias.index_select(0, vocab)
        return F.linear(h, w, b)

    def decoder_logits(self, memory: torch.Tensor, memory_mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """memory (B, S, D_m), memory_mask (B, S), targets (B, L) -> logits (B, L, V) predicting targets[:, t]."""
        return self.output_logits(self.decoder_hidden(memory, memory_mask, targets))

    # --- incremental decoding --------------------------------------------------------------------
    def _start_state(self, memory: torch.Tensor, memory_mask: torch.Tensor, steps: int = 1) -> _DecoderState:
        n = memory.shape[0]
        cells: list = []
        for layer in self.decoder:
            cells.append(memory.new_zeros(n, self.embed_dim) if isinstance(layer.autoreg, _SSRU) else None)
        cross = [layer.context.keys_values(memory) for layer in self.decoder]
        positions = sinusoidal_positions(steps, self.embed_dim).to(memory)  # (steps, D), computed once
        return _DecoderState(cells, cross, _additive_mask(memory_mask.bool()).to(memory), positions)

    def _step(self, state: _DecoderState, prev: torch.Tensor | None, n: int) -> torch.Tensor:
        """One decoder step for N hypotheses: previous ids (N,) or None at t = 0 -> hidden (N, D_m)."""
        if prev is None:
            x = self.tgt_embed.new_zeros(n, 1, self.embed_dim)
        else:
            x = F.embedding(prev, self.tgt_embed)[:, None] * self.scale
        if state.position >= len(state.positions):
            state.positions = sinusoidal_positions(2 * state.position + 1, self.embed_dim).to(x)
        x = x + state.positions[state.position]
        for i, layer in enumerate(self.decoder):
            if isinstance(layer.autoreg, _SSRU):
                y, state.cells[i] = layer.autoreg.step(x[:, 0], state.cells[i])
                x = y[:, None]
            else:
                k, v = layer.autoreg.keys_values(x)
                if state.cells[i] is not None:
                    k, v = torch.cat([state.cells[i][0], k], 2), torch.cat([state.cells[i][1], v], 2)
                state.cells[i] = (k, v)
                x = layer.autoreg.attend(x, k, v, None)
            k, v = state.cross[i]
            x = layer.ffn(layer.context.attend(x, k, v, state.bias))
        state.position += 1
        return x[:, 0]

    def _output_for(self, source_ids: Sequence[Sequence[int]] | None, batch: int, device: torch.device) -> _Output:
        """The decoding output layer: the full vocabulary, or with a shortlist and source ids, the sorted union of
        the rows' allowed ids (one smaller matmul per step) plus a per-row mask (batch-independent results)."""
        if self.shortlist is None or source_ids is None:
            return _Output(self.out_weight, self.out_bias, None, None, self.unk_id, self.eos_id)
        if len(source_ids) != batch:
            raise ValueError(f"generate: source_ids has {len(source_ids)} rows for a batch of {batch}")
        rows = [self.shortlist.allowed(ids, self.target_vocab_size) for ids in source_ids]
        union = np.unique(np.concatenate(rows + [np.array([self.eos_id])]))
        allowed = np.zeros((batch, len(union)), dtype=bool)
        for b, row in enumerate(rows):
            allowed[b, np.searchsorted(union, row)] = True
        row_mask = torch.zeros(allowed.shape, device=device)
        row_mask.masked_fill_(torch.from_numpy(~allowed).to(device), -math.inf)
        ids = torch.from_numpy(union).long().to(device)
        unk = np.flatnonzero(union == self.unk_id)
        return _Output(
            self.out_weight.index_select(0, ids),
            None if self.out_bias is None else self.out_bias.index_select(0, ids),
            ids,
            row_mask,
            int(unk[0]) if len(unk) else None,
            int(np.flatnonzero(union == self.eos_id)[0]),
        )

    @staticmethod
    def _scores(h: torch.Tensor, out: _Output, rows: torch.Tensor) -> torch.Tensor:
        """Hidden (N, D) of the batch rows ``rows`` (N,) -> logits (N, V') as decoding sees them."""
        logits = F.linear(h, out.weight, out.bias)
        if out.row_mask is not None:
            logits = logits + out.row_mask[rows]
        if out.unk_col is not None:
            logits[:, out.unk_col] = -math.inf  # Marian's default: never emit <unk>
        return logits

    @torch.inference_mode()
    def generate(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        *,
        beam: int = 4,
        max_len: int = 150,
        length_penalty: float = 1.0,
        source_ids: Sequence[Sequence[int]] | None = None,
        max_len_factor: float | None = None,
    ) -> list[list[int]]:
        """Batched greedy (beam 1) or beam search from memory (B, S, D_m) -> target ids without specials.

        max_len counts generated tokens including the final ``</s>``. ``source_ids`` (the source tokens of each
        row) turn on the lexical shortlist when this translator has one. ``max_len_factor`` caps each row at
        factor x its memory length (Marian's ``max-length-factor``; meaningful when the memory comes from text).
        """
        if memory.dim() != 3 or memory_mask.shape != memory.shape[:2]:
            raise ValueError(
                f"generate: expected memory (B, S, D) and mask (B, S), got {tuple(memory.shape)} and {tuple(memory_mask.shape)}"
            )
        if beam < 1 or max_len < 1:
            raise ValueError(f"generate: beam ({beam}) and max_len ({max_len}) must be >= 1")
        n = memory.shape[0]
        limits = torch.full((n,), max_len, dtype=torch.long)
        if max_len_factor is not None:
            src_len = memory_mask.sum(1).cpu()
            limits = torch.minimum(limits, (src_len.float() * max_len_factor).long().clamp(min=1))
        out = self._output_for(source_ids, n, memory.device)
        if beam == 1:
            return self._greedy(memory, memory_mask, limits, out)
        return self._beam(memory, memory_mask, limits, out, beam=beam, length_penalty=length_penalty)

    def _greedy(self, memory: torch.Tensor, memory_mask: torch.Tensor, limits: torch.Tensor, out: _Output) -> list[list[int]]:
        n = memory.shape[0]
        state = self._start_state(memory, memory_mask, int(limits.max()))
        hyps: list[list[int]] = [[] for _ in range(n)]
        active = torch.arange(n)  # rows of the original batch still decoding
        prev: torch.Tensor | None = None
        for t in range(int(limits.max())):
            h = self._step(state, prev, len(active))
            cols = self._scores(h, out, active).argmax(-1).cpu()
            ids = out.token_ids(cols)
            keep = (cols != out.eos_col) & (t + 1 < limits[active])
            for row, token, col in zip(active.tolist(), ids.tolist(), cols.tolist()):
                if col != out.eos_col:
                    hyps[row].append(token)
            if not bool(keep.any()):
                break
            idx = keep.nonzero()[:, 0]
            if len(idx) < len(active):  # drop finished rows so later steps only compute live ones
                state, active = state.select(idx.to(memory.device)), active[idx]
            prev = ids[idx].to(memory.device)
        return hyps

    def _beam(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        limits: torch.Tensor,
        out: _Output,
        *,
        beam: int,
        length_penalty: float,
    ) -> list[list[int]]:
        n, k = memory.shape[0], beam
        expand = torch.arange(n, device=memory.device).repeat_interleave(k)
        state = self._start_state(memory[expand], memory_mask[expand], int(limits.max()))
        scores = torch.full((n, k), -math.inf)
        scores[:, 0] = 0.0  # one live hypothesis per sentence at t = 0
        width = torch.full((n,), k, dtype=torch.long)  # live beam width per sentence (shrinks as hyps finish)
        history = torch.zeros(n, k, 0, dtype=torch.long)
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
        active = torch.arange(n)
        prev: torch.Tensor | None = None
        for t in range(int(limits.max())):
            m = len(active)
            h = self._step(state, prev, m * k)
            rows = active.to(memory.device).repeat_interleave(k)
            logp = torch.log_softmax(self._scores(h, out, rows), dim=-1).cpu()  # (m k, V')
            v = logp.shape[-1]
            cand = (scores[:, :, None] + logp.view(m, k, v)).view(m, k * v)
            top, flat = cand.topk(k, dim=-1)  # (m, k)
            src, cols = flat // v, flat % v
            valid = (torch.arange(k)[None] < width[:, None]) & torch.isfinite(top)
            last = (t + 1 >= limits[active])[:, None]
            ends = valid & ((cols == out.eos_col) | last)
            ids = out.token_ids(cols.to(memory.device)).cpu()
            new_hist = torch.cat([history.gather(1, src[:, :, None].expand(-1, -1, t)), ids[:, :, None]], dim=2)
            norm = float(t + 1) ** length_penalty
            for i, j in ends.nonzero().tolist():
                seq = new_hist[i, j].tolist()
                if cols[i, j] == out.eos_col:
                    seq = seq[:-1]
                finished[int(active[i])].append((float(top[i, j]) / norm, seq))
            alive = valid & ~ends
            width = alive.sum(1)
            scores = torch.where(alive, top, torch.full_like(top, -math.inf))
            history = new_hist
            live = (width > 0).nonzero()[:, 0]
            if len(live) == 0:
                break
            rows = (live[:, None] * k + src[live]).reshape(-1)  # hypotheses of live sentences, reordered by source beam
            state = state.select(rows.to(memory.device))
            active, scores, width, history = active[live], scores[live], width[live], history[live]
            prev = ids[live].reshape(-1).to(memory.device)
        return [max(f, key=lambda x: x[0])[1] if f else [] for f in finished]

    # --- text -> text ----------------------------------------------------------------------------
    def translate_text(
        self,
        texts: Sequence[str],
        *,
        beam: int = 4,
        max_len: int = 150,
        batch_size: int = 16,
        length_penalty: float = 1.0,
        max_len_factor: float | None = 2.5,
    ) -> list[str]:
        """Text -> text with this model alone; uses the shortlist when loaded with one, and Marian's
        ``max-length-factor`` (2.5 in Bergamot configs) on top of ``max_len``. Sentences are length-sorted into
        batches (results come back in input order)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[str] = [""] * len(texts)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids = self.tokenize_source([self.source_prefix + texts[i] for i in chunk])
            batch, mask = pad_id_rows(ids, self.pad_id, device=self.device)  # on the model's device (a GPU too)
            with torch.no_grad():
                memory = self.encode_ids(batch, mask)
                hyp = self.generate(
                    memory,
                    mask,
                    beam=beam,
                    max_len=max_len,
                    length_penalty=length_penalty,
                    source_ids=ids,
                    max_len_factor=max_len_factor,
                )
            for i, text in zip(chunk, self.detokenize(hyp)):
                out[i] = text
        return out


def _load_spm(path: str | Path) -> spm.SentencePieceProcessor:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SentencePiece vocabulary not found: {path}")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(str(path))
    except (OSError, RuntimeError) as e:
        raise ValueError(f"{path}: not a SentencePiece model ({e}); Marian .yml vocabularies are not supported") from e
    return sp


def load_bergamot(path_or_dir: str | Path, *, shortlist: bool = False) -> BergamotTranslator:
    """Load a Marian-native model: ``packaged:bergamot-en-pt``, a Bergamot directory, or a model file.

    ``shortlist`` loads the lexical shortlist (``lex*.s2t.bin``) so ``translate_text`` restricts each sentence's
    output vocabulary (faster; Bergamot's own setting). It is off by default: training and ``decoder_logits``
    always use the full vocabulary.
    """
    spec = str(path_or_dir)
    if is_packaged(spec):
        _, dirs = resolve(spec)
        path = dirs[0]
    else:
        path = Path(path_or_dir).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"Marian model path not found: {path}")
    model_path, (src_vocab, tgt_vocab), lex_path = find_model_files(path)
    model: MarianModelFile = read_marian_model(model_path)
    config = BergamotConfig.from_model_yml(model.config, model_path)
    lex = None
    if shortlist:
        if lex_path is None:
            raise FileNotFoundError(f"shortlist=True but no lex*.s2t.bin next to {model_path}")
        lex = read_shortlist(lex_path, target_vocab_size=config.tgt_vocab_size)
    return BergamotTranslator(
        config=config,
        source_vocab=src_vocab,
        target_vocab=tgt_vocab,
        tensors=model.tensors,
        shortlist=lex,
        spec=spec,
        where=model_path,
    )

"""The two seams that keep foundations swappable: SpeechEncoder and Translator.

Shape legend (used in every module of sltalign):
    B    batch size
    T_s  speech-encoder frames (Whisper: 50 per second of audio)
    S    connector output frames
    L    token positions (source or target side)
    V    vocabulary size
    D_s  speech-encoder width
    D_m  translator (MT) model width
Masks are bool tensors, True where a position holds real data and False on padding.

Both interfaces are frozen torch modules: they never train. ``train()`` on them is a no-op that keeps
them in eval mode, so dropout never runs in a frozen part even when the surrounding model trains.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


#: compute precisions a SpeechEncoder offers
ENCODER_PRECISIONS = ("fp32", "bf16")


def pad_id_rows(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows of different lengths -> ids (B, L) padded with ``pad_id`` and mask (B, L), True on the
    rows' own positions (so an id equal to ``pad_id`` inside a row still counts as real)."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.bool, device=device)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = True
    return ids, mask


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """ "auto" -> "bf16" where the device multiplies bf16 matrices natively (a CPU with AMX tiles, a GPU
    with bf16 support), else "fp32"; "fp32" and "bf16" are returned as given. On a CPU without AMX,
    bf16 autocast is emulated and can be slower than fp32, hence the check."""
    if precision in ENCODER_PRECISIONS:
        return precision
    if precision != "auto":
        raise ValueError(f"precision must be 'auto' or one of {ENCODER_PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.x; absent: assume none
        return "bf16" if amx is not None and amx() else "fp32"
    return "fp32"


class FrozenModule(nn.Module):
    """A module whose parameters never require grad and which stays in eval mode."""

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenModule":  # noqa: ARG002 - frozen: always eval
        return super().train(False)

    def fingerprint(self) -> str:
        """A short hash of the weights, stored in connector checkpoints to catch mismatched foundations.

        Hashes the names, shapes and a strided sample of every tensor so it is cheap on large models
        yet changes when any tensor is swapped or any shape differs.
        """
        h = hashlib.sha256()
        for name, t in sorted(self.state_dict().items()):
            flat = t.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            sample = flat[::step].to(torch.float32).cpu().numpy()
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(np.ascontiguousarray(sample).tobytes())
        return h.hexdigest()[:16]


class SpeechEncoder(FrozenModule, abc.ABC):
    """A frozen speech encoder: raw 16 kHz mono audio in, hidden states and a padding mask out."""

    sample_rate: int = 16000
    #: width D_s of the returned states
    dim: int
    #: longest input in seconds the encoder takes in one window (None: unbounded)
    max_seconds: float | None = None
    #: a name that reloads this encoder through ``load_speech_encoder`` (e.g. "packaged:whisper-base")
    spec: str = ""
    #: how the (weights stay float32) forward pass computes: "fp32", or "bf16" under autocast
    precision: str = "fp32"
    #: what the forward pass depends on besides the weights ("trim", "pad30", "full"; set by subclasses)
    mode: str = "full"
    #: what computes the forward pass: "torch", or "ctranslate2" (foundation/ctranslate2_encoder.py)
    engine: str = "torch"

    def set_precision(self, precision: str) -> "SpeechEncoder":
        """Compute in "fp32" or "bf16" (autocast: matrix products in bfloat16, states returned float32).

        On a CPU with AMX, bf16 encodes 1.7x faster one clip at a time and 2.8x in batches of 8 (Whisper-base,
        bench/bench_encoder_modes.py) and moves the states by ~1% (relative L2 error 0.7-0.8% on real speech,
        1.4% on eSpeak clips); a connector should be used with the precision it was trained on, which
        checkpoints record. Returns self.
        """
        if precision not in ENCODER_PRECISIONS:
            raise ValueError(f"speech encoder precision must be one of {ENCODER_PRECISIONS}, got {precision!r}")
        self.precision = precision
        return self

    @property
    def cache_mode(self) -> str:
        """What an encoder-output cache keys on besides the weights: the mode, plus the precision if not fp32,
        plus the engine if not torch ("trim", "trim+bf16", "trim+ctranslate2-int8", "trim+ctranslate2-fp32")."""
        if self.engine != "torch":
            return f"{self.mode}+{self.engine}-{self.precision}"
        return self.mode if self.precision == "fp32" else f"{self.mode}+{self.precision}"

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The autocast context of this encoder's precision on ``device`` (a no-op for fp32)."""
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @abc.abstractmethod
    def encode(self, waveforms: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch of 1-D float waveforms (16 kHz, any lengths).

        Returns states (B, T_s, D_s) float32 and mask (B, T_s) bool. An utterance's states do not depend
        on what else is in the batch.
        """

    def frames_for(self, num_samples: int) -> int:
        """Number of valid output frames (T_s) for a waveform of ``num_samples`` samples."""
        raise NotImplementedError


class Translator(FrozenModule, abc.ABC):
    """A frozen text-to-text translation model, opened up at the points the connector plugs into.

    Token ids: ``tokenize_source`` / ``tokenize_target`` return python lists that end with the model's
    end-of-sentence id; padding uses ``pad_id``.
    Embedding space: ``source_embedding_matrix`` (V, D_m), ``embed_source_ids`` and ``embed_prompt`` return
    vectors exactly as the MT encoder receives them in place of token embeddings (``inputs_embeds``:
    any embedding scale applied, positions not yet added), so connector output, prompts and CTC-compressed
    embeddings all live in one space.
    """

    #: width D_m of the MT encoder input and of the decoder's cross-attention memory
    embed_dim: int
    pad_id: int
    eos_id: int
    spec: str = ""
    #: text prepended to every source when the model translates text (T5 task prefix), "" if none
    source_prefix: str = ""

    # --- text side -----------------------------------------------------------------------------
    @abc.abstractmethod
    def tokenize_source(self, texts: Sequence[str]) -> list[list[int]]: ...

    @abc.abstractmethod
    def tokenize_target(self, texts: Sequence[str]) -> list[list[int]]: ...

    @abc.abstractmethod
    def detokenize(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Target ids -> text, special tokens removed."""

    def detokenize_source(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Source ids -> text, special tokens removed (what a CTC head over the source vocabulary spells).

        Defaults to ``detokenize``: right where source and target share one vocabulary; models with
        separate ones override it.
        """
        return self.detokenize(ids)

    @property
    @abc.abstractmethod
    def source_vocab_size(self) -> int: ...

    @property
    @abc.abstractmethod
    def target_vocab_size(self) -> int: ...

    # --- embeddings ----------------------------------------------------------------------------
    @abc.abstractmethod
    def source_embedding_matrix(self) -> torch.Tensor:
        """(V, D_m) frozen source-embedding rows, in ``inputs_embeds`` space (scale applied)."""

    def embed_source_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, D_m) in ``inputs_embeds`` space."""
        return nn.functional.embedding(ids, self.source_embedding_matrix())

    def embed_prompt(self, text: str) -> torch.Tensor:
        """A text prompt (e.g. "translate English to Portuguese: ", ">>por<<") -> (L, D_m), no EOS."""
        ids = self.tokenize_source([text])[0]
        if ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        return self.embed_source_ids(torch.tensor(ids, dtype=torch.long).unsqueeze(0))[0]

    # --- encoder / decoder ---------------------------------------------------------------------
    @abc.abstractmethod
    def encode_embeddings(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MT encoder on input embeddings: x (B, L, D_m), mask (B, L) -> memory (B, L, D_m)."""

    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MT encoder on token ids (the text path): (B, L) -> memory (B, L, D_m)."""
        return self.encode_embeddings(self.embed_source_ids(ids), mask)

    @abc.abstractmethod
    def decoder_logits(self, memory: torch.Tensor, memory_mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder. memory (B, S, D_m), memory_mask (B, S), targets (B, L) ids padded with
        pad_id (the translator shifts them right itself) -> logits (B, L, V) predicting targets[:, t]."""

    @abc.abstractmethod
    def generate(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        *,
        beam: int = 4,
        max_len: int = 150,
        length_penalty: float = 1.0,
    ) -> list[list[int]]:
        """Batched beam search (beam 1 = greedy) from a memory; returns target ids without specials."""

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (token batches are made there: a model moved to a GPU translates text
        on it)."""
        return next(self.parameters(), torch.empty(0)).device

    def translate_text(self, texts: Sequence[str], *, beam: int = 4, max_len: int = 150, batch_size: int = 16) -> list[str]:
        """Text -> text with this model alone (cascade and MT-on-gold baselines)."""
        out: list[str] = []
        for i in range(0, len(texts), batch_size):
            chunk = [self.source_prefix + t for t in texts[i : i + batch_size]]
            batch, mask = pad_id_rows(self.tokenize_source(chunk), self.pad_id, device=self.device)
            with torch.no_grad():
                memory = self.encode_ids(batch, mask)
                hyp = self.generate(memory, mask, beam=beam, max_len=max_len)
            out.extend(self.detokenize(hyp))
        return out

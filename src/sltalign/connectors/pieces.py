"""A CTC head over a small vocabulary of word pieces learned from the training transcripts.

The tied head (``compress.TiedCTCHead``) scores the connector output against the frozen MT's own 32k
source-embedding rows. Measured on 12,000 synthetic clips it reaches a dev CTC word error rate of ~59%
against 28% on its training clips, and most errors are rare words: a token heard fewer than ~20 times has
an embedding row the connector never learns to point at (docs/RESULTS.md, "error analysis"). A few hundred
pieces learned from the transcripts themselves (SentencePiece unigram) are each heard thousands of times and
spell any word, rare ones included. Measured on the demo's 12k clips and 16 minutes (docs/RESULTS.md, "Word
pieces, 3 queries per window, dictionary phrases") 512 pieces did not beat the tied head: level dev BLEU,
higher WER, and far worse on real speech; the head is an option, off by default.

The head is a linear layer, not tied to the MT. The MT still reads its own embedding rows: at inference the
greedy CTC transcript is spelled out from the pieces and tokenized with the MT's source tokenizer, and
hard compression hands the MT encoder the embedding rows of those tokens (``AlignedST.bridge``). Only the
``hard`` compression mode (or none, for the CTC-only diagnostics) applies: the connector vectors are not in
the MT's embedding space, so ``soft`` and ``posterior`` have nothing meaningful to average.

    out (B, S, D_m) -> logits (B, S, P + 1), P pieces, blank last (index P)

The SentencePiece model is part of the head: it travels as bytes (``model_proto``) and is written beside
the weights in checkpoints (``ctc_pieces.model``), so a checkpoint always decodes with the pieces it
learned.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from torch import nn

from .ctc_head import CTCHead, CTCHeadDataError, TargetFn, register_head

#: file name of the SentencePiece model inside a checkpoint directory
PIECES_FILE = "ctc_pieces.model"


def train_pieces(texts: Iterable[str], *, vocab_size: int) -> bytes:
    """Learn a SentencePiece unigram model of at most ``vocab_size`` pieces from ``texts``; returns its bytes.

    Casing and punctuation are kept (the MT reads cased, punctuated text); every character of the texts
    is covered, so any transcript can be spelled. Text too small for ``vocab_size`` pieces gets fewer (all
    it has: the head's ``vocab_size`` says how many).
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 8:
        raise ValueError(f"train_pieces: vocab_size must be an integer >= 8, got {vocab_size!r}")
    sentences = [t.strip() for t in texts if t and t.strip()]
    if not sentences:
        raise ValueError("train_pieces: no non-empty transcripts to learn pieces from")
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=buf,
            vocab_size=vocab_size,
            model_type="unigram",
            character_coverage=1.0,
            hard_vocab_limit=False,  # a small corpus gets the pieces it has rather than an error
            # no BOS/EOS/PAD: CTC needs none of them; id 0 stays <unk> for characters never seen
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            unk_id=0,
            # deterministic: one thread, every sentence, no shuffling: the same text gives the same pieces
            num_threads=1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise ValueError(f"train_pieces: cannot learn {vocab_size} pieces from {len(sentences)} transcripts: {e}") from e
    return buf.getvalue()


@register_head
class PieceCTCHead(CTCHead):
    """Linear CTC head over SentencePiece pieces (blank last), carrying its SentencePiece model.

    ``model_proto`` are the bytes of a SentencePiece model (``train_pieces``); ``embed_dim`` the width
    of the connector output it reads (D_m).
    """

    KIND, TEXT, FILE = "pieces", True, PIECES_FILE

    def __init__(self, *, embed_dim: int, model_proto: bytes) -> None:
        super().__init__()
        if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
            raise ValueError(f"PieceCTCHead: embed_dim must be a positive integer, got {embed_dim!r}")
        self.processor = spm.SentencePieceProcessor()
        try:
            self.processor.LoadFromSerializedProto(model_proto)
        except Exception as e:  # sentencepiece raises RuntimeError or OSError for damaged bytes
            raise ValueError(f"PieceCTCHead: the pieces model is not a valid SentencePiece model ({e})") from e
        self.model_proto = bytes(model_proto)
        self.embed_dim = embed_dim
        self.vocab_size = self.processor.get_piece_size()
        self.proj = nn.Linear(embed_dim, self.vocab_size + 1)

    def config(self) -> dict[str, int | str]:
        return {"kind": "pieces", "embed_dim": self.embed_dim, "vocab_size": self.vocab_size}

    def forward(self, out: torch.Tensor, embedding_matrix: torch.Tensor | None = None) -> torch.Tensor:
        """out (B, S, D_m) -> logits (B, S, P + 1), blank = index P. ``embedding_matrix`` is ignored (the
        head is not tied); it is accepted so both heads are called alike."""
        if out.shape[-1] != self.embed_dim:
            raise ValueError(f"PieceCTCHead: out has width {out.shape[-1]}, the head was built for embed_dim={self.embed_dim}")
        return self.proj(out)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Transcripts -> piece ids (CTC targets)."""
        return [list(ids) for ids in self.processor.encode(list(texts), out_type=int)]

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Piece ids -> text (the connector's transcript; <unk> pieces are dropped)."""
        unk = self.processor.unk_id()
        return [self.processor.decode([int(i) for i in row if int(i) != unk]) for row in ids]

    # -- the CTC-head interface (connectors/ctc_head.py) -------------------------------------------
    @classmethod
    def prepare(cls, *, model_cfg: Any, train_utts: Sequence[Any], held_out: Sequence[str], seed: int) -> bytes:
        """A SentencePiece model of ``model_cfg.ctc_vocab_size`` pieces learned from the training transcripts."""
        return train_pieces((u.transcript or "" for u in train_utts), vocab_size=model_cfg.ctc_vocab_size)

    def data(self) -> bytes:
        return self.model_proto

    @classmethod
    def from_data(cls, *, embed_dim: int, data: Any) -> PieceCTCHead:
        if not isinstance(data, (bytes, bytearray)):
            raise ValueError("this CTC head is over word pieces: its SentencePiece model (bytes) is needed")
        return cls(embed_dim=embed_dim, model_proto=bytes(data))

    def write_data(self, directory: Path) -> None:
        (Path(directory) / PIECES_FILE).write_bytes(self.model_proto)

    @classmethod
    def read_data(cls, directory: Path) -> bytes:
        f = Path(directory) / PIECES_FILE
        if not f.is_file():
            raise CTCHeadDataError(f"{directory}: its CTC head is over word pieces but {PIECES_FILE} is missing")
        return f.read_bytes()

    def targets(self, utts: Sequence[Any], translator: Any) -> TargetFn:
        """CTC targets: the head's own pieces."""
        return self.encode

    def read(self, ids: Sequence[Sequence[int]], translator: Any) -> list[str]:
        return self.decode(ids)

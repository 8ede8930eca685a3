"""The CTC-head interface: everything the model, the objectives, checkpoints and training ask of a CTC head.

``ModelConfig.ctc_head`` names one of ``CTC_HEADS``:

- ``"none"``: no head (the paper's recipe);
- ``"tied"``: classes are the frozen MT's source vocabulary, scored against its embedding rows
  (``compress.TiedCTCHead``); needed by soft/posterior compression;
- ``"pieces"``: a linear head over a few hundred SentencePiece pieces learned from the training transcripts
  (``pieces.PieceCTCHead``; ``ModelConfig.ctc_vocab_size`` pieces);
- ``"phones"``: a linear head over eSpeak NG's phones, read through a pronunciation lexicon
  (``phones.PhoneCTCHead``).

What a head says about itself, so that no caller branches on its class:

- ``TEXT``: its transcript reaches the MT as text through the MT's own tokenizer (hard compression through
  text), so only ``hard`` compression (or none) applies; ``TIED``: its classes are the MT's source vocabulary
  (the logits need the embedding rows, and the CTC loss may sample them);
- ``prepare(...)``: what a new head needs besides weights, made from the run's data (pieces: the
  SentencePiece model; phones: units + lexicon); ``data()`` returns the same for a built head;
- ``FILE`` with ``write_data`` / ``read_data``: where checkpoints keep that data beside the weights;
- ``from_data(embed_dim=, data=)``: a head (untrained weights) from that data;
- ``targets(utts, translator)``: the CTC target tokenizer of the run's transcripts;
- ``read(ids, translator)``: the text of greedy label rows (what the connector "heard");
  ``read_logits(logits, mask, translator)``: the text of each utterance's logits (greedy unless the head
  searches: the phone head may spell lexicon words under a word LM);
- ``loss_logits(out, translator, targets, mask, sample=, generator=)``: logits and targets for the CTC loss.

Shapes follow the legend in ``sltalign.foundation.base``: out (B, S, D_m) -> logits (B, S, C + 1), C classes,
blank last (index C).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from ..data.manifest import Utterance
    from ..foundation.base import Translator

#: the values of ``ModelConfig.ctc_head``
CTC_HEADS = ("none", "tied", "pieces", "phones")
#: kind -> head class (filled by ``register_head`` as the head modules are imported)
HEAD_CLASSES: dict[str, type[CTCHead]] = {}
#: a target tokenizer: the run's transcripts (in utterance order) -> class ids per transcript
TargetFn = Callable[[list[str]], list[list[int]]]


class CTCHeadDataError(ValueError):
    """A checkpoint's head data (the file beside its weights) is missing or unreadable; names the file."""


def register_head(cls: type[CTCHead]) -> type[CTCHead]:
    HEAD_CLASSES[cls.KIND] = cls
    return cls


class CTCHead(nn.Module):
    """Base class of the CTC heads (see the module docstring for the contract)."""

    KIND: ClassVar[str] = ""
    TEXT: ClassVar[bool] = False
    TIED: ClassVar[bool] = False
    #: file beside a checkpoint's weights holding ``data()``; None: the head needs none
    FILE: ClassVar[str | None] = None

    # -- data besides the weights -----------------------------------------------------------------
    @classmethod
    def prepare(cls, *, model_cfg: Any, train_utts: Sequence[Utterance], held_out: Sequence[str], seed: int) -> Any:
        """The data a new head needs, made from the training utterances (``held_out``: manifests whose
        sentences it must never read). Deterministic for the same data and seed."""
        return None

    def data(self) -> Any:
        """What ``prepare`` made for this head (compared by ``init_from``; written by ``write_data``)."""
        return None

    @classmethod
    def from_data(cls, *, embed_dim: int, data: Any) -> CTCHead:
        """A head with untrained weights from ``data`` (load the weights after)."""
        return cls(embed_dim=embed_dim)  # type: ignore[call-arg]

    def write_data(self, directory: Path) -> None:
        """Write ``data()`` into a checkpoint directory being filled."""

    @classmethod
    def read_data(cls, directory: Path) -> Any:
        """Read what ``write_data`` wrote; ``CTCHeadDataError`` names a missing or damaged file."""
        return None

    # -- training and reading -------------------------------------------------------------------
    def targets(self, utts: Sequence[Utterance], translator: Translator) -> TargetFn:
        """The CTC target tokenizer of ``utts``' transcripts."""
        raise NotImplementedError

    def read(self, ids: Sequence[Sequence[int]], translator: Translator) -> list[str]:
        """Greedy label rows -> text."""
        raise NotImplementedError

    def read_out(self) -> str:
        """How this head reads its posteriors, in words (the model card says it)."""
        return "greedy"

    def warm_up(self) -> None:
        """Build what the read-out needs before the first utterance asks (a server calls this at start)."""

    @torch.no_grad()
    def read_logits(self, logits: torch.Tensor, mask: torch.Tensor, translator: Translator) -> list[str]:
        """logits (B, S, C + 1), mask (B, S) -> each utterance's text through ``read`` of its greedy path
        (labels of the argmax segments; none where ``ctc_segments`` finds no speech)."""
        from .compress import ctc_segments

        seg = ctc_segments(logits, mask)
        rows = [
            [] if bool(seg.no_speech[i]) else seg.labels[i, : int(seg.num_segments[i])].tolist() for i in range(mask.shape[0])
        ]
        return self.read(rows, translator)

    def loss_logits(
        self,
        out: torch.Tensor,
        translator: Translator,
        targets: torch.Tensor,
        target_mask: torch.Tensor,
        *,
        sample: int = 0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """out (B, S, D_m), targets (B, L) (0 on padding) -> logits (B, S, C' + 1) and targets renumbered
        into those C' classes. Untied heads score every class."""
        return self(out), targets

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def check_connector(connector: nn.Module, name: str) -> None:
        """Refuse a connector this head cannot read from (the phone head needs enough outputs per second)."""


def head_class(kind: str) -> type[CTCHead]:
    """The head class of a kind ("tied", "pieces", "phones"); ValueError names the valid ones."""
    if kind not in HEAD_CLASSES:
        raise ValueError(f"CTC head kind: expected one of {sorted(HEAD_CLASSES)}, got {kind!r}")
    return HEAD_CLASSES[kind]


def build_ctc_head(kind: str, *, embed_dim: int, data: Any = None) -> CTCHead | None:
    """A head of ``kind`` (None for "none") from its data (``prepare`` / ``read_data``)."""
    if kind == "none":
        return None
    return head_class(kind).from_data(embed_dim=embed_dim, data=data)


def head_kind(head: CTCHead | None) -> str:
    """ "none" or the head's kind."""
    return "none" if head is None else head.KIND

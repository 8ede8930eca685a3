"""CTC compression after any connector: one vector per predicted source token instead of one per frame.

The "fast alignment" recipes put a CTC head on the connector output whose classes are the frozen MT
model's source vocabulary (plus a blank), scored against the MT's own source-embedding rows, so the
connector is pulled straight into the embedding space the MT encoder expects. Frames are then merged:

    out (B, S, D_m), mask (B, S), logits (B, S, V + 1)  ->  compressed (B, S', D_m), compressed_mask (B, S')

Segments are the maximal runs of one argmax label, blank runs dropped (the CTC collapse: "a a _ a b"
gives three segments a, a, b). Each segment becomes one vector:
- ``hard``: the MT embedding row of the segment's label (what the MT would see for that token; no
  gradient reaches the connector, use it for inference or as a target);
- ``soft``: the mean of the connector vectors in the segment (gradient flows to ``out``);
- ``posterior``: the mean over the segment of softmax(non-blank logits / temperature) @ E, an expected
  embedding (gradient flows to the logits, hence to the connector and the CTC head).

No-speech rule: an utterance whose every real frame is blank keeps exactly one segment made of all its
real frames, so S' >= 1 and the MT always gets an input. Its label (``hard``) is the non-blank label with
the highest mean logit over those frames; ``soft`` / ``posterior`` average over all those frames.

Blank is the last class (index V), matching ``torch.nn.functional.ctc_loss(..., blank=V)``.
Everything is vectorised over batch and frames (scatter/index_add); the only host sync is reading S'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .ctc_head import CTCHead, TargetFn, register_head

COMPRESS_MODES: tuple[str, ...] = ("hard", "soft", "posterior")


def ctc_logits(
    out: torch.Tensor,
    embedding_matrix: torch.Tensor,
    blank_bias: torch.Tensor | float,
    scale: torch.Tensor | float,
    blank_vector: torch.Tensor | None = None,
) -> torch.Tensor:
    """CTC logits tied to the MT source embeddings, blank last.

    out (B, S, D_m), embedding_matrix E (V, D_m) -> (B, S, V + 1) with
    logits[..., v] = scale * <out, E[v]> and logits[..., V] = scale * <out, blank_vector> + blank_bias
    (the blank vector term is left out when ``blank_vector`` is None).
    """
    if out.dim() != 3 or embedding_matrix.dim() != 2 or out.shape[-1] != embedding_matrix.shape[-1]:
        raise ValueError(
            f"ctc_logits: need out (B, S, D_m) and embedding_matrix (V, D_m) of the same D_m, "
            f"got {tuple(out.shape)} and {tuple(embedding_matrix.shape)}"
        )
    if blank_vector is not None:
        rows = torch.cat([embedding_matrix.to(out.dtype), blank_vector.to(out.dtype)[None, :]], dim=0)  # (V+1, D_m)
        logits = (out @ rows.T) * scale  # (B, S, V + 1)
        bias = torch.as_tensor(blank_bias, dtype=out.dtype, device=out.device).reshape(1)
        return logits + nn.functional.pad(bias, (logits.shape[-1] - 1, 0))  # bias on the blank column only
    vocab = (out @ embedding_matrix.to(out.dtype).T) * scale  # (B, S, V)
    blank = torch.as_tensor(blank_bias, dtype=out.dtype, device=out.device).expand(*out.shape[:2], 1)
    return torch.cat([vocab, blank], dim=-1)


@register_head
class TiedCTCHead(CTCHead):
    """The trainable part of a CTC head tied to frozen MT embeddings: blank vector, blank bias, logit scale.

    The vocabulary rows are the MT's frozen source embeddings, passed at call time (never copied, so
    checkpoints stay small and the head follows whatever MT it is used with). The blank acts as one more
    embedding row (learned, starts at zero) plus a bias. The scale is learned in log space so it stays
    positive; it starts at 1 / sqrt(embed_dim), the usual dot-product temperature.
    """

    KIND, TIED = "tied", True

    def __init__(self, *, embed_dim: int) -> None:
        super().__init__()
        if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
            raise ValueError(f"TiedCTCHead: embed_dim must be a positive integer, got {embed_dim!r}")
        self.embed_dim = embed_dim
        self.blank_vector = nn.Parameter(torch.zeros(embed_dim))
        self.blank_bias = nn.Parameter(torch.zeros(()))
        self.log_scale = nn.Parameter(torch.tensor(-0.5 * math.log(embed_dim)))

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def config(self) -> dict[str, int | str]:
        # "kind" tells a checkpoint reader which head to build (PieceCTCHead says "pieces")
        return {"kind": "tied", "embed_dim": self.embed_dim}

    def forward(self, out: torch.Tensor, embedding_matrix: torch.Tensor) -> torch.Tensor:
        """out (B, S, D_m), embedding_matrix (V, D_m) -> logits (B, S, V + 1), blank = index V."""
        if out.shape[-1] != self.embed_dim:
            raise ValueError(f"TiedCTCHead: out has width {out.shape[-1]}, the head was built for embed_dim={self.embed_dim}")
        return ctc_logits(out, embedding_matrix, self.blank_bias, self.scale, self.blank_vector)

    def targets(self, utts: Sequence[Any], translator: Any) -> TargetFn:
        """CTC targets: the MT's own source tokens of each transcript."""
        return lambda texts: translator.tokenize_source(texts)

    def read(self, ids: Sequence[Sequence[int]], translator: Any) -> list[str]:
        return translator.detokenize_source(ids)

    def loss_logits(
        self,
        out: torch.Tensor,
        translator: Any,
        targets: torch.Tensor,
        target_mask: torch.Tensor,
        *,
        sample: int = 0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """With ``sample`` > 0 (training), a sampled softmax: the batch's own tokens plus ``sample`` random
        embedding rows, targets renumbered into that subset (the full 32k-row softmax per frame is the cost)."""
        emb = translator.source_embedding_matrix()  # (V, D_m)
        if sample and sample < emb.shape[0]:
            present = torch.unique(targets[target_mask])
            negatives = torch.randint(0, emb.shape[0], (sample,), generator=generator)
            rows = torch.unique(torch.cat([present, negatives]))  # sorted
            emb = emb[rows]
            targets = torch.searchsorted(rows, targets)
        return self(out, emb), targets  # (B, S, V' + 1), blank last


@dataclass(frozen=True)
class CTCSegments:
    """Where the segments of a batch lie.

    frame_segment (B, S) long: the segment index of each frame within its utterance, -1 for frames in no
    segment (blanks, padding); num_segments (B,) long >= 1; labels (B, S') long: each segment's label
    (-1 past num_segments); no_speech (B,) bool: utterances handled by the no-speech rule.
    """

    frame_segment: torch.Tensor
    num_segments: torch.Tensor
    labels: torch.Tensor
    no_speech: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, S') bool, True on real segments."""
        return torch.arange(self.labels.shape[1], device=self.labels.device)[None, :] < self.num_segments[:, None]


def ctc_segments(logits: torch.Tensor, mask: torch.Tensor) -> CTCSegments:
    """Greedy CTC segmentation of logits (B, S, V + 1) (blank last) under mask (B, S); see the module doc."""
    if logits.dim() != 3 or logits.shape[-1] < 2:
        raise ValueError(f"ctc_segments: logits must be (B, S, V + 1) with V >= 1, got {tuple(logits.shape)}")
    if mask.dtype != torch.bool or tuple(mask.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"ctc_segments: mask must be bool of shape {tuple(logits.shape[:2])}, got {tuple(mask.shape)} {mask.dtype}"
        )
    b, s, c = logits.shape
    if b and int(mask.sum(1).min()) < 1:
        raise ValueError(f"ctc_segments: every utterance needs at least one real frame; lengths={mask.sum(1).tolist()}")
    blank = c - 1
    pred = logits.detach().argmax(-1).masked_fill(~mask, blank)  # (B, S); padding counts as blank
    nonblank = pred != blank
    prev = nn.functional.pad(pred[:, :-1], (1, 0), value=blank)
    start = nonblank & (pred != prev)  # a segment starts where a non-blank label differs from the frame before
    counts = start.sum(1)  # (B,)
    no_speech = counts == 0
    frame_segment = torch.where(nonblank, start.cumsum(1) - 1, -1)
    frame_segment = torch.where(no_speech[:, None] & mask, 0, frame_segment)  # no-speech rule: all real frames
    num_segments = counts.clamp(min=1)
    width = int(num_segments.max()) if b else 1

    rows = torch.arange(b, device=logits.device)[:, None].expand(b, s)
    labels = torch.full((b, width), -1, dtype=torch.long, device=logits.device)
    labels[rows[start], frame_segment[start]] = pred[start]
    if bool(no_speech.any()):
        # the non-blank label with the highest mean logit over the utterance's real frames
        idx = no_speech.nonzero().squeeze(1)
        m = mask[idx].to(logits.dtype)[..., None]
        mean = (logits.detach()[idx, :, :blank] * m).sum(1) / m.sum(1)
        labels[idx, 0] = mean.argmax(-1)
    return CTCSegments(frame_segment, num_segments, labels, no_speech)


def compress(
    out: torch.Tensor,
    mask: torch.Tensor,
    logits: torch.Tensor,
    mode: str = "soft",
    embedding_matrix: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge frames into CTC segments.

    out (B, S, D_m), mask (B, S), logits (B, S, V + 1) blank last -> compressed (B, S', D_m),
    compressed_mask (B, S') with S' = the largest segment count in the batch (>= 1); padded segment
    positions hold zeros. ``embedding_matrix`` (V, D_m) is required by "hard" and "posterior";
    ``temperature`` (> 0) only affects "posterior".
    """
    if mode not in COMPRESS_MODES:
        raise ValueError(f"compress: mode must be one of {list(COMPRESS_MODES)}, got {mode!r}")
    if out.dim() != 3 or tuple(out.shape[:2]) != tuple(logits.shape[:2]):
        raise ValueError(
            f"compress: out (B, S, D_m) and logits (B, S, V + 1) disagree: {tuple(out.shape)} vs {tuple(logits.shape)}"
        )
    if mode != "soft":
        if embedding_matrix is None:
            raise ValueError(f"compress: mode '{mode}' needs embedding_matrix (V, D_m)")
        if embedding_matrix.dim() != 2 or embedding_matrix.shape != (logits.shape[-1] - 1, out.shape[-1]):
            raise ValueError(
                f"compress: embedding_matrix must be (V, D_m) = ({logits.shape[-1] - 1}, {out.shape[-1]}) "
                f"to match logits (B, S, V + 1) and out, got {tuple(embedding_matrix.shape)}"
            )
    if not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature > 0):
        raise ValueError(f"compress: temperature must be a number > 0, got {temperature!r}")

    seg = ctc_segments(logits, mask)
    b, width = seg.labels.shape
    seg_mask = seg.mask  # (B, S')
    if mode == "hard":
        emb = nn.functional.embedding(seg.labels.clamp(min=0), embedding_matrix.to(out.dtype))  # (B, S', D_m)
        return emb * seg_mask[..., None], seg_mask

    keep = seg.frame_segment >= 0  # (B, S): frames that belong to a segment
    slot = (torch.arange(b, device=out.device)[:, None] * width + seg.frame_segment)[keep]  # (N,) flat segment ids
    if mode == "soft":
        values = out[keep]  # (N, D_m)
    else:  # posterior: expected embedding under the non-blank posterior, only for frames that are kept
        post = torch.softmax(logits[keep][:, :-1].to(torch.float32) / temperature, dim=-1)  # (N, V)
        values = (post @ embedding_matrix.to(torch.float32)).to(out.dtype)  # (N, D_m)
    sums = values.new_zeros(b * width, values.shape[-1]).index_add(0, slot, values)
    counts = torch.zeros(b * width, device=out.device, dtype=values.dtype).index_add(
        0, slot, torch.ones_like(slot, dtype=values.dtype)
    )
    means = sums / counts.clamp(min=1)[:, None]  # empty (padding) slots stay zero
    return means.reshape(b, width, -1), seg_mask

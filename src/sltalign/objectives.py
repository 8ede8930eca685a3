"""Training objectives. Each takes the model and a batch and returns named loss terms.

The training loop sums the terms with the configured weights and logs each one, so a new objective never
touches train.py. Shapes follow the legend in ``sltalign.foundation.base``.

- ``ce``:  the paper's objective: the frozen MT decoder's token cross-entropy on the target translation.
- ``ctc``: CTC on the transcript over the frozen MT's own *source* vocabulary, logits tied to the frozen
           source-embedding matrix (plus a learned blank): the connector learns to emit vectors that point
           at the MT's input embeddings, which starts to translate far sooner than CE alone (docs/RESULTS.md,
           "Fast-alignment recipes side by side").
           Training may use a sampled softmax (the batch's tokens + random negatives) for speed.
           The head decides the targets and the softmax (``CTCHead.targets`` / ``loss_logits``): over word
           pieces (``model.ctc_head: pieces``) piece ids and a full softmax over a few hundred classes; over
           phones (``model.ctc_head: phones``) eSpeak's phonemes of the transcript in the clip's accent.
- ``kd``:  word-level knowledge distillation from the same frozen MT reading the gold transcript:
           KL(teacher || student) over the teacher's top-k next-token distribution, at a temperature.
           Teacher top-k is computed once per utterance and kept in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .foundation.base import pad_id_rows
from .model import IGNORE, AlignedST, target_cross_entropy

TERMS = ("ce", "ctc", "kd")


@dataclass(frozen=True)
class ObjectiveConfig:
    """Weights of the loss terms (0 turns a term off) and their settings."""

    weights: dict[str, float] = field(default_factory=lambda: {"ce": 1.0})
    label_smoothing: float = 0.0
    #: vocabulary rows sampled per CTC step besides the batch's own tokens (None or 0: full softmax)
    ctc_sampled_vocab: int | None = 4096
    kd_temperature: float = 1.0
    kd_top_k: int = 16

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown objective(s) {sorted(unknown)}; known: {list(TERMS)}")
        if not any(w > 0 for w in self.weights.values()):
            raise ValueError(f"at least one objective weight must be > 0, got {self.weights}")
        if self.kd_top_k < 1 or self.kd_temperature <= 0:
            raise ValueError("kd_top_k must be >= 1 and kd_temperature > 0")


class Objectives:
    """Computes the configured loss terms for one batch.

    A batch is the dict of ``sltalign.data.batching.collate``: states (B, T_s, D_s), states_mask (B, T_s),
    targets (B, L) and sources (B, L_src) padded with -100, source_mask (B, L_src), ids.
    """

    def __init__(self, config: ObjectiveConfig, *, transcripts: Mapping[str, str] | None = None, seed: int = 0) -> None:
        self.config = config
        self.transcripts = transcripts or {}
        self._teacher: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.generator = torch.Generator().manual_seed(seed)

    def weight(self, name: str) -> float:
        return float(self.config.weights.get(name, 0.0))

    def __call__(self, model: AlignedST, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """-> {"ce": ..., "ctc": ..., "kd": ..., "total": weighted sum} (only the active terms)."""
        states, mask = batch["states"], batch["states_mask"]
        terms: dict[str, torch.Tensor] = {}
        needs_mt = self.weight("ce") > 0 or self.weight("kd") > 0
        if needs_mt:
            logits, bridged = model(states, mask, batch["targets"])  # (B, L, V)
            if self.weight("ce") > 0:
                terms["ce"] = target_cross_entropy(logits, batch["targets"], label_smoothing=self.config.label_smoothing)
            if self.weight("kd") > 0:
                terms["kd"] = self.word_kd(model, logits, batch)
            out, out_mask = bridged.connector_out, bridged.connector_mask
        else:
            # CTC alone never needs the MT encoder or decoder: skip them (the fast first stage).
            out, out_mask = model.connector(states, mask)
        if self.weight("ctc") > 0:
            terms["ctc"] = self.ctc(model, out, out_mask, batch["sources"], batch["source_mask"])
        total = sum(self.weight(k) * v for k, v in terms.items())
        terms["total"] = total  # type: ignore[assignment]
        return terms

    # ------------------------------------------------------------------------------------------
    def ctc(
        self, model: AlignedST, out: torch.Tensor, out_mask: torch.Tensor, sources: torch.Tensor, source_mask: torch.Tensor
    ) -> torch.Tensor:
        """CTC of the connector output (B, S, D_m) against transcript tokens (B, L_src) over the MT vocabulary."""
        if model.ctc_head is None:
            raise ValueError("the ctc objective needs a CTC head: set model.ctc_head (tied, pieces or phones)")
        tgt = sources.masked_fill(~source_mask, 0)
        sample = self.config.ctc_sampled_vocab if model.training else 0
        logits, tgt = model.ctc_head.loss_logits(out, model.translator, tgt, source_mask, sample=sample, generator=self.generator)
        return self._ctc_loss(logits, tgt, out_mask, source_mask)

    @staticmethod
    def _ctc_loss(logits: torch.Tensor, tgt: torch.Tensor, out_mask: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        """logits (B, S, C+1) blank last, targets (B, L) -> mean CTC loss per target token."""
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (S, B, V'+1)
        blank = logits.shape[-1] - 1
        return F.ctc_loss(
            log_probs,
            tgt,
            out_mask.sum(1),
            source_mask.sum(1),
            blank=blank,
            reduction="mean",  # per-target-token mean, averaged over the batch
            zero_infinity=True,  # an utterance too short for its transcript contributes nothing, not inf
        )

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _teacher_topk(
        self, model: AlignedST, batch: Mapping[str, torch.Tensor], length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher top-k (ids (B, L, k), log-probs (B, L, k)) from the MT reading the gold transcript."""
        ids = list(batch["ids"])
        missing = [i for i, u in enumerate(ids) if u not in self._teacher]
        if missing:
            tr = model.translator
            texts = []
            for i in missing:
                if ids[i] not in self.transcripts:
                    raise ValueError(f"word-level KD needs the transcript of utterance {ids[i]!r}; the manifest has none")
                texts.append(tr.source_prefix + self.transcripts[ids[i]])
            src_ids, src_mask = pad_id_rows(tr.tokenize_source(texts), tr.pad_id)
            tgt = batch["targets"][missing]
            tgt = tgt.masked_fill(tgt == IGNORE, tr.pad_id)
            memory = tr.encode_ids(src_ids, src_mask)
            logits = tr.decoder_logits(memory, src_mask, tgt).float() / self.config.kd_temperature  # (b, L, V)
            logp = logits.log_softmax(-1)
            top_lp, top_ids = logp.topk(self.config.kd_top_k, dim=-1)  # (b, L, k)
            for j, i in enumerate(missing):
                n = int((batch["targets"][i] != IGNORE).sum())
                self._teacher[ids[i]] = (top_ids[j, :n].to(torch.int32), top_lp[j, :n].to(torch.float16))
        k = self.config.kd_top_k
        out_ids = torch.zeros((len(ids), length, k), dtype=torch.long)
        out_lp = torch.zeros((len(ids), length, k))  # padding: finite (masked below), so no NaN gradients
        for j, u in enumerate(ids):
            t_ids, t_lp = self._teacher[u]
            out_ids[j, : t_ids.shape[0]] = t_ids.long()
            out_lp[j, : t_lp.shape[0]] = t_lp.float()
        return out_ids, out_lp

    def word_kd(self, model: AlignedST, student_logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """KL(teacher_topk || student) per target token, mean over real tokens. student_logits (B, L, V)."""
        targets = batch["targets"]
        t_ids, t_lp = self._teacher_topk(model, batch, targets.shape[1])  # (B, L, k)
        valid = targets != IGNORE  # (B, L)
        t_lp = t_lp.log_softmax(-1)  # renormalise over the top-k
        s_lp = (student_logits.float() / self.config.kd_temperature).log_softmax(-1).gather(-1, t_ids)  # (B, L, k)
        kl = (t_lp.exp() * (t_lp - s_lp)).sum(-1)  # (B, L)
        kl = kl.masked_fill(~valid, 0.0)
        return kl.sum() / valid.sum().clamp_min(1) * self.config.kd_temperature**2

"""The soft cascade's connector: the recogniser's 1-best text, corrected by what its decoder states say.

A cascade gives the MT the embeddings of the recogniser's 1-best transcript, and every recognition error is
final. This connector starts from exactly that input and adds a learned correction read from the frozen
Whisper decoder's states along the hypothesis (``foundation/whisper_decoder.py``), which carry the
recogniser's doubts (its output distribution at each token is a linear function of them):

    states (B, L_w, D_s), state_mask            decoder states, one per hypothesis token (+ end of text)
      -> LayerNorm -> Linear -> [Transformer layers] -> Linear  keys (B, L_w, D_m)      (``forward``)
    queries (B, L_q, D_m), query_mask           the MT's own embeddings of the 1-best text (tokenized by the MT)
      -> LayerNorm -> Linear, + relative positions -> cross-attention to the keys -> FFN -> Linear (zero init)
      -> x = queries + correction  (B, L_q, D_m)                                          (``fuse``)

The output layer starts at zero, so an untrained connector reproduces the cascade exactly (same text, same
embeddings, same MT); training on the target translation (or word-level KD from the MT reading the gold
transcript) moves it only where the decoder states tell it something the 1-best text does not.
Positions: Whisper's tokens and the MT's pieces split words differently, so the two sequences are aligned by
relative position (i / n in each sequence, encoded sinusoidally) plus content, not by index.

``forward`` alone (states -> keys) obeys the Connector contract, so a CTC head and compression can also sit on
it (the tied-head variant of the soft cascade uses the windowed Q-Former instead, which can upsample).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sltalign.connectors.base import Connector, check_dropout, check_heads, check_int, lengths_to_mask, register


def relative_positions(mask: torch.Tensor, dim: int, *, scale: float = 64.0) -> torch.Tensor:
    """mask (B, L) prefix mask -> (B, L, dim) sinusoids of each position's share of its sequence (i / n * scale).

    The same relative place in two sequences of different lengths gets the same code."""
    n = mask.sum(-1, keepdim=True).clamp(min=1).float()  # (B, 1)
    rel = torch.arange(mask.shape[1], device=mask.device, dtype=torch.float32)[None, :] / n * scale  # (B, L)
    half = dim // 2
    freq = torch.exp(-math.log(1000.0) * torch.arange(half, device=mask.device, dtype=torch.float32) / max(half - 1, 1))
    ang = rel[..., None] * freq  # (B, L, half)
    out = torch.cat([ang.sin(), ang.cos()], dim=-1)
    if out.shape[-1] < dim:
        out = nn.functional.pad(out, (0, dim - out.shape[-1]))
    return out * mask[..., None]


@register("hypothesis")
class HypothesisFusionConnector(Connector):
    """Decoder states -> keys; 1-best embeddings + cross-attention correction (zero at init) -> MT input.

    Sizes: ``d`` (attention width), ``heads``, ``layers`` (self-attention layers over the states before
    fusion, 0 for none), ``ffn``, ``dropout``.
    """

    PRESETS = {
        "paper": dict(d=256, heads=4, layers=2, ffn=1024, dropout=0.1),
        "small": dict(d=256, heads=4, layers=1, ffn=1024, dropout=0.1),
    }

    def __init__(
        self, *, in_dim: int, out_dim: int, d: int = 256, heads: int = 4, layers: int = 2, ffn: int = 1024, dropout: float = 0.1
    ) -> None:
        super().__init__(in_dim=in_dim, out_dim=out_dim)
        check_int(self, "d", d)
        check_heads(self, d, heads)
        check_int(self, "layers", layers, minimum=0)
        check_int(self, "ffn", ffn)
        self.sizes = dict(d=d, heads=heads, layers=layers, ffn=ffn, dropout=check_dropout(self, dropout))
        drop = self.sizes["dropout"]
        self.state_in = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, d))
        self.context = (
            nn.TransformerEncoder(
                nn.TransformerEncoderLayer(d, heads, ffn, drop, activation="gelu", batch_first=True, norm_first=True),
                layers,
                enable_nested_tensor=False,
            )
            if layers
            else None
        )
        self.key_out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, out_dim))
        self.key_in = nn.Linear(out_dim, d)
        self.query_in = nn.Sequential(nn.LayerNorm(out_dim), nn.Linear(out_dim, d))
        self.attn = nn.MultiheadAttention(d, heads, dropout=drop, batch_first=True)
        self.ffn = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, ffn), nn.GELU(), nn.Dropout(drop), nn.Linear(ffn, d))
        self.out = nn.Linear(d, out_dim)
        # zero output layer: an untrained connector hands the MT exactly the cascade's input
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return lengths

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # states (B, L_w, D_s), mask (B, L_w) -> keys (B, L_w, D_m), mask (B, L_w)
        lengths = self.check_inputs(states, mask)
        x = self.state_in(states) + relative_positions(mask, self.sizes["d"])
        if self.context is not None:
            x = self.context(x, src_key_padding_mask=~mask)
        out_mask = lengths_to_mask(lengths, states.shape[1])
        return self.key_out(x) * out_mask[..., None], out_mask

    def fuse(self, queries: torch.Tensor, query_mask: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """queries (B, L_q, D_m) (the 1-best text's MT embeddings), keys (B, L_w, D_m) from ``forward``
        -> (B, L_q, D_m): queries + correction, zeros on padding."""
        q = self.query_in(queries) + relative_positions(query_mask, self.sizes["d"])  # (B, L_q, d)
        kv = self.key_in(keys)  # (B, L_w, d)
        a, _ = self.attn(q, kv, kv, key_padding_mask=~key_mask, need_weights=False)  # (B, L_q, d)
        h = q + a
        h = h + self.ffn(h)
        return (queries + self.out(h)) * query_mask[..., None]

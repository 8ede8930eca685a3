"""Frame-stacking MLP projector (the Ultravox / SLAM-LLM style connector).

    states (B, T_s, D_s) -> LayerNorm -> zero padded frames
      -> stack ``stack`` consecutive frames: (B, ceil(T_s / stack), stack * D_s)
      -> Linear -> GELU -> dropout -> Linear -> D_m
    out (B, S, D_m), S = ceil(T_s / stack); a stacked position is real when it holds a real frame.

The cheapest connector: no attention, so every output sees only its own ``stack`` frames and the context
the speech encoder already put into them. The last group of an utterance is filled with zero frames
whether or not it is batched, so batching never changes its outputs. The input LayerNorm plays the part
of Ultravox's RMSNorm: it keeps the projector's input scale independent of the encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from sltalign.connectors.base import Connector, ceil_div, check_dropout, check_int, lengths_to_mask, register


@register("mlp")
class MLPConnector(Connector):
    """Stack ``stack`` frames, then a 2-layer GELU MLP of width ``hidden`` -> D_m.

    Sizes: ``stack`` (frames per output, 4 = the STE's 4x subsampling), ``hidden``, ``dropout``.
    The paper has no MLP; "paper" sizes it like SLAM-LLM's projector (hidden 2048).
    """

    PRESETS = {
        "paper": dict(stack=4, hidden=2048, dropout=0.1),
        "small": dict(stack=4, hidden=1024, dropout=0.1),
    }

    def __init__(self, *, in_dim: int, out_dim: int, stack: int = 4, hidden: int = 2048, dropout: float = 0.1) -> None:
        super().__init__(in_dim=in_dim, out_dim=out_dim)
        check_int(self, "stack", stack)
        check_int(self, "hidden", hidden)
        self.sizes = dict(stack=stack, hidden=hidden, dropout=check_dropout(self, dropout))
        self.norm = nn.LayerNorm(in_dim)
        self.mlp = nn.Sequential(
            nn.Linear(stack * in_dim, hidden), nn.GELU(), nn.Dropout(self.sizes["dropout"]), nn.Linear(hidden, out_dim)
        )

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return ceil_div(lengths, self.sizes["stack"])

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # states (B, T_s, D_s), mask (B, T_s) -> out (B, ceil(T_s / k), D_m), out_mask (B, ceil(T_s / k))
        lengths = self.check_inputs(states, mask)
        k = self.sizes["stack"]
        b, t, dim = states.shape
        x = self.norm(states).masked_fill(~mask[..., None], 0.0)  # padding frames -> zeros, as when alone
        s = -(-t // k)
        x = nn.functional.pad(x, (0, 0, 0, s * k - t)).reshape(b, s, k * dim)  # (B, T, D) -> (B, S, k*D)
        out_mask = lengths_to_mask(self.output_lengths(lengths), s)
        return self.mlp(x) * out_mask[..., None], out_mask

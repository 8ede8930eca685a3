"""Window-level Q-Former (as in SALMONN): a few learned queries per fixed window of frames.

    states (B, T_s, D_s), cut into n_w = ceil(T_s / window) windows of ``window`` frames
      -> (B * n_w, window, D_s): every window is one row of a batched Q-Former (QFormerStack from
         qformer.py, ``queries_per_window`` queries, cross-attention under the in-window padding mask)
      -> (B, n_w * queries_per_window, d) (+ sinusoidal positions of the output slot)
      -> Linear d -> D_m
    out (B, S, D_m), S = ceil(T_s / window) * queries_per_window: the output grows with the input, unlike
    the plain Q-Former. A window is real when it holds at least one real frame; windows made only of
    padding are never computed (their keys would all be masked) and come out as zeros.

Why the positions: windows are processed independently and share the same queries, so without them the
outputs say nothing about where in the utterance they come from; in the ECD arrangement the MT decoder
reads them directly with no positional encoding of its own. Whisper states carry some absolute position,
but an explicit one is cheap and certain (``positions=False`` turns it off).

Defaults: 15 frames (0.3 s of Whisper states) and 2 queries per window = 6.7 vectors per second, above
the subword rate of speech, so a CTC objective or CTC compression can follow. SALMONN used 17 frames and
one query.
"""

from __future__ import annotations

import torch
from torch import nn

from sltalign.connectors.base import Connector, ceil_div, check_bool, check_int, lengths_to_mask, register, sinusoidal_positions
from sltalign.connectors.qformer import QFormerStack, qformer_sizes


@register("window_qformer")
class WindowQFormerConnector(Connector):
    """``queries_per_window`` learned queries per ``window`` frames; output length follows input length.

    Sizes: ``window``, ``queries_per_window``, ``d``, ``layers``, ``heads``, ``ffn``, ``dropout``,
    ``norm_first``, ``positions``. "paper" applies the paper's Q-Former sizes to every window.
    """

    PRESETS = {
        "paper": dict(
            window=15, queries_per_window=2, d=256, layers=6, heads=4, ffn=2048, dropout=0.1, norm_first=True, positions=True
        ),
        "small": dict(
            window=15, queries_per_window=2, d=256, layers=4, heads=4, ffn=512, dropout=0.1, norm_first=True, positions=True
        ),
    }

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        window: int = 15,
        queries_per_window: int = 2,
        d: int = 256,
        layers: int = 6,
        heads: int = 4,
        ffn: int = 2048,
        dropout: float = 0.1,
        norm_first: bool = True,
        positions: bool = True,
    ) -> None:
        super().__init__(in_dim=in_dim, out_dim=out_dim)
        check_int(self, "window", window)
        check_int(self, "queries_per_window", queries_per_window)
        shared = qformer_sizes(
            self, n_queries=queries_per_window, d=d, layers=layers, heads=heads, ffn=ffn, dropout=dropout, norm_first=norm_first
        )
        self.qformer = QFormerStack(kv_dim=in_dim, **shared)
        del shared["n_queries"]
        positions = check_bool(self, "positions", positions)
        self.sizes = dict(window=window, queries_per_window=queries_per_window, **shared, positions=positions)
        self.proj = nn.Linear(d, out_dim)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return ceil_div(lengths, self.sizes["window"]) * self.sizes["queries_per_window"]

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # states (B, T_s, D_s), mask (B, T_s) -> out (B, n_w * k, D_m), out_mask (B, n_w * k)
        lengths = self.check_inputs(states, mask)
        w, k = self.sizes["window"], self.sizes["queries_per_window"]
        (b, t, dim), n_w = states.shape, -(-states.shape[1] // w)
        pad = n_w * w - t
        windows = nn.functional.pad(states, (0, 0, 0, pad)).reshape(b * n_w, w, dim)  # (B, T, D) -> (B*n_w, w, D)
        window_mask = nn.functional.pad(mask, (0, pad)).reshape(b * n_w, w)  # (B*n_w, w)
        real = window_mask[:, 0]  # prefix masks: a window holds a real frame iff its first frame is real
        h = self.qformer(windows[real], window_mask[real])  # (N_real, k, d)
        full = h.new_zeros(b * n_w, k, h.shape[-1]).index_put((real,), h)  # (B*n_w, k, d), zeros for padding windows
        x = full.reshape(b, n_w * k, -1)  # (B, S, d)
        if self.sizes["positions"]:
            x = x + sinusoidal_positions(x.shape[1], x.shape[2], device=x.device, dtype=x.dtype)
        out_mask = lengths_to_mask(self.output_lengths(lengths), n_w * k)
        return self.proj(x) * out_mask[..., None], out_mask

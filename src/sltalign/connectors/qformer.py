"""Q-Former connector: a fixed number of learned queries read the speech states through cross-attention.

    queries (n_queries, d), learned
      -> layers x [self-attention over the queries; cross-attention to states (B, T_s, D_s) under their
         padding mask; FFN (GELU)], dropout on every sublayer
      -> Linear d -> D_m
    out (B, n_queries, D_m), out_mask all True: S is fixed whatever the utterance length.

As in the authors' code (a BLIP-2 Q-Former with cross-attention in every layer), keys and values of the
cross-attention are projected straight from D_s inside each layer (``nn.MultiheadAttention(kdim=vdim=D_s)``).
Pre-norm by default for the reason given in ste.py (trained from scratch, short warmups); ``norm_first=False``
gives BLIP-2's post-norm layer with a LayerNorm on the query embeddings.

``QFormerStack`` (queries -> layers -> final norm) is shared with the window Q-Former.
"""

from __future__ import annotations

import torch
from torch import nn

from sltalign.connectors.base import Connector, check_bool, check_dropout, check_heads, check_int, register


class QFormerLayer(nn.Module):
    """One Q-Former layer: self-attention over queries, cross-attention to the memory, GELU FFN.

    q (N, Q, d), memory (N, T, D_kv), memory_padding (N, T) bool True = padding -> (N, Q, d)
    """

    def __init__(self, *, d: int, heads: int, ffn: int, kv_dim: int, dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, kdim=kv_dim, vdim=kv_dim, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.norm_self = nn.LayerNorm(d)
        self.norm_cross = nn.LayerNorm(d)
        self.norm_ffn = nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    def _sublayer(self, x: torch.Tensor, norm: nn.LayerNorm, fn) -> torch.Tensor:
        if self.norm_first:
            return x + self.dropout(fn(norm(x)))
        return norm(x + self.dropout(fn(x)))

    def forward(self, q: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor) -> torch.Tensor:
        q = self._sublayer(q, self.norm_self, lambda x: self.self_attn(x, x, x, need_weights=False)[0])
        q = self._sublayer(
            q,
            self.norm_cross,
            lambda x: self.cross_attn(x, memory, memory, key_padding_mask=memory_padding, need_weights=False)[0],
        )
        return self._sublayer(q, self.norm_ffn, self.ffn)


class QFormerStack(nn.Module):
    """Learned queries through a stack of QFormerLayer; returns normalised query states.

    memory (N, T, D_kv), memory_mask (N, T) bool True = real -> (N, n_queries, d).
    Every memory row needs at least one real frame (a fully masked row has nothing to attend to).
    """

    def __init__(
        self, *, n_queries: int, d: int, layers: int, heads: int, ffn: int, kv_dim: int, dropout: float, norm_first: bool
    ) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.empty(n_queries, d))
        nn.init.normal_(self.queries, std=0.02)  # BLIP-2's initialisation of the query tokens
        self.query_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            QFormerLayer(d=d, heads=heads, ffn=ffn, kv_dim=kv_dim, dropout=dropout, norm_first=norm_first) for _ in range(layers)
        )
        # pre-norm: normalise the residual stream once at the end; post-norm: normalise the query
        # embeddings on the way in (BLIP-2), the layers' outputs are normalised already.
        self.in_norm = None if norm_first else nn.LayerNorm(d)
        self.out_norm = nn.LayerNorm(d) if norm_first else None

    def forward(self, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        q = self.queries.to(memory.dtype).expand(memory.shape[0], -1, -1)  # (N, Q, d)
        if self.in_norm is not None:
            q = self.in_norm(q)
        q = self.query_dropout(q)
        padding = ~memory_mask
        for layer in self.layers:
            q = layer(q, memory, padding)
        return self.out_norm(q) if self.out_norm is not None else q


def qformer_sizes(
    owner: Connector, *, n_queries: int, d: int, layers: int, heads: int, ffn: int, dropout: float, norm_first: bool
) -> dict:
    """Validate the sizes shared by both Q-Former connectors and return them as a plain dict."""
    check_int(owner, "n_queries", n_queries)
    check_int(owner, "d", d)
    check_int(owner, "layers", layers)
    check_int(owner, "heads", heads)
    check_heads(owner, d, heads)
    check_int(owner, "ffn", ffn)
    return dict(
        n_queries=n_queries, d=d, layers=layers, heads=heads, ffn=ffn,
        dropout=check_dropout(owner, dropout), norm_first=check_bool(owner, "norm_first", norm_first),
    )  # fmt: skip


@register("qformer")
class QFormerConnector(Connector):
    """``n_queries`` learned queries cross-attending to the speech states; fixed output length.

    Sizes: ``n_queries``, ``d``, ``layers``, ``heads``, ``ffn``, ``dropout``, ``norm_first``.
    Defaults are the paper's sizes (100 queries, d 256, 6 layers, 4 heads, FFN 2048, dropout 0.1).
    """

    PRESETS = {
        "paper": dict(n_queries=100, d=256, layers=6, heads=4, ffn=2048, dropout=0.1, norm_first=True),
        # under the 4.5M budget for 512 -> 256: depth kept at 4, FFN narrowed
        "small": dict(n_queries=100, d=256, layers=4, heads=4, ffn=512, dropout=0.1, norm_first=True),
    }

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        n_queries: int = 100,
        d: int = 256,
        layers: int = 6,
        heads: int = 4,
        ffn: int = 2048,
        dropout: float = 0.1,
        norm_first: bool = True,
    ) -> None:
        super().__init__(in_dim=in_dim, out_dim=out_dim)
        self.sizes = qformer_sizes(
            self, n_queries=n_queries, d=d, layers=layers, heads=heads, ffn=ffn, dropout=dropout, norm_first=norm_first
        )
        self.qformer = QFormerStack(kv_dim=in_dim, **self.sizes)
        self.proj = nn.Linear(d, out_dim)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.full_like(lengths, self.sizes["n_queries"])

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # states (B, T_s, D_s), mask (B, T_s) -> out (B, n_queries, D_m), out_mask (B, n_queries) all True
        self.check_inputs(states, mask)
        out = self.proj(self.qformer(states, mask))
        return out, torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)

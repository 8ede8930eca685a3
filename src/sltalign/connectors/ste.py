"""STE: the paper's Subsampler-Transformer Encoder connector.

    states (B, T_s, D_s)
      -> conv_stages x [zero padded frames; Conv1d(kernel 5, stride 2, padding 2); GLU over channels]
         (paper: D_s -> 1024 -GLU-> 512 -> 512 -GLU-> 256, i.e. 4x fewer frames)
      -> + sinusoidal positions, dropout
      -> Transformer encoder (d, heads, ffn, dropout; key padding mask)
      -> Linear d -> D_m
    out (B, S, D_m) with S = T_s after (L - 1) // 2 + 1 per conv stage.

Pre-norm by default (``norm_first=True``, with a final LayerNorm before the output Linear). Why: the
connector is trained from scratch, on small batches (CPU) and with the short warmups a quick alignment run
can afford; pre-norm keeps an identity path from the loss to every layer, so it trains stably without a
long warmup (Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture"), and the final
LayerNorm fixes the scale of what the output Linear sees, whatever the depth. ``norm_first=False`` gives
the classic post-norm layer for anyone reproducing a post-norm setup.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from sltalign.connectors.base import (
    Connector,
    check_bool,
    check_dropout,
    check_heads,
    check_int,
    conv_output_lengths,
    lengths_to_mask,
    register,
    sinusoidal_positions,
)

MAX_CONV_STAGES = 3


@register("ste")
class STEConnector(Connector):
    """Conv1d+GLU subsampler (stride 2 per stage) followed by a Transformer encoder, then Linear -> D_m.

    Sizes: ``d`` Transformer width, ``layers``, ``heads``, ``ffn`` (feed-forward width), ``conv_channels``
    (channels after GLU of every conv stage but the last, which outputs ``d``), ``conv_stages`` (0-3;
    0 = no subsampling, a Linear D_s -> d instead), ``dropout``, ``norm_first`` (pre-norm), ``input_norm``
    (a LayerNorm over the speech states first), ``utterance_norm`` (subtract each utterance's mean state first).
    Defaults are the paper's sizes.
    """

    PRESETS = {
        # the paper's STE (arXiv 2411.18294): 2 x Conv1d(k5, s2) + GLU (D_s -> 1024 -GLU-> 512 -> 512 -GLU-> 256), 6 x (d 256, 4 heads, FFN 2048)
        "paper": dict(d=256, layers=6, heads=4, ffn=2048, conv_channels=512, conv_stages=2, dropout=0.1, norm_first=True),
        # whisper-base (512) -> Bergamot (256) under the 4.5M budget: narrower first conv, 3 lighter layers
        "small": dict(d=256, layers=3, heads=4, ffn=768, conv_channels=256, conv_stages=2, dropout=0.1, norm_first=True),
        # a phone recogniser (model.ctc_head: phones): one conv stage keeps 25 outputs/s (English: ~12-15 phones/s)
        "phones": dict(
            d=256, layers=2, heads=4, ffn=1024, conv_channels=256, conv_stages=1, dropout=0.1, norm_first=True, input_norm=True
        ),
    }

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        d: int = 256,
        layers: int = 6,
        heads: int = 4,
        ffn: int = 2048,
        conv_channels: int = 512,
        conv_stages: int = 2,
        dropout: float = 0.1,
        norm_first: bool = True,
        input_norm: bool = False,
        utterance_norm: bool = False,
    ) -> None:
        super().__init__(in_dim=in_dim, out_dim=out_dim)
        check_int(self, "d", d)
        check_int(self, "layers", layers)
        check_int(self, "heads", heads)
        check_heads(self, d, heads)
        check_int(self, "ffn", ffn)
        check_int(self, "conv_channels", conv_channels)
        check_int(self, "conv_stages", conv_stages, minimum=0, maximum=MAX_CONV_STAGES)
        dropout = check_dropout(self, dropout)
        check_bool(self, "norm_first", norm_first)
        check_bool(self, "input_norm", input_norm)
        check_bool(self, "utterance_norm", utterance_norm)
        self.sizes = dict(
            d=d, layers=layers, heads=heads, ffn=ffn, conv_channels=conv_channels,
            conv_stages=conv_stages, dropout=dropout, norm_first=norm_first, input_norm=input_norm,
            utterance_norm=utterance_norm,
        )  # fmt: skip
        # LayerNorm over D_s first: Whisper's states have a few channels of large magnitude; normalising them
        # lets a small connector learn phones faster (bench/phoneme_probe.py's recogniser had it)
        self.input_norm = nn.LayerNorm(in_dim) if input_norm else None

        # Each stage: Conv1d(c_in -> 2 * c_out) then GLU halves the channels back to c_out.
        widths = ([in_dim] + [conv_channels] * (conv_stages - 1) + [d]) if conv_stages else []
        self.convs = nn.ModuleList(
            nn.Conv1d(c_in, 2 * c_out, kernel_size=5, stride=2, padding=2) for c_in, c_out in itertools.pairwise(widths)
        )
        self.in_proj = nn.Linear(in_dim, d) if conv_stages == 0 else None
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(  # ReLU FFN as in the standard Transformer: the paper names no other
            d, heads, dim_feedforward=ffn, dropout=dropout, activation="relu", batch_first=True, norm_first=norm_first
        )
        self.encoder = nn.TransformerEncoder(
            layer,
            num_layers=layers,
            norm=nn.LayerNorm(d) if norm_first else None,  # pre-norm leaves the residual stream unnormalised
            enable_nested_tensor=False,  # nested tensors are not used with norm_first anyway; avoids a warning
        )
        self.proj = nn.Linear(d, out_dim)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return conv_output_lengths(lengths, self.sizes["conv_stages"])

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # states (B, T_s, D_s), mask (B, T_s) -> out (B, S, D_m), out_mask (B, S)
        lengths = self.check_inputs(states, mask)
        x = states
        if self.sizes["utterance_norm"]:
            # Subtract each utterance's mean state over its own frames (cepstral mean normalisation, on the
            # encoder's states): a voice or a channel shifts every frame of a clip alike, so removing the
            # per-clip offset leaves the connector less to learn about the few voices it trains on.
            keep = mask[..., None].to(x.dtype)  # (B, T_s, 1)
            mean = (x * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp_min(1.0)
            x = (x - mean) * keep
        if self.input_norm is not None:
            x = self.input_norm(x)
        for conv in self.convs:
            # Zero the padded frames first: the kernel then sees exactly the zeros that Conv1d's own
            # padding gives an utterance processed alone, so batching never changes real outputs.
            x = x.masked_fill(~mask[..., None], 0.0)
            x = nn.functional.glu(conv(x.transpose(1, 2)), dim=1).transpose(1, 2)  # (B, T, C) -> (B, (T-1)//2+1, C')
            lengths = conv_output_lengths(lengths, 1)
            mask = lengths_to_mask(lengths, x.shape[1])
        if self.in_proj is not None:
            x = self.in_proj(x)
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], device=x.device, dtype=x.dtype)
        x = self.encoder(self.dropout(x), src_key_padding_mask=~mask)  # (B, S, d)
        out = self.proj(x) * mask[..., None]  # (B, S, D_m), zeros on padding
        return out, mask

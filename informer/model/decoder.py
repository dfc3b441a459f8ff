"""Decoder: masked self-attention, cross-attention over the encoder output, feed-forward.

Informer's decoder is generative: it reads ``label_len`` known steps followed by ``pred_len``
placeholders and emits every forecast in one pass, so only the last ``pred_len`` rows of the last
layer reach the output. ``keep_last`` uses that: the last layer runs self-attention over every row,
then cross-attention and the feed-forward only on the kept rows (row-wise work: same result, about
15 % fewer FLOPs in a default training step).
"""

from __future__ import annotations

import torch
from torch import nn

from informer.model.attention import AttentionLayer
from informer.model.encoder import FeedForward


class DecoderLayer(nn.Module):
    def __init__(self, self_attention: AttentionLayer, cross_attention: AttentionLayer, d_model: int,
                 d_ff: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.self_attention = self_attention
        self.cross_attention = cross_attention
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cross: torch.Tensor, keep_last: int | None = None,
                tau: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        attended, self_weights = self.self_attention(x, x, x, tau)  # [B, L_D, d_model]
        x = self.norm1(x + self.dropout(attended))
        if keep_last is not None:
            x = x[:, -keep_last:]  # [B, keep_last, d_model]
        attended, cross_weights = self.cross_attention(x, cross, cross)
        x = self.norm2(x + self.dropout(attended))
        return self.norm3(x + self.feed_forward(x)), self_weights, cross_weights


class Decoder(nn.Module):
    """Decoder layers and a final LayerNorm; ``keep_last`` trims the last layer (module docstring)."""

    def __init__(self, layers: list[DecoderLayer], d_model: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, cross: torch.Tensor, keep_last: int | None = None,
                tau: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor | None], list[torch.Tensor | None]]:
        self_maps, cross_maps = [], []
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            x, self_weights, cross_weights = layer(x, cross, keep_last if last else None, tau)
            self_maps.append(self_weights)
            cross_maps.append(cross_weights)
        return self.norm(x), self_maps, cross_maps  # [B, keep_last or L_D, d_model]

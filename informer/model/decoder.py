"""Decoder: causal self-attention, cross-attention over the encoder output, feed-forward.

Informer's decoder is generative: it reads ``label_len`` known steps followed by ``pred_len``
placeholders and emits every forecast in one pass, so only the last ``pred_len`` rows of the last
layer reach the output. ``keep_last`` exploits that: the last layer still runs self-attention over
every row (the rows are each other's keys and values), then cross-attention and the feed-forward only
on the rows that are kept. Everything after the cut is row-wise, so the result is identical.
"""

from __future__ import annotations

import torch
from torch import nn

from informer.model.attention import AttentionLayer
from informer.model.dropout import Dropout
from informer.model.feedforward import FeedForward


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
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, cross: torch.Tensor, keep_last: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        attended, self_weights = self.self_attention(x, x, x, output_dropout=self.dropout)  # [B, L_D, d]
        x = self.norm1(x + attended)
        if keep_last is not None:
            x = x[:, -keep_last:]  # [B, keep_last, d_model]
        attended, cross_weights = self.cross_attention(x, cross, cross, output_dropout=self.dropout)
        x = self.norm2(x + attended)
        return self.norm3(x + self.feed_forward(x)), self_weights, cross_weights


class Decoder(nn.Module):
    """Decoder layers and a final LayerNorm; ``keep_last`` trims the last layer (see module docstring)."""

    def __init__(self, layers: list[DecoderLayer], d_model: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, cross: torch.Tensor, keep_last: int | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor | None], list[torch.Tensor | None]]:
        self_maps, cross_maps = [], []
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            x, self_weights, cross_weights = layer(x, cross, keep_last if last else None)
            self_maps.append(self_weights)
            cross_maps.append(cross_weights)
        return self.norm(x), self_maps, cross_maps  # [B, keep_last or L_D, d_model]

"""Encoder: self-attention layers with optional self-attention distilling between them.

Distilling (paper section 3.2) is Conv1d(k=3, circular) + BatchNorm + ELU + MaxPool(k=3, s=2, p=1),
which halves the length rounding up (96 -> 48 -> 24, 25 -> 13). :class:`EncoderStack` is the
InformerStack encoder: encoder ``i`` reads the last ``L // 2**i`` steps and the outputs are
concatenated along time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from informer.model.attention import AttentionLayer
from informer.model.dropout import Dropout
from informer.model.embedding import pad_time_circularly
from informer.model.feedforward import FeedForward

Attentions = list[torch.Tensor | None]


class EncoderLayer(nn.Module):
    """Self-attention + residual + LayerNorm, then feed-forward + residual + LayerNorm (post-norm)."""

    def __init__(self, attention: AttentionLayer, d_model: int, d_ff: int, dropout: float,
                 activation: str) -> None:
        super().__init__()
        self.attention = attention
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attention(x, x, x, output_dropout=self.dropout)  # [B, L, d_model]
        x = self.norm1(x + attended)
        return self.norm2(x + self.feed_forward(x)), weights


class DistilLayer(nn.Module):
    """Self-attention distilling: ``[B, L, d_model] -> [B, ceil(L / 2), d_model]``.

    The length-3 convolution and the pool run as their 2-D forms on a ``[B, d_model, 1, L]`` view in
    channels-last memory order, which is the ``[B, L, d_model]`` layout the attention layers use: no
    transposed copies on the way in or out, and the pool reduces contiguous channel vectors. The
    parameters are still those of ``Conv1d`` and ``BatchNorm1d`` (same state dict).
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(d_model, d_model, kernel_size=3, padding=0)  # circular padding is explicit
        self.norm = nn.BatchNorm2d(d_model)  # state dict identical to BatchNorm1d's
        self.activation = nn.ELU()
        self.pool = nn.MaxPool2d(kernel_size=(1, 3), stride=(1, 2), padding=(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = pad_time_circularly(x).transpose(1, 2).unsqueeze(2)  # [B, d_model, 1, L + 2], channels-last
        y = F.conv2d(y, self.conv.weight.unsqueeze(2), self.conv.bias)  # [B, d_model, 1, L]
        y = self.pool(self.activation(self.norm(y)))  # [B, d_model, 1, ceil(L / 2)]
        return y.squeeze(2).transpose(1, 2)  # [B, ceil(L / 2), d_model]


class Encoder(nn.Module):
    """``e_layers`` attention layers, a distilling layer between consecutive ones, a final LayerNorm."""

    def __init__(self, layers: list[EncoderLayer], distil_layers: list[DistilLayer] | None,
                 d_model: int) -> None:
        super().__init__()
        if distil_layers is not None and len(distil_layers) != len(layers) - 1:
            raise ValueError("an encoder needs one distilling layer between each pair of attention layers")
        self.layers = nn.ModuleList(layers)
        self.distil_layers = nn.ModuleList(distil_layers) if distil_layers is not None else None
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Attentions]:
        attentions: Attentions = []
        for i, layer in enumerate(self.layers):
            x, weights = layer(x)
            attentions.append(weights)
            if self.distil_layers is not None and i < len(self.distil_layers):
                x = self.distil_layers[i](x)
        return self.norm(x), attentions


class EncoderStack(nn.Module):
    """InformerStack encoder: encoder ``i`` sees the last ``L // 2**i`` steps; outputs joined in time."""

    def __init__(self, encoders: list[Encoder]) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(encoders)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Attentions]:
        outputs, attentions = [], []
        for i, encoder in enumerate(self.encoders):
            out, weights = encoder(x[:, -(x.shape[1] // 2**i):])
            outputs.append(out)
            attentions.extend(weights)
        return torch.cat(outputs, dim=1), attentions  # [B, sum of encoder output lengths, d_model]

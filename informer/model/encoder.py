"""Encoder (paper section 3.2): self-attention layers with self-attention distilling between them.

Distilling is Conv1d(k=3, circular) + BatchNorm + ELU + MaxPool(k=3, s=2, p=1), which halves the
length rounding up (96 -> 48 -> 24, 25 -> 13). :class:`EncoderStack` is the InformerStack encoder:
encoder ``i`` reads the last ``L // 2**i`` steps and the outputs are concatenated along time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from informer.model.attention import AttentionLayer

Attentions = list[torch.Tensor | None]
ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


class FeedForward(nn.Module):
    """Position-wise Linear, activation, dropout, Linear, dropout (the official two 1x1 convolutions)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(self.activation(self.linear1(x)))  # [B, L, d_ff]
        return self.dropout(self.linear2(hidden))  # [B, L, d_model]


class EncoderLayer(nn.Module):
    """Self-attention + residual + LayerNorm, then feed-forward + residual + LayerNorm (post-norm)."""

    def __init__(self, attention: AttentionLayer, d_model: int, d_ff: int, dropout: float,
                 activation: str) -> None:
        super().__init__()
        self.attention = attention
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, tau: torch.Tensor | None = None, delta: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attention(x, x, x, tau, delta)  # [B, L, d_model]
        x = self.norm1(x + self.dropout(attended))
        return self.norm2(x + self.feed_forward(x)), weights


class DistilLayer(nn.Module):
    """Self-attention distilling: ``[B, L, d_model] -> [B, ceil(L / 2), d_model]``."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(d_model, d_model, kernel_size=3, padding=1, padding_mode="circular")
        self.norm = nn.BatchNorm1d(d_model)
        self.activation = nn.ELU()
        self.pool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.transpose(1, 2))  # [B, d_model, L]
        y = self.pool(self.activation(self.norm(y)))  # [B, d_model, ceil(L / 2)]
        return y.transpose(1, 2)  # [B, ceil(L / 2), d_model]


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

    def forward(self, x: torch.Tensor, tau: torch.Tensor | None = None, delta: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, Attentions]:
        """``delta`` holds one shift per input step, so it applies only while no distilling has merged
        steps; ``tau`` applies to every layer."""
        attentions: Attentions = []
        for i, layer in enumerate(self.layers):
            x, weights = layer(x, tau, delta if delta is not None and delta.shape[1] == x.shape[1] else None)
            attentions.append(weights)
            if self.distil_layers is not None and i < len(self.distil_layers):
                x = self.distil_layers[i](x)
        return self.norm(x), attentions


class EncoderStack(nn.Module):
    """InformerStack encoder: encoder ``i`` sees the last ``L // 2**i`` steps; outputs joined in time."""

    def __init__(self, encoders: list[Encoder]) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(encoders)

    def forward(self, x: torch.Tensor, tau: torch.Tensor | None = None, delta: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, Attentions]:
        outputs, attentions = [], []
        for i, encoder in enumerate(self.encoders):
            length = x.shape[1] // 2**i
            out, weights = encoder(x[:, -length:], tau, None if delta is None else delta[:, -length:])
            outputs.append(out)
            attentions.extend(weights)
        return torch.cat(outputs, dim=1), attentions  # [B, sum of encoder output lengths, d_model]

"""Per-window normalisation: reversible instance normalisation and the de-stationary factors.

* RevIN (Kim et al., ICLR 2022): every input window is normalised per channel by its own mean and
  standard deviation (optionally followed by a learned affine map) and the forecast is mapped back.
  The model then sees windows of one scale and level, and a series that drifts between the training
  year and the test months is forecast from its recent statistics.
* De-stationary factors (Liu et al., "Non-stationary Transformers", NeurIPS 2022): normalised windows
  all look alike to attention, so a small network learns a scale ``tau > 0`` and a per-key shift
  ``delta`` from the raw window and its statistics, and self-attention uses
  ``softmax((q k^T * tau + delta) / sqrt(E))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class WindowStats:
    mean: torch.Tensor  # [B, 1, C]
    std: torch.Tensor  # [B, 1, C]


class RevIN(nn.Module):
    """``normalize`` a ``[B, L, C]`` window by its own statistics, ``denormalize`` the forecast back."""

    def __init__(self, n_channels: int, affine: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(n_channels))
            self.bias = nn.Parameter(torch.zeros(n_channels))

    def statistics(self, x: torch.Tensor) -> WindowStats:
        mean = x.mean(dim=1, keepdim=True).detach()  # [B, 1, C]
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        return WindowStats(mean, std)

    def normalize(self, x: torch.Tensor, stats: WindowStats) -> torch.Tensor:
        x = (x - stats.mean) / stats.std
        return x * self.weight + self.bias if self.affine else x

    def denormalize(self, y: torch.Tensor, stats: WindowStats) -> torch.Tensor:
        """``y`` holds the last ``y.shape[-1]`` channels (the targets come last in every features mode)."""
        c = y.shape[-1]
        if self.affine:
            y = (y - self.bias[-c:]) / self.weight[-c:]
        return y * stats.std[..., -c:] + stats.mean[..., -c:]


class DestationaryFactor(nn.Module):
    """``[B, L, C]`` raw window and one of its statistics ``[B, 1, C]`` -> ``[B, out_dim]``.

    A circular convolution over the channels with the L time steps as its input channels summarises
    the window, then an MLP reads it beside the statistic (the Non-stationary Transformer's projector).
    """

    def __init__(self, n_channels: int, seq_len: int, out_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.series_conv = nn.Conv1d(seq_len, 1, kernel_size=3, padding=1, padding_mode="circular",
                                     bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_channels, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, out_dim, bias=False))

    def forward(self, x: torch.Tensor, stat: torch.Tensor) -> torch.Tensor:
        summary = self.series_conv(x)  # [B, 1, C]
        return self.mlp(torch.cat([summary, stat], dim=1).flatten(1))  # [B, out_dim]

"""The quantile head: one forecast per quantile level per channel, monotone by construction.

A point model projects ``d_model -> c_out`` with a plain ``nn.Linear`` (``Informer.projection``). A
quantile model (``model.quantiles = [tau_1 < ... < tau_Q]``) projects to ``c_out * Q`` numbers read as
the lowest quantile and ``Q - 1`` gaps; each gap goes through softplus (positive) and the quantiles are
the lowest one plus the running sum of the gaps. The levels therefore never cross, whatever the weights
and inputs, without sorting anything after the fact (which would hide from the loss which output
stands for which level).

RevIN maps a forecast back with ``y * s + m`` per channel, ``s = std / weight``. For the lowest quantile
that is :meth:`RevIN.denormalize`; the gaps are multiplied by ``|s|``. With a positive affine weight (its
initial value, and where it stays in practice) this is exactly de-normalising every quantile; should a
learned weight turn negative, plain de-normalisation would reverse the order of the levels, while this
keeps them increasing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from informer.model.normalization import RevIN, WindowStats


class QuantileHead(nn.Module):
    """``[B, L, d_model] -> (lowest [B, L, C], gaps [B, L, C, Q - 1] >= 0)``; :func:`assemble` sums them."""

    def __init__(self, d_model: int, n_channels: int, quantiles: Sequence[float]) -> None:
        super().__init__()
        self.n_channels = n_channels
        self.n_quantiles = len(quantiles)
        self.linear = nn.Linear(d_model, n_channels * self.n_quantiles)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # float32 from here on: under bf16 autocast the running sum of the gaps would lose the small ones
        raw = self.linear(x).float()  # [B, L, C * Q]
        raw = raw.unflatten(-1, (self.n_channels, self.n_quantiles))  # [B, L, C, Q]
        return raw[..., 0], F.softplus(raw[..., 1:])  # [B, L, C], [B, L, C, Q - 1]


def assemble(lowest: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
    """``lowest [..., C]`` and ``gaps [..., C, Q - 1]`` (>= 0) -> increasing quantiles ``[..., C, Q]``."""
    lowest = lowest.unsqueeze(-1)  # [..., C, 1]
    return torch.cat([lowest, lowest + gaps.cumsum(dim=-1)], dim=-1)  # [..., C, Q]


def denormalize_quantiles(revin: RevIN, lowest: torch.Tensor, gaps: torch.Tensor,
                          stats: WindowStats) -> tuple[torch.Tensor, torch.Tensor]:
    """RevIN's inverse map for ``lowest [B, L, C]`` and ``gaps [B, L, C, Q - 1]`` (the last C channels)."""
    c = lowest.shape[-1]
    scale = stats.std[..., -c:]  # [B, 1, C]
    if revin.affine:
        scale = scale / revin.weight[-c:].abs()  # [B, 1, C]: |slope| keeps the gaps non-negative
    return revin.denormalize(lowest, stats), gaps * scale.unsqueeze(-1)  # [B, L, C], [B, L, C, Q - 1]

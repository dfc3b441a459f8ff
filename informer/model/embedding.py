"""Input embedding (paper section 3, Fig. 6): value token + position + calendar time, then dropout.

``x_mark`` layouts (see informer.data.timefeatures): ``embed='timeF'`` takes the float features
``[B, L, time_feature_dim(freq)]``; ``fixed`` and ``learned`` take the int64 calendar columns
``[B, L, 5]`` (month, day, weekday, hour, minute), the minute column only for sub-hourly data. With
``n_known_future = K > 0`` (known-future covariates, :mod:`informer.data.roles`) ``x_mark`` has K more
columns at the end, the scaled covariate values, embedded by their own linear map; the calendar
integers then arrive as float32 (exact) and are cast back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from informer.config import ModelConfig
from informer.data.timefeatures import CALENDAR_COLUMNS, CALENDAR_SIZES, is_sub_hourly, time_feature_dim


def sinusoid_table(n_positions: int, d_model: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``[n_positions, d_model]``: sin on even channels, cos on odd ones (Vaswani et al.)."""
    position = torch.arange(n_positions, dtype=torch.float32, device=device).unsqueeze(1)  # [N, 1]
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32, device=device)
                         * (-math.log(10000.0) / d_model))  # [ceil(d/2)]
    table = torch.zeros(n_positions, d_model, device=device)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: d_model // 2])  # odd d_model: one fewer cos
    return table


class TokenEmbedding(nn.Module):
    """Conv1d over time, kernel 3, circular padding: ``[B, L, C] -> [B, L, d_model]``."""

    def __init__(self, c_in: int, d_model: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, d_model, kernel_size=3, padding=1, padding_mode="circular")
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2)  # [B, L, d_model]


class PositionalEmbedding(nn.Module):
    """Sinusoidal positions for any length: the table grows on demand (the official one stops at 5000)."""

    def __init__(self, d_model: int, initial_len: int = 1024) -> None:
        super().__init__()
        self.d_model = d_model
        # derived from d_model alone, so kept out of checkpoints
        self.register_buffer("table", sinusoid_table(initial_len, d_model), persistent=False)

    def forward(self, length: int) -> torch.Tensor:
        if length > self.table.shape[0]:
            grown = sinusoid_table(max(length, 2 * self.table.shape[0]), self.d_model, self.table.device)
            self.table = grown.to(self.table.dtype)
        return self.table[:length].unsqueeze(0)  # [1, L, d_model]


class TimeFeatureEmbedding(nn.Module):
    """``timeF``: a linear map of the continuous time features."""

    def __init__(self, d_model: int, freq: str) -> None:
        super().__init__()
        self.n_features = time_feature_dim(freq)
        self.linear = nn.Linear(self.n_features, d_model)

    def forward(self, x_mark: torch.Tensor) -> torch.Tensor:
        if x_mark.shape[-1] != self.n_features:
            raise ValueError(f"embed='timeF' expects {self.n_features} time-feature columns for this "
                             f"frequency, got x_mark with {x_mark.shape[-1]}")
        return self.linear(x_mark.to(self.linear.weight.dtype))


class CalendarEmbedding(nn.Module):
    """``fixed`` (frozen sinusoidal tables) or ``learned`` (nn.Embedding) calendar embeddings, summed."""

    def __init__(self, d_model: int, freq: str, learned: bool) -> None:
        super().__init__()
        self.names = [c for c in CALENDAR_COLUMNS if c != "minute" or is_sub_hourly(freq)]
        self.columns = [CALENDAR_COLUMNS.index(c) for c in self.names]
        self.learned = learned
        if learned:
            self.tables = nn.ModuleList(nn.Embedding(CALENDAR_SIZES[c], d_model) for c in self.names)
        else:
            # buffers, not frozen parameters: nothing to train, and rebuilt from d_model on load
            for c in self.names:
                table = sinusoid_table(CALENDAR_SIZES[c], d_model)
                self.register_buffer(f"{c}_table", table, persistent=False)

    def forward(self, x_mark: torch.Tensor) -> torch.Tensor:
        if x_mark.shape[-1] != len(CALENDAR_COLUMNS):
            raise ValueError(f"embed='fixed'/'learned' expects the {len(CALENDAR_COLUMNS)} calendar columns "
                             f"{list(CALENDAR_COLUMNS)}, got x_mark with {x_mark.shape[-1]}")
        x_mark = x_mark.long()
        if self.learned:
            parts = [table(x_mark[..., col]) for table, col in zip(self.tables, self.columns, strict=True)]
        else:
            parts = [F.embedding(x_mark[..., col], getattr(self, f"{name}_table"))
                     for name, col in zip(self.names, self.columns, strict=True)]
        return torch.stack(parts).sum(0)  # [B, L, d_model]


class DataEmbedding(nn.Module):
    """Value + positional + temporal (+ known-future covariate) embedding, then dropout:
    ``[B, L, C] -> [B, L, d_model]``."""

    def __init__(self, c_in: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.value_embedding = TokenEmbedding(c_in, cfg.d_model)
        self.position_embedding = PositionalEmbedding(cfg.d_model)
        if cfg.embed == "timeF":
            self.temporal_embedding: nn.Module = TimeFeatureEmbedding(cfg.d_model, cfg.freq)
        else:
            self.temporal_embedding = CalendarEmbedding(cfg.d_model, cfg.freq, learned=cfg.embed == "learned")
        self.n_known_future = cfg.n_known_future
        if self.n_known_future:  # no module (and no state-dict keys) without covariates: old checkpoints load
            self.covariate_embedding = nn.Linear(self.n_known_future, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor) -> torch.Tensor:
        out = self.value_embedding(x) + self.position_embedding(x.shape[1])  # [B, L, d_model]
        if self.n_known_future:
            k = self.n_known_future
            covariates = x_mark[..., -k:].to(self.covariate_embedding.weight.dtype)  # [B, L, K]
            out = out + self.temporal_embedding(x_mark[..., :-k]) + self.covariate_embedding(covariates)
        else:
            out = out + self.temporal_embedding(x_mark)
        return self.dropout(out)  # [B, L, d_model]

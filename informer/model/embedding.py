"""Input embedding: values + position + calendar time, then dropout.

``x_mark`` layouts (see informer.data.timefeatures): ``embed='timeF'`` takes the float features
``[B, L, time_feature_dim(freq)]``; ``fixed`` and ``learned`` take the int64 calendar columns
``[B, L, 5]`` (month, day, weekday, hour, minute), the minute column only for sub-hourly data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from informer.config import ModelConfig
from informer.data.timefeatures import CALENDAR_COLUMNS, CALENDAR_SIZES, is_sub_hourly, time_feature_dim
from informer.model.dropout import Dropout


def sinusoid_table(n_positions: int, d_model: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``[n_positions, d_model]``: sin on even channels, cos on odd ones (Vaswani et al.)."""
    position = torch.arange(n_positions, dtype=torch.float32, device=device).unsqueeze(1)  # [N, 1]
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32, device=device)
                         * (-math.log(10000.0) / d_model))  # [ceil(d/2)]
    table = torch.zeros(n_positions, d_model, device=device)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: d_model // 2])  # odd d_model: one fewer cos
    return table


def pad_time_circularly(x: torch.Tensor) -> torch.Tensor:
    """``[B, L, C] -> [B, L + 2, C]``: the last step before the first, the first after the last."""
    return _CircularTimePad.apply(x)


class _CircularTimePad(torch.autograd.Function):
    """Autograd of ``cat([x[:, -1:], x, x[:, :1]])`` would zero-fill and add two full-size gradients,
    one per edge slice; here the edge rows' gradients are added to a single copy of the middle."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.cat([x[:, -1:], x, x[:, :1]], dim=1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad_x = grad[:, 1:-1].clone()
        grad_x[:, -1] += grad[:, 0]
        grad_x[:, 0] += grad[:, -1]
        return grad_x


class TokenEmbedding(nn.Module):
    """Conv1d over time (kernel 3, circular padding): ``[B, L, C] -> [B, L, d_model]``.

    Computed as one matrix product of each step's three-step window with the flattened kernel, which
    is the same sum as the convolution but leaves the output in ``[B, L, d_model]`` memory order; a
    convolution's ``[B, d_model, L]`` output would make every projection of the first layer copy it.
    """

    def __init__(self, c_in: int, d_model: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, d_model, kernel_size=3, padding=0)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, c_in = x.shape
        windows = pad_time_circularly(x).unfold(1, 3, 1)  # [B, L, C, 3]: steps t-1, t, t+1
        kernel = self.conv.weight.reshape(self.conv.out_channels, c_in * 3)  # same (C, 3) order
        return F.linear(windows.reshape(b, length, c_in * 3), kernel, self.conv.bias)  # [B, L, d_model]


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
    """``timeF``: a linear map (with bias, as in the paper's code) of the continuous time features."""

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
        used = [c for c in CALENDAR_COLUMNS if c != "minute" or is_sub_hourly(freq)]
        self.names = used
        self.columns = [CALENDAR_COLUMNS.index(c) for c in used]
        self.learned = learned
        if learned:
            self.tables = nn.ModuleList(nn.Embedding(CALENDAR_SIZES[c], d_model) for c in used)
        else:
            # buffers, not frozen parameters: nothing to train, and rebuilt from d_model on load
            for c in used:
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
    """Value + positional + temporal embedding, then dropout: ``[B, L, C] -> [B, L, d_model]``."""

    def __init__(self, c_in: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.value_embedding = TokenEmbedding(c_in, cfg.d_model)
        self.position_embedding = PositionalEmbedding(cfg.d_model)
        if cfg.embed == "timeF":
            self.temporal_embedding: nn.Module = TimeFeatureEmbedding(cfg.d_model, cfg.freq)
        elif cfg.embed in ("fixed", "learned"):
            self.temporal_embedding = CalendarEmbedding(cfg.d_model, cfg.freq, learned=cfg.embed == "learned")
        else:
            raise ValueError(f"model.embed must be one of ['timeF', 'fixed', 'learned'], got {cfg.embed!r}")
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor) -> torch.Tensor:
        out = self.value_embedding(x) + self.position_embedding(x.shape[1]) + self.temporal_embedding(x_mark)
        return self.dropout(out)  # [B, L, d_model]

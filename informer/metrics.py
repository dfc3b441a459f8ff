"""Forecast error metrics accumulated exactly over any number of batches (and processes).

Every metric is a ratio of sums, and the sums are kept in float64, so scoring a split in batches of 1
or of 32, or sharded over several processes whose sums are added, gives the same numbers up to float64
rounding. MAPE and MSPE divide by the true value: points whose true value is exactly zero are left out
of those two metrics (and only those), and the number left out is reported as ``zero_targets_excluded``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

HUBER_DELTA = 1.0  # torch.nn.HuberLoss's default: quadratic within one unit of the truth, linear beyond

# Order of the sums inside ErrorSums.as_tensor(); the per-step squared errors follow them.
_SUMS = ("count", "abs", "sq", "nonzero", "ape", "spe", "huber")


def huber(err: torch.Tensor, delta: float = HUBER_DELTA) -> torch.Tensor:
    """Elementwise Huber loss of the errors, as ``torch.nn.functional.huber_loss(reduction="none")``."""
    abs_err = err.abs()
    return torch.where(abs_err <= delta, 0.5 * err.square(), delta * (abs_err - 0.5 * delta))


class ErrorSums:
    """Running sums of forecast errors for predictions shaped ``[B, pred_len, V]``."""

    def __init__(self, pred_len: int, device: torch.device | str = "cpu") -> None:
        self.pred_len = pred_len
        self.totals = torch.zeros(len(_SUMS), dtype=torch.float64, device=device)
        self.sq_per_step = torch.zeros(pred_len, dtype=torch.float64, device=device)
        self.count_per_step = torch.zeros(pred_len, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, truth: torch.Tensor) -> None:
        """Add one batch; ``pred`` and ``truth`` are ``[B, pred_len, V]`` in the same units."""
        if pred.shape != truth.shape or pred.dim() != 3 or pred.shape[1] != self.pred_len:
            raise ValueError(f"expected matching [B, {self.pred_len}, V] tensors, got "
                             f"{tuple(pred.shape)} and {tuple(truth.shape)}")
        pred = pred.to(self.totals.device, torch.float64)
        truth = truth.to(self.totals.device, torch.float64)
        err = pred - truth  # [B, H, V]
        sq = err.square()
        nonzero = truth != 0
        # relative errors only where the truth is non-zero; elsewhere 0 so the sum ignores them
        safe_truth = torch.where(nonzero, truth, torch.ones_like(truth))
        rel = torch.where(nonzero, err / safe_truth, torch.zeros_like(err))  # [B, H, V]
        batch = torch.stack([
            torch.tensor(float(err.numel()), dtype=torch.float64, device=err.device),
            err.abs().sum(),
            sq.sum(),
            nonzero.sum().to(torch.float64),
            rel.abs().sum(),
            rel.square().sum(),
            huber(err).sum(),
        ])
        self.totals += batch
        self.sq_per_step += sq.sum(dim=(0, 2))  # [H]
        self.count_per_step += float(err.shape[0] * err.shape[2])

    def as_tensor(self) -> torch.Tensor:
        """All sums in one float64 vector, for a single all-reduce across processes."""
        return torch.cat([self.totals, self.sq_per_step, self.count_per_step])

    def load_tensor(self, flat: torch.Tensor) -> None:
        """Inverse of :meth:`as_tensor` (after the sums of every process were added)."""
        n, h = len(_SUMS), self.pred_len
        self.totals = flat[:n].clone()
        self.sq_per_step = flat[n:n + h].clone()
        self.count_per_step = flat[n + h:].clone()

    @property
    def count(self) -> int:
        return int(self.totals[0].item())

    def summary(self) -> dict[str, float | int]:
        """MSE, MAE, RMSE, MAPE, MSPE, Huber (NaN when nothing was scored) and the zero-target count."""
        sums = dict(zip(_SUMS, self.totals.tolist(), strict=True))
        count, nonzero = sums["count"], sums["nonzero"]
        mse = sums["sq"] / count if count else math.nan
        return {
            "mse": mse,
            "mae": sums["abs"] / count if count else math.nan,
            "rmse": math.sqrt(mse) if count else math.nan,
            "mape": sums["ape"] / nonzero if nonzero else math.nan,
            "mspe": sums["spe"] / nonzero if nonzero else math.nan,
            "huber": sums["huber"] / count if count else math.nan,
            "points": int(count),
            "zero_targets_excluded": int(count - nonzero),
        }

    def mse_per_step(self) -> list[float]:
        counts = self.count_per_step.clamp_min(1.0)
        return (self.sq_per_step / counts).tolist()


class ForecastScore:
    """Errors of one forecaster in scaled units (the paper's convention) and in original units."""

    def __init__(self, pred_len: int, to_original: Callable[[torch.Tensor], torch.Tensor],
                 device: torch.device | str = "cpu") -> None:
        self.scaled = ErrorSums(pred_len, device)
        self.original = ErrorSums(pred_len, device)
        self._to_original = to_original

    def update(self, pred: torch.Tensor, truth: torch.Tensor) -> None:
        """``pred``/``truth``: ``[B, pred_len, V]`` scaled values."""
        self.scaled.update(pred, truth)
        self.original.update(self._to_original(pred), self._to_original(truth))

    def as_tensor(self) -> torch.Tensor:
        return torch.cat([self.scaled.as_tensor(), self.original.as_tensor()])

    def load_tensor(self, flat: torch.Tensor) -> None:
        half = flat.numel() // 2
        self.scaled.load_tensor(flat[:half])
        self.original.load_tensor(flat[half:])

    def summary(self) -> dict[str, object]:
        return {
            "scaled": self.scaled.summary(),
            "original": self.original.summary(),
            "mse_per_step": self.scaled.mse_per_step(),
        }


def inverse_scaler(mean: torch.Tensor, scale: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Map scaled ``[..., V]`` values back to original units (float64), given the scaler's V columns."""
    mean64, scale64 = mean.to(torch.float64), scale.to(torch.float64)

    def to_original(values: torch.Tensor) -> torch.Tensor:
        values = values.to(torch.float64)
        return values * scale64.to(values.device) + mean64.to(values.device)  # [..., V]

    return to_original

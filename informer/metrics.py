"""Forecast error metrics accumulated exactly over any number of batches (and processes).

Every metric is a ratio of sums, and the sums are kept in float64, so scoring a split in batches of 1
or of 32, or sharded over several processes whose sums are added, gives the same numbers up to float64
rounding. Over all N scored points (every window, every forecast step, every forecast variable), with
error e = prediction - truth:

* MSE, MAE, RMSE, Huber: the usual means of e^2, |e|, sqrt(MSE), Huber(e) (delta 1).
* MAPE, MSPE: means of |e / y| and (e / y)^2 over the points whose truth y is not exactly 0 (the number
  left out is ``zero_targets_excluded``); kept for comparison with papers only: on a series that comes
  near 0 they explode (ETTh1's original-unit MAPE runs to 10^6).
* Scale-free metrics (original units only, see :class:`ErrorSums`'s ``scale_free``):

  - MASE = (1/V) sum_v MAE_v / s_v: each variable's MAE over every window and step, divided by its
    in-sample seasonal-naive MAE on the training split, s_v = mean over training rows t >= m of
    |y_t,v - y_t-m,v| (m the seasonal period, :func:`in_sample_seasonal_mae`), averaged over the V
    variables. Every variable has the same number of points, so this is sum(|e| / s_v) / N. Below 1 the
    forecast beats, out of sample, what repeating the last season achieved in sample. NaN when some s_v
    is 0 or unknown (a constant or too short training series).
  - WAPE = sum |e| / sum |y| (NaN when every y is 0).
  - sMAPE = mean of 2 |e| / (|y| + |y_hat|) over the points where y and y_hat are not both 0 (those
    are left out, counted in ``smape_points_excluded``); a fraction in [0, 2], not a percentage.

* Skill against seasonal naive (:func:`skill_score`), 1 - MSE / MSE_seasonal_naive on the same windows,
  is computed by the evaluation from two of these summaries, on scaled data.
* Probabilistic metrics (:class:`ProbabilisticScore`), for quantile forecasts at levels tau (a quantile
  model's own, or the endpoints of calibrated intervals, :func:`informer.intervals.forecast_quantiles`)
  with the pinball loss rho_tau(y, q) = max(tau (y - q), (tau - 1) (y - q)):

  - wQL (gluonts' ``mean_wQuantileLoss``) = mean over tau of 2 sum rho_tau / sum |y|, original units;
  - CRPS ~ mean over tau of 2 mean rho_tau (the CRPS is 2 * the integral of rho_tau over tau in (0, 1);
    this is its average over the forecast levels), scaled and original units;
  - per interval level: coverage, the fraction of points with lo <= y <= hi (also per step and per
    variable), and the mean width hi - lo (original units, and scaled).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from informer.intervals import level_key

HUBER_DELTA = 1.0  # torch.nn.HuberLoss's default: quadratic within one unit of the truth, linear beyond

# Order of the sums inside ErrorSums.as_tensor(); the per-step squared errors follow them.
_SUMS = ("count", "abs", "sq", "nonzero", "ape", "spe", "huber", "abs_truth", "smape", "smape_points",
         "mase")


def huber(err: torch.Tensor, delta: float = HUBER_DELTA) -> torch.Tensor:
    """Elementwise Huber loss of the errors, as ``torch.nn.functional.huber_loss(reduction="none")``."""
    abs_err = err.abs()
    return torch.where(abs_err <= delta, 0.5 * err.square(), delta * (abs_err - 0.5 * delta))


class ErrorSums:
    """Running sums of forecast errors for predictions shaped ``[B, pred_len, V]``.

    ``scale_free`` adds MASE, WAPE and sMAPE to :meth:`summary` (meaningful in original units only);
    ``mase_scale`` is MASE's denominator, one value per variable ``[V]`` in the units of the data
    (:func:`in_sample_seasonal_mae`), or None (MASE is then NaN).
    """

    def __init__(self, pred_len: int, device: torch.device | str = "cpu", *, scale_free: bool = False,
                 mase_scale: torch.Tensor | None = None) -> None:
        self.pred_len = pred_len
        self.scale_free = scale_free
        self.totals = torch.zeros(len(_SUMS), dtype=torch.float64, device=device)
        self.sq_per_step = torch.zeros(pred_len, dtype=torch.float64, device=device)
        self.count_per_step = torch.zeros(pred_len, dtype=torch.float64, device=device)
        self.mase_scale: torch.Tensor | None = None
        if mase_scale is not None:
            scale = torch.as_tensor(mase_scale, dtype=torch.float64).to(device)  # [V]
            # a zero or unknown scale makes MASE undefined, not infinite for one variable only
            defined = bool(torch.isfinite(scale).all()) and bool((scale > 0).all())
            self.mase_scale = scale if defined else None

    @torch.no_grad()
    def update(self, pred: torch.Tensor, truth: torch.Tensor) -> None:
        """Add one batch; ``pred`` and ``truth`` are ``[B, pred_len, V]`` in the same units."""
        if pred.shape != truth.shape or pred.dim() != 3 or pred.shape[1] != self.pred_len:
            raise ValueError(f"expected matching [B, {self.pred_len}, V] tensors, got "
                             f"{tuple(pred.shape)} and {tuple(truth.shape)}")
        if self.mase_scale is not None and self.mase_scale.shape[0] != pred.shape[2]:
            raise ValueError(f"mase_scale has {self.mase_scale.shape[0]} values for {pred.shape[2]} "
                             "variables")
        pred = pred.to(self.totals.device, torch.float64)
        truth = truth.to(self.totals.device, torch.float64)
        err = pred - truth  # [B, H, V]
        abs_err, sq = err.abs(), err.square()
        nonzero = truth != 0
        # relative errors only where the truth is non-zero; elsewhere 0 so the sum ignores them
        safe_truth = torch.where(nonzero, truth, torch.ones_like(truth))
        rel = torch.where(nonzero, err / safe_truth, torch.zeros_like(err))  # [B, H, V]
        # sMAPE's denominator; points where truth and prediction are both 0 are left out
        denom = truth.abs() + pred.abs()  # [B, H, V]
        counted = denom > 0
        sym = torch.where(counted, 2 * abs_err / torch.where(counted, denom, torch.ones_like(denom)),
                          torch.zeros_like(denom))  # [B, H, V]
        mase = (abs_err / self.mase_scale).sum() if self.mase_scale is not None else abs_err.new_zeros(())
        batch = torch.stack([
            torch.tensor(float(err.numel()), dtype=torch.float64, device=err.device),
            abs_err.sum(),
            sq.sum(),
            nonzero.sum().to(torch.float64),
            rel.abs().sum(),
            rel.square().sum(),
            huber(err).sum(),
            truth.abs().sum(),
            sym.sum(),
            counted.sum().to(torch.float64),
            mase,
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
        """MSE, MAE, RMSE, MAPE, MSPE, Huber (NaN when nothing was scored) and the zero-target count;
        with ``scale_free`` also MASE, WAPE, sMAPE and the points sMAPE left out."""
        sums = dict(zip(_SUMS, self.totals.tolist(), strict=True))
        count, nonzero = sums["count"], sums["nonzero"]
        mse = sums["sq"] / count if count else math.nan
        result: dict[str, float | int] = {
            "mse": mse,
            "mae": sums["abs"] / count if count else math.nan,
            "rmse": math.sqrt(mse) if count else math.nan,
            "mape": sums["ape"] / nonzero if nonzero else math.nan,
            "mspe": sums["spe"] / nonzero if nonzero else math.nan,
            "huber": sums["huber"] / count if count else math.nan,
            "points": int(count),
            "zero_targets_excluded": int(count - nonzero),
        }
        if self.scale_free:
            smape_points = sums["smape_points"]
            result.update({
                "mase": sums["mase"] / count if count and self.mase_scale is not None else math.nan,
                "wape": sums["abs"] / sums["abs_truth"] if sums["abs_truth"] else math.nan,
                "smape": sums["smape"] / smape_points if smape_points else math.nan,
                "smape_points_excluded": int(count - smape_points),
            })
        return result

    def mse_per_step(self) -> list[float]:
        counts = self.count_per_step.clamp_min(1.0)
        return (self.sq_per_step / counts).tolist()


class ForecastScore:
    """Errors of one forecaster in scaled units (the paper's convention) and in original units; the
    scale-free metrics (MASE with ``mase_scale`` ``[V]`` in original units, WAPE, sMAPE) in original
    units only."""

    def __init__(self, pred_len: int, to_original: Callable[[torch.Tensor], torch.Tensor],
                 device: torch.device | str = "cpu", mase_scale: torch.Tensor | None = None) -> None:
        self.scaled = ErrorSums(pred_len, device)
        self.original = ErrorSums(pred_len, device, scale_free=True, mase_scale=mase_scale)
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


def in_sample_seasonal_mae(values: np.ndarray, period: int) -> np.ndarray:
    """MASE's scale: per column, the mean of ``|y_t - y_(t - period)|`` over the rows ``t >= period`` of
    ``values`` ``[T, V]`` (the training split, original units); ``[V]`` float64, NaN when ``T <= period``."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or period < 1:
        raise ValueError(f"expected [T, V] values and a period >= 1, got {values.shape} and {period}")
    if values.shape[0] <= period:
        return np.full(values.shape[1], np.nan)
    return np.abs(values[period:] - values[:-period]).mean(axis=0)  # [V]


def skill_score(mse: float, reference_mse: float) -> float:
    """``1 - mse / reference_mse``: 1 is perfect, 0 no better than the reference, negative worse; NaN
    when the reference's MSE is not a positive finite number."""
    if not (math.isfinite(reference_mse) and reference_mse > 0) or math.isnan(mse):
        return math.nan
    return 1.0 - mse / reference_mse


# ------------------------------------------------------------------------------------------ probabilistic
def pinball(pred: torch.Tensor, truth: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """Elementwise pinball (quantile) loss of the tau-quantile forecast ``pred``: ``max(tau (y - q),
    (tau - 1) (y - q))`` (``tau`` a number, or levels broadcasting against the last axis)."""
    diff = truth - pred
    return torch.maximum(tau * diff, (tau - 1.0) * diff)


class ProbabilisticScore:
    """Exact float64 sums for the quantile forecasts ``[B, pred_len, V, K]`` (levels ``quantiles``) and
    the intervals (``levels``, keys as in a calibration) of one forecaster; see :meth:`summary`.

    ``to_original`` maps scaled ``[..., V]`` values to original units (a positive affine map per
    variable, so coverage and the order of the quantiles do not depend on the units).
    """

    def __init__(self, pred_len: int, n_vars: int, quantiles: Sequence[float], levels: Sequence[str],
                 to_original: Callable[[torch.Tensor], torch.Tensor], device: torch.device | str = "cpu",
                 quantiles_from: str = "model") -> None:
        self.pred_len, self.n_vars = pred_len, n_vars
        self.quantiles, self.levels = [float(q) for q in quantiles], list(levels)
        self.quantiles_from = quantiles_from
        self._to_original = to_original
        k, n_levels = len(self.quantiles), len(self.levels)
        # [count, sum |y| (original)], then per quantile [pinball scaled, pinball original, y <= q]
        self.totals = torch.zeros(2 + 3 * k, dtype=torch.float64, device=device)
        # per level: covered points per step [P], width per variable [V] (scaled, original), covered per
        # variable [V]
        self.per_level = torch.zeros(n_levels, pred_len + 3 * n_vars, dtype=torch.float64, device=device)

    def _original(self, values: torch.Tensor) -> torch.Tensor:
        return self._to_original(values.to(self.totals.device))

    @torch.no_grad()
    def update(self, truth: torch.Tensor, quantile_preds: torch.Tensor | None,
               intervals: Mapping[float, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """``truth [B, P, V]`` scaled; ``quantile_preds [B, P, V, K]`` scaled (None when K = 0);
        ``intervals`` ``{level: (lo, hi)}``, ``[B, P, V]`` scaled, for every level of ``levels``."""
        truth = truth.to(self.totals.device, torch.float64)
        truth_orig = self._original(truth)  # [B, P, V]
        batch = [torch.tensor(float(truth.numel()), dtype=torch.float64, device=truth.device),
                 truth_orig.abs().sum()]
        for k, tau in enumerate(self.quantiles):
            q = quantile_preds[..., k].to(truth.device, torch.float64)  # [B, P, V]
            batch += [pinball(q, truth, tau).sum(), pinball(self._original(q), truth_orig, tau).sum(),
                      (truth <= q).sum().to(torch.float64)]
        self.totals += torch.stack(batch)
        by_key = {level_key(level): bounds for level, bounds in intervals.items()}
        for i, key in enumerate(self.levels):
            lo, hi = (t.to(truth.device, torch.float64) for t in by_key[key])  # [B, P, V] each
            covered = ((lo <= truth) & (truth <= hi)).to(torch.float64)  # [B, P, V]
            width = hi - lo
            self.per_level[i] += torch.cat([
                covered.sum(dim=(0, 2)),  # [P]
                width.sum(dim=(0, 1)),  # [V]
                (self._original(hi) - self._original(lo)).sum(dim=(0, 1)),  # [V]
                covered.sum(dim=(0, 1)),  # [V]
            ])

    def as_tensor(self) -> torch.Tensor:
        return torch.cat([self.totals, self.per_level.flatten()])

    def load_tensor(self, flat: torch.Tensor) -> None:
        n = self.totals.numel()
        self.totals = flat[:n].clone()
        self.per_level = flat[n:].reshape(self.per_level.shape).clone()

    def summary(self) -> dict[str, Any]:
        """``{"pinball": mean scaled pinball loss, "probabilistic": {...}, "intervals": {level: {...}}}``.

        * pinball: the mean over levels and points of the pinball loss, scaled units (quantile models'
          training loss);
        * wql (gluonts' mean_wQuantileLoss): mean over levels tau of 2 sum pinball_tau / sum |y|, original
          units; crps / crps_original: mean over levels of 2 * mean pinball_tau, the quantile
          approximation of the CRPS, in scaled / original units; quantile_coverage: the fraction of
          points with y <= q_tau;
        * per interval level: coverage (fraction of points with lo <= y <= hi), its value per forecast
          step and per variable, and the mean width in original units (all variables pooled, and per
          variable) and in scaled units.
        """
        values = self.totals.tolist()
        count, abs_truth = values[0], values[1]
        k = len(self.quantiles)
        sums = [values[2 + 3 * i: 5 + 3 * i] for i in range(k)]
        nan = math.nan
        keys = [level_key(q) for q in self.quantiles]
        wql = [2 * s[1] / abs_truth if abs_truth else nan for s in sums]
        crps_parts = [2 * s[0] / count if count else nan for s in sums]
        probabilistic: dict[str, Any] = {
            "quantiles": list(self.quantiles),
            "quantiles_from": self.quantiles_from,
            "wql": sum(wql) / k if k else nan,
            "wql_per_quantile": dict(zip(keys, wql, strict=True)),
            "crps": sum(crps_parts) / k if k else nan,
            "crps_original": (sum(2 * s[1] for s in sums) / (k * count)) if k and count else nan,
            "quantile_coverage": {key: s[2] / count if count else nan
                                  for key, s in zip(keys, sums, strict=True)},
        }
        intervals = {}
        p, v = self.pred_len, self.n_vars
        per_step_count = count / p if count else 0.0  # windows x variables
        per_var_count = count / v if count else 0.0  # windows x steps
        for key, row in zip(self.levels, self.per_level.tolist(), strict=True):
            covered_step, width_scaled = row[:p], row[p:p + v]
            width_orig, covered_var = row[p + v:p + 2 * v], row[p + 2 * v:]
            intervals[key] = {
                "coverage": sum(covered_step) / count if count else nan,
                "width": sum(width_orig) / count if count else nan,
                "width_scaled": sum(width_scaled) / count if count else nan,
                "coverage_per_step": [c / per_step_count if count else nan for c in covered_step],
                "coverage_per_variable": [c / per_var_count if count else nan for c in covered_var],
                "width_per_variable": [w / per_var_count if count else nan for w in width_orig],
            }
        pinball_mean = sum(s[0] for s in sums) / (k * count) if k and count else nan
        return {"pinball": pinball_mean, "probabilistic": probabilistic, "intervals": intervals}

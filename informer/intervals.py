"""Point forecasts, calibrated prediction intervals and the quantiles the probabilistic metrics score.

Everything here works on model outputs in scaled units (the training scaler's), as tensors:
a point model's output is ``[B, pred_len, c_out]``, a quantile model's ``[B, pred_len, c_out, Q]``
(``model.quantiles``, increasing). Two functions are what other code uses:

* :func:`point_forecast` ``(output, quantiles) -> [B, pred_len, c_out]``: the output itself for a point
  model; for a quantile model the 0.5 quantile, or the mean of the quantiles when 0.5 is not a level.
* :func:`predict_intervals` ``(output, calibration, scale) -> {level: (lo, hi)}``, both
  ``[B, pred_len, c_out]`` with ``lo <= hi``; ``scale`` is :func:`window_scale` of the encoder input, needed
  by a "normalized" calibration. The scaler's scale is positive, so ``lo * scale + mean`` maps an
  interval to original units unchanged in meaning.

A calibration (``payload["calibration"]`` of a checkpoint, see :mod:`informer.checkpoint`) is fitted on
the validation split's windows by :func:`fit_calibration`:

* split conformal (any model): the score of a window is ``|y - point|`` per forecast step and channel;
  the level-L margin is the k-th smallest of the n validation scores, k = ceil((n + 1) L) (the quantile
  at ceil((n + 1) L) / n, the finite-sample correction; infinite when k > n), and the interval is
  ``point -+ margin``;
* normalized (locally adaptive) split conformal, a point model's default (``forecast.interval_method``):
  the score is ``|y - point| / s`` with ``s`` = :func:`window_scale`, the per-channel spread of the
  look-back window the model read, the margin the same order statistic of those scores, and the interval
  ``point -+ margin * s``: wide after a volatile window, narrow after a calm one. The guarantee below is
  the same (the score is still a function of one window); on ETTh1, whose validation months are more
  volatile than its test months, split conformal's fixed margins over-cover the test split at 80 %
  and the normalized ones track nominal;
* CQR (Romano et al. 2019), for a quantile model with both levels (1 - L) / 2 and (1 + L) / 2: the score is
  ``max(q_lo - y, y - q_hi)`` and the interval ``[q_lo - margin, q_hi + margin]`` (the margin may be
  negative: the learned interval was too wide). Where a negative margin would cross the endpoints, the
  interval shrinks to its midpoint instead. Levels whose pair is missing fall back to split conformal.

With n exchangeable validation and test windows, P(lo <= y <= hi) >= L for every forecast step and
channel, marginally over windows (not conditionally on a window); consecutive windows of one series are
not exchangeable, so on real data the guarantee is approximate and the empirical coverage is measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from informer.config import INTERVAL_METHODS

CALIBRATION_VERSION = 1
Pair = tuple[float, float] | None  # a CQR level's (lower, upper) quantile levels; None: around the point
# The smallest window spread normalized conformal uses, in scaled units (the training split's std is 1
# per variable). A constant window has spread 0: its score |y - point| / 0 would be inf or NaN, and
# after it the interval would shrink to the point. Near-constant windows are real: a stuck sensor, as
# in ETTh1's LUFL and LULL, flat for a week of the validation months; floored at 1e-5 their huge scores
# fill the top of the order statistic and those variables' 95 % intervals over-cover the test split
# (98.8 % / 99.6 %; 96.1 % / 98.1 % at this floor). Every other ETTh1 96-step window is wider than 0.069,
# so the floor changes nothing else there.
SCALE_FLOOR = 0.02


def level_key(level: float) -> str:
    """The string key of a level in a calibration and in metrics.json: 0.8 -> "0.8"."""
    return format(float(level), ".10g")


def point_forecast(output: torch.Tensor, quantiles: Sequence[float] | None) -> torch.Tensor:
    """``[B, P, C]`` (point model) or ``[B, P, C, Q]`` -> the point forecast ``[B, P, C]``."""
    if quantiles is None:
        return output
    _check_quantile_output(output, quantiles)
    levels = [float(q) for q in quantiles]
    if 0.5 in levels:
        return output[..., levels.index(0.5)]
    return output.mean(dim=-1)


def _check_quantile_output(output: torch.Tensor, quantiles: Sequence[float]) -> None:
    if output.dim() != 4 or output.shape[-1] != len(quantiles):
        raise ValueError(f"a model with {len(quantiles)} quantile levels outputs [B, pred_len, c_out, "
                         f"{len(quantiles)}], got {tuple(output.shape)}")


def cqr_pair(level: float, quantiles: Sequence[float] | None) -> Pair:
    """The quantile levels ((1 - L) / 2, (1 + L) / 2) when the model has both, else None."""
    if quantiles is None:
        return None
    lower, upper = (1.0 - level) / 2.0, (1.0 + level) / 2.0
    found = [next((q for q in quantiles if math.isclose(q, t, abs_tol=1e-9)), None) for t in (lower, upper)]
    return (float(found[0]), float(found[1])) if None not in found else None  # type: ignore[arg-type]


def window_scale(x_enc: torch.Tensor, c_out: int) -> torch.Tensor:
    """The spread normalized conformal divides by: ``x_enc [B, L, C]`` (scaled units, the forecast
    variables last) -> ``[B, 1, c_out]``, the population std over time of each forecast variable in the
    window the model reads (the statistic RevIN normalises by), floored at ``SCALE_FLOOR``."""
    window = x_enc[:, :, -c_out:]  # [B, L, c_out]
    return window.std(dim=1, correction=0, keepdim=True).clamp_min(SCALE_FLOOR)  # [B, 1, c_out]


def conformity_scores(output: torch.Tensor, truth: torch.Tensor, quantiles: Sequence[float] | None,
                      pairs: Iterable[Pair], scale: torch.Tensor | None = None) -> dict[Pair, torch.Tensor]:
    """Per CQR pair (None: around the point forecast) the conformity score of every window, ``[B, P, C]``
    float64. With ``scale`` (:func:`window_scale`, ``[B, 1, C]``) the None scores are normalized:
    ``|y - point| / scale``; without it, split conformal's ``|y - point|``."""
    truth = truth.double()
    scores: dict[Pair, torch.Tensor] = {}
    for pair in dict.fromkeys(pairs):
        if pair is None:
            residual = (point_forecast(output, quantiles).double() - truth).abs()  # [B, P, C]
            scores[pair] = residual if scale is None else residual / scale.double()
        else:
            levels = [float(q) for q in quantiles or ()]
            lo = output[..., levels.index(pair[0])].double()  # [B, P, C]
            hi = output[..., levels.index(pair[1])].double()
            scores[pair] = torch.maximum(lo - truth, truth - hi)
    return scores


def conformal_margin(scores: torch.Tensor, level: float) -> torch.Tensor:
    """``scores [n, P, C]`` -> the level's margin ``[P, C]``: the ceil((n + 1) L)-th smallest score."""
    n = scores.shape[0]
    if n == 0:
        raise ValueError("conformal calibration needs at least one validation window")
    # rounded first: (n + 1) * 0.8 is 80.00000000000001 in floating point for n = 99
    k = math.ceil(round((n + 1) * level, 6))
    if k > n:  # too few windows for this level: the interval is unbounded
        return torch.full(scores.shape[1:], math.inf, dtype=torch.float64)
    return scores.double().kthvalue(k, dim=0).values  # [P, C]


def fit_calibration(scores: Mapping[Pair, torch.Tensor], levels: Sequence[float],
                    quantiles: Sequence[float] | None, split: str = "val", method: str = "split"
                    ) -> dict[str, Any]:
    """The calibration of ``levels`` from the scores of every window of ``split`` (``scores[pair]`` is
    ``[n, P, C]``, from :func:`conformity_scores` with the pairs :func:`cqr_pair` gives). ``method``
    names the None scores: "split" (plain residuals) or "normalized" (divided by the window scale)."""
    if method not in INTERVAL_METHODS:
        raise ValueError(f"interval method {method!r} is not one of {', '.join(INTERVAL_METHODS)}")
    n = next(iter(scores.values())).shape[0] if scores else 0
    per_level = {}
    for level in levels:
        pair = cqr_pair(level, quantiles)
        per_level[level_key(level)] = {
            "method": method if pair is None else "cqr",
            "quantile_pair": None if pair is None else list(pair),
            "margin": conformal_margin(scores[pair], level).tolist(),  # [P][C]
        }
    return {"version": CALIBRATION_VERSION, "split": split, "n": int(n),
            "quantiles": None if quantiles is None else [float(q) for q in quantiles],
            "levels": [float(level) for level in levels], "per_level": per_level}


def predict_intervals(output: torch.Tensor, calibration: Mapping[str, Any],
                      scale: torch.Tensor | None = None) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
    """Model output (scaled) -> ``{level: (lo, hi)}``, each ``[B, P, C]`` in the output's dtype.
    ``scale``: :func:`window_scale` of the windows the output forecasts from, ``[B, 1, C]``; read only by
    normalized levels, which need it."""
    quantiles = calibration.get("quantiles")
    point = point_forecast(output, quantiles)  # [B, P, C]
    levels = [float(q) for q in quantiles or ()]
    intervals = {}
    for level in calibration["levels"]:
        entry = calibration["per_level"][level_key(level)]
        margin = torch.as_tensor(entry["margin"], dtype=point.dtype, device=point.device)  # [P, C]
        if entry["method"] == "cqr":
            lo_q, hi_q = entry["quantile_pair"]
            lo = output[..., levels.index(lo_q)] - margin
            hi = output[..., levels.index(hi_q)] + margin
            crossed = lo > hi  # a negative margin larger than half the learned width
            middle = (lo + hi) / 2
            lo, hi = torch.where(crossed, middle, lo), torch.where(crossed, middle, hi)
        elif entry["method"] == "normalized":
            if scale is None:
                raise ValueError(f"the level-{level} intervals are normalized conformal: their margins are "
                                 "multiples of the window's spread, so pass scale=window_scale(x_enc, c_out)")
            width = margin * scale.to(point.device, point.dtype)  # [P, C] * [B, 1, C] -> [B, P, C]
            lo, hi = point - width, point + width
        else:
            lo, hi = point - margin, point + margin
        intervals[float(level)] = (lo, hi)
    return intervals


def baseline_margins(residuals: Mapping[str, torch.Tensor], levels: Sequence[float]
                     ) -> dict[str, dict[str, list[list[float]]]]:
    """Each baseline's signed validation residuals ``[n, P, C]`` -> ``{name: {level key: margin
    [P][C]}}``: the split-conformal margins of its point forecast (the calibration's ``baselines``)."""
    return {name: {level_key(level): conformal_margin(res.abs(), level).tolist() for level in levels}
            for name, res in residuals.items()}


def baseline_intervals(point: torch.Tensor, margins: Mapping[str, Any], levels: Sequence[float]
                       ) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
    """A baseline's point forecast ``[B, P, C]`` and its ``baselines[name]`` margins -> ``{level: (lo,
    hi)}``, each ``[B, P, C]``."""
    intervals = {}
    for level in levels:
        margin = torch.as_tensor(margins[level_key(level)], dtype=point.dtype, device=point.device)  # [P, C]
        intervals[float(level)] = (point - margin, point + margin)
    return intervals


def interval_quantile_levels(levels: Iterable[float]) -> list[float]:
    """The quantile levels a point model's intervals stand for: (1 - L) / 2, 0.5 and (1 + L) / 2."""
    taus = {0.5} | {(1.0 - lv) / 2.0 for lv in levels} | {(1.0 + lv) / 2.0 for lv in levels}
    return sorted(round(t, 12) for t in taus)


def scored_quantiles(quantiles: Sequence[float] | None, levels: Sequence[float]) -> list[float] | None:
    """The quantile levels the probabilistic metrics use: a quantile model's own; else those its
    intervals stand for ((1 -+ L) / 2 and 0.5); None for a point model without intervals."""
    if quantiles is not None:
        return [float(q) for q in quantiles]
    return interval_quantile_levels(levels) if levels else None


def forecast_quantiles(output: torch.Tensor, quantiles: Sequence[float] | None,
                       calibration: Mapping[str, Any] | None, scale: torch.Tensor | None = None
                       ) -> tuple[list[float], torch.Tensor] | None:
    """The quantile forecasts the probabilistic metrics score, ``(levels, [B, P, C, K])``: a quantile
    model's own; for a point model with a calibration, the endpoints of its conformal intervals (``scale``
    as in :func:`predict_intervals`) as the (1 -+ L) / 2 quantiles and the point forecast as the 0.5
    quantile; None otherwise."""
    if quantiles is not None:
        _check_quantile_output(output, quantiles)
        return [float(q) for q in quantiles], output
    if calibration is None or not calibration["levels"]:
        return None
    values = {0.5: output}
    for level, (lo, hi) in predict_intervals(output, calibration, scale).items():
        values[round((1.0 - level) / 2.0, 12)], values[round((1.0 + level) / 2.0, 12)] = lo, hi
    taus = interval_quantile_levels(calibration["levels"])
    return taus, torch.stack([values[t] for t in taus], dim=-1)  # [B, P, C, K]


def empirical_quantiles(values: torch.Tensor, taus: Sequence[float]) -> torch.Tensor:
    """``values [n, P, C]`` -> their empirical tau-quantiles ``[P, C, K]`` (linear interpolation between
    order statistics, numpy's default)."""
    n = values.shape[0]
    ordered = values.double().sort(dim=0).values  # [n, P, C]
    out = []
    for tau in taus:
        position = tau * (n - 1)
        below = math.floor(position)
        above = min(below + 1, n - 1)
        weight = position - below
        out.append(ordered[below] * (1 - weight) + ordered[above] * weight)  # [P, C]
    return torch.stack(out, dim=-1)  # [P, C, K]


def residual_quantile_forecast(point: torch.Tensor, calibration: Mapping[str, Any]
                               ) -> tuple[list[float], torch.Tensor]:
    """``point [B, P, C]`` plus the empirical quantiles of the validation residuals ``y - point`` that
    ``calibration["residual_quantiles"]`` holds (seasonal naive's) -> ``(levels, [B, P, C, K])``."""
    stored = calibration["residual_quantiles"]
    offsets = torch.as_tensor(stored["values"], dtype=point.dtype, device=point.device)  # [P, C, K]
    return [float(q) for q in stored["quantiles"]], point.unsqueeze(-1) + offsets  # [B, P, C, K]


def check_calibration(calibration: Any, pred_len: int, c_out: int,
                      quantiles: Sequence[float] | None) -> dict[str, Any]:
    """``calibration`` if it fits a model of these sizes, else ValueError saying what does not."""
    if not isinstance(calibration, Mapping) or not isinstance(calibration.get("per_level"), Mapping):
        raise ValueError("its calibration is not a dict with a 'per_level' entry")
    stored = calibration.get("quantiles")
    if _floats(stored) != _floats(quantiles):
        raise ValueError(f"its calibration was fitted for quantiles {stored}, the model has {quantiles}")
    for level in calibration.get("levels", []):
        entry = calibration["per_level"].get(level_key(level))
        if not isinstance(entry, Mapping) or entry.get("method") not in (*INTERVAL_METHODS, "cqr"):
            raise ValueError(f"its calibration lacks a valid entry for level {level}")
        shape = tuple(torch.as_tensor(entry.get("margin")).shape)
        if shape != (pred_len, c_out):
            raise ValueError(f"its level-{level} margins are {shape}, the model forecasts "
                             f"({pred_len}, {c_out})")
        pair = entry.get("quantile_pair")
        if entry["method"] == "cqr" and (quantiles is None or pair is None
                                         or any(float(q) not in [float(x) for x in quantiles] for q in pair)):
            raise ValueError(f"its level-{level} CQR pair {pair} is not among the model's quantiles")
        for name, margins in (calibration.get("baselines") or {}).items():  # absent in older checkpoints
            margin = margins.get(level_key(level)) if isinstance(margins, Mapping) else None
            if margin is None or tuple(torch.as_tensor(margin).shape) != (pred_len, c_out):
                raise ValueError(f"its {name} margins for level {level} are missing or not "
                                 f"({pred_len}, {c_out})")
    return dict(calibration)


def _floats(values: Iterable[float] | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def missing_calibration_note(checkpoint: object) -> str:
    """What to tell a user whose checkpoint has no intervals (written before they existed, or trained
    with ``forecast.intervals=[]``)."""
    return (f"{checkpoint} has no calibrated prediction intervals (written before they existed, or "
            f"trained with forecast.intervals=[]); add them with `python scripts/evaluate.py "
            f"checkpoint={checkpoint} calibrate=true` (fits the conformal intervals on the validation "
            "split and stores them in the checkpoint)")

"""What a checkpoint says about its own validation skill, and the one-line note when it is not positive.

Training may store ``payload["validation"] = {"mse": ..., "seasonal_naive_mse": ..., "skill": ...}``
with ``skill = 1 - mse / seasonal_naive_mse`` on the validation split (scaled data). A model that does
not beat repeating the last season there should not be forecast from silently; checkpoints written
before this field existed say nothing, and neither does a field too damaged to read.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any


class LowSkillWarning(UserWarning):
    """The checkpoint's validation MSE is not better than the seasonal-naive baseline's."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def validation_skill(payload: dict[str, Any]) -> float | None:
    """The stored skill vs seasonal naive; None when the checkpoint records none (or nothing usable).

    ``skill`` is read as stored; where only the two MSEs are there, it is computed from them.
    """
    section = payload.get("validation")
    if not isinstance(section, dict):
        return None
    skill = _number(section.get("skill"))
    if skill is not None:
        return skill
    mse, naive = _number(section.get("mse")), _number(section.get("seasonal_naive_mse"))
    if mse is None or naive is None or not math.isfinite(mse) or not naive > 0:
        return None
    return 1.0 - mse / naive


def _format(skill: float) -> str:
    return f"{skill:.2f}" if not math.isfinite(skill) or abs(skill) >= 0.005 or skill == 0 else f"{skill:.1e}"


def low_skill_note(payload: dict[str, Any]) -> str | None:
    """One line for a model whose validation skill vs seasonal naive is <= 0; None otherwise."""
    skill = validation_skill(payload)
    if skill is None or skill > 0:
        return None
    return (f"on its validation split this model's MSE is not better than repeating the last season "
            f"(skill {_format(skill)} vs seasonal naive); check the baselines before relying on it")

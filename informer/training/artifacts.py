"""What a run leaves on disk: checkpoint payloads (best.pt, last.pt with resume state) and metrics.json."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

import informer
from informer.checkpoint import default_file_mode, load_checkpoint
from informer.config import ModelConfig
from informer.errors import CheckpointError, UserError
from informer.training.evaluate import unwrap
from informer.training.state import LoopState


def versions() -> dict[str, Any]:
    # str(): torch.__version__ is a str subclass that the weights-only loader refuses
    return {"torch": str(torch.__version__), "informer": str(informer.__version__),
            "threads": torch.get_num_threads()}


def model_payload(model: nn.Module, model_cfg: ModelConfig, config: dict[str, Any], data: dict[str, Any],
                  **extra: Any) -> dict[str, Any]:
    """The part shared by best.pt and last.pt: enough to rebuild the model and forecast."""
    state = {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}
    return {"model_config": model_cfg.to_dict(), "model_state": state, "config": config, "data": data,
            "versions": versions(), **extra}


def training_section(optimizer: torch.optim.Optimizer, grad_scaler: torch.amp.GradScaler | None,
                     state: LoopState, lr: float, rng_per_rank: list[dict[str, Any]],
                     schedule: dict[str, Any] | None = None,
                     data_order: dict[str, Any] | None = None) -> dict[str, Any]:
    """last.pt's ``training`` entry: everything needed to continue the loop where it stopped.

    The learning rate is a pure function of the schedule's settings and the loop position, so
    ``schedule`` records the settings (and ``lr`` the current rate); the train order is a function of
    (seed, epoch, position) plus the loader generator's state, all in ``data_order``.
    """
    return {
        "optimizer": optimizer.state_dict(),
        "grad_scaler": grad_scaler.state_dict() if grad_scaler is not None else None,
        "loop": state.to_dict(),
        "lr": float(lr),
        "schedule": schedule or {},
        "data_order": data_order or {},
        "rng": rng_per_rank,  # one entry per process, in rank order
        "world_size": len(rng_per_rank),
    }


def locate_resume(path: str | Path) -> Path:
    """``train.resume`` may name a run directory, its checkpoints/ folder or a last.pt file."""
    path = Path(path)
    candidates = [path] if path.suffix == ".pt" else [path / "checkpoints" / "last.pt", path / "last.pt"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(
        f"train.resume={path}: no last.pt found (looked for {', '.join(str(c) for c in candidates)}); "
        "pass a run directory of an earlier training run or its checkpoints/last.pt"
    )


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory holding ``<run>/checkpoints/<file>.pt``, or None for a loose file."""
    checkpoint = checkpoint.resolve()
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def load_resume(path: Path, model_cfg: ModelConfig, data: dict[str, Any]) -> dict[str, Any]:
    """Load last.pt and check that it belongs to a run with the same model and data layout."""
    payload = load_checkpoint(path)
    training = payload.get("training")
    if not isinstance(training, dict):
        raise CheckpointError(
            f"{path} holds no training state (it is a best.pt or an exported model); resume from last.pt"
        )
    missing = [key for key in ("optimizer", "loop", "rng") if key not in training]
    if missing or not isinstance(training.get("loop"), dict):
        what = ", ".join(missing) or "loop"
        raise CheckpointError(f"{path} has an incomplete training section (missing {what}); it was not "
                              "written by informer training; resume from another last.pt")
    stored = dict(payload["model_config"])
    wanted = model_cfg.to_dict()
    changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    if changed:
        detail = ", ".join(f"model.{k}: {stored.get(k)!r} -> {wanted.get(k)!r}" for k in changed[:6])
        raise UserError(f"train.resume={path}: the model differs from the checkpoint's ({detail}); "
                        "resume with the same model settings or start a new run")
    for key in ("columns", "target", "features", "freq"):
        if payload.get("data", {}).get(key) != data.get(key):
            stored_value = payload.get("data", {}).get(key)
            raise UserError(f"train.resume={path}: the data's {key} differs from the checkpoint's "
                            f"({stored_value!r} vs {data.get(key)!r}); use the same dataset")
    return payload


def json_safe(obj: Any) -> Any:
    """NaN and infinities (not valid JSON) become None, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> Path:
    """Atomic JSON write; NaN/inf become null so the file is valid JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "w") as handle:
            json.dump(json_safe(obj), handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

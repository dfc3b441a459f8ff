"""Checkpoint files: atomic, finite writes and safe, validated reads.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts) so that
``torch.load(weights_only=True)`` accepts it; it never needs the unsafe unpickler. Layout::

    format            "informer-checkpoint"
    format_version    FORMAT_VERSION
    model_config      ModelConfig.to_dict()
    model_state       the model's state_dict (no DDP / compile prefixes)
    config            the resolved run config as a plain dict
    data              columns, target, features, freq, date_column, scaler_mean, scaler_scale,
                      last_timestamp, source, embed
    versions          {"torch": ..., "informer": ..., "threads": ...}
    training          (last.pt only) optimizer, scheduler, scaler, RNG and loop state for resume
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from informer.errors import CheckpointError

FORMAT_NAME = "informer-checkpoint"
FORMAT_VERSION = 1
# weights_only unpickler fixes: CVE-2025-32434 (2.6) and CVE-2026-24747 (2.10)
MIN_SAFE_TORCH = (2, 10)
TMP_PREFIX = ".tmp-"


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def _non_finite_tensors(obj: Any, prefix: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
            found.append(prefix or "<tensor>")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            found += _non_finite_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            found += _non_finite_tensors(value, f"{prefix}[{i}]")
    return found


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``payload`` to ``path`` atomically; refuse payloads holding NaN/inf.

    The bytes go to a temporary file in the same directory, are flushed and fsynced, then
    ``os.replace`` puts them under the final name, so a crash at any point leaves either the old
    file or the new one, never a partial file under ``path``.
    """
    path = Path(path)
    bad = _non_finite_tensors(payload.get("model_state", payload))
    if bad:
        raise FloatingPointError(
            f"refusing to write checkpoint {path}: non-finite values in {', '.join(bad[:5])}"
        )
    payload = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **payload}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files left by a save that was killed; return what was removed."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for stale in directory.glob(f"{TMP_PREFIX}*"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
                removed.append(stale)
    return removed


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate an informer checkpoint, never executing pickled code.

    Raises CheckpointError with a one-line message naming the file and the problem.
    """
    path = Path(path)
    if _torch_version() < MIN_SAFE_TORCH:
        raise CheckpointError(
            f"refusing to load {path}: torch {torch.__version__} has known unpickler vulnerabilities "
            f"(CVE-2025-32434, CVE-2026-24747); upgrade to torch >= {'.'.join(map(str, MIN_SAFE_TORCH))}"
        )
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of a best.pt or last.pt")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; pass the .pt file inside checkpoints/")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc.strerror}") from None
    if not raw:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); it was probably cut off while copying")
    try:
        with warnings.catch_warnings():
            # A legacy (non-zip) pickle makes torch warn that weights_only=False "might" succeed; the
            # file is refused either way, and that advice must not reach the user.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            payload = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = _unpickler_reason(str(exc))
        raise CheckpointError(
            f"checkpoint {path} was refused by the safe loader (it holds objects other than tensors and "
            f"plain values, so it is not an informer checkpoint): {first}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, OSError,
            IndexError, TypeError, AttributeError, struct.error) as exc:  # garbage bytes: any of these
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated and cannot be loaded ({first[:200]}); "
            "use another copy or retrain"
        ) from None
    return validate_payload(payload, path)


def _unpickler_reason(message: str) -> str:
    """The safe unpickler's actual reason, without torch's advice to retry with weights_only=False."""
    if "WeightsUnpickler error:" in message:
        message = message.split("WeightsUnpickler error:", 1)[1]
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation",
                   "(1)", "(2)")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(boilerplate)]
    # drop torch's suggestion to allowlist the class: that is the unsafe direction
    return reasons[0].split(". Please use")[0][:200] if reasons else "unsupported content"


def validate_payload(payload: Any, path: Path) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"{path} is not an informer checkpoint (it holds a {type(payload).__name__}, not a dict)"
        )
    if payload.get("format") != FORMAT_NAME:
        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            raise CheckpointError(
                f"{path} is a bare state_dict, not an informer checkpoint: it lacks the model config, "
                "scaler and column names needed to forecast; use the best.pt or last.pt of a training run"
            )
        raise CheckpointError(f"{path} is not an informer checkpoint (no '{FORMAT_NAME}' format marker)")
    version = payload.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"{path} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer informer (checkpoint format {version}, this version reads "
            f"up to {FORMAT_VERSION}); upgrade informer to load it"
        )
    for key in ("model_config", "model_state"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{path} is incomplete: missing '{key}'")
    return payload


def build_model_from_checkpoint(payload: dict[str, Any], path: str | os.PathLike[str] = "<checkpoint>",
                                device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the network from the stored config and load its weights strictly."""
    from informer.config import ModelConfig
    from informer.model import build_model

    try:
        cfg = ModelConfig.from_dict(dict(payload["model_config"]))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has an invalid model config: {exc}") from None
    model = build_model(cfg)
    try:
        model.load_state_dict(payload["model_state"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        raise CheckpointError(
            f"{path}: the stored weights do not match the stored model arguments ({detail})"
        ) from None
    return model.to(device).eval()

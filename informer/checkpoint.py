"""Checkpoint files: atomic, finite writes and safe, validated reads.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts) so that
``torch.load(weights_only=True)`` accepts it; it never needs the unsafe unpickler. Layout::

    format            "informer-checkpoint"
    format_version    FORMAT_VERSION
    model_config      ModelConfig.to_dict() (n_known_future: the known-future columns the model reads after
                      the time features in x_mark; older checkpoints lack it, meaning 0)
    model_state       the model's state_dict (no DDP / compile prefixes)
    config            the resolved run config as a plain dict
    data              columns, target, features, freq, date_column, scaler_mean, scaler_scale,
                      last_timestamp, first_timestamp, source, embed, seasonal_period, mase_scale
                      (per column, original units: MASE's denominator, the training split's in-sample
                      seasonal-naive MAE; older checkpoints lack it), and the covariate roles
                      (informer.data.roles): targets, past_covariates, known_future (column names; the
                      model columns are past_covariates + targets) and covariate_mean, covariate_scale
                      (the known-future columns' training-split scaler, [] without them); older
                      checkpoints lack these five keys, which means no covariates
    versions          {"torch": ..., "informer": ..., "threads": ...}
    validation        {"mse": float, "seasonal_naive_mse": float, "skill": float}: the validation split
                      (scaled data), skill = 1 - mse / seasonal_naive_mse; optional (older checkpoints
                      lack it). best.pt: the epoch that produced its weights; last.pt: the latest
                      finished epoch (absent before the first epoch ends)
    calibration       optional (best.pt after training; any checkpoint after `scripts/evaluate.py ...
                      calibrate=true`; older checkpoints lack it): the conformal prediction intervals,
                      fitted on the validation split, read by informer.intervals.predict_intervals:
                      {"version": 1, "split": "val", "n": <validation windows>,
                       "quantiles": the model's quantile levels, or None for a point model,
                       "levels": [0.8, 0.95],
                       "per_level": {"0.8": {"method": "normalized" | "split" | "cqr",
                                             "quantile_pair": None | [0.1, 0.9],
                                             "margin": [pred_len][c_out] floats, scaled units}, ...},
                       "baselines": {"naive_seasonal": {"0.8": margin [pred_len][c_out], ...},
                                     "naive_last": {...}}}  (optional: absent before it existed)
                      normalized (a point model's default, forecast.interval_method): point -+ margin x s,
                      s = the look-back window's population std per forecast variable in scaled units,
                      at least SCALE_FLOOR (informer.intervals.window_scale), so the margin is a multiple
                      of s, not a value;
                      split: [point - margin, point + margin]; cqr: [q_lo - margin, q_hi + margin] (the
                      margin may be negative); inf where n is too small for the level; baselines: the naive
                      forecasts' split-conformal margins (informer.intervals.baseline_intervals).
                      Checkpoints calibrated before "normalized" existed hold "split" entries and forecast
                      the intervals they always did

Model output: ``[B, pred_len, c_out]``, or ``[B, pred_len, c_out, Q]`` when ``model_config["quantiles"]``
lists Q levels (a point model's weights keep the keys ``projection.weight`` / ``projection.bias``).
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import struct
import tempfile
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
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's (zip) format starts with a local file header
_PICKLE_MAGIC = b"\x80"  # pickle protocol >= 2: torch's legacy format, or a bare pickle (both refused)


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def non_finite_entries(obj: Any) -> list[str]:
    """Dotted names of the floating-point tensors in ``obj`` (nested dicts/lists) holding NaN or inf."""
    return _non_finite_tensors(obj)


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
    # the whole payload: model weights, and for last.pt the optimizer moments a resume would reuse
    bad = _non_finite_tensors(payload)
    if bad:
        raise FloatingPointError(
            f"refusing to write checkpoint {path}: non-finite values in {', '.join(bad[:5])}"
        )
    payload = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **payload}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())  # mkstemp's 0600 would hide the file from the user's group
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


def model_payload(model: torch.nn.Module, model_cfg: Any, config: dict[str, Any], data: dict[str, Any],
                  **extra: Any) -> dict[str, Any]:
    """The part of the layout above shared by best.pt and last.pt: enough to rebuild and forecast.

    ``model`` is the plain module (no DDP / compile wrapper), ``model_cfg`` its ModelConfig."""
    import informer

    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    # str(): torch.__version__ is a str subclass that the weights-only loader refuses
    versions = {"torch": str(torch.__version__), "informer": str(informer.__version__),
                "threads": torch.get_num_threads()}
    return {"model_config": model_cfg.to_dict(), "model_state": state, "config": config, "data": data,
            "versions": versions, **extra}


def default_file_mode() -> int:
    """The permissions ``open()`` would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


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
    if raw.startswith(_PICKLE_MAGIC):
        # a bare pickle or torch's pre-1.6 format: informer has only ever saved zip archives
        raise CheckpointError(
            f"checkpoint {path} was refused by the safe loader: it is a bare pickle (or torch's legacy "
            "pre-1.6 format), not the zip archive that torch.save writes for informer checkpoints; "
            "nothing in it was unpickled. Pass a best.pt or last.pt from training"
        )
    if raw.startswith(_ZIP_MAGIC):
        _check_archive(raw, path)
    else:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated, or not a checkpoint at all: it is not a file "
            f"written by torch.save (it starts with {raw[:8]!r}); pass a best.pt or last.pt from training"
        )
    try:
        payload = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = _unpickler_reason(str(exc))
        raise CheckpointError(
            f"checkpoint {path} was refused by the safe loader (it holds objects other than tensors and "
            f"plain values, so it is not an informer checkpoint): {first}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, OSError,
            IndexError, TypeError, AttributeError, struct.error) as exc:  # garbage bytes: any of these
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated and cannot be loaded ({_one_line(exc)}); "
            "use another copy or retrain"
        ) from None
    return validate_payload(payload, path)


def _check_archive(raw: bytes, path: Path) -> None:
    """Verify the zip container's CRC32 of every record before unpickling anything.

    torch.load does not check them, so a flipped bit in the tensor data would otherwise load as a
    silently different weight.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt: its archive cannot be read ({_one_line(exc)}); "
            "it was probably cut off while copying; use another copy or retrain"
        ) from None
    if damaged is not None:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: the checksum of its record {damaged!r} does not match "
            "(the bytes changed after it was written); use another copy or retrain"
        )


def _one_line(exc: BaseException | str, limit: int = 200) -> str:
    """A message on one line: the first non-empty line of ``exc``, shortened."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else (type(exc).__name__ if isinstance(exc, BaseException) else "")
    return first[:limit]


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
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path} has an invalid model config: {_one_line(exc)}") from None
    model = build_model(cfg)
    try:
        model.load_state_dict(payload["model_state"], strict=True)
    except RuntimeError as exc:
        problem = describe_state_dict_error(exc)
        raise CheckpointError(
            f"{path}: the stored weights do not match the stored model arguments ({problem}); "
            "the file was altered or assembled from different runs"
        ) from None
    return model.to(device).eval()


def describe_state_dict_error(exc: RuntimeError) -> str:
    """The first problem load_state_dict reported, and how many more, on one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    problems = [line for line in lines if not line.startswith("Error(s) in loading state_dict")] or lines
    first = (problems[0] if problems else "unknown mismatch").rstrip(".")
    first = first if len(first) <= 200 else first[:197] + "..."
    return first + (f"; and {len(problems) - 1} more" if len(problems) > 1 else "")

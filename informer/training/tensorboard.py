"""TensorBoard output of a run: scalars, forecast figures and one hparams entry, all under ``<run>/tb``.

Only the main process creates a writer; elsewhere every method is a no-op, so the loop calls them
unconditionally.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams


def flatten(tree: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"model": {"d_model": 512}}`` -> ``{"model.d_model": 512}``; leaves made TensorBoard-friendly."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name, sep))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        elif value is None:
            flat[name] = "null"
        else:  # lists and anything else: a readable string
            flat[name] = str(value)
    return flat


class RunWriter:
    """Thin wrapper over SummaryWriter that is inert on non-main processes."""

    def __init__(self, log_dir: Path | None, purge_step: int | None = None) -> None:
        # purge_step: when resuming, drop events a killed run wrote after its last checkpoint
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step) if log_dir is not None else None

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None and math.isfinite(value):
            self.writer.add_scalar(tag, value, step)

    def scalars(self, prefix: str, values: Mapping[str, Any], step: int) -> None:
        """Every numeric leaf of ``values`` as ``prefix/key/...``."""
        for key, value in flatten(values, prefix, sep="/").items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.scalar(key, float(value), step)

    def figure(self, tag: str, figure: Figure, step: int) -> None:
        if self.writer is not None:
            self.writer.add_figure(tag, figure, step, close=True)

    def hparams(self, config: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """One hparams entry in this run's own event file (SummaryWriter.add_hparams would create a
        timestamped sub-run instead); the metrics are also written as scalars so the HParams dashboard
        can show them."""
        if self.writer is None:
            return
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        experiment, session_start, session_end = hparams(flatten(config), finite)
        for summary in (experiment, session_start, session_end):
            self.writer.file_writer.add_summary(summary)
        for key, value in finite.items():
            self.writer.add_scalar(key, value, 0)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

"""Sweep summaries: one table per Hydra multirun, written at the sweep root as summary.csv and summary.md.

``SweepSummaryCallback`` is registered under ``hydra.callbacks`` in configs/train.yaml, so every
``python scripts/train.py -m ...`` (grid, Optuna or any launcher) ends with one row per job: the job's
overrides, its summary numbers (:func:`informer.training.registry.run_summary`: best validation loss, test
MSE/MAE, skill against seasonal naive, MASE, WAPE, sMAPE, the weighted quantile loss and CRPS skill, and
each interval level's test coverage and width, when its metrics.json has them) and its directory. Jobs
that differ only in ``train.seed`` are also summarised together, as mean ± std over the seeds
(:mod:`informer.training.seed_summary`): summary_by_setting.csv, and a section of summary.md.

The table is rebuilt from what the jobs left on disk, never from memory alone: a launcher such as
submitit runs the jobs in other processes (or on other machines), where ``on_job_end`` fires far from
the process that later calls ``on_multirun_end``. Each job therefore drops a small ``sweep_job.json``
(status, return value, error) next to its ``.hydra/overrides.yaml`` and ``metrics.json``, and the summary
is a scan of the sweep directory. It is refreshed after every job too, so an interrupted or partly failed
sweep still leaves a table of the jobs that finished.

Rebuild it by hand (after copying a sweep back from a cluster, say):
``python -m informer.training.sweep multirun/ETTh1/2026-01-01_12-00-00``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from informer.training import seed_summary
from informer.training.registry import RUN_SUMMARY, dig, run_summary

log = logging.getLogger(__name__)

JOB_RECORD = "sweep_job.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
SUMMARY_BY_SETTING_CSV = "summary_by_setting.csv"
METRIC_COLUMNS = tuple(RUN_SUMMARY)  # always present; per-level interval columns follow when jobs have them


@dataclass
class JobRow:
    """One job of a sweep as found on disk."""

    directory: Path
    job: int | None = None
    overrides: list[str] = field(default_factory=list)
    status: str = "incomplete"  # completed | diverged | failed | incomplete (running, killed, never reported)
    metrics: dict[str, float] = field(default_factory=dict)  # RUN_SUMMARY's numbers that the job has
    error: str | None = None

    @property
    def best_val_loss(self) -> float | None:
        return self.metrics.get("best_val_loss")

    def override_values(self) -> dict[str, str]:
        """``{"model.d_model": "256", ...}``; Hydra's ``+``/``++``/``~`` prefixes are dropped from keys."""
        values = {}
        for item in self.overrides:
            key, _, value = item.partition("=")
            values[key.lstrip("+~")] = value
        return values


# ------------------------------------------------------------------------------------------ reading
def _number(value: Any) -> float | None:
    """``value`` as a finite float, else None."""
    return dig(value, ())


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or caught half-written by a job still running: treated as not there yet
    return payload if isinstance(payload, dict) else None


def _job_number(job_dir: Path) -> int | None:
    try:
        num = OmegaConf.select(OmegaConf.load(job_dir / ".hydra" / "hydra.yaml"), "hydra.job.num")
        return int(num)
    except Exception:  # no hydra.yaml (output_subdir moved) or an unreadable one: fall back on the name
        return int(job_dir.name) if job_dir.name.isdigit() else None


def read_job(job_dir: Path) -> JobRow:
    """A job's row from its ``.hydra/overrides.yaml``, ``metrics.json`` and ``sweep_job.json``."""
    row = JobRow(directory=job_dir.resolve(), job=_job_number(job_dir))
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
    except Exception:  # being written by a job starting right now: its row shows no overrides this time
        overrides = []
    row.overrides = [str(item) for item in overrides] if isinstance(overrides, list) else []
    record = _read_json(job_dir / JOB_RECORD) or {}
    metrics = _read_json(job_dir / "metrics.json")
    if record.get("status") in ("completed", "diverged", "failed"):
        row.status = record["status"]
        row.error = record.get("error")
    elif metrics is not None:
        row.status = "completed"
    row.metrics = run_summary(metrics or {})
    returned = _number(record.get("return_value"))  # what train() returned, when metrics.json is missing
    if row.best_val_loss is None and returned is not None:
        row.metrics["best_val_loss"] = returned
    return row


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Directories under ``sweep_dir`` that Hydra made for a job (they hold ``.hydra/overrides.yaml``)."""
    found = {p.parent.parent for p in Path(sweep_dir).rglob("overrides.yaml") if p.parent.name == ".hydra"}
    found.discard(Path(sweep_dir))
    return sorted(found)


def collect_sweep(sweep_dir: str | Path) -> list[JobRow]:
    """Every job of the sweep, ordered by job number (then by directory)."""
    rows = [read_job(d) for d in find_job_dirs(Path(sweep_dir))]
    return sorted(rows, key=lambda r: (r.job is None, r.job if r.job is not None else 0, str(r.directory)))


def metric_columns(rows: list[JobRow]) -> tuple[str, ...]:
    """:data:`METRIC_COLUMNS`, then the per-level numbers (``test_coverage_80``, ...) some job has, in
    the order first seen."""
    extra: dict[str, None] = {}
    for row in rows:
        extra.update(dict.fromkeys(k for k in row.metrics if k not in METRIC_COLUMNS))
    return (*METRIC_COLUMNS, *extra)


def varying_keys(rows: list[JobRow]) -> list[str]:
    """Override keys whose value differs between jobs (the swept parameters), in first-seen order; one
    value spelled two ways (``5e-4``, ``0.0005``) does not differ."""
    return seed_summary.differing_keys([r.override_values() for r in rows])


# ------------------------------------------------------------------------------------------ writing
def _atomic_write(path: Path, text: str) -> None:
    # jobs running in parallel (submitit, Optuna n_jobs) may refresh the summary at the same moment
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _short(value: str) -> str:
    """Optuna's sampled floats (0.000987385085015662) read better as 0.000987385 in the markdown table."""
    if "." not in value and "e" not in value.lower():
        return value  # integers and words as typed
    number = _number(value)
    return value if number is None else f"{number:.6g}"


def best_row(rows: list[JobRow]) -> JobRow | None:
    scored = [r for r in rows if r.best_val_loss is not None]
    return min(scored, key=lambda r: r.best_val_loss) if scored else None  # type: ignore[arg-type, return-value]


def render_csv(rows: list[JobRow]) -> str:
    keys, columns = varying_keys(rows), metric_columns(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["job", *keys, *columns, "status", "dir", "overrides", "error"])
    for r in rows:
        values = r.override_values()
        writer.writerow([
            "" if r.job is None else r.job, *(values.get(k, "") for k in keys),
            *("" if k not in r.metrics else repr(r.metrics[k]) for k in columns),
            r.status, str(r.directory), " ".join(r.overrides), r.error or "",
        ])
    return buffer.getvalue()


def render_markdown(rows: list[JobRow], sweep_dir: Path) -> str:
    keys, columns = varying_keys(rows), metric_columns(rows)
    varying = set(keys)
    first = rows[0].overrides if rows else []
    common = [o for o in first if o.partition("=")[0].lstrip("+~") not in varying]
    lines = [f"# Sweep summary: {sweep_dir}", "",
             f"{len(rows)} job(s); test_mse, test_mae and the skills (1 - MSE / seasonal-naive MSE) are on "
             "the scaled data, as the validation loss; test_mase, test_wape, test_smape and "
             "test_mse_original in the data's own units; test_wql (weighted quantile loss, original units), "
             "test_crps_skill (1 - CRPS / seasonal-naive CRPS) and each interval level's test coverage and "
             "mean width (original units) for runs with intervals.", ""]
    if common:
        lines += ["Common overrides: `" + " ".join(common) + "`", ""]
    header = ["job", *keys, *columns, "status", "dir"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        values = r.override_values()
        try:
            where = str(r.directory.relative_to(sweep_dir.resolve()))
        except ValueError:
            where = str(r.directory)
        status = r.status if not r.error else f"{r.status}: {r.error}"
        cells = ["" if r.job is None else str(r.job), *(_short(values.get(k, "")) for k in keys),
                 *(_fmt(r.metrics.get(k)) for k in columns), status, where]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    best = best_row(rows)
    if best is not None:
        lines += ["", f"Best: job {best.job} (best_val_loss {_fmt(best.best_val_loss)}) in {best.directory}"]
    settings = seed_summary.group_by_setting(rows)
    if seed_summary.repeated(settings):
        lines += ["", *seed_summary.render_markdown(settings, columns)]
    return "\n".join(lines) + "\n"


def write_summary(sweep_dir: str | Path) -> tuple[Path, Path, list[JobRow]]:
    """Scan the sweep and write summary.csv, summary.md and summary_by_setting.csv at its root; returns
    the first two paths and the rows."""
    root = Path(sweep_dir)
    rows = collect_sweep(root)
    csv_path, md_path = root / SUMMARY_CSV, root / SUMMARY_MD
    _atomic_write(csv_path, render_csv(rows))
    _atomic_write(root / SUMMARY_BY_SETTING_CSV,
                  seed_summary.render_csv(seed_summary.group_by_setting(rows), metric_columns(rows)))
    _atomic_write(md_path, render_markdown(rows, root))
    return csv_path, md_path, rows


# ------------------------------------------------------------------------------------------ callback
def _sweep_dir(config: DictConfig) -> Path:
    path = Path(str(config.hydra.sweep.dir))
    if not path.is_absolute():  # relative to where the command was started, as Hydra itself reads it
        path = Path(str(config.hydra.runtime.cwd)) / path
    return path


def _is_multirun(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN


def _job_record(job_return: Any) -> dict[str, Any]:
    status = getattr(job_return.status, "name", str(job_return.status)).lower()
    value = job_return._return_value  # the property re-raises a failed job's exception
    record: dict[str, Any] = {"status": status if status in ("completed", "failed") else "incomplete",
                              "overrides": list(job_return.overrides or [])}
    if isinstance(value, BaseException):
        record["error"] = f"{type(value).__name__}: {value}"
    elif record["status"] == "completed" and isinstance(value, float) and value == math.inf:
        # scripts/train.py scores a diverged multirun job +inf so that the sweep goes on
        record["status"] = "diverged"
        record["error"] = "training diverged (NaN or infinite loss); the reason is in the job's log"
    else:
        record["return_value"] = _number(value)
    return record


class SweepSummaryCallback(Callback):
    """Hydra callback: record each job's outcome in its directory and tabulate the sweep at its root."""

    def __init__(self) -> None:
        self._sweep_root: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep_root = _sweep_dir(config)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        # under torchrun every rank runs the callbacks; rank 0 owns the run directory
        if not _is_multirun(config) or os.environ.get("RANK", "0") != "0":
            return
        job_dir = Path(str(config.hydra.runtime.output_dir))
        try:
            _atomic_write(job_dir / JOB_RECORD, json.dumps(_job_record(job_return), indent=2) + "\n")
            write_summary(_sweep_dir(config))
        except Exception as exc:  # an exception here would fail a job that has finished its work
            log.warning("could not update the sweep summary: %s: %s", type(exc).__name__, exc)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = self._sweep_root or _sweep_dir(config)
        if not root.is_dir():
            return
        try:
            csv_path, md_path, rows = write_summary(root)
        except Exception as exc:  # the jobs' own outputs are complete; only the table is missing
            log.warning("could not write the sweep summary in %s: %s: %s", root, type(exc).__name__, exc)
            return
        done = sum(r.status == "completed" for r in rows)
        log.info("sweep summary (%d of %d job(s) completed): %s and %s", done, len(rows), csv_path, md_path)
        best = best_row(rows)
        if best is not None:
            swept = set(varying_keys(rows))
            log.info("best job %s: best_val_loss %s (%s)", best.job, _fmt(best.best_val_loss),
                     " ".join(f"{k}={v}" for k, v in best.override_values().items() if k in swept))
        settings = seed_summary.group_by_setting(rows)
        if seed_summary.repeated(settings):
            log.info("mean ± std over seeds (%s):", root / SUMMARY_BY_SETTING_CSV)
            keys = seed_summary.setting_keys(settings)
            for setting in settings:
                log.info("  %s", seed_summary.describe(setting, metric_columns(rows), keys))


def export_slurm_torch_env() -> bool:
    """Under the submitit SLURM launcher with several tasks per job, give each task torchrun's variables.

    submitit starts one process per SLURM task but sets none of RANK / WORLD_SIZE / LOCAL_RANK /
    MASTER_ADDR / MASTER_PORT, which informer.training.distributed reads; submitit's own helper derives
    them from SLURM's. Returns True when it exported them.
    """
    if "RANK" in os.environ or os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return False
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return False
    from submitit.helpers import TorchDistributedEnvironment

    # keep every GPU visible: init_distributed picks cuda:LOCAL_RANK itself
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return True


class SlurmTorchEnvCallback(Callback):
    """Hydra callback: before each job, :func:`export_slurm_torch_env` (a no-op outside multi-task SLURM)."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if export_slurm_torch_env():
            log.info("SLURM task %s of %s: torch.distributed variables exported", os.environ["RANK"],
                     os.environ["WORLD_SIZE"])


def main(argv: list[str] | None = None) -> int:
    """``python -m informer.training.sweep SWEEP_DIR``: rebuild the summary of an existing sweep."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m informer.training.sweep SWEEP_DIR  (a multirun/... directory)",
              file=sys.stderr)
        return 2
    csv_path, md_path, rows = write_summary(args[0])
    print(md_path.read_text(), end="")
    print(f"wrote {csv_path}, {md_path} and {csv_path.parent / SUMMARY_BY_SETTING_CSV} ({len(rows)} job(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Mean ± std over seeds: a sweep's jobs grouped by their overrides other than the seed.

``python scripts/train.py -m train.seed=1,2,3 model.d_model=256,512`` trains each setting once per seed.
The sweep summary then groups the jobs by every override except ``train.seed`` and the execution-only
keys of :data:`EXECUTION_KEYS` (how a job ran, not what it learned: one seed run with two threads and
another with one, or resumed, are the same setting), comparing values as Hydra reads them (``5e-4`` and
``0.0005``, or ``True`` and ``true``, are one setting), and gives, per setting,
the number n of completed jobs and the mean and sample standard deviation (n - 1 in the denominator) of
each summary number (:func:`informer.training.registry.run_summary`) over them: summary_by_setting.csv,
and a section of summary.md below the per-job table when some setting ran more than once. Jobs that
failed, diverged or never finished are counted in ``jobs`` but left out of the statistics.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

SEED_KEYS = ("train.seed",)
EXECUTION_KEYS = ("train.threads", "train.num_workers", "train.resume", "train.checkpoint_every",
                  "train.plot_windows", "train.eval_batch_size", "paths.data_dir")


class Job(Protocol):
    """What grouping needs from a sweep's row (informer.training.sweep.JobRow)."""

    job: int | None
    status: str
    metrics: dict[str, float]

    def override_values(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # sample standard deviation; None for a single value
    n: int


@dataclass
class Setting:
    """One group of jobs: the same overrides apart from the seed."""

    overrides: dict[str, str]  # every override except the seed, as the jobs share them
    jobs: list[Job] = field(default_factory=list)

    @property
    def completed(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "completed"]

    @property
    def seeds(self) -> list[str]:
        return [next((j.override_values()[k] for k in SEED_KEYS if k in j.override_values()), "default")
                for j in self.completed]

    def stat(self, metric: str) -> Stat | None:
        """Mean ± sample std of ``metric`` over the completed jobs that have it."""
        values = [j.metrics[metric] for j in self.completed if metric in j.metrics]
        if not values:
            return None
        return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None,
                    len(values))


_PARSER = OverridesParser.create()


def _parsed(key: str, text: str) -> Any:
    """An override's value as Hydra reads it, numbers as floats, so that spellings of one value compare
    equal; the text itself where Hydra's grammar rejects it."""
    try:
        value = _PARSER.parse_override(f"{key}={text}").value()
    except HydraException:
        return text
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def _comparable(key: str, text: str) -> str:
    return repr(_parsed(key, text))


def group_by_setting(rows: Sequence[Job]) -> list[Setting]:
    """Jobs grouped by their overrides other than the seed and the execution-only keys, in the order of
    each group's first job; a group shows its first job's spelling of each value."""
    groups: dict[tuple[tuple[str, str], ...], Setting] = {}
    for row in rows:
        overrides = {k: v for k, v in row.override_values().items()
                     if k not in SEED_KEYS and k not in EXECUTION_KEYS}
        key = tuple(sorted((k, _comparable(k, v)) for k, v in overrides.items()))
        groups.setdefault(key, Setting(overrides)).jobs.append(row)
    return list(groups.values())


def differing_keys(overrides: Sequence[Mapping[str, str]]) -> list[str]:
    """Override keys whose value, as Hydra reads it, differs between the mappings (a key one of them lacks
    differs), in first-seen order."""
    keys: dict[str, None] = {}
    for values in overrides:
        keys.update(dict.fromkeys(values))
    return [k for k in keys
            if len({None if k not in values else _comparable(k, values[k]) for values in overrides}) > 1]


def setting_keys(settings: Sequence[Setting]) -> list[str]:
    """Override keys whose value differs between settings, in first-seen order."""
    return differing_keys([s.overrides for s in settings])


def repeated(settings: Sequence[Setting]) -> bool:
    """Did some setting run more than once (seeds, or repeated trials)?"""
    return any(len(s.jobs) > 1 for s in settings)


def render_csv(settings: Sequence[Setting], metrics: Sequence[str]) -> str:
    keys = setting_keys(settings)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*keys, "jobs", "n", "seeds", *(f"{m}_{part}" for m in metrics for part in
                                                    ("mean", "std", "n")), "overrides"])
    for s in settings:
        cells: list[str] = []
        for metric in metrics:
            stat = s.stat(metric)
            cells += (["", "", "0"] if stat is None else
                      [repr(stat.mean), "" if stat.std is None else repr(stat.std), str(stat.n)])
        overrides = " ".join(f"{k}={v}" for k, v in s.overrides.items())
        writer.writerow([*(s.overrides.get(k, "") for k in keys), len(s.jobs), len(s.completed),
                         " ".join(s.seeds), *cells, overrides])
    return buffer.getvalue()


def format_stat(stat: Stat | None, n: int) -> str:
    """``0.412 ± 0.0031`` (``(n=k)`` added when fewer of the setting's jobs have the number)."""
    if stat is None:
        return ""
    text = f"{stat.mean:.6g}" if stat.std is None else f"{stat.mean:.6g} ± {stat.std:.2g}"
    return text if stat.n == n else f"{text} (n={stat.n})"


def render_markdown(settings: Sequence[Setting], metrics: Sequence[str]) -> list[str]:
    """The summary.md section: one row per setting."""
    keys = setting_keys(settings)
    lines = ["## Mean ± std over seeds", "",
             "Jobs grouped by their overrides other than `train.seed`; n completed jobs (of all the "
             "setting's jobs); mean ± sample standard deviation (n - 1).", ""]
    header = [*keys, "n", "seeds", *metrics]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in settings:
        n = len(s.completed)
        count = str(n) if n == len(s.jobs) else f"{n} of {len(s.jobs)}"
        cells = [*(s.overrides.get(k, "") for k in keys), count, ", ".join(s.seeds),
                 *(format_stat(s.stat(m), n) for m in metrics)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def describe(setting: Setting, metrics: Sequence[str], keys: Sequence[str]) -> str:
    """One log line: ``model.d_model=8: n=3  best_val_loss 0.41 ± 0.01  ...``."""
    name = " ".join(f"{k}={setting.overrides.get(k, '')}" for k in keys) or "all jobs"
    n = len(setting.completed)
    parts = [f"{m} {format_stat(setting.stat(m), n)}" for m in metrics if setting.stat(m) is not None]
    return f"{name}: n={n}  " + "  ".join(parts)

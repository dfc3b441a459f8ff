"""What every benchmark section shares: sizes per mode, machine facts, timing, data and subprocesses.

Three modes: ``full`` (the numbers for the README), ``quick`` (the same sizes, fewer repeats, the
long-input section skipped) and ``tiny`` (quick with a toy model, so the test suite can exercise every
code path in seconds; its numbers mean nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from informer.config import PAPER_ARCHITECTURE, DatasetConfig, ModelConfig, ModelSpec, derive_model_config

REPO_ROOT = Path(__file__).resolve().parents[1]  # benchmarks/ sits in the repository root
ATTENTION_KINDS = ("prob", "full", "favor")


@dataclass
class Scale:
    """Sizes and repeat counts of one benchmark mode."""

    mode: str
    model: dict[str, Any]  # ModelSpec overrides on top of the paper's ETTh1 defaults
    batch: int = 32
    warmup: int = 3
    steps: int = 20  # timed training steps per attention kind
    official_steps: int = 20  # timed steps of the official code's training step (after its 3 warm-up steps)
    limit_reps: int = 20  # timed passes of the GEMM/conv replay, one after each timed step
    attn_batch: int = 8
    attn_d_model: int = 512
    attn_heads: int = 8
    attn_lengths: tuple[int, ...] = (96, 192, 384, 768, 1536, 3072, 6144)
    attn_reps: int = 3  # timed steps per point (after the untimed memory step)
    attn_budget_s: float = 12.0  # per point: timed steps stop once they have taken this long
    attn_max_point_s: float = 90.0  # a point whose predicted cost exceeds this is skipped
    # fresh processes per point, the fastest kept: on a shared VM the large, memory-hungry points are
    # the ones other tenants (or the kernel's reclaim after the previous point) slow down
    attn_processes: int = 2
    long_lengths: tuple[int, ...] = (1440, 2880)
    long_pred_len: int = 720
    long_batch: int = 4
    long_reps: int = 1
    eval_batches: tuple[int, ...] = (32, 64)
    throughput_windows: int | None = 320  # windows timed per throughput point (None: whole split)
    forecast_reps: int = 3  # subprocess runs of scripts/forecast.py
    forecast_inproc_reps: int = 20
    backtest_origins: int = 8760  # rolling-origin backtest: hourly origins timed (8760: a year)
    epoch_train_batches: int | None = 30  # timed optimizer steps; the epoch is extrapolated from them
    epoch_eval_windows: int | None = 960  # val/test windows timed per evaluation (None: all)
    skip: tuple[str, ...] = ()

    def model_config(self, attn: str, **overrides: Any) -> ModelConfig:
        """The paper's architecture (what the official step times) at this scale."""
        spec = ModelSpec(**{**PAPER_ARCHITECTURE, **self.model, "attn": attn, **overrides})
        return derive_model_config(spec, "M", 7, "h")


def make_scale(quick: bool, tiny: bool) -> Scale:
    if tiny:
        return Scale(mode="tiny", model={"d_model": 32, "n_heads": 4, "d_ff": 64}, batch=4, warmup=1,
                     steps=2, limit_reps=2, official_steps=1, attn_reps=2, attn_batch=2, attn_d_model=32,
                     attn_heads=4, attn_lengths=(48, 96), attn_budget_s=2.0, attn_max_point_s=10.0,
                     attn_processes=1, long_lengths=(192,), long_pred_len=24, long_batch=2, long_reps=1,
                     eval_batches=(16,), throughput_windows=32, forecast_reps=1, forecast_inproc_reps=2,
                     backtest_origins=48,
                     epoch_train_batches=2, epoch_eval_windows=32, skip=("long_input",))
    if quick:
        return Scale(mode="quick", model={}, warmup=1, steps=3, limit_reps=3, official_steps=3,
                     attn_lengths=(96, 384), attn_reps=2, attn_budget_s=5.0, attn_processes=1,
                     eval_batches=(64,), throughput_windows=128, forecast_reps=1, forecast_inproc_reps=3,
                     backtest_origins=720,
                     epoch_train_batches=3, epoch_eval_windows=128, skip=("long_input",))
    return Scale(mode="full", model={})


# ---------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                wanted = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
                return [f for f in line.split(":", 1)[1].split() if f in wanted]
    except OSError:
        pass
    return []


def machine_info(threads: int) -> dict[str, Any]:
    return {
        "cpu": cpu_model(), "cpu_flags": cpu_flags(), "logical_cores": os.cpu_count(),
        "threads": threads, "torch": str(torch.__version__), "python": platform.python_version(),
        "platform": platform.platform(), "load_average_at_start": list(os.getloadavg()),
    }


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------- timing
def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def summary(seconds: list[float]) -> dict[str, float | int]:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "n": len(seconds)}


def _status_mib(field_name: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def current_rss_mib() -> float | None:
    return _status_mib("VmRSS")


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM, else ru_maxrss, which is KiB on Linux)."""
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_tensor_mib(step: Callable[[], Any]) -> float | None:
    """Peak bytes of live torch tensor storage during ``step()`` (MiB, above what was live before).

    CPU torch keeps no allocator statistics, so the profiler records every allocation and free the
    step makes (kernel workspaces included) and the running sum gives the peak. Unlike RSS this is
    blind to malloc's caching and fragmentation, so it compares methods at short lengths where a few
    MiB of heap noise would otherwise decide. None when the profiler's event tree is unavailable.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    try:
        roots = prof.profiler.kineto_results.experimental_event_tree()
    except AttributeError:
        return None
    sizes: list[tuple[int, int]] = []
    pending = list(roots)
    while pending:
        event = pending.pop()
        size = getattr(event.extra_fields, "alloc_size", None)
        if type(event.extra_fields).__name__ == "_ExtraFields_Allocation" and size is not None:
            sizes.append((event.start_time_ns, size))
        pending.extend(event.children)
    live = peak = 0
    for _, size in sorted(sizes):
        live += size
        peak = max(peak, live)
    return peak / 2**20


def log_log_slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x): the scaling exponent of y in x."""
    import math

    pairs = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y and y > 0]
    if len(pairs) < 2:
        return None
    mx = sum(p[0] for p in pairs) / len(pairs)
    my = sum(p[1] for p in pairs) / len(pairs)
    var = sum((p[0] - mx) ** 2 for p in pairs)
    return sum((p[0] - mx) * (p[1] - my) for p in pairs) / var if var else None


# ---------------------------------------------------------------------------------------- data
def data_dir() -> Path:
    return Path(os.environ.get("INFORMER_DATA_DIR", REPO_ROOT.parent / "shared" / "data" / "ETT-small"))


@dataclass
class Batches:
    """Training batches for the benchmark and where they came from."""

    items: list[tuple[torch.Tensor, ...]]
    source: str


def load_bundle(cfg: ModelConfig) -> Any | None:
    """The ETTh1 DataBundle at the config's lengths, or None when the CSV is not there."""
    if not (data_dir() / "ETTh1.csv").is_file():
        return None
    from informer.data import load_data_bundle

    return load_data_bundle(DatasetConfig(name="ETTh1"), data_dir(), cfg.seq_len, cfg.label_len, cfg.pred_len,
                            cfg.embed, download=False, progress=False)


def random_batch(cfg: ModelConfig, batch: int, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, ...]:
    """A batch shaped like a WindowDataset batch (x_enc, x_mark_enc, y, y_mark) with random values."""
    from informer.data.timefeatures import time_feature_dim

    marks = time_feature_dim(cfg.freq)
    dec_len = cfg.label_len + cfg.pred_len
    return (torch.randn(batch, cfg.seq_len, cfg.enc_in, generator=generator),
            torch.rand(batch, cfg.seq_len, marks, generator=generator) - 0.5,
            torch.randn(batch, dec_len, cfg.dec_in, generator=generator),
            torch.rand(batch, dec_len, marks, generator=generator) - 0.5)


def training_batches(cfg: ModelConfig, batch: int, count: int) -> Batches:
    """``count`` shuffled ETTh1 training batches, or random ones of the same shape without the data."""
    bundle = load_bundle(cfg)
    if bundle is None:
        gen = torch.Generator().manual_seed(0)
        return Batches([random_batch(cfg, batch, gen) for _ in range(count)],
                       "random tensors (ETTh1.csv not found)")
    loader = torch.utils.data.DataLoader(bundle.train, batch_size=batch, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    items = []
    for item in loader:
        items.append(tuple(t.contiguous() for t in item))
        if len(items) == count:
            break
    return Batches(items, f"ETTh1 train split ({bundle.source})")


# ---------------------------------------------------------------------------------------- subprocess
def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, from ``/proc`` (empty where there is none).

    torchrun starts each worker in a session of its own, so killing the launcher's process group
    leaves them running, holding the pipes a parent reads to end of file.
    """
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_json_command(cmd: list[str], threads: int, timeout_s: float) -> dict[str, Any]:
    """Run ``cmd`` (a Python measurement printing one JSON line) with ``threads`` OpenMP/MKL threads.

    Returns the last JSON line it printed, or ``{"error": ...}`` when it timed out, failed or printed
    none. Distributed variables of a calling job are removed: the child is its own run.
    """
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": path}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    # its own session, so that a timeout takes down the whole tree (torchrun's workers included)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO_ROOT, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stragglers = descendants(proc.pid)  # before the kill: orphans lose their parent link
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in stragglers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()  # every process that could hold its pipes open is gone
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        reason = "killed (out of memory?)" if proc.returncode in (-9, 137) else " | ".join(tail)[:400]
        return {"error": f"exit {proc.returncode}: {reason}"}
    return json.loads(lines[-1])


def run_worker(task: dict[str, Any], threads: int, timeout_s: float) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter (clean peak RSS); returns its JSON or an error entry."""
    cmd = [sys.executable, "-m", "benchmarks.worker", json.dumps({**task, "threads": threads})]
    return run_json_command(cmd, threads, timeout_s)

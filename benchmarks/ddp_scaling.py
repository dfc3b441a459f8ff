"""DistributedDataParallel scaling on CPU: training throughput of 1 process against 2, same global batch.

Three runs, each a ``python -m torch.distributed.run --standalone`` launch of this module's worker:

* ``1x1``: 1 process, 1 intra-op thread;
* ``1xT``: 1 process, ``threads_total`` threads (the baseline at equal total cores);
* ``2xH``: 2 processes, ``threads_total // 2`` threads each, gloo all-reduce of the gradients.

Each process takes its half of a fixed global batch (32 windows), as ``informer.training`` splits
``train.batch_size`` across ranks, so every run performs the same optimisation steps. Throughput is
global windows per second over a block of timed optimizer steps; the best of several blocks is reported
(with the median), since other work on a shared machine only ever slows a block down.

Efficiency, two ways:

* ``efficiency_equal_cores`` = throughput(2xH) / throughput(1xT): both runs use the same cores, so
  1.0 means DDP splits the work as well as intra-op threading does, above 1.0 that two processes use
  the cores better than threads (small GEMMs thread poorly), below 1.0 that the gradient all-reduce
  and the halved per-process batch cost more than they save. On a 2-core machine this is the only fair
  comparison: giving each of 2 processes as many threads as the 1-process run would oversubscribe.
* ``efficiency_classic`` = throughput(2xH) / (2 x throughput(1xH)) with H threads per process, the
  textbook strong-scaling efficiency (doubling the cores); reported when threads_total is 2 (H = 1).

Standalone: ``python -m benchmarks.ddp_scaling --quick`` prints the result as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from typing import Any

from benchmarks.common import run_json_command

GLOBAL_BATCH = 32
# quick: a toy model that still runs every layer; full: the paper's layer counts at half its width
QUICK_MODEL = {"d_model": 32, "n_heads": 4, "d_ff": 64, "e_layers": 2, "d_layers": 1}
FULL_MODEL = {"d_model": 256, "n_heads": 8, "d_ff": 1024, "e_layers": 2, "d_layers": 1}


# ------------------------------------------------------------------------------------------ worker
def _worker(task: dict[str, Any]) -> None:
    """One torchrun process: train ``steps`` timed steps on its share of the global batch."""
    import torch
    import torch.distributed as dist

    from informer.training.distributed import cleanup_distributed

    torch.set_num_threads(task["threads"])
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world > 1:
        # a stuck peer should end the run with an error, not after gloo's 30-minute default
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    # the DDP model lives and dies inside _timed_training, before the process group is destroyed
    result = _timed_training(task, world)
    if rank == 0:
        print(json.dumps(result), flush=True)
    cleanup_distributed()


def _timed_training(task: dict[str, Any], world: int) -> dict[str, Any]:
    import torch
    import torch.distributed as dist
    from torch import nn

    from informer.config import PAPER_ARCHITECTURE, ModelSpec, derive_model_config
    from informer.data import make_decoder_input
    from informer.model import build_model

    rank = int(os.environ.get("RANK", "0"))
    cfg = derive_model_config(ModelSpec(**{**PAPER_ARCHITECTURE, **task["model"]}), "M", 7, "h")
    local = task["global_batch"] // world
    torch.manual_seed(0)  # same initial weights on every process, as DDP requires
    model = build_model(cfg).train()
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(1 + rank)
    dec_len = cfg.label_len + cfg.pred_len
    # timeF marks for 'h' have 4 columns in [-0.5, 0.5]
    batch = (torch.randn(local, cfg.seq_len, cfg.enc_in, generator=gen),  # x_enc [b, seq_len, C]
             torch.rand(local, cfg.seq_len, 4, generator=gen) - 0.5,  # x_mark_enc [b, seq_len, 4]
             torch.randn(local, dec_len, cfg.dec_in, generator=gen),  # y [b, label+pred, C]
             torch.rand(local, dec_len, 4, generator=gen) - 0.5)  # y_mark [b, label+pred, 4]
    x_enc, x_mark, y, y_mark = batch
    x_dec = make_decoder_input(y, cfg.label_len, cfg.pred_len)  # [b, label+pred, C]
    target = y[:, -cfg.pred_len:, -cfg.c_out:]  # [b, pred_len, c_out]

    def step() -> None:
        loss = nn.functional.mse_loss(net(x_enc, x_mark, x_dec, y_mark), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP all-reduces the gradients here
        optimizer.step()

    for _ in range(task["warmup"]):
        step()
    # blocks of steps, each timed between barriers: on a shared machine the best block is the one least
    # disturbed by other work, and the spread between blocks shows how disturbed the others were
    block_rates, step_times = [], []
    for _ in range(task["blocks"]):
        if world > 1:
            dist.barrier()
        start = time.perf_counter()
        for _ in range(task["steps"]):
            t0 = time.perf_counter()
            step()
            step_times.append(time.perf_counter() - t0)
        if world > 1:
            dist.barrier()  # the slowest process decides the throughput
        block_rates.append(task["global_batch"] * task["steps"] / (time.perf_counter() - start))
    return {
        "processes": world, "threads_per_process": task["threads"], "local_batch": local,
        "blocks": task["blocks"], "steps_per_block": task["steps"],
        "windows_per_s": max(block_rates), "windows_per_s_median": statistics.median(block_rates),
        "windows_per_s_blocks": block_rates,
        "step_median_s": statistics.median(step_times), "step_min_s": min(step_times),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


# ------------------------------------------------------------------------------------------ driver
def _launch(processes: int, threads: int, task: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "benchmarks.ddp_scaling", "--worker", json.dumps({**task, "threads": threads})]
    failures = []
    for _ in range(2):  # one retry: a rendezvous on a busy machine now and then fails to form
        started = time.perf_counter()
        result = run_json_command(cmd, threads, timeout_s)
        if "error" not in result:
            result["launch_seconds"] = time.perf_counter() - started  # includes start-up, for the record
            break
        failures.append(result["error"])
    if failures:
        result["failed_attempts"] = failures
    return result


def _ratio(num: dict[str, Any], den: dict[str, Any], factor: float = 1.0) -> float | None:
    if "windows_per_s" not in num or "windows_per_s" not in den:
        return None
    return num["windows_per_s"] / (factor * den["windows_per_s"])


def ddp_scaling(quick: bool, threads_total: int = 2) -> dict[str, Any]:
    """Throughput (global windows/s) of 1 vs 2 CPU processes at a fixed global batch and total threads."""
    if threads_total < 2 or threads_total % 2:
        raise ValueError(f"threads_total must be an even number >= 2, got {threads_total}")
    half = threads_total // 2
    model = {**(QUICK_MODEL if quick else FULL_MODEL), "seq_len": 96, "label_len": 48, "pred_len": 24,
             "attn": "prob", "dropout": 0.05}
    task = {"model": model, "global_batch": GLOBAL_BATCH, "warmup": 3 if quick else 5,
            "blocks": 4 if quick else 5, "steps": 5 if quick else 10}
    timeout = 90.0 if quick else 900.0
    runs = {
        f"1x{half}": _launch(1, half, task, timeout),
        f"1x{threads_total}": _launch(1, threads_total, task, timeout),
        f"2x{half}": _launch(2, half, task, timeout),
    }
    single, single_all, double = runs[f"1x{half}"], runs[f"1x{threads_total}"], runs[f"2x{half}"]
    return {
        "mode": "quick" if quick else "full", "model": model, "global_batch": GLOBAL_BATCH,
        "threads_total": threads_total, "warmup_steps": task["warmup"], "blocks": task["blocks"],
        "steps_per_block": task["steps"], "throughput": "global windows/s of the best timed block",
        "data": "random tensors shaped like ETTh1 windows (7 columns, freq h)",
        "runs": runs,
        "efficiency_equal_cores": _ratio(double, single_all),
        "efficiency_classic": _ratio(double, single, 2.0),
        "threading_speedup": _ratio(single_all, single),
        "definitions": {
            "efficiency_equal_cores": f"throughput(2 processes x {half} thread) / throughput(1 process x "
                                      f"{threads_total} threads): same cores, ideal 1.0",
            "efficiency_classic": f"throughput(2 x {half}) / (2 x throughput(1 x {half})): doubling the "
                                  "cores, ideal 1.0",
            "threading_speedup": f"throughput(1 x {threads_total}) / throughput(1 x {half})",
        },
        "load_average_at_end": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="DDP scaling on CPU: 1 vs 2 processes at equal total threads")
    parser.add_argument("--quick", action="store_true", help="toy model, fewer steps (under a minute)")
    parser.add_argument("--threads", type=int, default=2, help="total threads shared by the processes")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one torchrun process
    args = parser.parse_args(argv)
    if args.worker:
        _worker(json.loads(args.worker))
        return 0
    print(json.dumps(ddp_scaling(args.quick, args.threads), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

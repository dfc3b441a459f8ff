"""Process-group plumbing for DistributedDataParallel runs started by ``torchrun``.

Processes learn their place from the launcher's environment (WORLD_SIZE, RANK, LOCAL_RANK). Side effects
(logs, TensorBoard, checkpoints, metrics, progress bars) happen only where :func:`is_main_process` is
true. Collectives on CPU tensors go through gloo, on CUDA tensors through NCCL, so one process group
serves CPU and GPU runs alike.
"""

from __future__ import annotations

import gc
import io
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_context() -> DistContext:
    """Where this process sits according to the launcher's environment (a single process without it)."""
    return DistContext(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def is_main_process() -> bool:
    """True on rank 0 (and in single-process runs): the one process allowed to write anything."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return env_context().rank == 0


def init_distributed() -> DistContext:
    """Join the process group when launched by torchrun; idempotent; a no-op for a single process."""
    ctx = env_context()
    if not ctx.enabled or dist.is_initialized():
        return ctx
    if torch.cuda.is_available() and dist.is_nccl_available():
        # one GPU per process; CPU tensors (strings, RNG states, CPU training) still use gloo
        torch.cuda.set_device(ctx.local_rank % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    return ctx


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        # A DistributedDataParallel reducer keeps the gloo process group alive. Freed after the group
        # is destroyed, it drops the last reference while holding the GIL, and the group's destructor
        # then waits for a worker thread that may need the GIL to finish a collective: a deadlock at
        # exit (seen with the final barrier's work). Unreachable models go first, while the registry
        # still holds the group, so the group dies on destroy_process_group's GIL-free path.
        gc.collect()
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (no-op for one process); returns it."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_process(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` is true on at least one process, so that all of them decide alike."""
    if not _active():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def broadcast_string(text: str | None, src: int = 0) -> str:
    """Rank ``src``'s string on every process (the others pass anything)."""
    if not _active():
        return text or ""
    payload = torch.frombuffer(bytearray((text or "").encode()), dtype=torch.uint8) if text else \
        torch.zeros(0, dtype=torch.uint8)
    length = torch.tensor([payload.numel()], dtype=torch.int64)
    dist.broadcast(length, src=src)
    buffer = payload if dist.get_rank() == src else torch.zeros(int(length.item()), dtype=torch.uint8)
    if int(length.item()):
        dist.broadcast(buffer, src=src)
    return bytes(buffer.tolist()).decode()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (tensors and plain values only), in rank order.

    Serialised with torch.save and read back with the weights-only loader, so nothing but tensors and
    plain containers can travel; used for per-rank RNG states in checkpoints.
    """
    if not _active():
        return [obj]
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    size = torch.tensor([data.numel()], dtype=torch.int64)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[: data.numel()] = data
    gathered = [torch.zeros(longest, dtype=torch.uint8) for _ in sizes]
    dist.all_gather(gathered, padded)
    return [
        torch.load(io.BytesIO(bytes(chunk[: int(n.item())].tolist())), map_location="cpu", weights_only=True)
        for chunk, n in zip(gathered, sizes, strict=True)
    ]


def shard_range(n_items: int, rank: int, world_size: int) -> range:
    """A contiguous, padding-free share of ``range(n_items)``; the shares of all ranks partition it."""
    start = n_items * rank // world_size
    stop = n_items * (rank + 1) // world_size
    return range(start, stop)


def agree_on_start_time() -> datetime:
    """Rank 0's clock, seen by every process (so all of them name the same run directory)."""
    now = datetime.now()
    if not _active():
        return now
    stamp = torch.tensor([now.timestamp()], dtype=torch.float64)
    dist.broadcast(stamp, src=0)
    return datetime.fromtimestamp(float(stamp.item()))


_NOW = re.compile(r"\$\{now:([^}]*)\}")


def hydra_overrides_for_rank(argv: list[str], config_file: Path) -> list[str]:
    """Extra Hydra overrides so that all torchrun processes share rank 0's single run directory.

    Each process runs its own Hydra, and ``${now:...}`` in ``hydra.run.dir`` would be read from each
    process's clock; so the processes join the process group first, take rank 0's start time and pin
    ``hydra.run.dir`` to it (unless the user set it). Ranks other than 0 write no ``.hydra/`` folder and
    no log file there. Returns [] for a single process.
    """
    ctx = env_context()
    if not ctx.enabled:
        return []
    init_distributed()
    start = agree_on_start_time()
    extra: list[str] = []
    if not any(arg.startswith(("hydra.run.dir=", "++hydra.run.dir=")) for arg in argv):
        from omegaconf import OmegaConf

        raw = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
        template = str(raw["hydra"]["run"]["dir"])  # type: ignore[index]
        pinned = _NOW.sub(lambda match: start.strftime(match.group(1)), template)
        extra.append(f"hydra.run.dir='{pinned}'")
    if not ctx.is_main:
        extra += ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    return extra

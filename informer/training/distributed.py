"""Processes, devices and what keeps DistributedDataParallel replicas identical.

Processes learn their place from ``torchrun``'s environment (WORLD_SIZE, RANK, LOCAL_RANK). Side effects
(logs, TensorBoard, checkpoints, metrics, progress bars) happen only where :func:`is_main_process` is
true. Collectives on CPU tensors go through gloo, on CUDA tensors through NCCL, so one process group
serves CPU and GPU runs alike.

DDP averages gradients, so parameters stay identical; buffers are another matter. BatchNorm's running
statistics (the distilling layer) are updated by each process's own batches, and a FAVOR+ feature
redraw in the last step of an epoch happens after DDP's last broadcast of rank 0's buffers. Hence
:func:`sync_batch_norm` (NCCL: statistics over the global batch) and :func:`broadcast_buffers` after every
training epoch, before validation and checkpoints read them (a last.pt written mid-epoch holds rank 0's
buffers, which DDP broadcasts before every forward anyway). :func:`check_replicas` verifies the result
after training; a mismatch is logged as an error naming the tensors that differ and the run goes on:
the final evaluation loads best.pt (written by rank 0) on every process, so its metrics stay
consistent.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from informer.errors import UserError

log = logging.getLogger(__name__)


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


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor [n_rank, ...]`` concatenated along dim 0 in rank order (the counts may
    differ by process; the other dims may not); on the tensor's own device, as the backend needs."""
    if not _active():
        return tensor
    count = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    longest = int(max(int(c.item()) for c in counts))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))  # all_gather needs equal shapes
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return torch.cat([part[: int(c.item())] for part, c in zip(gathered, counts, strict=True)])


def shard_range(n_items: int, rank: int, world_size: int) -> range:
    """A contiguous, padding-free share of ``range(n_items)``; the shares of all ranks partition it."""
    start = n_items * rank // world_size
    stop = n_items * (rank + 1) // world_size
    return range(start, stop)


# ------------------------------------------------------------------------------------------ devices
def resolve_device(choice: str, local_rank: int = 0, field: str = "train.device") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` (the value of ``field``) as this process's device."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"{field}={choice} but no CUDA device is available; use {field}=auto or cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def amp_dtype(enabled: bool, dtype_name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision. Never autocast on the CPU."""
    if device.type != "cuda" or not enabled:
        return None
    if dtype_name == "bf16":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
        log.warning("train.amp_dtype=bf16 is not supported by this GPU; using fp16 with loss scaling")
    return torch.float16


def autocast_factory(device: torch.device, dtype: torch.dtype | None) -> Callable[[], Any]:
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel and torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


# ------------------------------------------------------------------------------------------ replicas
def sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers as SyncBatchNorm (same state-dict keys) where the backend supports it: NCCL."""
    if _active() and device.type == "cuda" and "nccl" in str(dist.get_backend()):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def broadcast_buffers(model: nn.Module) -> None:
    """Every buffer of ``model`` as rank 0 holds it (BatchNorm statistics, FAVOR+ features)."""
    if _active():
        for buffer in unwrap(model).buffers():
            dist.broadcast(buffer, src=0)


def check_replicas(model: nn.Module) -> bool:
    """True when every process holds the same state dict; otherwise log the tensors that differ."""
    if not _active():
        return True
    state = unwrap(model).state_dict()
    digests = {name: hashlib.sha256(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
                                    .numpy().tobytes()).hexdigest()
               for name, tensor in state.items()}
    gathered = all_gather_objects(digests)
    differing = [name for name in digests if len({d.get(name) for d in gathered}) > 1]
    if differing:
        shown = ", ".join(differing[:8]) + (f" and {len(differing) - 8} more" if len(differing) > 8 else "")
        log.error("model replicas differ across the %d processes in %d tensor(s): %s. Checkpoints hold "
                  "rank 0's values and the final evaluation uses best.pt on every process.",
                  len(gathered), len(differing), shown)
        return False
    overall = hashlib.sha256("".join(digests[name] for name in sorted(digests)).encode()).hexdigest()
    log.info("parameters identical on all %d processes (sha256 %s)", len(gathered), overall[:16])
    return True

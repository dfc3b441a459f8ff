"""The machine limit of a training step: its own GEMMs and convolutions, replayed alone.

A TorchDispatchMode sees every aten call of one forward + backward (autograd's backward kernels
included) with the real shapes and strides. The matrix products and convolutions among them are
recorded and then replayed back to back on random tensors of the same layout, with nothing else in
between: no element-wise work, no allocator churn from activations, no Python. That time is a floor
no implementation of the same network can beat on this machine at this thread count (it could only
do fewer or smaller products). The fused attention kernels (SDPA) are recorded too and reported as a
second, looser floor.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

aten = torch.ops.aten
GEMM_OPS = {aten.mm.default: "mm", aten.addmm.default: "addmm", aten.addmm_.default: "addmm_",
            aten.bmm.default: "bmm", aten.baddbmm.default: "baddbmm"}
CONV_OPS = {aten.convolution.default: "convolution",
            aten.convolution_backward.default: "convolution_backward"}
ATTENTION_OPS = {
    aten._scaled_dot_product_flash_attention_for_cpu.default: "sdpa_flash_cpu",
    aten._scaled_dot_product_flash_attention_for_cpu_backward.default: "sdpa_flash_cpu_backward",
}


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype

    def materialize(self, generator: torch.Generator) -> torch.Tensor:
        """Random values laid out with the recorded strides (broadcast strides of 0 included)."""
        if any(s == 0 for s in self.shape):
            return torch.empty_strided(self.shape, self.stride, dtype=self.dtype)
        span = 1 + sum((n - 1) * st for n, st in zip(self.shape, self.stride, strict=True))
        if self.dtype.is_floating_point:
            base = torch.randn(span, generator=generator).to(self.dtype)
        else:
            base = torch.zeros(span, dtype=self.dtype)
        return base.as_strided(self.shape, self.stride)

    def __str__(self) -> str:
        return "x".join(map(str, self.shape))


@dataclass
class RecordedCall:
    op: Any  # an OpOverload
    kind: str  # "gemm" | "conv" | "attention"
    name: str
    args: Any  # args with tensors replaced by TensorSpec
    kwargs: Any

    def signature(self) -> str:
        shapes = [str(a) for a in self.args if isinstance(a, TensorSpec)]
        return f"{self.name}({', '.join(shapes)})"


def _spec(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return TensorSpec(tuple(x.shape), tuple(x.stride()), x.dtype)
    return x


class OpRecorder(TorchDispatchMode):
    """Records GEMM, convolution and fused-attention calls (with shapes and strides) as they run."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[RecordedCall] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        for table, kind in ((GEMM_OPS, "gemm"), (CONV_OPS, "conv"), (ATTENTION_OPS, "attention")):
            if func in table:
                self.calls.append(RecordedCall(func, kind, table[func], tree_map(_spec, args),
                                               tree_map(_spec, kwargs)))
                break
        return func(*args, **kwargs)


def record_step(step: Callable[[], Any]) -> list[RecordedCall]:
    recorder = OpRecorder()
    with recorder:
        step()
    return recorder.calls


class Replay:
    """The recorded calls with their inputs allocated once (each call its own inputs, as in the step)."""

    def __init__(self, calls: list[RecordedCall], seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)

        def make(x: Any) -> Any:
            return x.materialize(gen) if isinstance(x, TensorSpec) else x

        self.calls = calls
        self.prepared = [(c.op, tree_map(make, c.args), tree_map(make, c.kwargs)) for c in calls]

    def count(self, kinds: tuple[str, ...]) -> int:
        return sum(c.kind in kinds for c in self.calls)

    def time_once(self, kinds: tuple[str, ...] = ("gemm", "conv")) -> float:
        """Seconds to run the calls of these kinds back to back, in recorded order."""
        todo = [p for c, p in zip(self.calls, self.prepared, strict=True) if c.kind in kinds]
        start = time.perf_counter()
        for op, args, kwargs in todo:
            op(*args, **kwargs)
        return time.perf_counter() - start

    def per_call_seconds(self, reps: int = 3) -> list[float]:
        """Median seconds of each call alone (for the breakdown by op)."""
        out = []
        for op, args, kwargs in self.prepared:
            op(*args, **kwargs)
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                op(*args, **kwargs)
                times.append(time.perf_counter() - start)
            out.append(statistics.median(times))
        return out


def breakdown(calls: list[RecordedCall], seconds: list[float] | None = None,
              top: int = 8) -> list[dict[str, Any]]:
    """Calls grouped by op and shapes: count and (optionally) total seconds, the heaviest first."""
    counts: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for i, call in enumerate(calls):
        key = call.signature()
        counts[key] += 1
        if seconds is not None:
            totals[key] += seconds[i]
    order = sorted(counts, key=lambda k: (-totals[k], -counts[k]))[:top]
    return [{"call": k, "count": counts[k], **({"total_ms": totals[k] * 1e3} if seconds is not None else {})}
            for k in order]


def op_counts(calls: list[RecordedCall]) -> dict[str, int]:
    return dict(Counter(c.name for c in calls))

"""One measurement point in a fresh interpreter: ``python -m benchmarks.worker '<json task>'``.

CPU torch has no allocator statistics, so peak memory is read from the kernel: the peak resident set
(VmHWM) is reset to the current RSS through ``/proc/self/clear_refs`` just before the measured step
and read just after it (where the reset is refused: ``ru_maxrss`` before and after). A warm-up at a
small size first loads the libraries and thread pools, so the difference is the growth the step
itself causes: activations, gradients, workspace. Large blocks are mmapped by the allocator and handed back
on free, so the figure tracks what was live at the peak; small blocks kept by malloc can only make it
an over-estimate. Attention points also record the peak of live tensor storage during one more step,
from the profiler's allocation events (``peak_tensor_mib``), which malloc's caching cannot blur.
Prints one JSON line.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import Any

import torch

from benchmarks.common import (
    Scale,
    current_rss_mib,
    peak_rss_mib,
    peak_tensor_mib,
    reset_peak_rss,
    summary,
)
from informer.config import ModelConfig
from informer.model import AttentionCore, AttentionLayer, build_attention


class ProjectionsOnly(AttentionCore):
    """The 'projections' baseline: the attention core replaced by ``q + k + v`` (self-attention).

    An elementwise sum costs next to nothing, yet keeps all four projections in the graph, so their
    backward passes run exactly as in a real attention layer: what is left is the cost of the layer
    without its core.
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tau: torch.Tensor | None = None,
                delta: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        return q + k + v, None  # [B, L, H, E]


class ValuesOnly(AttentionCore):
    """The 'values_only' reference: the core replaced by the identity on V.

    Q and K then never reach the output, so autograd skips their projections' backward passes: a
    floor lower than any layer that uses its queries and keys, kept in the table for comparison.
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tau: torch.Tensor | None = None,
                delta: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        return v, None  # [B, L, H, E]


BASELINES = {"projections": ProjectionsOnly, "values_only": ValuesOnly}


def attention_layer(kind: str, d_model: int, n_heads: int) -> AttentionLayer:
    # attention dropout off: SDPA then runs its fused CPU kernel (memory linear in L), the strongest
    # baseline; with dropout on it falls back to the explicit L x L path
    cfg = ModelConfig(d_model=d_model, n_heads=n_heads, dropout=0.0)
    core = BASELINES[kind]() if kind in BASELINES else build_attention(kind, cfg, causal=False)
    return AttentionLayer(core, d_model, n_heads).train()


def _measure(step: Any, reps: int, budget_s: float, warmup: Any) -> dict[str, Any]:
    warmup()
    gc.collect()
    # With the peak mark reset, the growth is measured from the current RSS; without it, from the
    # lifetime peak so far (which can hide growth below an earlier, larger transient).
    reset = reset_peak_rss()
    current = current_rss_mib()
    before = current if reset and current is not None else peak_rss_mib()
    start = time.perf_counter()
    step()  # the memory step: nothing at this size has run before
    cold = time.perf_counter() - start
    after = peak_rss_mib()
    times: list[float] = []
    spent = 0.0
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        spent += times[-1]
        if spent > budget_s and len(times) >= 1:
            break
    return {"time": summary(times or [cold]), "cold_s": cold, "peak_growth_mib": max(0.0, after - before),
            "rss_before_mib": before, "peak_reset": reset}


def attention_point(task: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(0)
    b, d, h = task["batch"], task["d_model"], task["n_heads"]
    layer = attention_layer(task["kind"], d, h)
    x = torch.randn(b, task["length"], d, requires_grad=True)  # [B, L, d_model]
    small = torch.randn(b, 32, d, requires_grad=True)

    def fwd_bwd(inp: torch.Tensor) -> None:
        out, _ = layer(inp, inp, inp)  # [B, L, d_model]
        out.sum().backward()
        inp.grad = None
        layer.zero_grad(set_to_none=True)

    result = _measure(lambda: fwd_bwd(x), task["reps"], task["budget_s"], lambda: fwd_bwd(small))
    result["peak_tensor_mib"] = peak_tensor_mib(lambda: fwd_bwd(x))
    return result


def train_step_point(task: dict[str, Any]) -> dict[str, Any]:
    """A full-model training step at the task's lengths on random data (long-input section)."""
    from benchmarks.common import random_batch
    from benchmarks.train_step import StepRunner

    scale = Scale(mode="worker", model=task["model"])
    cfg = scale.model_config(task["attn"])
    gen = torch.Generator().manual_seed(0)
    runner = StepRunner(cfg, [random_batch(cfg, task["batch"], gen)])
    # warm-up on a short encoder input: loads kernels and allocates Adam's state before the baseline
    short_cfg = scale.model_config(task["attn"], **dict(task["model"], seq_len=96, label_len=48))
    short_batch = random_batch(short_cfg, task["batch"], gen)
    result = _measure(runner.step, task["reps"], task["budget_s"], lambda: runner.step(short_batch))
    result["parameters"] = sum(p.numel() for p in runner.model.parameters())
    return result


TASKS = {"attention": attention_point, "train_step": train_step_point}


def main(argv: list[str]) -> None:
    task = json.loads(argv[0])
    torch.set_num_threads(int(task.get("threads", 2)))
    result = TASKS[task["task"]](task)
    print(json.dumps({"task": task, **result}))


if __name__ == "__main__":
    main(sys.argv[1:])

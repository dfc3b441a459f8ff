"""Training step at the paper's ETTh1 default config, and its machine limit measured alongside.

For each attention kind: build the model (seed 0), Adam (lr 1e-4) and MSE as the training loop does,
warm up, count the model FLOPs of one forward + backward with FlopCounterMode, record that step's
GEMMs and convolutions (see :mod:`benchmarks.gemm_limit`), then alternate one timed
optimizer step with one timed replay of the recorded products, so that both see the same machine
load and their ratio stays meaningful on a shared machine.

The official code's training step at the same config (ProbSparse; see :mod:`benchmarks.official`) is
timed right after ours with ProbSparse: the pair that the official / ours ratio compares.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import ATTENTION_KINDS, Scale, summary, timed, training_batches
from benchmarks.gemm_limit import Replay, breakdown, op_counts, record_step
from benchmarks.official import OfficialStep, available
from informer.data import make_decoder_input
from informer.model import build_model


class StepRunner:
    """One model + optimizer + loss, stepping through a fixed list of batches."""

    def __init__(self, cfg: Any, batches: list[tuple[torch.Tensor, ...]], lr: float = 1e-4) -> None:
        torch.manual_seed(0)
        self.cfg = cfg
        self.model = build_model(cfg).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, fused=True)
        self.criterion = nn.MSELoss()
        self.batches = batches
        self.i = 0

    def _next(self) -> tuple[torch.Tensor, ...]:
        batch = self.batches[self.i % len(self.batches)]
        self.i += 1
        return batch

    def forward_backward(self, batch: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """``batch`` overrides the next stored batch (any encoder length; the decoder start token is
        whatever precedes the last ``pred_len`` rows of ``y``)."""
        x_enc, x_mark_enc, y, y_mark = batch if batch is not None else self._next()
        pred_len, c_out = self.cfg.pred_len, self.cfg.c_out
        x_dec = make_decoder_input(y, y.shape[1] - pred_len, pred_len)  # [B, label_len + pred_len, C]
        pred = self.model(x_enc, x_mark_enc, x_dec, y_mark)  # [B, pred_len, c_out]
        loss = self.criterion(pred, y[:, -pred_len:, -c_out:])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    def step(self, batch: tuple[torch.Tensor, ...] | None = None) -> float:
        loss = self.forward_backward(batch)
        self.optimizer.step()
        return float(loss.detach())


def _addmm_in_place_flops(self_shape: Any, a_shape: Any, b_shape: Any, *args: Any, **kwargs: Any) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def count_flops(fn: Any) -> int:
    # FlopCounterMode knows addmm but not its in-place form, which the limit's recorder replays as a GEMM:
    # count both the same way
    in_place = {torch.ops.aten.addmm_: _addmm_in_place_flops}
    with FlopCounterMode(display=False, custom_mapping=in_place) as counter:
        fn()
    return int(counter.get_total_flops())


def measure_kind(scale: Scale, attn: str, batches: list[tuple[torch.Tensor, ...]]) -> dict[str, Any]:
    cfg = scale.model_config(attn)
    runner = StepRunner(cfg, batches)
    for _ in range(scale.warmup):
        runner.step()
    flops = count_flops(runner.forward_backward)
    calls = record_step(runner.forward_backward)
    runner.optimizer.zero_grad(set_to_none=True)
    replay = Replay(calls)
    kinds = ("gemm", "conv")
    kinds_attn = ("gemm", "conv", "attention")
    replay.time_once(kinds_attn)  # first touch of the inputs
    has_attention = replay.count(kinds_attn) > replay.count(kinds)
    step_s: list[float] = []
    limit_s: list[float] = []
    limit_attn_s: list[float] = []
    for i in range(max(scale.steps, scale.limit_reps)):
        if i < scale.steps:
            step_s.append(timed(runner.step))
        if i < scale.limit_reps:
            limit_s.append(replay.time_once(kinds))
            limit_attn_s.append(replay.time_once(kinds_attn) if has_attention else limit_s[-1])
    per_call = replay.per_call_seconds(reps=1 if scale.mode != "full" else 3)
    del replay
    step_med, limit_med = statistics.median(step_s), statistics.median(limit_s)
    n_params = sum(p.numel() for p in runner.model.parameters())
    return {
        "attn": attn,
        "step": summary(step_s),
        "flops_per_step": flops,
        "gflops_per_s": flops / step_med / 1e9,
        "parameters": n_params,
        "limit": {
            "gemm_conv": summary(limit_s),
            "gemm_conv_attention": summary(limit_attn_s),
            "n_calls": sum(c.kind in kinds for c in calls),
            "n_attention_calls": sum(c.kind == "attention" for c in calls),
            "op_counts": op_counts(calls),
            "heaviest_calls": breakdown(calls, per_call),
            "limit_gflops_per_s": flops / limit_med / 1e9,
        },
        "step_vs_limit": step_med / limit_med,
        # minimum over minimum: each at its least disturbed, the better estimate on a busy machine
        "step_vs_limit_best": min(step_s) / min(limit_s),
        "step_vs_limit_with_attention": step_med / statistics.median(limit_attn_s),
    }


def run(scale: Scale, official: OfficialStep, log: Any = print) -> dict[str, Any]:
    cfg = scale.model_config("prob")
    data = training_batches(cfg, scale.batch, max(4, min(scale.steps + scale.warmup + 2, 32)))
    results: dict[str, Any] = {}
    official_result: dict[str, Any] = {}
    for attn in ATTENTION_KINDS:
        results[attn] = measure_kind(scale, attn, data.items)
        if attn == "prob":
            official_result = dict(official.measure(log))
            if available(official_result):
                official_result["vs_ours"] = official_result["median_s"] / results["prob"]["step"]["median_s"]
    return {
        "config": {**{k: getattr(cfg, k) for k in ("seq_len", "label_len", "pred_len", "d_model", "n_heads",
                                                   "e_layers", "d_layers", "d_ff", "factor", "dropout")},
                   "features": "M", "batch": scale.batch, "optimizer": "Adam(lr=1e-4)", "loss": "MSE",
                   "warmup_steps": scale.warmup, "timed_steps": scale.steps,
                   "limit_reps": scale.limit_reps},
        "batches": data.source,
        "method": ("median wall seconds of zero_grad + forward + MSE + backward + Adam.step; the limit "
                   "replays the step's own mm/addmm/bmm/baddbmm/convolution(+backward) calls back to back "
                   "on random tensors of the recorded shapes and strides, alternating with the steps; FLOPs "
                   "from FlopCounterMode over forward + backward (dense ops only: ProbSparse's sampled "
                   "scores, a sparse kernel, are not counted)"),
        "kinds": results,
        "official": official_result,
    }

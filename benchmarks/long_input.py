"""Long inputs end to end: a full-model training step at seq_len 1440 and 2880 (label_len = seq_len / 2,
pred_len 720) for each attention kind, time and peak memory, one fresh process per point.

Random batches (the shapes are what matters here). The batch is small (``Scale.long_batch``) so that
full attention, whose training path with dropout materialises ``[B, H, L, L]`` weights, fits the
machine's memory next to the other kinds.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import ATTENTION_KINDS, Scale, run_worker


def run(scale: Scale, threads: int, log: Any = print) -> dict[str, Any]:
    points: dict[str, dict[str, Any]] = {}
    for seq_len in scale.long_lengths:
        for attn in ATTENTION_KINDS:
            model = {**scale.model, "seq_len": seq_len, "label_len": seq_len // 2,
                     "pred_len": scale.long_pred_len}
            task = {"task": "train_step", "attn": attn, "model": model, "batch": scale.long_batch,
                    "reps": scale.long_reps, "budget_s": 60.0}
            result = run_worker(task, threads, timeout_s=600)
            result.pop("task", None)
            points.setdefault(str(seq_len), {})[attn] = result
            if "error" in result:
                log(f"  long input {attn:5s} seq_len={seq_len}  {result['error']}")
            else:
                log(f"  long input {attn:5s} seq_len={seq_len}  {result['time']['median_s']:7.2f} s/step  "
                    f"+{result['peak_growth_mib']:8.1f} MiB")
    return {
        "config": {"seq_lens": list(scale.long_lengths), "label_len": "seq_len / 2",
                   "pred_len": scale.long_pred_len, "batch": scale.long_batch, "dropout": 0.05,
                   "other": "paper ETTh1 defaults (d_model 512, 8 heads, 2+1 layers, d_ff 2048)"},
        "batches": "random tensors",
        "method": ("zero_grad + forward + MSE + backward + Adam.step in a fresh process per point; memory = "
                   "peak-RSS growth (VmHWM reset before) over the first step at full length, after a "
                   "warm-up step at seq_len 96 that also allocates Adam's state"),
        "points": points,
    }

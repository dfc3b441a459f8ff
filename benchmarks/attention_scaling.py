"""One attention layer, forward + backward, as the input grows: time and peak memory per length.

Each (kind, L) point runs in its own interpreter (see :mod:`benchmarks.worker`) so its peak
RSS is its own. Lengths are the outer loop and kinds the inner one, so the kinds compared at one
length are measured minutes apart at most, under similar machine load. A point whose predicted cost
(the previous length's time, scaled by the kind's expected growth) exceeds the per-point budget is
skipped and recorded as such.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import Scale, log_log_slope, run_worker

KINDS = ("prob", "full", "favor", "projections", "values_only")
FIT_FROM = 384
# expected growth exponents, only to decide what to skip
GROWTH = {"prob": 1.3, "full": 2.0, "favor": 1.2, "projections": 1.1, "values_only": 1.1}


def run(scale: Scale, threads: int, log: Any = print) -> dict[str, Any]:
    points: dict[str, dict[int, dict[str, Any]]] = {kind: {} for kind in KINDS}
    last: dict[str, tuple[int, float]] = {}
    for length in scale.attn_lengths:
        for kind in KINDS:
            if kind in last:
                prev_len, prev_s = last[kind]
                predicted = prev_s * (length / prev_len) ** GROWTH[kind]
                if predicted * 2 > scale.attn_max_point_s:
                    points[kind][length] = {"skipped": f"predicted {predicted:.1f} s per step exceeds the "
                                                       f"per-point budget"}
                    log(f"  attention {kind:11s} L={length:5d}  skipped (predicted {predicted:.1f} s/step)")
                    continue
            reps = scale.attn_reps
            task = {"task": "attention", "kind": kind, "length": length, "batch": scale.attn_batch,
                    "d_model": scale.attn_d_model, "n_heads": scale.attn_heads, "reps": reps,
                    "budget_s": scale.attn_budget_s}
            timeout_s = 60 + 4 * scale.attn_max_point_s
            result = _fastest_of(scale.attn_processes, task, threads, timeout_s)
            points[kind][length] = result
            if "error" in result:
                log(f"  attention {kind:11s} L={length:5d}  {result['error']}")
                continue
            median = result["time"]["median_s"]
            last[kind] = (length, median)
            tensors = result.get("peak_tensor_mib")
            log(f"  attention {kind:11s} L={length:5d}  {median * 1e3:9.1f} ms  "
                f"+{result['peak_growth_mib']:8.1f} MiB RSS  "
                + (f"{tensors:8.1f} MiB tensors" if tensors is not None else ""))
    return {
        "config": {"batch": scale.attn_batch, "d_model": scale.attn_d_model, "n_heads": scale.attn_heads,
                   "lengths": list(scale.attn_lengths), "attention_dropout": 0.0, "mode": "train (fwd+bwd)"},
        "method": ("AttentionLayer (q/k/v/out projections + core), self-attention on x [B, L, d_model] with "
                   f"requires_grad, out.sum().backward(); median of up to {scale.attn_reps} timed steps "
                   f"after one untimed step, in each of {scale.attn_processes} fresh processes, the "
                   "lowest median kept (all in median_s_per_process); "
                   "'projections' replaces the core by q + k + v (all four projections trained, no "
                   "attention), 'values_only' by the identity on V (Q and K projections get no gradient); "
                   "peak_tensor_mib = peak of live "
                   "torch tensor storage during one step (profiler allocation events, above what was "
                   "live before); peak_growth_mib = peak RSS (VmHWM, reset through /proc/self/clear_refs) "
                   "during the first step at L minus the RSS before it; a fresh process per point after "
                   "a warm-up at L=32"),
        "points": {kind: {str(k): v for k, v in pts.items()} for kind, pts in points.items()},
        "exponents": exponents(points),
    }


def _fastest_of(processes: int, task: dict[str, Any], threads: int, timeout_s: float) -> dict[str, Any]:
    """The point measured in ``processes`` fresh processes; the one with the lowest median is kept and
    every process's median is recorded beside it."""
    results = [run_worker(task, threads, timeout_s=timeout_s) for _ in range(max(1, processes))]
    for result in results:
        result.pop("task", None)
    timed = [r for r in results if "error" not in r]
    if not timed:
        return results[0]
    best = min(timed, key=lambda r: r["time"]["median_s"])
    best["median_s_per_process"] = [r["time"]["median_s"] for r in timed]
    return best


def ok(point: dict[str, Any] | None) -> bool:
    return bool(point) and "time" in point


def exponents(points: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """Least-squares log-log slopes of time and memory against L, per kind.

    Fitted from L = 384 up when two such points exist: below that, fixed per-call costs flatten the
    curve and say nothing about how the method scales. ``memory`` fits the tensor peak where every
    point has one, else the RSS growth; ``rss`` always fits the RSS growth.
    """
    out = {}
    for kind, pts in points.items():
        good = sorted((length, p) for length, p in pts.items() if ok(p))
        if sum(length >= FIT_FROM for length, _ in good) >= 2:
            good = [(length, p) for length, p in good if length >= FIT_FROM]
        lengths = [float(length) for length, _ in good]
        rss = log_log_slope(lengths, [max(p["peak_growth_mib"], 1e-3) for _, p in good])
        tensors = [p.get("peak_tensor_mib") for _, p in good]
        out[kind] = {
            "time": log_log_slope(lengths, [p["time"]["median_s"] for _, p in good]),
            "memory": (log_log_slope(lengths, [max(t, 1e-3) for t in tensors])
                       if tensors and all(t is not None for t in tensors) else rss),
            "rss": rss,
            "lengths": [int(x) for x in lengths],
        }
    return out

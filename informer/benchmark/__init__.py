"""Benchmark suite: training step vs. the machine's GEMM limit, attention scaling, long inputs,
inference throughput and forecast latency, epoch time. ``scripts/benchmark.py`` is the entry point;
results go to ``benchmarks/results.json`` and ``benchmarks/results.md``."""

from informer.benchmark.runner import SECTIONS, run_benchmark

__all__ = ["SECTIONS", "run_benchmark"]

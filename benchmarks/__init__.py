"""The speed suite (not installed with the package): training step vs. the machine's GEMM limit and the
official code's step, attention scaling, long inputs, inference throughput and forecast latency, epoch
time, DDP scaling. ``scripts/benchmark.py`` runs it (:func:`benchmarks.runner.run_benchmark`); results
go to ``benchmarks/results.json`` and ``benchmarks/results.md``.

Nothing is imported here, so that a measurement subprocess (``python -m benchmarks.worker``) loads only
what it measures.
"""

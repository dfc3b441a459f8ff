"""Run the selected sections in order and write the report; one failing section does not stop the rest."""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import (
    attention_scaling,
    ddp_scaling,
    epoch,
    goals,
    inference,
    long_input,
    report,
    train_step,
)
from benchmarks.common import Scale, machine_info, make_scale, set_threads
from benchmarks.official import OfficialStep, locate

SECTIONS = ("train_step", "attention_scaling", "long_input", "inference", "epoch", "ddp_scaling")
ALIASES = {"gemm_limit": "train_step", "attention": "attention_scaling", "long": "long_input"}


def resolve_sections(names: list[str] | None, scale: Scale) -> list[str]:
    """Section names in canonical order; unknown names raise ValueError listing the valid ones."""
    if not names:
        return [s for s in SECTIONS if s not in scale.skip]
    chosen = set()
    for name in names:
        canonical = ALIASES.get(name, name)
        if canonical not in SECTIONS:
            raise ValueError(f"unknown section {name!r}; choose from {', '.join(SECTIONS + tuple(ALIASES))}")
        chosen.add(canonical)
    return [s for s in SECTIONS if s in chosen]


def _section_fn(name: str, scale: Scale, threads: int, official: OfficialStep,
                log: Callable[[str], None]) -> Callable[[], Any]:
    return {
        "train_step": lambda: train_step.run(scale, official, log),
        "attention_scaling": lambda: attention_scaling.run(scale, threads, log),
        "long_input": lambda: long_input.run(scale, threads, log),
        "inference": lambda: inference.run(scale, threads, log),
        "epoch": lambda: epoch.run(scale, official, log),
        # equal total threads: 1 process x T vs 2 processes x T/2 (T even, at least 2)
        "ddp_scaling": lambda: ddp_scaling.ddp_scaling(quick=scale.mode != "full",
                                                      threads_total=max(2, threads - threads % 2)),
    }[name]


def _print(message: str) -> None:
    print(message, flush=True)  # progress shows up promptly when the output goes to a log file


def run_benchmark(out: Path, *, quick: bool = False, tiny: bool = False, sections: list[str] | None = None,
                  threads: int = 2, official: Path | None = None,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the sections and write ``out/results.json`` and ``out/results.md``. ``official`` is the
    script that times the official training step (default: :func:`benchmarks.official.locate`)."""
    log = log or _print
    scale = make_scale(quick, tiny)
    names = resolve_sections(sections, scale)
    set_threads(threads)
    official_step = OfficialStep(locate(official), scale.official_steps, threads)
    started = time.perf_counter()
    results: dict[str, Any] = {"mode": scale.mode, "machine": machine_info(threads), "sections": {},
                               "section_seconds": {}}
    for name in names:
        log(f"[{name}]")
        t0 = time.perf_counter()
        try:
            results["sections"][name] = _section_fn(name, scale, threads, official_step, log)()
        except Exception as exc:  # a broken section is reported, the others still run
            results["sections"][name] = {"error": f"{type(exc).__name__}: {exc}",
                                         "traceback": traceback.format_exc().splitlines()[-6:]}
            log(f"  failed: {type(exc).__name__}: {exc}")
        results["section_seconds"][name] = time.perf_counter() - t0
        if name == "train_step" and "kinds" in results["sections"][name]:
            for attn, r in results["sections"][name]["kinds"].items():
                log(f"  {attn:5s} step {r['step']['median_s']:.3f} s (min {r['step']['min_s']:.3f}), "
                    f"limit {r['limit']['gemm_conv']['median_s']:.3f} s, ratio {r['step_vs_limit']:.2f}")
    results["elapsed_s"] = time.perf_counter() - started
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["goals"] = goals.compute(results["sections"])
    json_path, md_path = report.write(results, out)
    log(f"wrote {json_path} and {md_path}")
    return results

"""The official Informer training step, timed in this run beside ours.

``time_official_step.py`` (in ``../shared/reference/`` next to the repository, with the official model
code; see its README) trains the official model at the paper's default ETTh1 config with ProbSparse
attention (batch 32, Adam, MSE, random batches) and prints one JSON line with the median and minimum
seconds per step. It runs as a subprocess with this run's thread count while this process waits, so the
ratio of the two steps compares them on one machine within minutes; no absolute time is carried over
from another run or machine. Nothing of the official code is imported into this project.

Where the script is not found or fails, the measurement says why (``not_available``) and the goals that
need it are reported as not measured.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, run_json_command

ENV_VAR = "INFORMER_OFFICIAL_STEP_SCRIPT"
DEFAULT_SCRIPT = REPO_ROOT.parent / "shared" / "reference" / "time_official_step.py"
WARMUP_STEPS = 3  # what the script runs before its timed steps


def locate(path: Path | None = None) -> Path:
    """The script to run: ``path`` when given (``--official``), else $INFORMER_OFFICIAL_STEP_SCRIPT,
    else ``<repository root>/../shared/reference/time_official_step.py``."""
    if path is not None:
        return Path(path)
    return Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else DEFAULT_SCRIPT


@dataclass
class OfficialStep:
    """Runs the script once per benchmark run, when a section first asks; later sections reuse it."""

    script: Path
    steps: int
    threads: int
    _result: dict[str, Any] | None = field(default=None, repr=False)

    def measure(self, log: Any = print) -> dict[str, Any]:
        if self._result is None:
            self._result = self._run()
            if "median_s" in self._result:
                log(f"  official step (prob): {self._result['median_s']:.3f} s "
                    f"(min {self._result['min_s']:.3f})")
            else:
                log(f"  official step: not available ({self._result['not_available']})")
        return self._result

    def _run(self) -> dict[str, Any]:
        if not self.script.is_file():
            return {"not_available": f"{self.script} not found (pass --official PATH or set {ENV_VAR})",
                    "script": str(self.script)}
        cmd = [sys.executable, str(self.script), "prob", str(self.steps), str(self.threads)]
        # generous: other work on a shared machine can slow every step several-fold
        timeout_s = 120 + 30 * (self.steps + WARMUP_STEPS)
        result = run_json_command(cmd, self.threads, timeout_s)
        if "error" in result:
            return {"not_available": f"{self.script}: {result['error']}", "script": str(self.script)}
        median, best = result.get("median_s"), result.get("min_s")
        if not (isinstance(median, (int, float)) and median > 0 and isinstance(best, (int, float))):
            return {"not_available": f"{self.script} printed no positive median_s / min_s: {result}",
                    "script": str(self.script)}
        return {**result, "script": str(self.script), "command": " ".join(cmd[1:])}


def available(result: dict[str, Any] | None) -> bool:
    return bool(result) and "median_s" in result

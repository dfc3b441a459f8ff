"""The DDP scaling benchmark's pieces that run in a second: the worker's measurement (1 process, in this
interpreter) and the efficiency arithmetic. The 2-process path is the one ``test_distributed.py`` already
exercises through training; the benchmark itself is run by hand (``python -m benchmarks.ddp_scaling
--quick`` from the repository root)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # benchmarks/ is not installed: import it from the checkout
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import ddp_scaling  # noqa: E402


def test_worker_reports_global_throughput(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    model = {**ddp_scaling.QUICK_MODEL, "d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 1,
             "seq_len": 24, "label_len": 12, "pred_len": 6}
    ddp_scaling._worker({"model": model, "global_batch": 4, "warmup": 1, "blocks": 2, "steps": 1,
                         "threads": 1})
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["processes"], result["local_batch"], result["blocks"]) == (1, 4, 2)
    assert len(result["windows_per_s_blocks"]) == 2
    assert result["windows_per_s"] == max(result["windows_per_s_blocks"]) > 0


def test_efficiency_definitions() -> None:
    one, two = {"windows_per_s": 100.0}, {"windows_per_s": 180.0}
    assert ddp_scaling._ratio(two, one) == pytest.approx(1.8)
    assert ddp_scaling._ratio(two, one, 2.0) == pytest.approx(0.9)
    assert ddp_scaling._ratio({"error": "exit 1"}, one) is None


@pytest.mark.parametrize("threads", [1, 3])
def test_threads_must_split_evenly_over_two_processes(threads: int) -> None:
    with pytest.raises(ValueError, match="threads_total"):
        ddp_scaling.ddp_scaling(quick=True, threads_total=threads)

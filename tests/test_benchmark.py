"""The benchmark suite runs end to end and writes a well-formed report (structure only, no timings)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from setuptools import find_packages
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # benchmarks/ is not installed: import it from the checkout
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import goals, official, report  # noqa: E402
from benchmarks.common import log_log_slope, make_scale, peak_tensor_mib  # noqa: E402
from benchmarks.gemm_limit import Replay, op_counts, record_step  # noqa: E402
from benchmarks.runner import SECTIONS, resolve_sections  # noqa: E402

# stands in for ../shared/reference/time_official_step.py: one JSON line, fixed numbers, no timing
FAKE_OFFICIAL = """import json, sys
print(json.dumps({"argv": sys.argv[1:], "median_s": 2.0, "min_s": 1.5}))
"""


def _run_script(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), *args],
                          capture_output=True, text=True, env=env, cwd="/", timeout=480)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    fake = out / "time_official_step.py"
    fake.write_text(FAKE_OFFICIAL)
    proc = _run_script("--quick", "--tiny", "--threads", "1", "--out", str(out), "--official", str(fake))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_json_has_every_section_and_goal(quick_run: Path) -> None:
    results = json.loads((quick_run / "results.json").read_text())
    assert results["mode"] == "tiny"
    assert results["machine"]["threads"] == 1 and results["machine"]["torch"] == str(torch.__version__)
    sections = results["sections"]
    assert set(sections) == {"train_step", "attention_scaling", "inference", "epoch",
                             "ddp_scaling"}  # long_input skipped
    errors = {name: sec["error"] for name, sec in sections.items() if "error" in sec}
    assert not errors, errors
    ddp = sections["ddp_scaling"]
    assert {"1x1", "1x2", "2x1"} == set(ddp["runs"])
    assert ddp["efficiency_equal_cores"] > 0 and ddp["efficiency_classic"] > 0

    train = sections["train_step"]["kinds"]
    assert set(train) == {"prob", "full", "favor"}
    for r in train.values():
        assert r["flops_per_step"] > 0 and r["step"]["n"] >= 1
        assert r["limit"]["n_calls"] > 0 and r["limit"]["gemm_conv"]["median_s"] > 0
        assert {"mm", "convolution", "convolution_backward"} <= set(r["limit"]["op_counts"])
        assert r["step_vs_limit"] > 0

    points = sections["attention_scaling"]["points"]
    assert set(points) == {"prob", "full", "favor", "projections", "values_only"}
    for per_length in points.values():
        for p in per_length.values():
            assert "time" in p and p["peak_growth_mib"] >= 0 and p["peak_tensor_mib"] > 0, p
    assert "favor" in sections["attention_scaling"]["exponents"]

    inference = sections["inference"]
    rates = [r["windows_per_s"] for per in inference["throughput"]["kinds"].values() for r in per.values()]
    assert rates and all(rate > 0 for rate in rates)
    backtest = inference["backtest"]
    assert backtest["origins"] == 48 and backtest["seconds"] > 0
    latency = inference["forecast_latency"]
    assert latency["process_csv_only"]["median_s"] > 0, latency
    assert latency["in_process"]["predict_ms_median"] > 0, latency

    step_official = sections["train_step"]["official"]
    assert step_official["argv"] == ["prob", "1", "1"]  # attention, timed steps (tiny), threads
    assert step_official["vs_ours"] == pytest.approx(2.0 / train["prob"]["step"]["median_s"])
    epoch = sections["epoch"]
    # timed once per run, shared by both sections
    assert epoch["official_step"] == {k: v for k, v in step_official.items() if k != "vs_ours"}
    assert epoch["epoch_seconds"]["official_estimate"] == pytest.approx(
        epoch["parts"]["train"]["steps_per_epoch"] * 2.0 + epoch["parts"]["val_grad"]["seconds"]
        + epoch["parts"]["test_grad"]["seconds"])

    for goal in results["goals"].values():
        assert set(goal) == {"value", "target", "met", "definition"}
    assert results["goals"]["train_step_vs_gemm_limit"]["target"] == "<= 1.40"
    assert results["goals"]["official_step_vs_ours"]["value"] == pytest.approx(step_official["vs_ours"])
    assert results["goals"]["epoch_speedup_vs_official_estimate"]["value"] is not None
    assert "favor_time_exponent" in results["goals"]


def test_markdown_tables(quick_run: Path) -> None:
    md = (quick_run / "results.md").read_text()
    assert md.startswith("## Performance")
    assert "torch intra-op threads: 1" in md and torch.__version__ in md
    for heading in ("### Training step", "### Attention layer", "### Inference", "### Goals"):
        assert heading in md
    assert "| attn | step s (median)" in md
    assert "Official Informer2020 training step (prob, paper default ETTh1 config, random batches), " \
           "timed in this run: 2.000 s median" in md
    assert "| L | prob | full | favor | projections | values_only |" in md


def test_unknown_section_is_a_user_error(tmp_path: Path) -> None:
    proc = _run_script("--sections", "warp_drive", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown section 'warp_drive'")


def test_section_selection_and_aliases() -> None:
    full, quick = make_scale(False, False), make_scale(True, False)
    assert resolve_sections(None, full) == list(SECTIONS)
    assert "long_input" not in resolve_sections(None, quick)
    assert resolve_sections(["epoch", "gemm_limit"], full) == ["train_step", "epoch"]


def test_log_log_slope_recovers_a_power_law() -> None:
    xs = [96.0, 384.0, 1536.0]
    assert math.isclose(log_log_slope(xs, [3.0 * x**1.5 for x in xs]), 1.5, rel_tol=1e-9)
    assert log_log_slope([1.0], [1.0]) is None


def test_peak_tensor_memory_counts_what_is_live_at_once() -> None:
    keep = torch.zeros(1)

    def step() -> None:
        a = torch.ones(2**20)  # 4 MiB
        b = torch.ones(2**19)  # 2 MiB, live together with a: 6 MiB
        del a, b
        c = torch.ones(2**20)  # 4 MiB, alone
        keep.add_(c.sum())

    peak = peak_tensor_mib(step)
    assert peak is not None and 6.0 <= peak < 6.1


def test_recorder_sees_forward_and_backward_products_and_replays_them() -> None:
    layer = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    conv = nn.Conv1d(4, 4, kernel_size=3)
    x = torch.randn(2, 5, 8, requires_grad=True)

    def step() -> None:
        y = layer(x)  # [2, 5, 4]
        conv(y.transpose(1, 2)).sum().backward()

    calls = record_step(step)
    counts = op_counts(calls)
    assert counts.get("addmm", 0) == 2  # the two forward linears
    assert counts.get("mm", 0) >= 3  # weight and input gradients
    assert counts["convolution"] == 1 and counts["convolution_backward"] == 1
    replay = Replay(calls)
    assert replay.count(("gemm", "conv")) == len(calls)
    assert replay.time_once() > 0


def test_in_place_products_are_gemms_to_the_limit_and_the_flop_count() -> None:
    from benchmarks.train_step import count_flops

    out, a, b = torch.zeros(4, 6), torch.randn(4, 8), torch.randn(8, 6)

    def step() -> None:
        out.addmm_(a, b)

    assert op_counts(record_step(step)) == {"addmm_": 1}
    assert count_flops(step) == 2 * 4 * 8 * 6


def test_missing_official_script_is_not_available_and_its_goals_not_measured(tmp_path: Path) -> None:
    missing = official.OfficialStep(tmp_path / "absent.py", steps=1, threads=1).measure(log=lambda _: None)
    assert "absent.py not found" in missing["not_available"] and not official.available(missing)
    step = {"step": {"median_s": 1.0}, "step_vs_limit": 1.3, "step_vs_limit_best": 1.5}
    ratios = {"official_style": 1.1, "test_every_epoch": 1.1}
    computed = goals.compute({"train_step": {"kinds": {"prob": step}, "official": missing},
                              "epoch": {"ratios": ratios, "official_step": missing}})
    assert computed["train_step_vs_gemm_limit"]["met"] is True
    assert computed["train_step_vs_gemm_limit_best"]["met"] is False
    for name in ("official_step_vs_ours", "epoch_speedup_vs_official_estimate"):
        assert computed[name]["value"] is None and computed[name]["met"] is None
        assert "not measured" in computed[name]["definition"] and "absent.py" in computed[name]["definition"]
    assert computed["epoch_speedup_vs_test_every_epoch"]["target"] == "information"
    assert "| official_step_vs_ours | - | >= 1.4 | not measured |" in report._goals(computed)
    assert report._official(missing).startswith("Official Informer2020 training step: not available")


def test_a_failing_official_script_is_not_available(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("raise SystemExit('no official code here')\n")
    result = official.OfficialStep(script, steps=1, threads=1).measure(log=lambda _: None)
    assert "no official code here" in result["not_available"]


def test_official_script_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(official.ENV_VAR, raising=False)
    assert official.locate() == REPO_ROOT.parent / "shared" / "reference" / "time_official_step.py"
    monkeypatch.setenv(official.ENV_VAR, str(tmp_path / "env.py"))
    assert official.locate() == tmp_path / "env.py"
    assert official.locate(tmp_path / "flag.py") == tmp_path / "flag.py"


def test_the_suite_is_not_installed_with_the_package() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_packages(where=str(REPO_ROOT), include=include)
    assert "informer" in packages and not any(p.split(".")[0] == "benchmarks" for p in packages)


def test_an_attention_point_keeps_the_fastest_of_its_fresh_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import attention_scaling

    medians = iter([0.9, 0.4, 0.7])

    def fake_worker(task: dict, threads: int, timeout_s: float) -> dict:
        return {"task": task, "time": {"median_s": next(medians)}, "peak_growth_mib": 1.0}

    monkeypatch.setattr(attention_scaling, "run_worker", fake_worker)
    point = attention_scaling._fastest_of(3, {"task": "attention"}, 1, 10.0)
    assert point["time"]["median_s"] == 0.4
    assert point["median_s_per_process"] == [0.9, 0.4, 0.7]
    assert "task" not in point

    monkeypatch.setattr(attention_scaling, "run_worker", lambda *a, **k: {"error": "timed out"})
    assert attention_scaling._fastest_of(2, {"task": "attention"}, 1, 10.0) == {"error": "timed out"}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process tree read from /proc")
def test_a_timed_out_measurement_takes_its_new_session_grandchildren_down(tmp_path: Path) -> None:
    """torchrun's workers run in sessions of their own; a timeout must not leave one holding the pipes."""
    import threading

    from benchmarks.common import run_json_command

    pid_file = tmp_path / "grandchild.pid"
    launcher = ("import subprocess, sys, time; "
                "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], "
                "start_new_session=True); "
                f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(600)")
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(run_json_command([sys.executable, "-c", launcher],
                                                                            1, timeout_s=3.0)))
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive(), "run_json_command still waiting on the orphaned grandchild's pipes"
    assert result == {"error": "timed out after 3 s"}
    assert _ends_soon(int(pid_file.read_text()))


def _ends_soon(pid: int, within_s: float = 10.0) -> bool:
    """SIGKILL is delivered at once, but a loaded machine may take a moment to tear the process down."""
    import time

    deadline = time.monotonic() + within_s
    while _running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited and only waits to be reaped

"""Exact resume: a run killed anywhere and resumed ends bit-identical to an uninterrupted run.

The runs are real CLI processes on real ETTh1 with one CPU thread. The kill point is made
deterministic by a loop callback (training_helpers.KillAt, added to scripts/train.py by tests/kill_at.py):
the training process sends itself SIGKILL (or SIGTERM) at a chosen step, during validation or at an epoch
end. The comparison is by sha256 of the final parameters (last.pt and best.pt), optimizer state, RNG
states, loss history and the bytes of metrics.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from training_helpers import KILL_AT_SCRIPT, TRAIN_SCRIPT, KillAt, tiny_config, tiny_overrides

from informer.checkpoint import load_checkpoint, save_checkpoint
from informer.errors import CheckpointError, UserError
from informer.training import TrainingInterrupted, train
from informer.training.signals import StopRequest

# 3 epochs x 5 steps, last.pt every 2 steps, a schedule that changes within the epoch
RUN = {"train.epochs": 3, "train.limit_train_batches": 5, "train.checkpoint_every": 2,
       "train.lradj": "cosine", "train.plot_windows": 0, "train.threads": 1}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _train_cli(args: list[str], cwd: Path, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    script = [str(KILL_AT_SCRIPT), kill_at] if kill_at else [str(TRAIN_SCRIPT)]
    return subprocess.run([sys.executable, *script, *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=300)


def _canonical(obj: Any, digest: Any) -> None:
    """Feed a nested checkpoint structure into ``digest`` (tensors by dtype, shape and bytes)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        digest.update(b"{")
        for key in sorted(obj, key=str):
            digest.update(repr(key).encode())
            _canonical(obj[key], digest)
        digest.update(b"}")
    elif isinstance(obj, list | tuple):
        digest.update(b"[")
        for item in obj:
            _canonical(item, digest)
        digest.update(b"]")
    else:
        digest.update(repr(obj).encode())


def _sha(obj: Any) -> str:
    digest = hashlib.sha256()
    _canonical(obj, digest)
    return digest.hexdigest()


def fingerprint(run_dir: Path) -> dict[str, str]:
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    training = last["training"]
    loop = training["loop"]
    return {
        "parameters": _sha(last["model_state"]),
        "best_parameters": _sha(best["model_state"]),
        "optimizer": _sha(training["optimizer"]),
        "rng": _sha(training["rng"]),
        "data_order": _sha(training["data_order"]),
        "loss_history": _sha([loop["train_loss_history"], loop["val_loss_history"], loop["lr_history"],
                              loop["global_step"], loop["best_val_loss"]]),
        "metrics.json": hashlib.sha256((run_dir / "metrics.json").read_bytes()).hexdigest(),
    }


@pytest.fixture(scope="module")
def args(ett_dir: Path) -> list[str]:
    return ["dataset=ETTh1", *tiny_overrides(ett_dir, **RUN)]


@pytest.fixture(scope="module")
def reference(args: list[str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("uninterrupted")
    proc = _train_cli([*args, f"hydra.run.dir={root / 'run'}"], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run", fingerprint(root / "run")


def _train_loss_events(run_dir: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()
    return [(e.step, e.value) for e in events.Scalars("train/loss")]


# (kill point, global step of the last.pt the resume starts from)
KILLS = [
    pytest.param("step:7", 6, id="sigkill-mid-epoch"),
    pytest.param("epoch_end:1", 5, id="sigkill-at-epoch-boundary"),
    pytest.param("validation:1", 4, id="sigkill-during-validation"),
]


@pytest.mark.parametrize(("kill_at", "saved_step"), KILLS)
def test_killed_and_resumed_run_is_bit_identical(kill_at: str, saved_step: int, args: list[str],
                                                 reference: tuple[Path, dict[str, str]],
                                                 tmp_path: Path) -> None:
    ref_dir, expected = reference
    run_dir = tmp_path / "run"
    killed = _train_cli([*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (run_dir / "metrics.json").exists()
    loop = load_checkpoint(run_dir / "checkpoints" / "last.pt")["training"]["loop"]
    assert loop["global_step"] == saved_step

    # the user's command: the same overrides plus train.resume=<run dir>, which continues in place
    resumed = _train_cli([*args, f"train.resume={run_dir}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in (run_dir / "train.log").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no stray outputs/ in the cwd
    assert fingerprint(run_dir) == expected
    assert (run_dir / "metrics.json").read_bytes() == (ref_dir / "metrics.json").read_bytes()
    # TensorBoard: the killed run's events after its checkpoint are purged, none is missing
    assert _train_loss_events(run_dir) == _train_loss_events(ref_dir)
    assert [step for step, _ in _train_loss_events(run_dir)] == list(range(1, 16))


def test_resume_with_a_known_future_covariate_is_bit_identical(ett_dir: Path, tmp_path: Path) -> None:
    """The same exactness with one known-future covariate (issue 18) in the tiny config."""
    args = ["dataset=ETTh1", *tiny_overrides(ett_dir, **RUN, **{"dataset.known_future": "[HUFL]"})]
    reference = _train_cli([*args, f"hydra.run.dir={tmp_path / 'reference'}"], cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    run_dir = tmp_path / "run"
    killed = _train_cli([*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path, kill_at="step:7")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = _train_cli([*args, f"train.resume={run_dir}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["data"]["known_future"] == ["HUFL"]
    assert fingerprint(run_dir) == fingerprint(tmp_path / "reference")


def test_sigterm_saves_and_prints_the_resume_command(args: list[str], reference: tuple[Path, dict[str, str]],
                                                     tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    stopped = _train_cli([*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path, kill_at="step:3:TERM")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr + stopped.stdout
    assert "stopped by SIGTERM at epoch 1, step 3" in stopped.stderr
    # saved at the step boundary where the signal arrived (checkpoint_every=2 alone would give step 2)
    loop = load_checkpoint(run_dir / "checkpoints" / "last.pt")["training"]["loop"]
    assert (loop["epoch"], loop["step_in_epoch"], loop["global_step"]) == (0, 3, 3)

    command = stopped.stderr.strip().splitlines()[-1].strip()
    argv = shlex.split(command)
    assert argv[-1] == f"train.resume={run_dir}" and "hydra.run.dir" not in command
    resumed = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert fingerprint(run_dir) == reference[1]


def test_sigint_in_process_stops_at_the_step_boundary(tmp_path: Path, ett_dir: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as caught:
        train(tiny_config(ett_dir, **{"train.epochs": 1, "train.checkpoint_every": 0,
                                      "train.plot_windows": 0}), output_dir=tmp_path,
              callbacks=[KillAt("step:2:INT")])
    assert caught.value.exit_code == 130 and caught.value.run_dir == str(tmp_path)
    assert "stopped by SIGINT at epoch 1, step 2 (global step 2)" in str(caught.value)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["training"]["loop"]["global_step"] == 2
    assert signal.getsignal(signal.SIGINT) == before
    assert f"continue with train.resume={tmp_path}" in (tmp_path / "train.log").read_text()


def test_last_pt_holds_the_whole_loop_state_in_plain_types(reference: tuple[Path, dict[str, str]]) -> None:
    raw = torch.load(reference[0] / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    training = raw["training"]
    assert {"optimizer", "grad_scaler", "schedule", "data_order", "loop", "rng", "lr",
            "world_size"} <= set(training)
    assert training["schedule"] == {"lradj": "cosine", "learning_rate": 1e-4, "epochs": 3,
                                    "steps_per_epoch": 5}
    assert set(training["data_order"]) == {"seed", "epoch", "samples_done", "batch_size", "loader_generator"}
    assert {"python", "numpy", "torch"} <= set(training["rng"][0])
    loop = training["loop"]
    assert {"epoch", "step_in_epoch", "global_step", "best_val_loss", "bad_epochs", "stopped_early",
            "epoch_loss_sum", "train_loss_history"} <= set(loop)
    assert raw["versions"]["threads"] == 1


def test_stop_request_sets_a_flag_and_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)  # handled in this thread before os.kill returns
        assert stop.signum == signal.SIGTERM
        # a second signal would act at once: the previous handler is back already
        assert signal.getsignal(signal.SIGTERM) == before
    assert signal.getsignal(signal.SIGTERM) == before


# -- in-process checks of the resume path ------------------------------------------------------------
@pytest.fixture
def finished_run(ett_dir: Path, tmp_path: Path) -> Path:
    train(tiny_config(ett_dir, **{"train.epochs": 1, "train.plot_windows": 0}), output_dir=tmp_path / "run")
    return tmp_path / "run"


def test_resume_with_other_threads_or_torch_warns(finished_run: Path, ett_dir: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    cfg = {"train.epochs": 1, "train.plot_windows": 0, "train.resume": str(finished_run)}
    try:
        with caplog.at_level(logging.WARNING, logger="informer"):
            train(tiny_config(ett_dir, **cfg, **{"train.threads": 2}))  # resumes into the run directory
        assert "resuming with 2 CPU thread(s), the checkpoint was written with 1" in caplog.text
        assert "results may differ slightly" in caplog.text
    finally:
        torch.set_num_threads(1)

    last = finished_run / "checkpoints" / "last.pt"
    payload = load_checkpoint(last)
    payload["versions"]["torch"] = "2.10.0"
    payload.pop("format"), payload.pop("format_version")
    save_checkpoint(payload, last)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="informer"):
        train(tiny_config(ett_dir, **cfg))
    assert "checkpoint was written by torch 2.10.0: results may differ slightly" in caplog.text
    assert "CPU thread" not in caplog.text


def test_resume_needs_last_pt(finished_run: Path, ett_dir: Path, tmp_path: Path) -> None:
    best = finished_run / "checkpoints" / "best.pt"
    with pytest.raises(CheckpointError, match="holds no training state"):
        train(tiny_config(ett_dir, **{"train.resume": str(best)}), output_dir=tmp_path / "new")
    with pytest.raises(UserError, match=r"no last\.pt found"):
        train(tiny_config(ett_dir, **{"train.resume": str(tmp_path / "nowhere")}),
              output_dir=tmp_path / "new")
    assert not (tmp_path / "new" / "checkpoints").exists()  # refused before anything was written


def test_resume_into_a_new_directory_brings_best_pt(finished_run: Path, ett_dir: Path,
                                                    tmp_path: Path) -> None:
    cfg = tiny_config(ett_dir, **{"train.epochs": 2, "train.plot_windows": 0,
                                  "train.resume": str(finished_run / "checkpoints" / "last.pt")})
    train(cfg, output_dir=tmp_path / "continued")
    metrics = json.loads((tmp_path / "continued" / "metrics.json").read_text())
    assert metrics["training"]["epochs_run"] == 2 and len(metrics["training"]["val_loss"]) == 2
    assert (tmp_path / "continued" / "checkpoints" / "best.pt").is_file()

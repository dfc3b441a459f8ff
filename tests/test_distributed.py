"""DistributedDataParallel on CPU: a real 2-process gloo run through torchrun, compared with one process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
from training_helpers import TRAIN_SCRIPT, run_script, tiny_config, tiny_overrides

from informer.training import evaluate_checkpoint, train

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is required")

# Dropout 0 and full attention make the forward pass deterministic (ProbSparse samples keys from each
# process's own random stream in training mode), so both runs see the same weights, batches and maths.
# With 2 processes, the global batch of 8 is split 4 + 4 (DistributedSampler with the same seed takes
# alternate elements of the same permutation, so the union is the 1-process batch) and DDP averages the two
# half-batch gradients: equal to the full-batch gradient up to float32 summation order (~1e-7 relative).
# Those rounding differences pass through a few Adam steps; measured here the validation losses agree to
# ~3e-9 relative. 1e-5 leaves room for other CPUs and BLAS builds while still catching real divergence (a
# wrong batch split, unaveraged gradients or a lost step move the loss by 1e-3 or more in this setting).
DDP_EXTRA = {"model.attn": "full", "model.dropout": 0.0, "train.epochs": 2, "train.plot_windows": 1}
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def ddp_run(ett_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("ddp")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    # no hydra.run.dir: the processes must agree on outputs/ETTh1/<rank 0's start time> by themselves
    result = run_script(TRAIN_SCRIPT, ["dataset=ETTh1", *tiny_overrides(ett_dir, **DDP_EXTRA)], cwd=cwd,
                        launcher=launcher, timeout=400)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return cwd


def _run_dir(cwd: Path) -> Path:
    runs = list((cwd / "outputs" / "ETTh1").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def test_one_output_directory_written_by_rank_zero(ddp_run: Path) -> None:
    assert [p.name for p in (ddp_run / "outputs").iterdir()] == ["ETTh1"]
    run_dir = _run_dir(ddp_run)
    for name in (".hydra/config.yaml", "train.log", "checkpoints/best.pt", "checkpoints/last.pt",
                 "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 1
    log = (run_dir / "train.log").read_text()
    assert log.count("epoch 1/2") == 1  # logged once, by rank 0
    assert "2 process(es)" in log


def test_replicas_identical_after_training(ddp_run: Path) -> None:
    log = (_run_dir(ddp_run) / "train.log").read_text()
    assert "parameters identical on all 2 processes" in log


def test_validation_loss_matches_single_process(ddp_run: Path, ett_dir: Path, tmp_path: Path) -> None:
    metrics = json.loads((_run_dir(ddp_run) / "metrics.json").read_text())
    assert metrics["training"]["processes"] == 2
    single = train(tiny_config(ett_dir, **DDP_EXTRA), output_dir=tmp_path)
    assert metrics["training"]["best_val_loss"] == pytest.approx(single, rel=TOLERANCE)
    single_metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"]["windows"] == single_metrics["test"]["windows"]
    assert metrics["training"]["global_steps"] == single_metrics["training"]["global_steps"]


def test_distributed_evaluation_is_exact(ddp_run: Path) -> None:
    """metrics.json was scored by 2 processes on disjoint shards; 1 process on the same weights agrees."""
    run_dir = _run_dir(ddp_run)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("val", "test"):
        alone = evaluate_checkpoint(run_dir / "checkpoints" / "best.pt", split=split)[split]
        assert alone["windows"] == metrics[split]["windows"]
        for forecaster in ("model", "naive_last", "naive_seasonal"):
            got, want = alone[forecaster]["scaled"]["mse"], metrics[split][forecaster]["scaled"]["mse"]
            assert got == pytest.approx(want, rel=1e-6, abs=1e-6)

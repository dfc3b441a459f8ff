"""DistributedDataParallel on CPU: real 2-process gloo runs through torchrun.

* the paper's default architecture at tiny width (ProbSparse attention, two encoder layers with the
  distilling layer's BatchNorm, dropout 0.05): one run directory written by rank 0, identical replicas,
  exact distributed evaluation;
* FAVOR+ with a feature redraw on the last training step: identical replicas;
* full attention without dropout or distilling: the same validation loss as one process;
* the replica check names the tensors that differ, and broadcasting rank 0's buffers mends them.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn
from training_helpers import TINY_TRAIN, TRAIN_SCRIPT, run_script, tiny_config, tiny_overrides

from informer.checkpoint import load_checkpoint
from informer.config import ModelConfig, TrainConfig
from informer.training import evaluate_checkpoint, train

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is required")

LAUNCHER = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
STEPS = TINY_TRAIN["epochs"] * TINY_TRAIN["limit_train_batches"]  # optimizer steps of a tiny run
# the paper's architecture (model.* defaults) at tiny width: only the sizes of training_helpers change
DEFAULT_ARCH = {"model.e_layers": 2, "train.plot_windows": 1}


def _torchrun(cwd: Path, ett_dir: Path, extra: dict) -> Path:
    # no hydra.run.dir: the processes must agree on outputs/ETTh1/<rank 0's start time> by themselves
    cwd.mkdir(parents=True, exist_ok=True)
    result = run_script(TRAIN_SCRIPT, ["dataset=ETTh1", *tiny_overrides(ett_dir, **extra)], cwd=cwd,
                        launcher=LAUNCHER, timeout=400)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    runs = list((cwd / "outputs" / "ETTh1").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def default_run(ett_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _torchrun(tmp_path_factory.mktemp("ddp"), ett_dir, DEFAULT_ARCH)


def test_the_default_architecture_is_what_runs(default_run: Path) -> None:
    model = load_checkpoint(default_run / "checkpoints" / "best.pt")["model_config"]
    assert (model["attn"], model["e_layers"], model["distil"], model["dropout"]) == ("prob", 2, True, 0.05)


def test_one_output_directory_written_by_rank_zero(default_run: Path) -> None:
    assert [p.name for p in default_run.parent.parent.parent.iterdir()] == ["outputs"]
    for name in (".hydra/config.yaml", "train.log", "checkpoints/best.pt", "checkpoints/last.pt",
                 "metrics.json"):
        assert (default_run / name).is_file(), name
    assert len(list((default_run / "tb").glob("events.out.tfevents.*"))) == 1
    log = (default_run / "train.log").read_text()
    assert log.count("epoch 1/2") == 1  # logged once, by rank 0
    assert "2 process(es)" in log
    assert json.loads((default_run / "metrics.json").read_text())["training"]["processes"] == 2


def test_replicas_identical_after_training(default_run: Path) -> None:
    log = (default_run / "train.log").read_text()
    assert "parameters identical on all 2 processes" in log
    assert "replicas differ" not in log


def test_distributed_evaluation_is_exact(default_run: Path) -> None:
    """metrics.json was scored by 2 processes on disjoint shards; 1 process on the same weights agrees."""
    metrics = json.loads((default_run / "metrics.json").read_text())
    for split in ("val", "test"):
        alone = evaluate_checkpoint(default_run / "checkpoints" / "best.pt", split=split)[split]
        assert alone["windows"] == metrics[split]["windows"]
        for forecaster in ("model", "naive_last", "naive_seasonal"):
            got, want = alone[forecaster]["scaled"]["mse"], metrics[split][forecaster]["scaled"]["mse"]
            assert got == pytest.approx(want, rel=1e-6, abs=1e-6)


def test_favor_redraw_on_the_last_step_keeps_replicas_identical(ett_dir: Path, tmp_path: Path) -> None:
    from informer.model import build_model
    from informer.model.favor import FavorAttention
    from informer.training.state import seed_everything

    # a FavorAttention module redraws at the start of its call number interval + 1: the last step
    run_dir = _torchrun(tmp_path, ett_dir, {**DEFAULT_ARCH, "model.attn": "favor",
                                            "model.feature_redraw_interval": STEPS - 1})
    log = (run_dir / "train.log").read_text()
    assert "parameters identical on all 2 processes" in log and "replicas differ" not in log
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    seed_everything(TrainConfig().seed)  # the run's seed: the features it started with
    fresh = build_model(ModelConfig.from_dict(dict(last["model_config"])))
    favor = [(name, module) for name, module in fresh.named_modules() if isinstance(module, FavorAttention)]
    features = {f"{name}.{buffer}": value for name, module in favor
                for buffer, value in module.named_buffers(recurse=False)}
    assert features
    for key, initial in features.items():  # the redraw did happen
        assert not torch.equal(last["model_state"][key], initial), key


# Dropout 0, full attention and no distilling (its BatchNorm normalises each process's half batch) make
# the two runs the same computation: DistributedSampler with the same seed gives the two processes
# alternate elements of the 1-process batch, and DDP averages the two half-batch gradients, equal to the
# full-batch gradient up to float32 summation order (~1e-7 relative). Through a few Adam steps the
# validation losses agree to ~3e-9 relative; 1e-5 still catches a wrong batch split, unaveraged
# gradients or a lost step (1e-3 or more here).
EQUIVALENT = {"model.attn": "full", "model.dropout": 0.0, "model.e_layers": 1, "train.plot_windows": 0}


def test_validation_loss_matches_single_process(ett_dir: Path, tmp_path: Path) -> None:
    run_dir = _torchrun(tmp_path / "ddp", ett_dir, EQUIVALENT)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    single = train(tiny_config(ett_dir, **EQUIVALENT), output_dir=tmp_path / "single")
    assert metrics["training"]["best_val_loss"] == pytest.approx(single, rel=1e-5)
    single_metrics = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert metrics["test"]["windows"] == single_metrics["test"]["windows"]
    assert metrics["training"]["global_steps"] == single_metrics["training"]["global_steps"]


def _replica_worker(rank: int, init_file: str, out_dir: str) -> None:
    from informer.training.distributed import broadcast_buffers, check_replicas

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("informer").addHandler(handler)
    logging.getLogger("informer").setLevel(logging.INFO)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    model[1].running_mean.fill_(float(rank))  # what each process's own batches leave behind
    before = check_replicas(model)
    broadcast_buffers(model)
    after = check_replicas(model)
    Path(out_dir, f"{rank}.json").write_text(json.dumps({"before": before, "after": after, "log": records}))
    dist.destroy_process_group()


def test_replica_check_names_the_differing_tensors(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_replica_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        result = json.loads((tmp_path / f"{rank}.json").read_text())
        assert (result["before"], result["after"]) == (False, True)
    log = " ".join(json.loads((tmp_path / "0.json").read_text())["log"])
    assert "differ across the 2 processes in 1 tensor(s): 1.running_mean" in log
    assert "parameters identical on all 2 processes" in log


def test_quantile_model_under_ddp_is_calibrated_and_scored_exactly(ett_dir: Path, tmp_path: Path) -> None:
    """Two processes: the pinball loss trains, the calibration gathers every validation window in
    order, and coverage / wQL / CRPS summed across ranks equal one process's on the same weights."""
    quantile = {"model.quantiles": "[0.1,0.5,0.9]", "train.loss": "pinball", "train.plot_windows": 0}
    run_dir = _torchrun(tmp_path / "ddp", ett_dir, quantile)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    stored = load_checkpoint(run_dir / "checkpoints" / "best.pt")["calibration"]
    assert stored["n"] == metrics["val"]["windows"]
    copy = tmp_path / "copy.pt"
    shutil.copy(run_dir / "checkpoints" / "best.pt", copy)
    alone = evaluate_checkpoint(copy, split="test", calibrate=True)  # recalibrated by one process
    for key, entry in stored["per_level"].items():
        assert entry["method"] == alone["calibration"]["per_level"][key]["method"]
        assert np.allclose(entry["margin"], alone["calibration"]["per_level"][key]["margin"], rtol=1e-5,
                           atol=1e-6)
    got, want = alone["test"]["model"], metrics["test"]["model"]
    assert got["scaled"]["pinball"] == pytest.approx(want["scaled"]["pinball"], rel=1e-6)
    for name in ("wql", "crps", "crps_skill"):
        assert got["probabilistic"][name] == pytest.approx(want["probabilistic"][name], rel=1e-5)
    for key in ("0.8", "0.95"):
        coverage = want["intervals"][key]["coverage"]
        assert got["intervals"][key]["coverage"] == pytest.approx(coverage, abs=1e-4)


def test_known_future_covariate_under_ddp_matches_single_process(ett_dir: Path, tmp_path: Path) -> None:
    """One known-future covariate (issue 18) travels with the time marks: two processes still train the
    same computation as one, keep identical replicas and score exactly."""
    covariate = {**EQUIVALENT, "dataset.known_future": "[HUFL]"}
    run_dir = _torchrun(tmp_path / "ddp", ett_dir, covariate)
    log = (run_dir / "train.log").read_text()
    assert "known-future ['HUFL']" in log and "parameters identical on all 2 processes" in log
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["model_config"]["n_known_future"] == 1 and best["data"]["known_future"] == ["HUFL"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    single = train(tiny_config(ett_dir, **{**covariate, "dataset.known_future": ["HUFL"]}),
                   output_dir=tmp_path / "single")
    assert metrics["training"]["best_val_loss"] == pytest.approx(single, rel=1e-5)
    alone = evaluate_checkpoint(run_dir / "checkpoints" / "best.pt", split="test")["test"]
    assert alone["windows"] == metrics["test"]["windows"]
    want = metrics["test"]["model"]["scaled"]["mse"]
    assert alone["model"]["scaled"]["mse"] == pytest.approx(want, rel=1e-6)

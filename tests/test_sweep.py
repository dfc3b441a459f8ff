"""Hydra multiruns: one directory and TensorBoard run per job, the sweep summary (in-process and rebuilt
from disk alone), the Optuna preset and the SLURM launcher config.

The Optuna and submitit tests need the optional ``sweep`` extra (``pip install -e ".[sweep]"``) and skip
without it; CI installs only ``.[dev]``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from training_helpers import REPO, TRAIN_SCRIPT, run_script, tiny_overrides

from informer.config import TrainAppConfig
from informer.training import sweep

# as short as a training run gets: 1 epoch of 2 batches, 1 validation batch per epoch
SHORT = {"train.epochs": 1, "train.limit_train_batches": 2, "train.limit_eval_batches": 1,
         "train.plot_windows": 1}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(jobs, key=lambda p: int(p.name))


def _assert_job_outputs(job_dir: Path) -> None:
    for name in (".hydra/overrides.yaml", "metrics.json", "checkpoints/best.pt", sweep.JOB_RECORD):
        assert (job_dir / name).is_file(), (job_dir, name)
    assert len(list((job_dir / "tb").glob("events.out.tfevents.*"))) == 1, job_dir


def _assert_rows_match_metrics(rows: list[dict[str, str]]) -> None:
    for row in rows:
        metrics = json.loads((Path(row["dir"]) / "metrics.json").read_text())
        assert row["status"] == "completed"
        assert float(row["best_val_loss"]) == pytest.approx(metrics["training"]["best_val_loss"], rel=1e-12)
        assert float(row["test_mse"]) == pytest.approx(metrics["test"]["model"]["scaled"]["mse"], rel=1e-12)
        assert float(row["test_mae"]) == pytest.approx(metrics["test"]["model"]["scaled"]["mae"], rel=1e-12)
        model = metrics["test"]["model"]
        assert float(row["test_skill"]) == pytest.approx(model["scaled"]["skill"], rel=1e-12)
        assert float(row["test_mase"]) == pytest.approx(model["original"]["mase"], rel=1e-12)


# ------------------------------------------------------------------------------------------ grid
@pytest.fixture(scope="module")
def grid_sweep(ett_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("grid")
    sweep_dir = cwd / "sweep"
    grid = {"model.d_model": "8,16", "train.learning_rate": "1e-4,5e-4"}
    args = ["-m", "dataset=ETTh1", *tiny_overrides(ett_dir, **SHORT, **grid), f"hydra.sweep.dir={sweep_dir}"]
    result = run_script(TRAIN_SCRIPT, args, cwd=cwd, timeout=400)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return sweep_dir


def test_grid_sweep_gives_each_job_its_own_directory_and_tensorboard_run(grid_sweep: Path) -> None:
    jobs = _job_dirs(grid_sweep)
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    for job_dir in jobs:
        _assert_job_outputs(job_dir)
    # four distinct runs, not one run written four times
    assert len({next((j / "tb").glob("events.*")).name for j in jobs}) == 4


def test_a_diverging_job_scores_inf_and_the_sweep_goes_on(ett_dir: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    short = {**SHORT, "train.limit_train_batches": 3}
    args = ["-m", "dataset=ETTh1", *tiny_overrides(ett_dir, **short), "train.learning_rate=1e30,1e-4",
            f"hydra.sweep.dir={sweep_dir}"]  # job 0 blows up at once
    result = run_script(TRAIN_SCRIPT, args, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    jobs = _job_dirs(sweep_dir)
    assert [p.name for p in jobs] == ["0", "1"]
    assert "training diverged" in (jobs[0] / "train.log").read_text()
    assert not (jobs[0] / "metrics.json").exists()
    _assert_job_outputs(jobs[1])  # the job after the diverged one ran to the end
    rows = {r["job"]: r for r in _read_csv(sweep_dir / sweep.SUMMARY_CSV)}
    assert rows["0"]["status"] == "diverged" and rows["0"]["best_val_loss"] == ""
    assert rows["1"]["status"] == "completed"


def test_grid_summary_has_one_row_per_job(grid_sweep: Path) -> None:
    rows = _read_csv(grid_sweep / sweep.SUMMARY_CSV)
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert {(r["model.d_model"], float(r["train.learning_rate"])) for r in rows} == {
        ("8", 1e-4), ("8", 5e-4), ("16", 1e-4), ("16", 5e-4)}
    assert {Path(r["dir"]) for r in rows} == {p.resolve() for p in _job_dirs(grid_sweep)}
    _assert_rows_match_metrics(rows)
    for row in rows:  # the full override list rides along in the CSV
        assert f"model.d_model={row['model.d_model']}" in row["overrides"].split()
    markdown = (grid_sweep / sweep.SUMMARY_MD).read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| job | model.d_model | train.learning_rate | best_val_loss | test_mse")
    assert "test_skill" in table[0] and "test_smape" in table[0] and "| test_mape" not in table[0]
    assert len(table) == 1 + 4  # every setting ran once: no mean ± std section
    assert len(_read_csv(grid_sweep / sweep.SUMMARY_BY_SETTING_CSV)) == 4
    best = min(rows, key=lambda r: float(r["best_val_loss"]))
    assert f"Best: job {best['job']} " in markdown


# ------------------------------------------------------------------------------------------ summary from disk
def _fake_job(root: Path, num: int, overrides: list[str], metrics: dict | None = None,
              record: dict | None = None) -> Path:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}}}))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if record is not None:
        (job / sweep.JOB_RECORD).write_text(json.dumps(record))
    return job


def test_summary_is_rebuilt_from_the_sweep_directory_alone(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """What a remote launcher leaves: no in-process records, only files (and a job that never reported)."""
    metrics = {"training": {"best_val_loss": 0.5},
               "test": {"model": {"scaled": {"mse": 0.25, "mae": 0.4}}}}
    _fake_job(tmp_path, 10, ["model.d_model=512", "+train.seed=1", "dataset=ETTh1"], metrics=metrics)
    _fake_job(tmp_path, 2, ["model.d_model=256", "+train.seed=1", "dataset=ETTh1"],
              record={"status": "failed", "error": "RuntimeError: out of memory"})
    _fake_job(tmp_path, 3, ["model.d_model=128", "dataset=ETTh1"], record={"status": "completed",
                                                                           "return_value": 0.75})
    _fake_job(tmp_path, 4, ["model.d_model=64", "+train.seed=1", "dataset=ETTh1"])
    (tmp_path / ".submitit").mkdir()  # launcher bookkeeping is not a job

    assert sweep.main([str(tmp_path)]) == 0
    rows = _read_csv(tmp_path / sweep.SUMMARY_CSV)
    assert [r["job"] for r in rows] == ["2", "3", "4", "10"]  # numeric order, not by name
    assert [r["status"] for r in rows] == ["failed", "completed", "incomplete", "completed"]
    assert rows[0]["error"] == "RuntimeError: out of memory"
    assert rows[1]["best_val_loss"] == "0.75" and rows[1]["test_mse"] == ""  # return value, no metrics.json
    assert (rows[3]["best_val_loss"], rows[3]["test_mse"], rows[3]["test_mae"]) == ("0.5", "0.25", "0.4")
    # d_model differs everywhere; train.seed is absent from one job, so it differs too; dataset is common
    assert list(rows[0])[:3] == ["job", "model.d_model", "train.seed"]
    assert "dataset" not in rows[0]
    markdown = (tmp_path / sweep.SUMMARY_MD).read_text()
    assert "Common overrides: `dataset=ETTh1`" in markdown
    assert "failed: RuntimeError: out of memory" in markdown
    assert "Best: job 10 (best_val_loss 0.5)" in markdown
    assert "wrote" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ seeds
def _by_setting(sweep_dir: Path) -> list[dict[str, str]]:
    return _read_csv(sweep_dir / sweep.SUMMARY_BY_SETTING_CSV)


def test_seed_summary_groups_by_the_other_overrides(tmp_path: Path) -> None:
    """Two settings x three seeds, one job failed: mean ± sample std over the completed jobs of each."""
    values = {("8", "1"): 0.50, ("8", "2"): 0.40, ("8", "3"): 0.30, ("16", "1"): 0.20, ("16", "2"): 0.26}
    num = 0
    for d_model in ("8", "16"):
        for seed in ("1", "2", "3"):
            overrides = [f"model.d_model={d_model}", f"train.seed={seed}", "dataset=ETTh1",
                         "train.learning_rate=5e-4", "model.mix=false"]
            if seed == "2":  # how a job ran does not split a setting, nor how a value is spelled
                overrides = [*overrides[:3], "train.learning_rate=0.0005", "model.mix=False",
                             "train.threads=2", "train.resume=runs/x/1"]
            if (d_model, seed) in values:
                v = values[(d_model, seed)]
                metrics = {"training": {"best_val_loss": v},
                           "test": {"model": {"scaled": {"mse": 2 * v, "skill": 1 - v},
                                              "original": {"mase": v / 3, "wape": None}}}}
                _fake_job(tmp_path, num, overrides, metrics=metrics, record={"status": "completed"})
            else:
                _fake_job(tmp_path, num, overrides, record={"status": "failed", "error": "RuntimeError: x"})
            num += 1
    sweep.write_summary(tmp_path)
    rows = _by_setting(tmp_path)
    assert [r["model.d_model"] for r in rows] == ["8", "16"]
    assert [(r["jobs"], r["n"], r["seeds"]) for r in rows] == [("3", "3", "1 2 3"), ("3", "2", "1 2")]
    for row, d_model in zip(rows, ("8", "16"), strict=True):
        v = np.array([values[k] for k in values if k[0] == d_model])
        for metric, scale in (("best_val_loss", v), ("test_mse", 2 * v), ("test_skill", 1 - v),
                              ("test_mase", v / 3)):
            assert float(row[f"{metric}_mean"]) == pytest.approx(scale.mean(), rel=1e-12)
            assert float(row[f"{metric}_std"]) == pytest.approx(scale.std(ddof=1), rel=1e-12)
            assert row[f"{metric}_n"] == str(len(v))
        assert row["test_wape_mean"] == "" and row["test_wape_n"] == "0"  # null in metrics.json
        assert row["overrides"] == (f"model.d_model={d_model} dataset=ETTh1 train.learning_rate=5e-4"
                                    " model.mix=false")
    markdown = (tmp_path / sweep.SUMMARY_MD).read_text()
    assert "## Mean ± std over seeds" in markdown
    section = markdown.split("## Mean ± std over seeds")[1]
    assert "| model.d_model | n | seeds | best_val_loss | test_mse |" in section
    assert "| 16 | 2 of 3 | 1, 2 | 0.23 ± 0.042 |" in section  # mean 0.23, sample std 0.0424


def test_seed_summary_columns_show_only_values_that_differ(tmp_path: Path) -> None:
    """Two settings that spell one learning rate differently differ only in d_model: only it is a column."""
    from informer.training.seed_summary import group_by_setting, setting_keys

    for num, overrides in enumerate([["model.d_model=8", "train.learning_rate=5e-4", "train.seed=1"],
                                     ["model.d_model=16", "train.learning_rate=0.0005", "train.seed=1"],
                                     ["model.d_model=16", "train.learning_rate=5.0e-4", "train.seed=2"]]):
        _fake_job(tmp_path, num, overrides, record={"status": "completed"})
    rows = sweep.collect_sweep(tmp_path)
    settings = group_by_setting(rows)
    assert [len(s.jobs) for s in settings] == [1, 2]
    assert setting_keys(settings) == ["model.d_model"]
    assert sweep.varying_keys(rows) == ["model.d_model", "train.seed"]  # the per-job table's columns


@pytest.fixture(scope="module")
def seed_sweep(ett_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("seeds")
    sweep_dir = cwd / "sweep"
    args = ["-m", "dataset=ETTh1", *tiny_overrides(ett_dir, **SHORT, **{"train.seed": "1,2"}),
            f"hydra.sweep.dir={sweep_dir}"]
    result = run_script(TRAIN_SCRIPT, args, cwd=cwd, timeout=400)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "mean ± std over seeds" in result.stdout + result.stderr
    return sweep_dir


def test_two_seed_sweep_reports_mean_and_std_of_the_jobs_metrics(seed_sweep: Path) -> None:
    jobs = _job_dirs(seed_sweep)
    assert len(jobs) == 2
    metrics = [json.loads((job / "metrics.json").read_text()) for job in jobs]
    rows = _by_setting(seed_sweep)
    assert len(rows) == 1 and (rows[0]["jobs"], rows[0]["n"], rows[0]["seeds"]) == ("2", "2", "1 2")
    paths = {"best_val_loss": ("training", "best_val_loss"),
             "test_mse": ("test", "model", "scaled", "mse"),
             "test_mae": ("test", "model", "scaled", "mae"),
             "test_skill": ("test", "model", "scaled", "skill"),
             "test_mase": ("test", "model", "original", "mase"),
             "test_wape": ("test", "model", "original", "wape"),
             "test_smape": ("test", "model", "original", "smape"),
             "val_skill": ("val", "model", "scaled", "skill")}
    for metric, path in paths.items():
        values = []
        for job_metrics in metrics:
            node = job_metrics
            for key in path:
                node = node[key]
            values.append(node)
        assert float(rows[0][f"{metric}_mean"]) == pytest.approx(np.mean(values), rel=1e-12), metric
        assert float(rows[0][f"{metric}_std"]) == pytest.approx(np.std(values, ddof=1), rel=1e-9), metric
        assert rows[0][f"{metric}_n"] == "2"
    markdown = (seed_sweep / sweep.SUMMARY_MD).read_text()
    per_job = [line for line in markdown.split("## Mean ± std")[0].splitlines() if line.startswith("| ")]
    assert len(per_job) == 1 + 2  # the per-job table is still there, beside the by-setting one
    assert "| 2 | 1, 2 |" in markdown.split("## Mean ± std over seeds")[1]


def test_summary_cli_rejects_a_missing_directory(tmp_path: Path) -> None:
    assert sweep.main([str(tmp_path / "nope")]) == 2


def test_slurm_env_export_is_a_no_op_outside_submitit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "4")  # a plain srun with several tasks is left to the user
    assert sweep.export_slurm_torch_env() is False


def test_slurm_env_export_gives_each_task_its_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("submitit")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        # setenv first so that monkeypatch also removes what the export sets (a leaked RANK would turn
        # later training runs of this session into distributed ones)
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "42", "SLURM_NTASKS": "4",
             "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "gpu-node7",
             "SLURM_PROCID": "2", "SLURM_LOCALID": "2"}
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    assert sweep.export_slurm_torch_env() is True
    import os

    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("2", "4", "2")
    assert os.environ["MASTER_ADDR"] == "gpu-node7"
    assert sweep.export_slurm_torch_env() is False  # already set: never overwritten


# ------------------------------------------------------------------------------------------ optuna
OPTUNA_PRESET = REPO / "configs" / "hparams_search" / "optuna.yaml"


def test_optuna_search_space_names_real_config_fields() -> None:
    """Runs without the plugin: every searched key exists in the schema (a renamed field would
    otherwise only fail once a search starts)."""
    preset = OmegaConf.load(OPTUNA_PRESET)
    schema = OmegaConf.structured(TrainAppConfig)
    params = preset.hydra.sweeper.params
    assert set(params) >= {"train.learning_rate", "model.d_model", "model.dropout"}
    for key in params:
        assert OmegaConf.select(schema, key, default="<missing>") != "<missing>", key
    assert preset.hydra.sweeper.direction == "minimize"
    assert str(params["train.learning_rate"]).startswith("tag(log")


@pytest.fixture(scope="module")
def optuna_sweep(ett_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the `sweep` extra is not installed")
    cwd = tmp_path_factory.mktemp("optuna")
    sweep_dir = cwd / "sweep"
    extra = {**SHORT, "model.d_model": "choice(8,16)"}  # a tiny search space for d_model
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=3", "dataset=ETTh1",
            *tiny_overrides(ett_dir, **extra), f"hydra.sweep.dir={sweep_dir}"]
    result = run_script(TRAIN_SCRIPT, args, cwd=cwd, timeout=400)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return sweep_dir


def test_optuna_preset_runs_three_trials(optuna_sweep: Path) -> None:
    jobs = _job_dirs(optuna_sweep)
    assert [p.name for p in jobs] == ["0", "1", "2"]
    for job_dir in jobs:
        _assert_job_outputs(job_dir)
    results = OmegaConf.load(optuna_sweep / "optimization_results.yaml")
    # model.e_layers is in the preset's space but fixed by the tiny overrides: a fixed value wins
    assert set(results.best_params) == {"train.learning_rate", "model.d_model", "model.dropout"}
    rows = _read_csv(optuna_sweep / sweep.SUMMARY_CSV)
    assert len(rows) == 3
    _assert_rows_match_metrics(rows)
    for row in rows:
        assert 1e-5 <= float(row["train.learning_rate"]) <= 1e-3
        assert row["model.d_model"] in ("8", "16")
        assert 0.0 <= float(row["model.dropout"]) <= 0.3
    assert results.best_value == pytest.approx(min(float(r["best_val_loss"]) for r in rows), rel=1e-12)


# ------------------------------------------------------------------------------------------ submitit
def test_slurm_launcher_config_composes() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the `sweep` extra is not installed")
    from hydra import compose, initialize_config_dir

    from informer.config import register_configs

    register_configs()
    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
                 "hydra.launcher.tasks_per_node=4"]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 4, 4)
    assert launcher.timeout_min > 0


def test_jobs_run_by_another_process_are_summarised(ett_dir: Path, tmp_path: Path) -> None:
    """submitit's local executor runs each job in its own process, as SLURM would on other machines."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the `sweep` extra is not installed")
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "dataset=ETTh1",
            *tiny_overrides(ett_dir, **SHORT, **{"model.d_model": "8,16"}), f"hydra.sweep.dir={sweep_dir}"]
    result = run_script(TRAIN_SCRIPT, args, cwd=tmp_path, timeout=400)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    rows = _read_csv(sweep_dir / sweep.SUMMARY_CSV)
    assert [r["model.d_model"] for r in rows] == ["8", "16"]
    _assert_rows_match_metrics(rows)

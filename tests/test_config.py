"""Every config preset composes against the schemas; typos, wrong types and unsupported values fail early."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from training_helpers import REPO, TRAIN_SCRIPT, run_script, tiny_overrides

from informer.config import (
    PAPER_ARCHITECTURE,
    DatasetConfig,
    ModelSpec,
    TrainAppConfig,
    check_train_config,
    model_config,
    register_configs,
    to_app_config,
)
from informer.errors import UserError
from informer.training.registry import LOSSES
from informer.training.schedule import SCHEDULES, TYPE2_TABLE, learning_rate

CONFIGS = REPO / "configs"


def _options(group: str) -> list[str]:
    """The group's options, subfolders included (``paper/ETTh1_M_24``)."""
    folder = CONFIGS / group
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))


def _compose(overrides: list[str], name: str = "train"):
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        return compose(name, overrides=overrides)


def _checked(overrides: list[str]) -> TrainAppConfig:
    app = to_app_config(_compose(overrides))
    check_train_config(app)
    return app


def test_groups_hold_the_documented_options() -> None:
    assert _options("dataset") == ["ETTh1", "ETTh2", "ETTm1", "ETTm2", "custom"]
    assert _options("model") == ["informer", "informer_stack", "transformer"]
    horizons = (24, 48, 168, 336, 720)
    tasks = {f"{d}_{f}_{h}" for d in ("ETTh1", "ETTh2") for f in "MS" for h in horizons}
    assert set(_options("experiment")) == tasks | {f"paper/{task}" for task in tasks}


@pytest.mark.parametrize("dataset", _options("dataset"))
def test_every_dataset_composes(dataset: str) -> None:
    extra = ["dataset.path=my.csv"] if dataset == "custom" else []
    app = _checked([f"dataset={dataset}", *extra])
    assert app.dataset.name == dataset


@pytest.mark.parametrize("model", _options("model"))
def test_every_model_composes(model: str) -> None:
    app = _checked([f"model={model}"])
    assert (app.model.d_model, app.model.n_heads, app.model.d_ff) == (128, 8, 256)


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes(experiment: str) -> None:
    app = _checked([f"experiment={experiment}"])
    name, features, horizon = experiment.removeprefix("paper/").split("_")
    assert (app.dataset.name, app.dataset.features, app.model.pred_len) == (name, features, int(horizon))
    if experiment.startswith("paper/") or experiment not in TUNED_ON_VALIDATION:
        assert app.train.learning_rate == 1e-4  # the paper's training setup


# Task presets whose lengths / layers and learning rate were chosen on validation instead of taken from the
# official scripts (the preset files say why).
TUNED_ON_VALIDATION = {
    "ETTh1_M_168": ("seq_len", "label_len"),
    "ETTh2_M_168": ("seq_len", "label_len", "e_layers", "d_layers"),
}


@pytest.mark.parametrize("task", [o for o in _options("experiment") if not o.startswith("paper/")])
def test_paper_presets_are_the_task_with_the_papers_architecture(task: str) -> None:
    """``experiment=paper/X`` = ``experiment=X`` (our default architecture) + PAPER_ARCHITECTURE, and the
    official lengths, layers and learning rate where X's were chosen on validation."""
    ours, paper = _checked([f"experiment={task}"]), _checked([f"experiment=paper/{task}"])
    tuned = TUNED_ON_VALIDATION.get(task, ())
    assert paper.dataset == ours.dataset
    assert paper.train == dataclasses.replace(ours.train, learning_rate=1e-4)
    assert (ours.train.learning_rate != 1e-4) == bool(tuned)
    official = {field: getattr(paper.model, field) for field in tuned}
    assert paper.model == dataclasses.replace(ours.model, **PAPER_ARCHITECTURE, **official)
    assert (paper.model.norm, paper.model.d_model, paper.model.d_ff) == ("none", 512, 2048)
    model = model_config(paper.model, paper.dataset.features, n_columns=7, freq="h")
    assert not model.channel_independent


def test_evaluate_config_composes() -> None:
    cfg = _compose(["checkpoint=run/checkpoints/best.pt"], name="evaluate")
    assert cfg.split == "test" and cfg.checkpoint == "run/checkpoints/best.pt"


@pytest.mark.parametrize(("experiment", "lengths"), [
    ("ETTh1_M_24", (48, 48, 24)), ("ETTh1_M_48", (96, 48, 48)), ("paper/ETTh1_M_168", (168, 168, 168)),
    ("ETTh1_M_336", (168, 168, 336)), ("ETTh1_M_720", (336, 336, 720)), ("ETTh1_S_24", (720, 168, 24)),
    ("paper/ETTh2_M_168", (336, 336, 168)), ("ETTh1_M_168", (96, 48, 168)), ("ETTh2_M_168", (96, 48, 168)),
])
def test_preset_lengths(experiment: str, lengths: tuple[int, int, int]) -> None:
    app = _checked([f"experiment={experiment}"])
    assert (app.model.seq_len, app.model.label_len, app.model.pred_len) == lengths


@pytest.mark.parametrize(("lookback", "lengths"), [("seq336", (336, 168)), ("seq720", (720, 360))])
def test_a_long_lookback_replaces_the_input_length(lookback: str, lengths: tuple[int, int]) -> None:
    app = _checked(["experiment=ETTh1_M_168", f"lookback={lookback}"])
    assert (app.model.seq_len, app.model.label_len, app.model.pred_len) == (*lengths, 168)


def test_experiment_combines_with_model_group() -> None:
    app = _checked(["experiment=ETTh1_M_48", "model=transformer"])
    assert (app.model.attn, app.model.distil, app.model.seq_len) == ("full", False, 96)


def test_defaults_are_the_paper_training_setup() -> None:
    app = _checked([])
    tr = app.train
    assert (tr.epochs, tr.batch_size, tr.learning_rate, tr.patience, tr.lradj, tr.loss) == \
        (6, 32, 1e-4, 3, "type1", "mse")
    assert (app.dataset.name, app.model.name, app.model.attn) == ("ETTh1", "informer", "prob")


@pytest.mark.parametrize(("features", "independent"), [("M", True), ("S", True), ("MS", False)])
def test_default_model_is_the_validated_setting(features: str, independent: bool) -> None:
    """RevIN + channel independence at width 128 (README Results); MS keeps one multivariate network."""
    app = _checked([f"dataset.features={features}"])
    model = model_config(app.model, features, n_columns=7, freq="h")
    chosen = (model.norm, model.d_model, model.d_ff, model.channel_independent)
    assert chosen == ("revin", 128, 256, independent)


def test_transformer_is_full_attention_without_distilling() -> None:
    app = _checked(["model=transformer"])
    assert app.model.attn == "full" and app.model.distil is False
    assert app.model == dataclasses.replace(_checked([]).model, attn="full", distil=False)


@pytest.mark.parametrize("path", sorted(p.relative_to(CONFIGS) for p in CONFIGS.glob("[dm]*/*.yaml")))
def test_group_files_hold_only_differences_from_the_schema(path: Path) -> None:
    """A dataset or model file sets a key only where it differs from the schema default (name aside)."""
    schema = {"dataset": DatasetConfig(), "model": ModelSpec()}[path.parts[0]]
    values = {k: v for k, v in yaml.safe_load((CONFIGS / path).read_text()).items() if k != "defaults"}
    same = [k for k, v in values.items() if k != "name" and getattr(schema, k) == v]
    assert not same, f"{path} repeats schema defaults: {same}"


@pytest.mark.parametrize("override", ["model.d_modle=3", "train.epoch=3", "dataset.traget=OT"])
def test_typo_fails_at_composition(override: str) -> None:
    with pytest.raises(ConfigCompositionException, match="Could not override"):
        _compose([override])


@pytest.mark.parametrize("override", ["model.d_model=abc", "train.batch_size=1.5", "model.distil=maybe"])
def test_wrong_type_fails_at_composition(override: str) -> None:
    with pytest.raises(ConfigCompositionException):
        _compose([override])


@pytest.mark.parametrize(("override", "field"), [
    ("dataset.name=ETTh9", "dataset.name"), ("model.attn=sparse", "model.attn"),
    ("train.lradj=type3", "train.lradj"), ("train.amp_dtype=fp8", "train.amp_dtype"),
    ("train.loss=quantile", "train.loss"), ("dataset.features=X", "dataset.features"),
    ("train.batch_size=0", "train.batch_size"), ("model.label_len=200", "model.label_len"),
    ("model.n_heads=3", "model.d_model"), ("train.limit_train_batches=0", "train.limit_train_batches"),
    ("forecast.interval_method=adaptive", "forecast.interval_method"),
])
def test_values_the_schema_cannot_catch_raise_user_error(override: str, field: str) -> None:
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        _checked([override])


def test_allowed_names_come_from_the_registries() -> None:
    for loss in LOSSES:
        # a quantile loss (pinball) goes with a quantile model
        extra = ["model.quantiles=[0.1,0.5,0.9]"] if LOSSES[loss].quantile else []
        assert _checked([f"train.loss={loss}", *extra]).train.loss == loss
    for schedule in SCHEDULES:
        assert _checked([f"train.lradj={schedule}"]).train.lradj == schedule
    with pytest.raises(UserError, match="choose one of mse, mae, huber"):
        _checked(["train.loss=l3"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_user_error() -> None:
    from informer.training.distributed import resolve_device

    _checked(["train.device=cuda"])  # an allowed value; whether this machine has a GPU is checked at start
    with pytest.raises(UserError, match=r"train\.device=cuda"):
        resolve_device("cuda")


def test_global_batch_must_split_evenly_across_processes() -> None:
    app = to_app_config(_compose(["train.batch_size=30"]))
    with pytest.raises(UserError, match="divisible"):
        check_train_config(app, world_size=4)


def test_cli_typo_and_user_error_exit_cleanly(tmp_path: Path, ett_dir: Path) -> None:
    typo = run_script(TRAIN_SCRIPT, ["model.d_modle=3", f"hydra.run.dir={tmp_path / 'a'}"], cwd=tmp_path)
    assert typo.returncode != 0 and "d_modle" in typo.stderr
    bad = run_script(TRAIN_SCRIPT, [*tiny_overrides(ett_dir), "train.lradj=type3",
                                    f"hydra.run.dir={tmp_path / 'b'}"], cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and "train.lradj" in bad.stderr
    assert "Traceback" not in bad.stderr + bad.stdout


def test_learning_rate_schedules() -> None:
    assert [learning_rate("type1", 1e-4, e) for e in range(3)] == [1e-4, 5e-5, 2.5e-5]
    assert learning_rate("type2", 1e-4, 0) == 1e-4 and learning_rate("type2", 1e-4, 1) == 1e-4
    assert learning_rate("type2", 1e-4, 2) == TYPE2_TABLE[2]
    assert learning_rate("type2", 1e-4, 5) == TYPE2_TABLE[4]
    assert learning_rate("cosine", 1e-4, 0, 0.0, epochs=4) == 1e-4
    assert math.isclose(learning_rate("cosine", 1e-4, 2, 0.0, epochs=4), 5e-5)
    assert learning_rate("cosine", 1e-4, 3, 0.999, epochs=4) < 1e-8
    assert learning_rate("constant", 3e-4, 7) == 3e-4


def test_resolved_config_round_trips_to_the_dataclass() -> None:
    app = _checked(["experiment=ETTh2_S_336"])
    again = to_app_config(OmegaConf.create(OmegaConf.to_container(OmegaConf.structured(app))))
    assert again == app

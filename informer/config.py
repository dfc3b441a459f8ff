"""Typed configuration: one dataclass per concern, registered with Hydra's ConfigStore.

The YAML files under ``configs/`` are validated against these schemas, so a typo or a wrong type in
an override fails at start-up with Hydra's own message; values a type cannot rule out (a name from a
list, a positive number) are checked here too, by :func:`check_train_config`, so the rest of the code
trusts its config. Sizes that follow from the data (``enc_in``, ``dec_in``, ``c_out``) and the data
frequency are never typed by the user: :func:`derive_model_config` computes them in one place.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from informer.errors import UserError

ATTENTION_KINDS = ("prob", "full", "favor")
NORMS = ("none", "revin")
EMBED_KINDS = ("timeF", "fixed", "learned")
ACTIVATIONS = ("gelu", "relu")
FEATURE_MODES = ("M", "S", "MS")
MODEL_NAMES = ("informer", "informer_stack")
ETT_NAMES = ("ETTh1", "ETTh2", "ETTm1", "ETTm2")
DATASET_NAMES = (*ETT_NAMES, "custom")
LR_SCHEDULES = ("type1", "type2", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
AMP_DTYPES = ("bf16", "fp16")
DEFAULT_INTERVALS = (0.8, 0.95)  # forecast.intervals: the calibrated interval levels of every run
INTERVAL_METHODS = ("normalized", "split")  # forecast.interval_method (informer.intervals)
PINBALL_LOSS = "pinball"  # the train.loss that quantile models (model.quantiles) are trained with
FLOAT32_MAX = 3.4028234663852886e38


@dataclass
class ModelSpec:
    """The architecture as the user chooses it (the ``model`` config group).

    The defaults are the best setting found on ETTh1's validation split (README "Results"): the paper's
    Informer (ProbSparse encoder with distilling, generative decoder) given RevIN and channel
    independence at width 128. The paper's own architecture (``norm: none``, one multivariate network
    of width 512) is :data:`PAPER_ARCHITECTURE`, set by the ``experiment=paper/...`` presets.
    """

    name: str = "informer"  # informer | informer_stack
    seq_len: int = 96
    label_len: int = 48
    pred_len: int = 24
    d_model: int = 128
    n_heads: int = 8
    e_layers: int = 2
    d_layers: int = 1
    s_layers: list[int] = field(default_factory=lambda: [3, 2, 1])  # InformerStack only
    d_ff: int = 256
    factor: int = 5
    dropout: float = 0.05
    attn: str = "prob"  # prob | full | favor (encoder and decoder self-attention)
    embed: str = "timeF"  # timeF | fixed | learned
    activation: str = "gelu"
    distil: bool = True
    mix: bool = True
    output_attention: bool = False
    nb_features: int | None = None  # FAVOR+ random features; None -> a multiple of the head size
    feature_redraw_interval: int = 1000  # FAVOR+: training steps between redraws (0: never)
    norm: str = "revin"  # none | revin: normalise each input window by its own statistics
    revin_affine: bool = True  # RevIN: a learned per-channel affine map after the normalisation
    destationary: bool = False  # de-stationary attention (needs norm=revin, attn=prob or full)
    # each variable as its own series through one shared network; null: on for features M and S, off
    # for MS (whose target must read the other columns)
    channel_independent: bool | None = None
    # quantile levels to forecast (a sorted list in (0, 1), e.g. [0.1, 0.5, 0.9]); null: a point forecast
    quantiles: list[float] | None = None


# The paper's architecture where it differs from ModelSpec's defaults: the experiment=paper/... presets set
# these, and they are ModelConfig's own defaults.
PAPER_ARCHITECTURE: dict[str, Any] = {"norm": "none", "channel_independent": False, "d_model": 512,
                                      "d_ff": 2048}


@dataclass
class ModelConfig(ModelSpec):
    """Everything needed to build the network: the spec plus sizes derived from the data."""

    # Built directly (not through derive_model_config), a ModelConfig is the paper's network; these
    # defaults are also what a field's absence means in a checkpoint written before it existed.
    d_model: int = PAPER_ARCHITECTURE["d_model"]
    d_ff: int = PAPER_ARCHITECTURE["d_ff"]
    norm: str = PAPER_ARCHITECTURE["norm"]
    channel_independent: bool = PAPER_ARCHITECTURE["channel_independent"]
    enc_in: int = 7
    dec_in: int = 7
    c_out: int = 7
    freq: str = "h"
    # known-future covariates: the last n_known_future columns of x_mark (after the time features)
    n_known_future: int = 0

    def validate(self) -> ModelConfig:
        """Raise ValueError naming the offending field; return self for chaining."""
        positive = ("seq_len", "pred_len", "d_model", "n_heads", "e_layers", "d_layers", "d_ff",
                    "factor", "enc_in", "dec_in", "c_out")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.label_len, int) or self.label_len < 0:
            raise ValueError(f"model.label_len must be a non-negative integer, got {self.label_len!r}")
        if self.label_len > self.seq_len:
            raise ValueError(
                f"model.label_len ({self.label_len}) must not exceed model.seq_len ({self.seq_len}): "
                "the decoder's start token is taken from the end of the encoder input"
            )
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout!r}")
        for name, allowed in (("attn", ATTENTION_KINDS), ("embed", EMBED_KINDS),
                              ("activation", ACTIVATIONS), ("name", MODEL_NAMES), ("norm", NORMS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if self.name == "informer_stack" and (
            not self.s_layers or any(int(n) <= 0 for n in self.s_layers)
        ):
            raise ValueError(
                f"model.s_layers must be a non-empty list of positive integers, got {self.s_layers!r}"
            )
        if self.destationary and self.norm != "revin":
            raise ValueError("model.destationary=true needs model.norm=revin: the de-stationary factors are "
                             "learned from the statistics that RevIN removes from each window")
        if self.destationary and self.attn not in ("prob", "full"):
            raise ValueError(f"model.destationary=true rescales attention scores, which model.attn="
                             f"{self.attn} does not form; use model.attn=prob or full")
        if self.channel_independent and not self.enc_in == self.dec_in == self.c_out:
            raise ValueError(f"model.channel_independent=true forecasts every input variable from its own "
                             f"history, so it needs as many outputs as inputs (enc_in={self.enc_in}, "
                             f"c_out={self.c_out}); set model.channel_independent=false")
        if self.nb_features is not None and self.nb_features <= 0:
            raise ValueError(f"model.nb_features must be positive or null, got {self.nb_features!r}")
        if self.feature_redraw_interval < 0:
            raise ValueError("model.feature_redraw_interval must be >= 0")
        if not isinstance(self.n_known_future, int) or self.n_known_future < 0:
            raise ValueError(f"model.n_known_future must be a non-negative integer, "
                             f"got {self.n_known_future!r}")
        if self.quantiles is not None:
            check_probability_list("model.quantiles", self.quantiles, increasing=True)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so a checkpoint can hold it under ``torch.load(weights_only=True)``."""
        out = dataclasses.asdict(self)
        out["s_layers"] = [int(n) for n in self.s_layers]
        if self.quantiles is not None:
            out["quantiles"] = [float(q) for q in self.quantiles]
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown model config field(s): {sorted(unknown)}")
        return cls(**values).validate()


@dataclass
class DatasetConfig:
    """What to read and how to slice it (the ``dataset`` config group)."""

    name: str = "ETTh1"  # ETTh1 | ETTh2 | ETTm1 | ETTm2 | custom
    path: str | None = None  # custom: the CSV; ETT: resolved inside paths.data_dir when null
    date_column: str = "date"
    target: str = "OT"
    features: str = "M"  # M: multi->multi, S: target->target, MS: multi->target
    freq: str | None = None  # pandas alias ('h', '15min', 'B', ...); inferred from timestamps when null
    columns: list[str] | None = None  # custom: the value columns to use (default: all but the date)
    # covariate roles (informer.data.roles): columns whose future values are known at forecast time
    # (inputs of every encoder and decoder row, never forecast), past-only inputs (default for MS: every
    # other value column), and the forecast variables (default: target for S/MS, the rest for M)
    known_future: list[str] = field(default_factory=list)
    past_covariates: list[str] | None = None
    targets: list[str] | None = None
    seasonal_period: int | None = None  # seasonal-naive baseline period; null: one day at freq


@dataclass
class TrainConfig:
    epochs: int = 6
    batch_size: int = 32  # global batch: split evenly across DDP ranks
    eval_batch_size: int = 64
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    patience: int = 3
    lradj: str = "type1"  # a name in informer.training.schedule.SCHEDULES
    loss: str = "mse"  # a name in informer.training.registry.LOSSES; also the early-stopping criterion
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # used on CUDA only
    amp_dtype: str = "bf16"  # bf16 | fp16
    seed: int = 2021
    num_workers: int = 0
    threads: int | None = None  # torch intra-op threads on CPU; null: torch's default
    limit_train_batches: int | None = None  # cap batches per epoch (smoke tests, quick looks)
    limit_eval_batches: int | None = None
    checkpoint_every: int = 200  # steps between last.pt writes (0: epoch ends only)
    resume: str | None = None  # a run directory or a last.pt to continue
    plot_windows: int = 3  # fixed validation windows drawn to TensorBoard each epoch
    grad_clip: float | None = None
    compile: bool = False  # torch.compile the model


@dataclass
class ForecastConfig:
    # levels of the conformal intervals calibrated on the validation split after training and stored
    # in best.pt (each in (0, 1), e.g. 0.8 for an 80 % interval); [] calibrates none
    intervals: list[float] = field(default_factory=lambda: list(DEFAULT_INTERVALS))
    # a point model's conformal intervals: normalized (forecast -+ margin x the look-back window's
    # per-variable std: narrower after calm windows, wider after volatile ones) or split (forecast -+ a
    # fixed margin per step and variable). Ignored by quantile models, which use CQR on their own
    # quantiles (split conformal for levels without a quantile pair)
    interval_method: str = "normalized"


@dataclass
class PathsConfig:
    # folder holding the ETT CSVs; the INFORMER_DATA_DIR environment variable overrides the default
    data_dir: str = "${oc.env:INFORMER_DATA_DIR,data/ETT-small}"


@dataclass
class TrainAppConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class EvaluateConfig:
    checkpoint: str = MISSING  # a best.pt or last.pt written by training
    split: str = "test"  # train | val | test
    data_dir: str | None = None  # folder holding the CSV; null: the file recorded in the checkpoint
    batch_size: int = 64  # any value gives the same metrics
    device: str = "auto"  # auto | cpu | cuda
    output: str | None = None  # also write the metrics to this JSON file
    # fit the conformal intervals on the validation split and store them in the checkpoint (in place)
    calibrate: bool = False
    intervals: list[float] | None = None  # with calibrate=true: the levels (null: forecast.intervals)
    # with calibrate=true: normalized | split (null: the run's forecast.interval_method, normalized for
    # runs older than the option)
    interval_method: str | None = None


def feature_sizes(features: str, n_columns: int, n_targets: int | None = None) -> tuple[int, int, int]:
    """(enc_in, dec_in, c_out) for a features mode and the number of value columns.

    ``n_targets``: the number of forecast variables when covariate roles decided them
    (:func:`informer.data.roles.resolve_roles`: the model's columns are the past covariates then the
    targets, so c_out = n_targets); None keeps the features mode's own rule.
    """
    if features not in FEATURE_MODES:
        raise ValueError(f"dataset.features must be one of {list(FEATURE_MODES)}, got {features!r}")
    if n_targets is not None:
        if not 1 <= n_targets <= n_columns:
            raise ValueError(f"need 1 <= number of targets <= number of columns, "
                             f"got {n_targets} of {n_columns}")
        return n_columns, n_columns, n_targets
    if features == "M":
        return n_columns, n_columns, n_columns
    if features == "MS":
        return n_columns, n_columns, 1
    if features == "S":
        return 1, 1, 1
    raise ValueError(f"dataset.features must be one of {list(FEATURE_MODES)}, got {features!r}")


def derive_model_config(spec: ModelSpec | dict[str, Any], features: str, n_columns: int,
                        freq: str, *, n_targets: int | None = None, n_known_future: int = 0) -> ModelConfig:
    """The single place where enc_in / dec_in / c_out, n_known_future and freq are filled in.

    ``n_targets`` and ``n_known_future`` come from the covariate roles (:mod:`informer.data.roles`);
    without them the sizes follow from ``features`` alone.
    """
    values = dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else dict(spec)
    enc_in, dec_in, c_out = feature_sizes(features, n_columns, n_targets)
    if values.get("channel_independent") is None:
        # on only where every input variable is also forecast (no past-only covariates)
        values["channel_independent"] = features != "MS" and c_out == enc_in
    elif values["channel_independent"] and features == "MS":
        raise ValueError("model.channel_independent=true reads every variable alone, so with "
                         "dataset.features=MS the target could not use the other columns; set "
                         "model.channel_independent=false (or leave it unset)")
    values.update(enc_in=enc_in, dec_in=dec_in, c_out=c_out, freq=freq, n_known_future=n_known_future)
    values["s_layers"] = [int(n) for n in values.get("s_layers") or []]
    return ModelConfig(**values).validate()


def model_config(spec: ModelSpec, features: str, n_columns: int, freq: str, *, n_targets: int | None = None,
                 n_known_future: int = 0) -> ModelConfig:
    """:func:`derive_model_config` for user input: its ValueErrors (they name the field) as UserErrors."""
    try:
        return derive_model_config(spec, features, n_columns, freq, n_targets=n_targets,
                                   n_known_future=n_known_future)
    except ValueError as exc:
        raise UserError(f"invalid model configuration: {exc}") from None


# ------------------------------------------------------------------------------------------ checks
def check_probability_list(field_name: str, values: Iterable[object], *,
                           increasing: bool = False) -> list[float]:
    """``values`` as floats, each strictly between 0 and 1 and distinct (and increasing with
    ``increasing``); ValueError naming ``field_name`` otherwise."""
    values = list(values)
    if any(isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 < v < 1.0 for v in values):
        raise ValueError(f"{field_name} must hold numbers strictly between 0 and 1, got {values!r}")
    numbers = [float(v) for v in values]
    if increasing and (not numbers or any(b <= a for a, b in itertools.pairwise(numbers))):
        raise ValueError(f"{field_name} must be a non-empty list sorted in increasing order without repeats "
                         f"(e.g. [0.1, 0.5, 0.9]), got {values!r}")
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"{field_name} must not repeat a value, got {values!r}")
    return numbers


def to_app_config(cfg: Any) -> TrainAppConfig:
    """A typed, fully resolved TrainAppConfig from a Hydra DictConfig, a plain dict or the dataclass."""
    if isinstance(cfg, TrainAppConfig):
        return cfg
    from omegaconf import OmegaConf

    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainAppConfig), cfg)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except Exception as exc:  # omegaconf raises several unrelated types for bad values
        raise UserError(f"invalid configuration: {exc}") from None


def check_choice(field_name: str, value: object, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise UserError(f"{field_name}={value!r} is not supported; choose one of {', '.join(allowed)}")


def _check_number(field_name: str, value: float | None, *, optional: bool = False,
                  zero: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or value < 0 or (value == 0 and not zero):
        raise UserError(f"{field_name} must be {'>= 0' if zero else '> 0'}, got {value!r}")


def check_train_config(app: TrainAppConfig, world_size: int = 1) -> None:
    """Raise UserError naming the field for every value the dataclass types cannot rule out."""
    # the names come from the registries that hold the functions (informer.training imports this module)
    from informer.training.registry import LOSSES
    from informer.training.schedule import SCHEDULES

    ds, tr = app.dataset, app.train
    check_choice("dataset.name", ds.name, DATASET_NAMES)
    check_choice("dataset.features", ds.features, FEATURE_MODES)
    from informer.data.roles import check_role_lists

    check_role_lists(ds.features, ds.target, ds.targets, ds.past_covariates, ds.known_future)
    if ds.name == "custom" and not ds.path:
        raise UserError("dataset=custom needs dataset.path=<file.csv>: the CSV to train on")
    if ds.seasonal_period is not None and ds.seasonal_period <= 0:
        raise UserError(f"dataset.seasonal_period must be a positive number of steps, "
                        f"got {ds.seasonal_period}")
    check_choice("train.lradj", tr.lradj, SCHEDULES)
    check_choice("train.device", tr.device, DEVICES)
    check_choice("train.amp_dtype", tr.amp_dtype, AMP_DTYPES)
    check_choice("train.loss", tr.loss, LOSSES)
    for name in ("epochs", "batch_size", "eval_batch_size", "patience", "learning_rate"):
        _check_number(f"train.{name}", getattr(tr, name))
    for name in ("learning_rate", "weight_decay", "grad_clip"):  # the optimizer works in float32
        value = getattr(tr, name)
        if value is not None and not abs(value) <= FLOAT32_MAX:
            raise UserError(f"train.{name}={value!r} is not a usable number (it must be finite and within "
                            "float32 range); use a value like 1e-4")
    for name in ("limit_train_batches", "limit_eval_batches", "threads", "grad_clip"):
        _check_number(f"train.{name}", getattr(tr, name), optional=True)
    for name in ("weight_decay", "num_workers", "checkpoint_every", "plot_windows"):
        _check_number(f"train.{name}", getattr(tr, name), zero=True)
    try:
        check_probability_list("forecast.intervals", app.forecast.intervals)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    check_choice("forecast.interval_method", app.forecast.interval_method, INTERVAL_METHODS)
    if tr.batch_size % world_size:
        raise UserError(f"train.batch_size={tr.batch_size} is the global batch size and must be divisible by "
                        f"the number of processes ({world_size}); pick a multiple of {world_size}")
    # the sizes that come from the data are not known yet: check the user's part with placeholders
    model_config(app.model, ds.features, n_columns=1, freq="h")
    # quantile models train with the pinball loss; it is asked for explicitly so that setting
    # model.quantiles never changes a loss the user chose without saying so
    if app.model.quantiles is not None and tr.loss != PINBALL_LOSS:
        raise UserError(f"model.quantiles={list(app.model.quantiles)} forecasts quantiles, which are trained "
                        f"with the pinball loss: add train.loss={PINBALL_LOSS} (train.loss={tr.loss} fits a "
                        "point forecast)")
    if tr.loss == PINBALL_LOSS and app.model.quantiles is None:
        raise UserError(f"train.loss={PINBALL_LOSS} scores quantile forecasts: set the levels too, e.g. "
                        "model.quantiles=[0.1,0.5,0.9]")


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """Relative paths are taken from the directory the command was started in, also under Hydra."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        from hydra.utils import get_original_cwd

        return (Path(get_original_cwd()) / path).resolve()
    return path.resolve()


def default_data_dir() -> str:
    return os.environ.get("INFORMER_DATA_DIR", "data/ETT-small")


def register_configs() -> None:
    """What Hydra needs before composing configs/: the schemas the YAML files extend, and the
    ``informer.run_dir`` resolver that configs/train.yaml names its run directory with."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainAppConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)
    cs.store(group="model", name="model_schema", node=ModelSpec)
    if not OmegaConf.has_resolver("informer.run_dir"):
        OmegaConf.register_new_resolver("informer.run_dir", _run_dir)


def _run_dir(default: str, resume: str | None = None) -> str:
    from informer.training.run import choose_run_dir

    return str(choose_run_dir(default, resume))

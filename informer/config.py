"""Typed configuration: one dataclass per concern, registered with Hydra's ConfigStore.

The YAML files under ``configs/`` are validated against these schemas, so a typo or a wrong type in
an override fails at start-up with Hydra's own message. Sizes that follow from the data (``enc_in``,
``dec_in``, ``c_out``) and the data frequency are never typed by the user: :func:`derive_model_config`
computes them in one place.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

ATTENTION_KINDS = ("prob", "full", "favor")
EMBED_KINDS = ("timeF", "fixed", "learned")
ACTIVATIONS = ("gelu", "relu")
FEATURE_MODES = ("M", "S", "MS")
MODEL_NAMES = ("informer", "informer_stack")
ETT_NAMES = ("ETTh1", "ETTh2", "ETTm1", "ETTm2")
DATASET_NAMES = (*ETT_NAMES, "custom")
LR_SCHEDULES = ("type1", "type2", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
AMP_DTYPES = ("bf16", "fp16")


@dataclass
class ModelSpec:
    """The architecture as the user chooses it (the ``model`` config group)."""

    name: str = "informer"  # informer | informer_stack
    seq_len: int = 96
    label_len: int = 48
    pred_len: int = 24
    d_model: int = 512
    n_heads: int = 8
    e_layers: int = 2
    d_layers: int = 1
    s_layers: list[int] = field(default_factory=lambda: [3, 2, 1])  # InformerStack only
    d_ff: int = 2048
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


@dataclass
class ModelConfig(ModelSpec):
    """Everything needed to build the network: the spec plus sizes derived from the data."""

    enc_in: int = 7
    dec_in: int = 7
    c_out: int = 7
    freq: str = "h"

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
                              ("activation", ACTIVATIONS), ("name", MODEL_NAMES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if self.name == "informer_stack" and (
            not self.s_layers or any(int(n) <= 0 for n in self.s_layers)
        ):
            raise ValueError(
                f"model.s_layers must be a non-empty list of positive integers, got {self.s_layers!r}"
            )
        if self.nb_features is not None and self.nb_features <= 0:
            raise ValueError(f"model.nb_features must be positive or null, got {self.nb_features!r}")
        if self.feature_redraw_interval < 0:
            raise ValueError("model.feature_redraw_interval must be >= 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so a checkpoint can hold it under ``torch.load(weights_only=True)``."""
        out = dataclasses.asdict(self)
        out["s_layers"] = [int(n) for n in self.s_layers]
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
    seasonal_period: int | None = None  # seasonal-naive baseline period; null: one day at freq


@dataclass
class TrainConfig:
    epochs: int = 6
    batch_size: int = 32  # global batch: split evenly across DDP ranks
    eval_batch_size: int = 64
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    patience: int = 3
    lradj: str = "type1"  # type1 (halve each epoch) | type2 | cosine | constant
    loss: str = "mse"
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
class PathsConfig:
    # folder holding the ETT CSVs; the INFORMER_DATA_DIR environment variable overrides the default
    data_dir: str = "${oc.env:INFORMER_DATA_DIR,data/ETT-small}"


@dataclass
class TrainAppConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


def feature_sizes(features: str, n_columns: int) -> tuple[int, int, int]:
    """(enc_in, dec_in, c_out) for a features mode and the number of value columns."""
    if features == "M":
        return n_columns, n_columns, n_columns
    if features == "MS":
        return n_columns, n_columns, 1
    if features == "S":
        return 1, 1, 1
    raise ValueError(f"dataset.features must be one of {list(FEATURE_MODES)}, got {features!r}")


def derive_model_config(spec: ModelSpec | dict[str, Any], features: str, n_columns: int,
                        freq: str) -> ModelConfig:
    """The single place where enc_in / dec_in / c_out and freq are filled in."""
    values = dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else dict(spec)
    enc_in, dec_in, c_out = feature_sizes(features, n_columns)
    values.update(enc_in=enc_in, dec_in=dec_in, c_out=c_out, freq=freq)
    values["s_layers"] = [int(n) for n in values.get("s_layers") or []]
    return ModelConfig(**values).validate()


def default_data_dir() -> str:
    return os.environ.get("INFORMER_DATA_DIR", "data/ETT-small")


def register_configs() -> None:
    """Register the schemas so YAML files can extend them (``defaults: [_schema_...]``)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainAppConfig)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)
    cs.store(group="model", name="model_schema", node=ModelSpec)

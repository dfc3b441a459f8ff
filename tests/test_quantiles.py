"""Quantile output: the pinball loss against numpy, quantiles that never cross (any weights, RevIN,
channel independence, every attention kind), RevIN's equivariance and channel independence's reassembly
for every quantile, the point forecast, config errors, and a tiny quantile run through training,
evaluation, forecasting, resume and the sweep summary."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from training_helpers import KillAt, tiny_config

from informer.checkpoint import load_checkpoint
from informer.config import ModelConfig, check_train_config, to_app_config
from informer.errors import UserError
from informer.intervals import point_forecast
from informer.model import build_model
from informer.training import TrainingInterrupted, evaluate_checkpoint, train
from informer.training.registry import LOSSES, loss_function, pinball_loss, run_summary

QUANTILES = [0.1, 0.5, 0.9]
SMALL = {"d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 2, "d_layers": 1, "seq_len": 24,
         "label_len": 12, "pred_len": 6, "enc_in": 3, "dec_in": 3, "c_out": 3, "dropout": 0.0}
QUANTILE_RUN = {"model.quantiles": QUANTILES, "train.loss": "pinball"}


def _inputs(batch: int = 4, seed: int = 0, scale: float = 5.0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x_enc = torch.randn(batch, 24, 3, generator=g) * scale + 3.0
    x_dec = torch.cat([x_enc[:, -12:], torch.zeros(batch, 6, 3)], dim=1)
    return x_enc, torch.randn(batch, 24, 4, generator=g), x_dec, torch.randn(batch, 18, 4, generator=g)


def _model(seed: int = 0, **options: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(**{**SMALL, "quantiles": QUANTILES, **options}).validate()).eval()


def test_pinball_loss_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    output = np.sort(rng.normal(size=(5, 4, 3, 3)), axis=-1)
    truth = rng.normal(size=(5, 4, 3))
    diffs = [truth - output[..., k] for k in range(len(QUANTILES))]
    expected = np.mean([np.mean(np.maximum(tau * d, (tau - 1) * d))
                        for d, tau in zip(diffs, QUANTILES, strict=True)])
    got = pinball_loss(torch.from_numpy(output), torch.from_numpy(truth), QUANTILES)
    assert float(got) == pytest.approx(expected, rel=1e-12)
    assert LOSSES["pinball"].quantile and LOSSES["pinball"].metric == "pinball"
    assert float(loss_function("pinball", QUANTILES)(torch.from_numpy(output), torch.from_numpy(truth))) == \
        pytest.approx(expected, rel=1e-12)


VARIANTS = [
    pytest.param({}, id="prob"),
    pytest.param({"attn": "full"}, id="full"),
    pytest.param({"attn": "favor"}, id="favor"),
    pytest.param({"name": "informer_stack", "s_layers": [2, 1]}, id="stack"),
    pytest.param({"norm": "revin"}, id="revin"),
    pytest.param({"norm": "revin", "destationary": True}, id="revin-destationary"),
    pytest.param({"norm": "revin", "channel_independent": True}, id="revin-channel-independent"),
    pytest.param({"channel_independent": True}, id="channel-independent"),
]


@pytest.mark.parametrize("options", VARIANTS)
def test_quantiles_never_cross_for_random_weights_and_inputs(options: dict) -> None:
    for seed in range(3):
        model = _model(seed, **options)
        with torch.no_grad():  # weights far from their initial values, RevIN's affine scale negative too
            for param in model.parameters():
                param.normal_(0.0, 1.0 if param.dim() < 2 else 0.3)
            if model.revin is not None and model.revin.affine:
                model.revin.weight.copy_(torch.tensor([1.5, -2.0, 0.5]))
        out = model(*_inputs(seed=seed, scale=10.0 * (seed + 1)))
        assert out.shape == (4, 6, 3, len(QUANTILES))
        assert torch.isfinite(out).all()
        assert (out.diff(dim=-1) >= 0).all(), options


def test_revin_denormalises_every_quantile() -> None:
    """With RevIN (positive affine scale): forecast(a x + c) = a forecast(x) + c, every quantile."""
    model = _model(1, norm="revin")
    x_enc, mark_enc, x_dec, mark_dec = _inputs(seed=2)
    a, c = torch.tensor([2.0, 0.5, 3.0]), torch.tensor([10.0, -4.0, 0.0])
    with torch.no_grad():
        base = model(x_enc, mark_enc, x_dec, mark_dec)
        moved = model(x_enc * a + c, mark_enc, x_dec * a + c, mark_dec)
    assert torch.allclose(moved, base * a[:, None] + c[:, None], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("norm", ["none", "revin"])
def test_channel_independent_reassembles_each_channels_quantiles(norm: str) -> None:
    """One shared network per channel: permuting the input channels permutes the output's."""
    model = _model(3, norm=norm, channel_independent=True)
    x_enc, mark_enc, x_dec, mark_dec = _inputs(seed=4)
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = model(x_enc, mark_enc, x_dec, mark_dec)  # [B, P, C, Q]
        permuted = model(x_enc[..., perm], mark_enc, x_dec[..., perm], mark_dec)
    assert torch.allclose(permuted, out[:, :, perm], atol=1e-5)


def test_point_model_output_and_state_dict_keys_are_unchanged() -> None:
    point = build_model(ModelConfig(**SMALL).validate()).eval()
    assert {"projection.weight", "projection.bias"} <= set(point.state_dict())
    assert point(*_inputs()).shape == (4, 6, 3)
    quantile = _model()
    assert {"projection.linear.weight", "projection.linear.bias"} <= set(quantile.state_dict())


def test_point_forecast_is_the_median_or_the_mean() -> None:
    out = torch.arange(24.0).reshape(1, 2, 3, 4).cumsum(-1)  # [1, 2, 3, 4]
    assert torch.equal(point_forecast(out, [0.1, 0.3, 0.5, 0.9]), out[..., 2])
    assert torch.equal(point_forecast(out, [0.1, 0.2, 0.8, 0.9]), out.mean(-1))
    assert point_forecast(out[..., 0], None) is not None
    with pytest.raises(ValueError, match="quantile levels"):
        point_forecast(out, [0.1, 0.5])


@pytest.mark.parametrize(("overrides", "message"), [
    ({"model.quantiles": [0.1, 1.0], "train.loss": "pinball"}, "model.quantiles must hold numbers strictly"),
    ({"model.quantiles": [0.0, 0.5], "train.loss": "pinball"}, "model.quantiles must hold numbers strictly"),
    ({"model.quantiles": [0.9, 0.1], "train.loss": "pinball"}, "model.quantiles must be a non-empty list"),
    ({"model.quantiles": [0.5, 0.5], "train.loss": "pinball"}, "model.quantiles must be a non-empty list"),
    ({"model.quantiles": [0.1, 0.9]}, "add train.loss=pinball"),
    ({"train.loss": "pinball"}, "set the levels too, e.g. model.quantiles"),
    ({"forecast.intervals": [0.8, 1.5]}, "forecast.intervals must hold numbers strictly between 0 and 1"),
    ({"forecast.intervals": [0.8, 0.8]}, "forecast.intervals must not repeat"),
])
def test_bad_quantile_and_interval_settings_are_refused(overrides: dict, message: str,
                                                        tmp_path: Path) -> None:
    app = to_app_config(tiny_config(tmp_path, **overrides))
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")) as caught:
        check_train_config(app)
    assert "\n" not in str(caught.value)


# -- a tiny quantile run end to end ------------------------------------------------------------------
@pytest.fixture(scope="module")
def quantile_run(ett_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quantile") / "run"
    # every validation window each epoch, so that early stopping reads the split's exact pinball loss
    train(tiny_config(ett_dir, **QUANTILE_RUN, **{"train.plot_windows": 1, "train.limit_eval_batches": None}),
          output_dir=out)
    return out


def test_quantile_run_trains_with_pinball_and_reports_probabilistic_metrics(quantile_run: Path) -> None:
    metrics = json.loads((quantile_run / "metrics.json").read_text())
    assert metrics["training"]["loss"] == "pinball"
    # early stopping followed the exact validation pinball loss of the best epoch
    assert metrics["training"]["best_val_loss"] == pytest.approx(metrics["val"]["model"]["scaled"]["pinball"],
                                                                 rel=1e-6)
    test = metrics["test"]["model"]
    prob = test["probabilistic"]
    assert prob["quantiles"] == QUANTILES and prob["quantiles_from"] == "model"
    assert prob["wql"] == pytest.approx(np.mean(list(prob["wql_per_quantile"].values())))
    assert {"crps", "crps_original", "crps_skill", "quantile_coverage"} <= set(prob)
    # 0.8 has its pair (0.1, 0.9): CQR; 0.95 lacks (0.025, 0.975): split conformal around the median
    assert test["intervals"]["0.8"]["method"] == "cqr" and test["intervals"]["0.95"]["method"] == "split"
    naive = metrics["test"]["naive_seasonal"]
    assert naive["probabilistic"]["quantiles"] == QUANTILES  # the same levels: CRPS skill compares like
    assert set(naive["intervals"]) == {"0.8", "0.95"}
    calibration = load_checkpoint(quantile_run / "checkpoints" / "best.pt")["calibration"]
    assert calibration == metrics["calibration"]
    assert calibration["quantiles"] == QUANTILES
    assert calibration["per_level"]["0.8"]["quantile_pair"] == [0.1, 0.9]
    log = (quantile_run / "train.log").read_text()
    assert "pinball" in log and "coverage_80" in log and "crps_skill" in log


def test_quantile_checkpoint_evaluates_and_forecasts(quantile_run: Path, etth1_csv: Path) -> None:
    from informer.forecast import Forecaster
    from informer.forecast.skill import LowSkillWarning

    metrics = json.loads((quantile_run / "metrics.json").read_text())
    alone = evaluate_checkpoint(quantile_run / "checkpoints" / "best.pt", split="test", batch_size=97)["test"]
    stored = metrics["test"]["model"]
    for block, name in (("scaled", "mse"), ("scaled", "pinball"), ("probabilistic", "wql"),
                        ("probabilistic", "crps")):
        assert alone["model"][block][name] == pytest.approx(stored[block][name], rel=1e-6)
    assert alone["model"]["intervals"]["0.8"]["coverage"] == stored["intervals"]["0.8"]["coverage"]
    with warnings.catch_warnings():  # the tiny model does not beat seasonal naive: that warning is expected
        warnings.simplefilter("ignore", LowSkillWarning)
        forecaster = Forecaster.from_checkpoint(quantile_run / "checkpoints" / "best.pt")
        frame = forecaster.predict(etth1_csv)
    point = frame[forecaster.output_columns]  # the point forecast (median); bands and quantiles follow
    assert point.shape == (6, 7) and np.isfinite(frame.to_numpy()).all()
    first = forecaster.output_columns[0]
    assert {f"{first}_{s}" for s in ("lo80", "hi80", "q10", "q50", "q90")} <= set(frame)
    assert isinstance(frame.index, pd.DatetimeIndex)


def test_quantile_run_resumes_exactly(ett_dir: Path, tmp_path: Path) -> None:
    settings = {**QUANTILE_RUN, "train.plot_windows": 0, "train.checkpoint_every": 0}
    train(tiny_config(ett_dir, **settings), output_dir=tmp_path / "whole")
    with pytest.raises(TrainingInterrupted):
        train(tiny_config(ett_dir, **settings), output_dir=tmp_path / "cut",
              callbacks=[KillAt("step:4:INT")])
    train(tiny_config(ett_dir, **settings, **{"train.resume": str(tmp_path / "cut")}),
          output_dir=tmp_path / "cut")
    whole, cut = (load_checkpoint(tmp_path / name / "checkpoints" / "best.pt") for name in ("whole", "cut"))
    for key, value in whole["model_state"].items():
        assert torch.equal(value, cut["model_state"][key]), key
    assert whole["calibration"] == cut["calibration"]
    assert (tmp_path / "whole" / "metrics.json").read_bytes() == \
        (tmp_path / "cut" / "metrics.json").read_bytes()


def test_sweep_summary_has_the_probabilistic_columns(quantile_run: Path, tmp_path: Path) -> None:
    from informer.training import sweep

    summary = run_summary(json.loads((quantile_run / "metrics.json").read_text()))
    assert {"test_wql", "test_crps_skill", "test_coverage_80", "test_width_80", "test_coverage_95",
            "test_width_95"} <= set(summary)
    for seed in (1, 2):
        job = tmp_path / str(seed)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- train.seed={seed}\n")
        (job / "metrics.json").write_text((quantile_run / "metrics.json").read_text())
    csv_path, md_path, _ = sweep.write_summary(tmp_path)
    header = csv_path.read_text().splitlines()[0].split(",")
    assert {"test_wql", "test_crps_skill", "test_coverage_80", "test_width_95"} <= set(header)
    by_setting = (tmp_path / sweep.SUMMARY_BY_SETTING_CSV).read_text().splitlines()[0]
    assert "test_coverage_80_mean" in by_setting
    assert "test_coverage_80" in md_path.read_text()

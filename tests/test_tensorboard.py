"""TensorBoard output of a run, read back from the event files and served by a real tensorboard process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from training_helpers import TINY_TRAIN, tiny_run

from informer.forecast.plot import ForecastWindow, plot_forecast_windows
from informer.training.tensorboard import flatten

STEPS = TINY_TRAIN["epochs"] * TINY_TRAIN["limit_train_batches"]


@pytest.fixture(scope="module")
def tb_dir(ett_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir, _ = tiny_run(ett_dir, tmp_path_factory.getbasetemp())
    return run_dir / "tb"


def _accumulator(tb_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_one_event_file_in_the_run_directory(tb_dir: Path) -> None:
    # hparams go into the run's own file: no timestamped sub-run directory next to it
    assert len(list(tb_dir.glob("events.out.tfevents.*"))) == 1
    assert not [p for p in tb_dir.iterdir() if p.is_dir()]


def test_scalars_read_back(tb_dir: Path) -> None:
    acc = _accumulator(tb_dir)
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/epoch_loss", "val/loss", "lr", "test/mse", "test/mae",
            "test/naive_last_mse", "hparam/best_val_loss"} <= tags
    train_loss = acc.Scalars("train/loss")
    assert [e.step for e in train_loss] == list(range(1, STEPS + 1))  # one point per optimizer step
    assert len(acc.Scalars("val/loss")) == TINY_TRAIN["epochs"]  # one point per epoch
    lrs = [e.value for e in acc.Scalars("lr")]
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(5e-5)  # type1 halves each epoch
    metrics = json.loads((tb_dir.parent / "metrics.json").read_text())
    test_mse = metrics["test"]["model"]["scaled"]["mse"]
    assert acc.Scalars("test/mse")[-1].value == pytest.approx(test_mse, rel=1e-6)


def test_skill_and_scale_free_scalars(tb_dir: Path) -> None:
    acc = _accumulator(tb_dir)
    tags = set(acc.Tags()["scalars"])
    assert {"val/skill", "val/mase", "val/wape", "val/smape", "val/naive_seasonal_mse", "test/skill",
            "test/mase", "test/wape", "test/smape", "hparam/test_skill", "hparam/test_mase"} <= tags
    assert not [tag for tag in tags if "mape_" in tag or tag.endswith("/mape") or "mspe" in tag]  # demoted
    metrics = json.loads((tb_dir.parent / "metrics.json").read_text())
    # one skill per epoch, the loop's own (on the windows validation scored)
    val_skill = [e.value for e in acc.Scalars("val/skill")]
    assert val_skill == pytest.approx(metrics["training"]["val_skill"], rel=1e-6)
    test = metrics["test"]["model"]
    assert acc.Scalars("test/skill")[-1].value == pytest.approx(test["scaled"]["skill"], rel=1e-6)
    assert acc.Scalars("test/mase")[-1].value == pytest.approx(test["original"]["mase"], rel=1e-6)


def test_forecast_images_every_epoch(tb_dir: Path) -> None:
    images = _accumulator(tb_dir).Images("val/forecast")
    assert len(images) == TINY_TRAIN["epochs"]
    assert images[0].encoded_image_string.startswith(b"\x89PNG") and images[0].width > 100


def test_final_test_forecast_image_with_the_calibrated_intervals(tb_dir: Path) -> None:
    """After training, one test figure of the best model, shaded with the intervals just calibrated."""
    images = _accumulator(tb_dir).Images("test/forecast")
    assert len(images) == 1 and images[0].encoded_image_string.startswith(b"\x89PNG")


def test_hparams_entry(tb_dir: Path) -> None:
    content = _accumulator(tb_dir).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["model.d_model"].number_value == 16 and hparams["train.lradj"].string_value == "type1"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"hparam/best_val_loss", "hparam/test_mse",
                                                             "hparam/test_skill", "hparam/test_smape"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_live_tensorboard_server_serves_the_run(tb_dir: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tb_dir.parent), "--host", "127.0.0.1",
         "--port", str(port), "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        tags: dict = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read() if server.stderr else "tensorboard exited"
            try:
                url = f"http://127.0.0.1:{port}/data/plugin/scalars/tags"
                with urllib.request.urlopen(url, timeout=5) as response:
                    tags = json.loads(response.read())
                if tags.get("tb", {}).get("val/loss"):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        assert "tb" in tags, f"scalar tags served: {tags}"
        assert {"train/loss", "val/loss", "lr", "test/mse"} <= set(tags["tb"])
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_plot_forecast_windows_is_general() -> None:
    steps = pd.date_range("2024-01-01", periods=30, freq="h")
    windows = [
        ForecastWindow(steps[:24], np.sin(np.arange(24)), steps[24:], np.zeros(6), np.ones(6), title="dates"),
        ForecastWindow(np.arange(10), np.arange(10.0), np.arange(10, 13), np.ones(3)),  # no truth, step axis
    ]
    figure = plot_forecast_windows(windows, ylabel="OT", ncols=2)
    assert len([ax for ax in figure.axes if ax.get_visible()]) == 2
    with pytest.raises(ValueError):
        plot_forecast_windows([])


def test_flatten_makes_hparams_friendly_values() -> None:
    flat = flatten({"a": {"b": 1, "c": None, "d": [1, 2]}, "e": True})
    assert flat == {"a.b": 1, "a.c": "null", "a.d": "[1, 2]", "e": True}

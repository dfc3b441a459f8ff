"""Splits, scaling, windows and column handling of load_data_bundle (real ETTh1 plus synthetic CSVs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from informer.config import DatasetConfig, ModelSpec
from informer.data import (
    DataBundle,
    load_data_bundle,
    make_decoder_input,
    seasonal_period,
    time_features,
)
from informer.errors import DataError, UserError

ETT_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
SEQ, LABEL, PRED = 96, 48, 24


def load(cfg: DatasetConfig, data_dir: Path | str = ".", seq_len: int = SEQ, label_len: int = LABEL,
         pred_len: int = PRED, embed: str = "timeF") -> DataBundle:
    return load_data_bundle(cfg, data_dir, seq_len, label_len, pred_len, embed, download=False)


@pytest.fixture(scope="module")
def etth1(ett_dir: Path) -> DataBundle:
    return load(DatasetConfig(name="ETTh1"), ett_dir)


@pytest.fixture(scope="module")
def etth1_raw(etth1_csv: Path) -> pd.DataFrame:
    return pd.read_csv(etth1_csv)


def write_series(path: Path, n: int, freq: str, columns: list[str], date_format: str | None = None,
                 start: str = "2016-07-01") -> Path:
    index = pd.date_range(start, periods=n, freq=freq)
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(n, len(columns))).round(3), columns=columns)
    frame.insert(0, "date", index.strftime(date_format) if date_format else index)
    frame.to_csv(path, index=False)
    return path


# --- ETT borders -----------------------------------------------------------------------------------

def test_etth1_split_borders_and_window_counts(etth1: DataBundle) -> None:
    assert etth1.borders == {"train": (0, 8640), "val": (8640 - SEQ, 11520), "test": (11520 - SEQ, 14400)}
    assert len(etth1.train) == 8640 - SEQ - PRED + 1 == 8521
    assert len(etth1.val) == 2880 - PRED + 1 == 2857
    assert len(etth1.test) == 2857
    assert etth1.freq == "h" and len(etth1.timestamps) == 17420


def test_val_and_test_windows_start_seq_len_before_their_border(etth1: DataBundle) -> None:
    assert etth1.val.window_start(0) == 8640 - SEQ and etth1.test.window_start(0) == 11520 - SEQ
    # every target step of the split is scored: first window forecasts the border, last one the end
    for split, end in ((etth1.val, 11520), (etth1.test, 14400)):
        assert split.window_start(len(split) - 1) + SEQ + PRED == end
    with pytest.raises(IndexError):
        etth1.test[len(etth1.test)]


@pytest.fixture(scope="module")
def ettm1_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # the real ETTm1 is not available offline: same shape, 69,680 rows at 15 minutes
    directory = tmp_path_factory.mktemp("ettm")
    write_series(directory / "ETTm1.csv", 69_680, "15min", ETT_COLUMNS)
    return directory


def test_ettm1_borders_are_four_times_the_hourly_ones(ettm1_synthetic: Path) -> None:
    seq, pred = 48, 24
    bundle = load(DatasetConfig(name="ETTm1"), ettm1_synthetic, seq_len=seq, label_len=24, pred_len=pred)
    assert bundle.freq == "15min"
    assert bundle.borders == {"train": (0, 34560), "val": (34560 - seq, 46080), "test": (46080 - seq, 57600)}
    assert len(bundle.train) == 34560 - seq - pred + 1
    assert len(bundle.val) == len(bundle.test) == 11520 - pred + 1
    assert bundle.seasonal_period == seq  # one day is 96 steps, capped to seq_len


def test_truncated_ett_file_is_reported(tmp_path: Path) -> None:
    write_series(tmp_path / "ETTh1.csv", 10_000, "h", ETT_COLUMNS)
    with pytest.raises(DataError, match="14400"):
        load(DatasetConfig(name="ETTh1"), tmp_path)


# --- scaling, views, contents ----------------------------------------------------------------------

def test_scaler_is_fitted_on_train_rows_only(etth1: DataBundle, etth1_raw: pd.DataFrame) -> None:
    raw = etth1_raw[ETT_COLUMNS].to_numpy()
    np.testing.assert_allclose(etth1.scaler.mean_, raw[:8640].mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(etth1.scaler.scale_, raw[:8640].std(axis=0), rtol=1e-10)
    assert not np.allclose(etth1.scaler.mean_, raw.mean(axis=0), rtol=1e-3)
    train_rows = etth1.scaled[:8640].double()
    assert torch.allclose(train_rows.mean(0), torch.zeros(7, dtype=torch.float64), atol=1e-5)


def test_windows_are_views_of_one_tensor(etth1: DataBundle) -> None:
    x, x_mark, y, _ = etth1.val[5]
    start = etth1.val.window_start(5)
    row_bytes = etth1.scaled.shape[1] * etth1.scaled.element_size()
    assert x.untyped_storage().data_ptr() == etth1.scaled.untyped_storage().data_ptr()
    assert x.data_ptr() == etth1.scaled.data_ptr() + start * row_bytes
    assert y.data_ptr() == etth1.scaled.data_ptr() + (start + SEQ - LABEL) * row_bytes
    assert x_mark.untyped_storage().data_ptr() == etth1.marks.untyped_storage().data_ptr()
    assert x.dtype == y.dtype == torch.float32


def test_window_contents_match_csv_rows(etth1: DataBundle, etth1_raw: pd.DataFrame) -> None:
    raw = etth1_raw[ETT_COLUMNS].to_numpy()
    mean, std = raw[:8640].mean(axis=0), raw[:8640].std(axis=0)
    i = 100
    x, x_mark, y, _ = etth1.test[i]
    s = etth1.test.window_start(i)
    np.testing.assert_allclose(x.numpy(), (raw[s:s + SEQ] - mean) / std, atol=1e-5)
    np.testing.assert_allclose(y.numpy(), (raw[s + SEQ - LABEL:s + SEQ + PRED] - mean) / std, atol=1e-5)
    assert torch.equal(y[:LABEL], x[-LABEL:])
    stamps = pd.DatetimeIndex(pd.to_datetime(etth1_raw["date"]))
    np.testing.assert_array_equal(x_mark.numpy(), time_features(stamps[s:s + SEQ], "h", "timeF"))
    assert etth1.timestamps[s] == stamps[s]
    np.testing.assert_allclose(etth1.values[s:s + SEQ], raw[s:s + SEQ])


def test_dataloader_batches(etth1: DataBundle) -> None:
    x, x_mark, y, y_mark = next(iter(DataLoader(etth1.train, batch_size=4, shuffle=False)))
    assert x.shape == (4, SEQ, 7) and x_mark.shape == (4, SEQ, 4)
    assert y.shape == (4, LABEL + PRED, 7) and y_mark.shape == (4, LABEL + PRED, 4)


def test_fixed_embed_gives_calendar_integers(ett_dir: Path) -> None:
    bundle = load(DatasetConfig(name="ETTh1"), ett_dir, embed="fixed")
    assert bundle.marks.dtype == torch.int64 and bundle.marks.shape == (17420, 5)
    assert bundle.train[0][1][1].tolist() == [7, 1, 4, 1, 0]  # 2016-07-01 01:00, a Friday


def test_inverse_transform(etth1: DataBundle) -> None:
    np.testing.assert_allclose(etth1.inverse_transform(etth1.scaled[:5].numpy()), etth1.values[:5], rtol=1e-5)
    target_only = etth1.scaled[:5, -1:].clone()  # [5, c_out=1]: the last column, the target
    back = etth1.inverse_transform(target_only)
    assert isinstance(back, torch.Tensor) and back.dtype == torch.float32
    np.testing.assert_allclose(back.numpy(), etth1.values[:5, -1:], rtol=1e-5)
    np.testing.assert_allclose(etth1.inverse_transform(etth1.scaled[:5, :2].numpy(), slice(0, 2)),
                               etth1.values[:5, :2], rtol=1e-5)


def test_checkpoint_data_is_plain(etth1: DataBundle) -> None:
    data = etth1.checkpoint_data()
    assert data["columns"] == ETT_COLUMNS and data["last_timestamp"] == "2018-06-26T19:00:00"
    assert all(isinstance(v, float) for v in data["scaler_mean"]) and data["seasonal_period"] == 24


# --- features M / S / MS ---------------------------------------------------------------------------

@pytest.mark.parametrize(("features", "target", "columns", "sizes"), [
    ("M", "OT", ETT_COLUMNS, (7, 7, 7)),
    ("MS", "OT", ETT_COLUMNS, (7, 7, 1)),
    ("S", "OT", ["OT"], (1, 1, 1)),
    ("M", "HUFL", [*ETT_COLUMNS[1:], "HUFL"], (7, 7, 7)),
    ("MS", "MUFL", ["HUFL", "HULL", "MULL", "LUFL", "LULL", "OT", "MUFL"], (7, 7, 1)),
])
def test_feature_modes_put_target_last(ett_dir: Path, etth1_raw: pd.DataFrame, features: str, target: str,
                                       columns: list[str], sizes: tuple[int, int, int]) -> None:
    bundle = load(DatasetConfig(name="ETTh1", features=features, target=target), ett_dir,
                  seq_len=48, label_len=24)
    assert bundle.columns == columns and bundle.columns[-1] == target
    cfg = bundle.model_config(ModelSpec(seq_len=48, label_len=24, pred_len=PRED))
    assert (cfg.enc_in, cfg.dec_in, cfg.c_out) == sizes and cfg.freq == "h"
    assert bundle.c_out == sizes[2] and bundle.train[0][0].shape == (48, len(columns))
    np.testing.assert_allclose(bundle.values[:3], etth1_raw[columns].to_numpy()[:3])


def test_dataset_columns_subset(ett_dir: Path) -> None:
    bundle = load(DatasetConfig(name="ETTh1", columns=["OT", "HULL"]), ett_dir, seq_len=48, label_len=24)
    assert bundle.columns == ["HULL", "OT"]


def test_accepts_dictconfig(ett_dir: Path) -> None:
    cfg = OmegaConf.structured(DatasetConfig(name="ETTh1", features="S"))
    assert load(cfg, ett_dir, seq_len=48, label_len=24).columns == ["OT"]


# --- decoder input ---------------------------------------------------------------------------------

def test_make_decoder_input() -> None:
    y = torch.randn(3, LABEL + PRED, 5, dtype=torch.float64)
    y[:, LABEL:] = float("nan")  # the future must never be read
    dec = make_decoder_input(y, LABEL, PRED)
    assert dec.shape == (3, LABEL + PRED, 5) and dec.dtype == torch.float64 and dec.device == y.device
    assert torch.equal(dec[:, :LABEL], y[:, :LABEL]) and torch.all(dec[:, LABEL:] == 0)
    assert make_decoder_input(y[:, :LABEL], LABEL, PRED).shape == (3, LABEL + PRED, 5)


# --- custom CSV ------------------------------------------------------------------------------------

def test_custom_csv_70_10_20_split(tmp_path: Path) -> None:
    path = write_series(tmp_path / "mine.csv", 1000, "h", ["a", "OT", "b"])
    bundle = load(DatasetConfig(name="custom", path=str(path)), seq_len=48, label_len=24)
    assert bundle.borders == {"train": (0, 700), "val": (700 - 48, 800), "test": (800 - 48, 1000)}
    assert len(bundle.train) == 700 - 48 - PRED + 1 and len(bundle.val) == 100 - PRED + 1
    assert len(bundle.test) == 200 - PRED + 1
    assert bundle.columns == ["a", "b", "OT"] and bundle.freq == "h" and bundle.seasonal_period == 24
    np.testing.assert_allclose(bundle.scaler.mean_, bundle.values[:700].mean(axis=0))


def test_custom_csv_rounding_goes_to_val(tmp_path: Path) -> None:
    path = write_series(tmp_path / "mine.csv", 1003, "D", ["OT"])
    bundle = load(DatasetConfig(name="custom", path=str(path)), seq_len=16, label_len=8, pred_len=8)
    assert bundle.borders["train"] == (0, 702) and bundle.borders["test"] == (1003 - 200 - 16, 1003)
    assert bundle.borders["val"][1] - 702 == 101  # 1003 - 702 - 200


def test_custom_csv_slash_dates_daily(tmp_path: Path) -> None:
    path = write_series(tmp_path / "rates.csv", 400, "D", ["x", "OT"], date_format="%Y/%-m/%-d 0:00",
                        start="1990-01-01")
    assert path.read_text().splitlines()[1].startswith("1990/1/1 0:00,")
    bundle = load(DatasetConfig(name="custom", path=str(path), features="MS"), seq_len=32, label_len=16)
    assert bundle.freq == "D" and bundle.seasonal_period == 7 and bundle.c_out == 1
    assert bundle.timestamps[0] == pd.Timestamp("1990-01-01")


def test_custom_split_too_short(tmp_path: Path) -> None:
    path = write_series(tmp_path / "short.csv", 150, "h", ["OT"])
    with pytest.raises(DataError) as info:
        load(DatasetConfig(name="custom", path=str(path)), seq_len=48, label_len=24, pred_len=24)
    message = str(info.value)
    assert "short.csv" in message and "val split has 63 rows including its seq_len look-back" in message
    assert "seq_len + pred_len = 48 + 24 = 72" in message and "150 rows" in message and "val 15" in message


def test_custom_needs_a_path() -> None:
    with pytest.raises(UserError, match=r"dataset\.path"):
        load(DatasetConfig(name="custom"))


@pytest.mark.parametrize(("freq", "period"), [("h", 24), ("15min", 96), ("D", 7), ("B", 5), ("W", 52),
                                              ("MS", 12), ("s", 200)])
def test_seasonal_period(freq: str, period: int) -> None:
    assert seasonal_period(freq, seq_len=200) == period
    assert seasonal_period(freq, seq_len=4) == min(period, 4)
    assert seasonal_period(freq, seq_len=200, override=10) == 10


@pytest.mark.parametrize(("freq", "expected"), [("h", "h"), ("15min", "15min"), ("D", "D"), ("B", "B"),
                                                ("MS", "MS"), ("s", "s")])
def test_custom_csv_frequency_is_inferred(tmp_path: Path, freq: str, expected: str) -> None:
    path = write_series(tmp_path / "mine.csv", 300, freq, ["OT"], start="2001-01-01")
    bundle = load(DatasetConfig(name="custom", path=str(path), features="S"), seq_len=16, label_len=8,
                  pred_len=8)
    assert bundle.freq == expected and bundle.marks.shape[0] == 300
    cfg = bundle.model_config(ModelSpec(seq_len=16, label_len=8, pred_len=8))
    assert cfg.freq == expected

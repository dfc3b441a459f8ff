"""Embeddings: length-preserving value conv, unbounded positions, the three temporal encodings."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from informer.config import ModelConfig
from informer.data.timefeatures import time_feature_dim, time_features
from informer.model.embedding import (
    CalendarEmbedding,
    DataEmbedding,
    PositionalEmbedding,
    TimeFeatureEmbedding,
    TokenEmbedding,
    sinusoid_table,
)


@pytest.mark.parametrize("length", [1, 2, 3, 17, 96])
def test_token_embedding_keeps_length(length: int) -> None:
    out = TokenEmbedding(c_in=3, d_model=8)(torch.randn(2, length, 3))
    assert out.shape == (2, length, 8)


@pytest.mark.parametrize("length", [1, 2, 17])
def test_token_embedding_is_the_circular_convolution(length: int) -> None:
    emb = TokenEmbedding(c_in=5, d_model=8)
    x = torch.randn(2, length, 5, requires_grad=True)
    out = emb(x)
    padded = F.pad(x.transpose(1, 2), (1, 1), mode="circular")
    expected = F.conv1d(padded, emb.conv.weight, emb.conv.bias).transpose(1, 2)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    (w_grad,) = torch.autograd.grad(out, emb.conv.weight, grad, retain_graph=True)
    (w_grad_expected,) = torch.autograd.grad(expected, emb.conv.weight, grad)
    torch.testing.assert_close(w_grad, w_grad_expected)


def test_token_embedding_is_circular() -> None:
    emb = TokenEmbedding(c_in=1, d_model=4)
    x = torch.randn(1, 10, 1)
    rolled = emb(torch.roll(x, shifts=3, dims=1))
    torch.testing.assert_close(rolled, torch.roll(emb(x), shifts=3, dims=1))


def test_positional_embedding_goes_past_5000_steps() -> None:
    pos = PositionalEmbedding(d_model=6, initial_len=16)
    table = pos(6001)
    assert table.shape == (1, 6001, 6)
    i = 5500
    expected = [math.sin(i / 10000 ** (0 / 6)), math.cos(i / 10000 ** (0 / 6)),
                math.sin(i / 10000 ** (2 / 6)), math.cos(i / 10000 ** (2 / 6))]
    torch.testing.assert_close(table[0, i, :4], torch.tensor(expected), atol=1e-3, rtol=0)
    torch.testing.assert_close(pos(16)[0], sinusoid_table(16, 6))
    assert "table" not in pos.state_dict()


def test_sinusoid_table_odd_width() -> None:
    assert sinusoid_table(5, 7).shape == (5, 7)


@pytest.mark.parametrize("freq", ["h", "15min", "D", "s"])
def test_time_feature_embedding_input_size(freq: str) -> None:
    emb = TimeFeatureEmbedding(d_model=8, freq=freq)
    assert emb.linear.in_features == time_feature_dim(freq)
    assert emb.linear.bias is not None  # the paper's code keeps the bias (pins the parameter count)
    index = pd.date_range("2021-01-01", periods=12, freq=freq)
    marks = torch.from_numpy(time_features(index, freq, "timeF")).unsqueeze(0)
    assert emb(marks).shape == (1, 12, 8)
    with pytest.raises(ValueError, match="time-feature columns"):
        emb(torch.zeros(1, 12, time_feature_dim(freq) + 1))


@pytest.mark.parametrize(("freq", "uses_minute"),
                         [("h", False), ("D", False), ("15min", True), ("min", True)])
def test_calendar_embedding_uses_minute_only_sub_hourly(freq: str, uses_minute: bool) -> None:
    for learned in (False, True):
        emb = CalendarEmbedding(d_model=8, freq=freq, learned=learned)
        assert ("minute" in emb.names) == uses_minute
        marks = torch.tensor([[[1, 1, 0, 0, 0]]])
        shifted = torch.tensor([[[1, 1, 0, 0, 45]]])
        assert torch.equal(emb(marks), emb(shifted)) != uses_minute


def test_fixed_tables_are_frozen_and_learned_tables_train() -> None:
    fixed = CalendarEmbedding(d_model=8, freq="h", learned=False)
    assert list(fixed.parameters()) == []
    assert fixed.state_dict() == {}
    learned = CalendarEmbedding(d_model=8, freq="15min", learned=True)
    assert sum(p.numel() for p in learned.parameters()) == 8 * (13 + 32 + 7 + 24 + 60)


def test_calendar_embedding_checks_columns() -> None:
    with pytest.raises(ValueError, match="calendar columns"):
        CalendarEmbedding(d_model=8, freq="h", learned=False)(torch.zeros(1, 3, 4, dtype=torch.long))


@pytest.mark.parametrize("embed", ["timeF", "fixed", "learned"])
@pytest.mark.parametrize("freq", ["h", "15min"])
def test_data_embedding_with_real_time_features(embed: str, freq: str) -> None:
    cfg = ModelConfig(d_model=16, n_heads=2, embed=embed, freq=freq, dropout=0.0)
    index = pd.date_range("2021-03-01", periods=10, freq=freq)
    marks = torch.from_numpy(time_features(index, freq, embed)).unsqueeze(0)
    out = DataEmbedding(c_in=3, cfg=cfg)(torch.randn(1, 10, 3), marks)
    assert out.shape == (1, 10, 16)
    assert bool(torch.isfinite(out).all())

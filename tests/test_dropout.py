"""The model's dropout: nn.Dropout's contract with a cheaper CPU mask."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from informer.model.dropout import Dropout, dropout, keep_levels


def _kept_fraction_is_close(mask: torch.Tensor, keep: float) -> bool:
    n = mask.numel()
    return abs(mask.float().mean().item() - keep) < 5 * math.sqrt(keep * (1 - keep) / n)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9])
def test_elements_are_dropped_with_probability_p_and_the_rest_scaled(p: float) -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 96, 128) + 0.5  # no zeros: a zero output means dropped
    out = Dropout(p).train()(x)
    kept = out != 0
    keep = keep_levels(p) / 2**16
    assert abs(keep - (1 - p)) <= 2**-17
    assert _kept_fraction_is_close(kept, keep)
    torch.testing.assert_close(out[kept], x[kept] / keep, rtol=1e-6, atol=0)
    # neighbours (different quarters of one 64-bit draw) are independent
    pairs = kept[..., :-1] & kept[..., 1:]
    assert _kept_fraction_is_close(pairs, keep * keep)


def test_the_expected_output_is_the_input() -> None:
    torch.manual_seed(1)
    x = torch.full((2_000_000,), 3.0)
    mean = dropout(x, 0.1).mean().item()
    assert abs(mean - 3.0) < 5 * 3.0 * math.sqrt(0.1 / 0.9 / x.numel())


def test_gradient_is_the_same_mask() -> None:
    torch.manual_seed(2)
    x = (torch.rand(32, 48, 64) + 0.5).requires_grad_()
    out = dropout(x, 0.2)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    torch.testing.assert_close(x.grad, upstream * (out / x).detach())


def test_eval_mode_and_zero_p_are_the_identity() -> None:
    x = torch.randn(4, 5)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    assert dropout(x, 1e-7) is x  # below half a 2**-16 step: rounds to no dropout


def test_p_one_drops_everything() -> None:
    x = torch.randn(4, 5)
    assert torch.count_nonzero(Dropout(1.0).train()(x)) == 0
    assert torch.count_nonzero(dropout(x, 1 - 1e-7)) == 0


def test_the_mask_follows_the_global_seed() -> None:
    x = torch.randn(1000, 33)  # odd size: the last 64-bit draw is only partly used
    torch.manual_seed(5)
    a, b = dropout(x, 0.5), dropout(x, 0.5)
    torch.manual_seed(5)
    torch.testing.assert_close(dropout(x, 0.5), a, rtol=0, atol=0)
    assert not torch.equal(a, b)


def test_it_is_an_nn_dropout_with_the_same_state() -> None:
    ours, theirs = Dropout(0.25), nn.Dropout(0.25)
    assert isinstance(ours, nn.Dropout) and ours.p == 0.25
    assert ours.state_dict() == theirs.state_dict() == {}
    assert repr(ours) == repr(theirs)


def test_in_place_dropout_keeps_nn_dropout_semantics() -> None:
    torch.manual_seed(3)
    x = torch.rand(100, 100) + 0.5
    y = x.clone()
    Dropout(0.5, inplace=True).train()(y)
    assert 0 < torch.count_nonzero(y) < y.numel()

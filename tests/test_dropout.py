"""The model's dropout: nn.Dropout's contract, with only the dropped positions drawn."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from informer.model.dropout import Dropout, drop_positions, dropout, linear_then_dropout


def _close_to(fraction: float, expected: float, n: int) -> bool:
    return abs(fraction - expected) < 5 * math.sqrt(expected * (1 - expected) / n)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9])
def test_elements_are_dropped_with_probability_p_and_the_rest_scaled(p: float) -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 96, 128) + 0.5  # no zeros: a zero output means dropped
    out = Dropout(p).train()(x)
    kept = out != 0
    assert _close_to(kept.float().mean().item(), 1 - p, x.numel())
    torch.testing.assert_close(out[kept], x[kept] / (1 - p), rtol=1e-6, atol=0)
    # neighbours are independent: both kept as often as keep**2, both dropped as often as p**2
    flat = kept.view(-1)
    assert _close_to((flat[:-1] & flat[1:]).float().mean().item(), (1 - p) ** 2, x.numel())
    assert _close_to((~flat[:-1] & ~flat[1:]).float().mean().item(), p * p, x.numel())


@pytest.mark.parametrize("n, p", [(0, 0.5), (1, 0.5), (10, 0.05), (1000, 0.5), (100_000, 0.05),
                                  (100_000, 0.97)])
def test_drop_positions_are_sorted_distinct_and_in_range(n: int, p: float) -> None:
    torch.manual_seed(4)
    positions = drop_positions(n, p)
    assert positions.dtype == torch.int64
    if positions.numel():
        assert int(positions[0]) >= 0 and int(positions[-1]) < n
        assert bool((positions[1:] > positions[:-1]).all())


def test_drops_reach_the_end_of_the_tensor_evenly_whatever_the_rounds() -> None:
    """However many rounds of draws it takes, the same positions; the last quarter of a tensor is
    dropped as often as the first."""
    n, p = 20_000, 0.3
    results = []
    for draws_per_round in (None, 1, 7, 1000):
        torch.manual_seed(6)
        results.append(drop_positions(n, p, draws_per_round=draws_per_round))
    for other in results[1:]:
        assert torch.equal(other, results[0])
    positions = results[0]
    first, last = (positions < n // 4).sum().item(), (positions >= n - n // 4).sum().item()
    for count in (first, last):
        assert _close_to(count / (n // 4), p, n // 4)


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


def test_a_strided_input_and_gradient_are_dropped_in_logical_order() -> None:
    torch.manual_seed(7)
    base = (torch.rand(40, 30) + 0.5).requires_grad_()
    x = base.t()  # [30, 40], not contiguous
    out = dropout(x, 0.4)
    assert out.shape == x.shape
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept].detach() / 0.6)
    upstream = torch.randn(40, 30).t()
    out.backward(upstream)
    torch.testing.assert_close(base.grad.t(), upstream * kept / 0.6)


def test_an_empty_tensor_passes_through() -> None:
    x = torch.randn(0, 5, requires_grad=True)
    out = dropout(x, 0.3)
    assert out.shape == (0, 5)
    out.sum().backward()
    assert x.grad.shape == (0, 5)


def test_eval_mode_and_zero_p_are_the_identity() -> None:
    x = torch.randn(4, 5)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0).train()(x) is x


def test_p_one_drops_everything() -> None:
    x = torch.randn(4, 5)
    assert torch.count_nonzero(Dropout(1.0).train()(x)) == 0


def test_the_mask_follows_the_global_seed() -> None:
    x = torch.randn(1000, 33)
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


@pytest.mark.parametrize("bias", [True, False])
def test_linear_then_dropout_is_dropout_of_the_linear(bias: bool) -> None:
    """Same dropped positions (same seed), same output and gradients as the two layers apart."""
    torch.manual_seed(8)
    linear = nn.Linear(16, 24, bias=bias).double()
    x = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 7, 24, dtype=torch.float64)

    def run(fused: bool) -> list[torch.Tensor]:
        x.grad = None
        linear.zero_grad()
        torch.manual_seed(9)
        out = linear_then_dropout(x, linear, 0.3) if fused else dropout(linear(x), 0.3)
        out.backward(upstream)
        return [out.detach(), x.grad] + [p.grad for p in linear.parameters()]

    for fused, separate in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(fused, separate, rtol=1e-12, atol=1e-12)
    assert (run(True)[0] == 0).any()

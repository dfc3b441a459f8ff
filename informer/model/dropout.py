"""Dropout that draws only the dropped positions, never a mask.

torch's CPU random number generator runs on one thread whatever the thread count, so the mask is the
serial part of dropout: ``F.dropout`` draws one float per element with ``bernoulli_`` (about 7 ns each on
the benchmark machine), then builds, scales and multiplies by a full-size mask. At the usual rates
(p = 0.05 here) almost every element is kept, so this module draws the *gaps* between dropped elements
instead: with ``U`` uniform on [0, 1), ``floor(log(1 - U) / log(1 - p))`` is geometric, the number of
kept elements before the next dropped one, so consecutive gaps give every element an independent drop
with probability exactly ``p`` (to double rounding) from about ``p * n`` random numbers. The forward
pass is then one scaled copy of the input plus zeros written at the dropped positions, the backward
pass the same on the gradient; the positions (``p * n`` int64) are all that is kept for it.

The uniforms come from numpy's PCG64-DXSM seeded by one draw from torch's global generator for each
call, so ``torch.manual_seed`` governs them. Other devices, and code being compiled, use ``F.dropout``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _seeded_generator() -> np.random.Generator:
    seed = int(torch.empty((), dtype=torch.int64).random_())  # uniform over [0, 2**63)
    return np.random.Generator(np.random.PCG64DXSM(seed))


def drop_positions(n: int, p: float, draws_per_round: int | None = None) -> torch.Tensor:
    """Sorted flat indices (int64) of the elements of an ``n``-element tensor to drop, each element
    independently with probability ``p`` (0 < p < 1). One draw from torch's global generator seeds it.

    Gaps are drawn in rounds until they pass the end; the default round (the expected count plus six
    standard deviations) almost always suffices. The result does not depend on the round size.
    """
    rng = _seeded_generator()
    log_keep = math.log1p(-p)  # < 0
    if draws_per_round is None:
        expected = n * p
        draws_per_round = int(expected + 6.0 * math.sqrt(expected) + 16)
    parts, reached = [], -1
    while reached < n - 1:
        uniform = torch.from_numpy(rng.random(draws_per_round))  # [0, 1)
        # kept elements before each drop; clamped so a tiny p cannot overflow int64
        gaps = torch.log1p(uniform.neg_()).div_(log_keep).floor_().clamp_(max=n).to(torch.int64)
        positions = gaps.add_(1).cumsum_(0).add_(reached)
        parts.append(positions)
        reached = int(positions[-1])
    if not parts:  # an empty tensor
        return torch.empty(0, dtype=torch.int64)
    positions = torch.cat(parts) if len(parts) > 1 else parts[0]
    return positions[: int(torch.searchsorted(positions, n))]


def zero_at(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Writes zeros at the flat ``positions`` of contiguous ``x``, in place."""
    return x.view(-1).index_fill_(0, positions, 0.0).view_as(x)


def _scaled_copy(x: torch.Tensor, scale: float) -> torch.Tensor:
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    return torch.mul(x, scale, out=out)


class _DropAt(torch.autograd.Function):
    """``x`` scaled by ``1 / (1 - p)`` with zeros at freshly drawn positions; the same on the gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:  # type: ignore[override]
        positions = drop_positions(x.numel(), p)
        ctx.save_for_backward(positions)
        ctx.scale = 1.0 / (1.0 - p)
        return zero_at(_scaled_copy(x, ctx.scale), positions)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (positions,) = ctx.saved_tensors
        return zero_at(_scaled_copy(grad, ctx.scale), positions), None


def uses_drawn_positions(x: torch.Tensor) -> bool:
    """Whether dropout of ``x`` takes this module's path (CPU floating point, eager mode)."""
    return x.device.type == "cpu" and x.is_floating_point() and not torch.compiler.is_compiling()


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Functional form of :class:`Dropout`: zero each element with probability ``p``, scale the rest."""
    if not training or p == 0.0:
        return x
    if p >= 1.0 or not uses_drawn_positions(x):
        return F.dropout(x, p, training)
    return _DropAt.apply(x, p)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same state dict, same ``train()`` / ``eval()`` behaviour) with the
    cheaper CPU path of :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)


def linear_then_dropout(x: torch.Tensor, linear: nn.Linear, p: float, training: bool = True) -> torch.Tensor:
    """``dropout(linear(x), p)`` with the ``1 / (1 - p)`` scale inside the matrix products (``alpha`` and
    ``beta``) and zeros written into the product itself, so the dropout takes no full-size pass of its own."""
    if not training or p == 0.0 or p >= 1.0 or not uses_drawn_positions(x) \
            or x.dtype != linear.weight.dtype or torch.is_autocast_enabled(x.device.type):
        return dropout(linear(x), p, training)
    return _DroppedLinear.apply(x, linear.weight, linear.bias, p)


class _DroppedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,  # type: ignore[override]
                p: float) -> torch.Tensor:
        scale = 1.0 / (1.0 - p)
        rows = x.reshape(-1, x.shape[-1])
        if bias is None:
            out = torch.mm(rows, weight.t()).mul_(scale)
        else:
            out = torch.addmm(bias, rows, weight.t(), beta=scale, alpha=scale)
        positions = drop_positions(out.numel(), p)
        zero_at(out, positions)
        ctx.save_for_backward(rows, weight, positions)
        ctx.scale, ctx.input_shape, ctx.has_bias = scale, x.shape, bias is not None
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        rows, weight, positions = ctx.saved_tensors
        scale = ctx.scale
        grad_out = grad.reshape(-1, grad.shape[-1]).clone(memory_format=torch.contiguous_format)
        zero_at(grad_out, positions)  # unscaled: the scale rides in the products below
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.addmm(rows, grad_out, weight, beta=0.0, alpha=scale).view(ctx.input_shape)
        grad_weight = torch.mm(grad_out.t(), rows).mul_(scale) if ctx.needs_input_grad[1] else None
        grad_bias = grad_out.sum(0).mul_(scale) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None

"""Position-wise feed-forward block: Linear, activation, dropout, Linear, dropout.

In training on CPU the block runs as one autograd function whose forward and backward passes are
written out, so neither dropout costs a full-size pass of its own: a dropped hidden unit gets a
pre-activation of -1e4 written into the first product (GELU and ReLU are then exactly 0 there, and so
are their derivatives, so the backward pass needs no zeros for it), the output dropout writes zeros
into the second product, and both ``1 / (1 - p)`` scales ride in the products' ``alpha`` / ``beta``.
The result is the composition of the separate layers with the same dropped positions
(tests/test_fused_layers.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from informer.model.dropout import Dropout, drop_positions, uses_drawn_positions, zero_at

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}
_SWITCHED_OFF = -1e4  # gelu(-1e4) = -1e4 * Phi(-1e4) and gelu'(-1e4) underflow to 0 (float32, float64)


class FeedForward(nn.Module):
    """The official two 1x1 convolutions, as the equivalent Linear layers (same state dict keys)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, activation: str) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"model.activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = Dropout(dropout)
        self.activation_name = activation
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.dropout.p
        if self.training and 0.0 < p < 1.0 and self._plain_cpu_arithmetic(x):
            return _DroppedFeedForward.apply(x, self.linear1.weight, self.linear1.bias, self.linear2.weight,
                                             self.linear2.bias, p, self.activation_name)
        y = self.dropout(self.activation(self.linear1(x)))  # [B, L, d_ff]
        return self.dropout(self.linear2(y))  # [B, L, d_model]

    def _plain_cpu_arithmetic(self, x: torch.Tensor) -> bool:
        return (uses_drawn_positions(x) and x.dtype == self.linear1.weight.dtype
                and not torch.is_autocast_enabled(x.device.type))


def _activation_backward_(grad: torch.Tensor, pre_activation: torch.Tensor, name: str) -> torch.Tensor:
    """The activation's backward written over ``grad``, which is still in cache from the product that
    produced it (a fresh buffer would be one more full-size pass through memory)."""
    if name == "gelu":
        return torch.ops.aten.gelu_backward.grad_input(grad, pre_activation, grad_input=grad)
    return torch.ops.aten.threshold_backward.grad_input(grad, pre_activation, 0, grad_input=grad)


class _DroppedFeedForward(torch.autograd.Function):
    """``dropout(linear2(dropout(act(linear1(x)))))`` with the dropouts folded in (module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,  # type: ignore[override]
                b2: torch.Tensor, p: float, activation: str) -> torch.Tensor:
        scale = 1.0 / (1.0 - p)
        rows = x.reshape(-1, x.shape[-1])  # [N, d_model]
        pre = torch.addmm(b1, rows, w1.t())  # [N, d_ff]
        pre.view(-1).index_fill_(0, drop_positions(pre.numel(), p), _SWITCHED_OFF)
        hidden = ACTIVATIONS[activation](pre)  # dropped, not yet scaled
        out = torch.addmm(b2, hidden, w2.t(), beta=scale, alpha=scale * scale)  # both scales
        out_drops = drop_positions(out.numel(), p)
        zero_at(out, out_drops)
        ctx.save_for_backward(rows, w1, w2, pre, hidden, out_drops)
        ctx.scale, ctx.activation, ctx.input_shape = scale, activation, x.shape
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        rows, w1, w2, pre, hidden, out_drops = ctx.saved_tensors
        scale = ctx.scale
        grad_out = grad.reshape(-1, grad.shape[-1]).clone(memory_format=torch.contiguous_format)
        zero_at(grad_out, out_drops)  # [N, d_model], unscaled
        grad_b2 = grad_out.sum(0).mul_(scale)
        grad_w2 = torch.mm(grad_out.t(), hidden).mul_(scale * scale)  # [d_model, d_ff]
        grad_hidden = torch.addmm(pre, grad_out, w2, beta=0.0, alpha=scale * scale)  # pre: shape only
        grad_pre = _activation_backward_(grad_hidden, pre, ctx.activation)  # 0 where dropped
        grad_x = torch.mm(grad_pre, w1).view(ctx.input_shape) if ctx.needs_input_grad[0] else None
        return grad_x, torch.mm(grad_pre.t(), rows), grad_pre.sum(0), grad_w2, grad_b2, None, None

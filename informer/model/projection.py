"""Several Linear layers applied to one input, with one gradient for that input.

Self-attention projects the same ``x`` to queries, keys and values (cross-attention the encoder output to
keys and values). Through three ``nn.Linear`` calls autograd computes three ``[N, d_model]`` input
gradients and adds them in separate passes; here the backward pass accumulates them inside the matrix
products (``addmm_``), and the outputs are the same ``addmm`` results as the separate layers give.
"""

from __future__ import annotations

import torch
from torch import nn


def project_shared(x: torch.Tensor, linears: list[nn.Linear]) -> list[torch.Tensor]:
    """``[linear(x) for linear in linears]``, with the input gradient accumulated in the products."""
    if len(linears) == 1 or not torch.is_grad_enabled() or torch.compiler.is_compiling() \
            or torch.is_autocast_enabled(x.device.type):
        return [linear(x) for linear in linears]
    params = [t for linear in linears for t in (linear.weight, linear.bias)]
    return list(_SharedInputLinear.apply(x, *params))


class _SharedInputLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, *params: torch.Tensor | None):  # type: ignore[override]
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no zero products
        rows = x.reshape(-1, x.shape[-1])
        weights, biases = params[0::2], params[1::2]
        outs = []
        for weight, bias in zip(weights, biases, strict=True):
            out = torch.mm(rows, weight.t()) if bias is None else torch.addmm(bias, rows, weight.t())
            outs.append(out.view(*x.shape[:-1], weight.shape[0]))
        ctx.save_for_backward(rows, *weights)
        ctx.input_shape = x.shape
        ctx.has_bias = [bias is not None for bias in biases]
        return tuple(outs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads: torch.Tensor | None):  # type: ignore[override]
        rows, *weights = ctx.saved_tensors
        grad_rows = None
        grad_params: list[torch.Tensor | None] = []
        for i, (grad, weight) in enumerate(zip(grads, weights, strict=True)):
            if grad is None:
                grad_params += [None, None]
                continue
            grad = grad.reshape(-1, grad.shape[-1])  # [N, out_features]
            if ctx.needs_input_grad[0]:
                grad_rows = torch.mm(grad, weight) if grad_rows is None else grad_rows.addmm_(grad, weight)
            grad_weight = torch.mm(grad.t(), rows) if ctx.needs_input_grad[1 + 2 * i] else None
            needs_bias = ctx.has_bias[i] and ctx.needs_input_grad[2 + 2 * i]
            grad_params += [grad_weight, grad.sum(0) if needs_bias else None]
        grad_x = grad_rows.view(ctx.input_shape) if grad_rows is not None else None
        return (grad_x, *grad_params)

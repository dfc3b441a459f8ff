"""Layers whose training backward pass is written out by hand equal the plain compositions.

Each is compared with the separate torch layers on the same inputs, with the same dropped positions
(same seed): outputs and every gradient, in float64.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from informer.model.attention import AttentionLayer, FullAttention, ProbAttention
from informer.model.dropout import Dropout, dropout
from informer.model.feedforward import FeedForward
from informer.model.projection import project_shared


def _grads(tensors: list[torch.Tensor], module: nn.Module) -> list[torch.Tensor]:
    return [t.grad.clone() for t in tensors] + [p.grad.clone() for p in module.parameters()]


def _clear(tensors: list[torch.Tensor], module: nn.Module) -> None:
    for t in tensors:
        t.grad = None
    module.zero_grad()


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_feed_forward_in_training_equals_the_separate_layers(activation: str) -> None:
    torch.manual_seed(0)
    ff = FeedForward(16, 64, 0.3, activation).double().train()
    x = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 7, 16, dtype=torch.float64)

    torch.manual_seed(11)
    fused = ff(x)
    fused.backward(upstream)
    fused_grads = _grads([x], ff)
    _clear([x], ff)
    torch.manual_seed(11)
    separate = dropout(ff.linear2(dropout(ff.activation(ff.linear1(x)), 0.3)), 0.3)
    separate.backward(upstream)

    assert (fused == 0).any()
    torch.testing.assert_close(fused, separate, rtol=1e-12, atol=1e-12)
    for a, b in zip(fused_grads, _grads([x], ff), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_feed_forward_in_eval_mode_has_no_dropout() -> None:
    ff = FeedForward(8, 32, 0.5, "gelu").eval()
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(ff(x), ff.linear2(ff.activation(ff.linear1(x))))


@pytest.mark.parametrize("n_linears", [1, 2, 3])
def test_shared_input_projections_equal_separate_linears(n_linears: int) -> None:
    torch.manual_seed(1)
    linears = nn.ModuleList(nn.Linear(12, 12) for _ in range(n_linears)).double()
    x = torch.randn(2, 9, 12, dtype=torch.float64, requires_grad=True)
    upstream = [torch.randn(2, 9, 12, dtype=torch.float64) for _ in linears]

    outs = project_shared(x, list(linears))
    sum((o * u).sum() for o, u in zip(outs, upstream, strict=True)).backward()
    shared_grads = _grads([x], linears)
    _clear([x], linears)
    separate = [linear(x) for linear in linears]
    sum((o * u).sum() for o, u in zip(separate, upstream, strict=True)).backward()

    for a, b in zip(outs, separate, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(shared_grads, _grads([x], linears), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_an_unused_shared_projection_gets_no_gradient() -> None:
    linears = [nn.Linear(4, 4), nn.Linear(4, 4)]
    x = torch.randn(3, 4, requires_grad=True)
    first, _ = project_shared(x, linears)
    first.sum().backward()
    assert linears[1].weight.grad is None and linears[1].bias.grad is None
    torch.testing.assert_close(x.grad, linears[0].weight.sum(0).expand(3, 4))


@pytest.mark.parametrize("core", [FullAttention(False), ProbAttention(False, factor=1), ProbAttention(True)],
                         ids=["full", "prob", "prob-causal"])
@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_attention_layer_with_output_dropout_equals_dropout_of_its_output(core: nn.Module,
                                                                         cross: bool) -> None:
    """Training mode (the cores' own attention dropout on too), same seed for both runs."""
    torch.manual_seed(2)
    layer = AttentionLayer(core, d_model=12, n_heads=3).double().train()
    layer.inner_attention.dropout.p = 0.2
    x = torch.randn(2, 30, 12, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(2, 20, 12, dtype=torch.float64, requires_grad=True) if cross else x
    inputs = [x, memory] if cross else [x]
    output_dropout = Dropout(0.3).train()
    upstream = torch.randn(2, 30, 12, dtype=torch.float64)

    torch.manual_seed(13)
    folded, _ = layer(x, memory, memory, output_dropout=output_dropout)
    folded.backward(upstream)
    folded_grads = _grads(inputs, layer)
    _clear(inputs, layer)
    torch.manual_seed(13)
    plain, _ = layer(x, memory, memory)
    separate = output_dropout(plain)
    separate.backward(upstream)

    torch.testing.assert_close(folded, separate, rtol=1e-10, atol=1e-12)
    for a, b in zip(folded_grads, _grads(inputs, layer), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

"""Non-causal FAVOR+ in chunks of positions (long inputs): the same function and gradients as the
plain dense formula."""

from __future__ import annotations

import pytest
import torch

from informer.model.favor import (
    CHUNK_BYTES,
    WHOLE_BYTES,
    FavorAttention,
    _ChunkedBidirectionalFavor,
    chunk_rows,
)


def inputs(l_q: int, l_k: int, scale: float = 0.8, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(2, l_q, 3, 8, generator=g, dtype=dtype) * scale).requires_grad_()
    k = (torch.randn(2, l_k, 3, 8, generator=g, dtype=dtype) * scale).requires_grad_()
    v = torch.randn(2, l_k, 3, 8, generator=g, dtype=dtype).requires_grad_()
    return q, k, v


def dense(core: FavorAttention, q, k, v) -> torch.Tensor:
    """``D^-1 phi(Q) phi(K)^T V`` with the core's own feature map, through autograd."""
    phi_q, phi_k = core.feature_map(q, is_query=True), core.feature_map(k, is_query=False)
    num = torch.einsum("blhm,bshm,bshe->blhe", phi_q, phi_k, v)
    return num / torch.einsum("blhm,bshm->blh", phi_q, phi_k).unsqueeze(-1)


@pytest.mark.parametrize("chunk", [None, 1, 3, 7, 64])
@pytest.mark.parametrize("l_q,l_k", [(13, 13), (5, 17), (17, 4)])
def test_chunked_output_and_gradients_equal_the_dense_formula(chunk, l_q, l_k) -> None:
    core = FavorAttention(False, 8, 24, 0, bidirectional_chunk=chunk).double()
    q, k, v = inputs(l_q, l_k)
    grad = torch.randn(2, l_q, 3, 8, dtype=torch.float64)
    out, _ = core(q, k, v)
    expected = dense(core, q, k, v)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(expected, (q, k, v), grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gradcheck() -> None:
    core = FavorAttention(False, 8, 12, 0).double()
    q, k, v = inputs(6, 5, scale=0.5)
    w = core.projection.t() * 8 ** -0.25
    assert torch.autograd.gradcheck(lambda a, b, c: _ChunkedBidirectionalFavor.apply(a, b, c, w, 2),
                                    (q, k, v))


def test_a_later_key_chunk_with_larger_logits_rescales_the_running_sum() -> None:
    """Keys grow along the sequence, so every chunk raises the stabiliser: float32 results still match
    the float64 dense formula, and nothing overflows even though exp of the raw logits would."""
    core = FavorAttention(False, 8, 24, 0, bidirectional_chunk=4)
    q, k, v = inputs(10, 16, scale=1.0, dtype=torch.float32)
    ramp = torch.linspace(1.0, 30.0, 16).view(1, 16, 1, 1)
    k = (k.detach() * ramp).requires_grad_()
    logits = torch.einsum("blhe,me->blhm", k * 8 ** -0.25, core.projection)
    assert torch.isinf(logits.exp()).any()
    out, _ = core(q, k, v)
    expected = dense(core.double(), q.double(), k.double(), v.double())
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_chunks_cover_everything_when_small_and_are_bounded_when_large() -> None:
    row = 64 * 267 * 4  # batch 8 x 8 heads, 267 features, float32
    assert chunk_rows(96, 64, 267, 4) == 96
    rows = chunk_rows(6144, 64, 267, 4)
    assert rows < 6144 and rows * row <= CHUNK_BYTES < WHOLE_BYTES
    assert chunk_rows(10**6, 10**6, 267, 4) == 1

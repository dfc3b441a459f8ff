"""Non-causal FAVOR+ attention in chunks of positions, with a hand-written backward pass.

Autograd through ``D^-1 phi(Q) (phi(K)^T V)`` keeps both ``[B, H, L, m]`` feature tensors (m ≈ 4E) and
builds their gradients at full length: at L = 6144, batch 8, d_model 512 that is over 2 GB of live
tensors, each a fresh allocation the operating system has to zero page by page on every step.
Here the features exist one chunk of positions at a time:

    forward    key chunks     phi(K_c), accumulate S = phi(K)^T [V, 1]   ([B, H, m, E + 1])
               query chunks   phi(Q_c) S -> numerator and normaliser -> out_c
    backward   query chunks   phi(Q_c) again; dS += phi(Q_c)^T d[num, den]; dQ_c
               key chunks     phi(K_c) again; dK_c, dV_c from dS

so the only state of length L is the inputs, the output and the per-row normaliser, and each chunk
is small enough to be reused from the allocator's free lists. Re-computing the features in the
backward pass costs two of the fourteen m-wide products.

The keys' stabiliser (one maximum per batch and head) grows as chunks arrive; the running sum is
rescaled by ``exp(old - new)`` when it does, as a one-pass softmax does. Stabilisers cancel in
``D^-1`` and get no gradient, exactly as in :meth:`FavorAttention.feature_map`.
"""

from __future__ import annotations

import torch

# Bytes of one chunk's [B, H, c, m] features. Up to WHOLE_BYTES one chunk covers every position and
# its features are kept for the backward pass (glibc reuses blocks up to 32 MiB; larger ones go back
# to the operating system on free and come back as fresh zeroed pages); beyond that, CHUNK_BYTES.
WHOLE_BYTES = 32 * 2**20
CHUNK_BYTES = 8 * 2**20


def chunk_rows(length: int, batch_heads: int, nb_features: int, itemsize: int) -> int:
    row_bytes = batch_heads * nb_features * itemsize
    if length * row_bytes <= WHOLE_BYTES:
        return max(1, length)
    return max(1, CHUNK_BYTES // row_bytes)


def favor_bidirectional(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, projection: torch.Tensor,
                        chunk: int | None = None) -> torch.Tensor:
    """Non-causal FAVOR+ of ``q [B, L_Q, H, E]``, ``k, v [B, L_K, H, E]`` with features
    ``projection [m, E]``: ``out [B, L_Q, H, E]``."""
    b, _, h, e = q.shape
    m = projection.shape[0]
    if chunk is None:
        chunk = chunk_rows(max(q.shape[1], k.shape[1]), b * h, m, q.element_size())
    w = projection.to(q.dtype).t() * e ** -0.25  # [E, m]: the 1/E^(1/4) input scale folded in
    return _BidirectionalFavor.apply(q, k, v, w, chunk)


def _ranges(length: int, chunk: int) -> list[slice]:
    return [slice(s, min(s + chunk, length)) for s in range(0, length, chunk)]


def _with_ones(v: torch.Tensor) -> torch.Tensor:
    """``[B, c, H, E]`` -> ``[B, H, c, E + 1]`` with a last column of ones (gives the normaliser)."""
    b, c, h, e = v.shape
    out = v.new_empty(b, h, c, e + 1)
    out[..., :e].copy_(v.transpose(1, 2))
    out[..., e].fill_(1.0)
    return out


def _key_logits(k: torch.Tensor, w: torch.Tensor, e: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``w x - |x|^2 / 2`` for keys ``k [B, c, H, E]`` (x = k / E^(1/4)) as ``[B, H, c, m]``, and the
    row maxima ``[B, H, c, 1]``."""
    logits = k.transpose(1, 2) @ w  # [B, H, c, m]
    half_norm = (k.pow(2).sum(-1) * (0.5 * e ** -0.5)).transpose(1, 2).unsqueeze(-1)  # [B, H, c, 1]
    logits.sub_(half_norm)
    return logits, logits.amax(-1, keepdim=True)


def _query_features(q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``phi(Q_c)`` ``[B, H, c, m]`` stabilised per row; the ``|x|^2 / 2`` term is constant along a
    row and cancels in ``D^-1`` with the stabiliser, so it is never computed."""
    logits = q.transpose(1, 2) @ w  # [B, H, c, m]
    return logits.sub_(logits.amax(-1, keepdim=True)).exp_()


class _BidirectionalFavor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,  # type: ignore[override]
                w: torch.Tensor, chunk: int) -> torch.Tensor:
        b, l_q, h, e = q.shape
        m = w.shape[1]
        state = q.new_zeros(b, h, m, e + 1)  # phi(K)^T [V, 1]
        shift = None  # [B, H, 1, 1]
        key_chunks, query_chunks = _ranges(k.shape[1], chunk), _ranges(l_q, chunk)
        # one chunk each: keep the features for the backward pass rather than computing them again
        keep = len(key_chunks) == 1 and len(query_chunks) == 1
        for rows in key_chunks:
            logits, row_max = _key_logits(k[:, rows], w, e)
            chunk_max = row_max.amax(2, keepdim=True)
            if shift is None:
                shift = chunk_max
            else:
                grown = torch.maximum(shift, chunk_max)
                state.mul_(torch.exp(shift - grown))
                shift = grown
            phi_k = logits.sub_(shift).exp_()
            state.view(b * h, m, e + 1).baddbmm_(phi_k.view(b * h, -1, m).transpose(1, 2),
                                                 _with_ones(v[:, rows]).view(b * h, -1, e + 1))
        out = q.new_empty(b, l_q, h, e)
        den = q.new_empty(b, h, l_q, 1)
        tiny = torch.finfo(q.dtype).tiny
        for rows in query_chunks:
            phi_q = _query_features(q[:, rows], w)
            num_den = phi_q @ state  # [B, H, c, E + 1]
            den[:, :, rows] = num_den[..., e:].clamp_min(tiny)
            out[:, rows] = (num_den[..., :e] / den[:, :, rows]).transpose(1, 2)
        kept = (phi_q, phi_k) if keep else ()
        ctx.save_for_backward(q, k, v, w, state, shift, den, out, *kept)
        ctx.chunk = chunk
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        q, k, v, w, state, shift, den, out, *kept = ctx.saved_tensors
        b, l_q, h, e = q.shape
        m = w.shape[1]
        grad_state = torch.zeros_like(state)
        grad_q = torch.empty_like(q, memory_format=torch.contiguous_format)
        for rows in _ranges(l_q, ctx.chunk):
            phi_q = kept[0] if kept else _query_features(q[:, rows], w)  # [B, H, c, m]
            g = grad_out[:, rows].transpose(1, 2)  # [B, H, c, E]
            d = den[:, :, rows]
            grad_num_den = torch.empty(*g.shape[:-1], e + 1, dtype=g.dtype, device=g.device)
            torch.div(g, d, out=grad_num_den[..., :e])
            # out = num / den: d den = -sum_e(g * out) / den
            grad_num_den[..., e:] = (g * out[:, rows].transpose(1, 2)).sum(-1, keepdim=True).div_(d).neg_()
            grad_state.view(b * h, m, e + 1).baddbmm_(phi_q.view(b * h, -1, m).transpose(1, 2),
                                                      grad_num_den.view(b * h, -1, e + 1))
            grad_logits = (grad_num_den @ state.transpose(-2, -1)).mul_(phi_q)  # [B, H, c, m]
            grad_q[:, rows] = (grad_logits @ w.t()).transpose(1, 2)
        grad_k = torch.empty_like(k, memory_format=torch.contiguous_format)
        grad_v = torch.empty_like(v, memory_format=torch.contiguous_format)
        for rows in _ranges(k.shape[1], ctx.chunk):
            kc = k[:, rows]
            phi_k = kept[1] if kept else _key_logits(kc, w, e)[0].sub_(shift).exp_()  # [B, H, c, m]
            grad_v[:, rows] = (phi_k @ grad_state[..., :e]).transpose(1, 2)
            grad_logits = (_with_ones(v[:, rows]) @ grad_state.transpose(-2, -1)).mul_(phi_k)
            grad_xk = grad_logits @ w.t()  # [B, H, c, E]
            # the -|x|^2/2 term: d/dk = -(k / sqrt(E)) * sum_m grad_logits
            grad_xk.addcmul_(kc.transpose(1, 2), grad_logits.sum(-1, keepdim=True), value=-e ** -0.5)
            grad_k[:, rows] = grad_xk.transpose(1, 2)
        return grad_q, grad_k, grad_v, None, None

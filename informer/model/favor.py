"""FAVOR+ attention (Choromanski et al., "Rethinking Attention with Performers", ICLR 2021).

Softmax attention ``softmax(q k^T / sqrt(E)) v`` is approximated with positive orthogonal random
features ``phi(x) = exp(w x - |x|^2 / 2)`` on ``x = q / E^(1/4)`` (resp. k), which makes the softmax
kernel an inner product: ``exp(q.k / sqrt(E)) = E_w[phi(q) . phi(k)]``. Then

    non-causal   out = D^-1 phi(Q) (phi(K)^T V),        D = diag(phi(Q) phi(K)^T 1)
    causal       the same with prefix sums over positions, chunk by chunk: exact masked products
                 inside a chunk, the running [m, E] state of earlier chunks (never an L x L matrix)

``nb_features`` (m) defaults to ``max(2E, ceil(E ln E))``, the paper's Theta(E log E). Features are
drawn at construction, redrawn in training every ``feature_redraw_interval`` forward calls (0: never)
and fixed in eval. They live in a buffer, so a checkpoint restores the features it was evaluated with.
A redraw is seeded by the current features, so every DDP replica draws the same new ones.

Long non-causal inputs take :class:`_ChunkedBidirectionalFavor`, a hand-written backward pass that
recomputes the features chunk by chunk instead of keeping two ``[B, L, H, m]`` tensors and their
gradients (at L = 6144, batch 8: 908 instead of 2293 MiB of tensors; benchmarks/levers.md). Device
policy: every device; tested against the plain formula on CPU and, in tests/test_cuda.py, on CUDA.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F

from informer.model.attention import AttentionCore, future_mask

# Bytes of one [B, H, c, m] feature chunk: inputs whose features fit in WHOLE_BYTES take the plain
# formula; longer ones are processed in chunks of CHUNK_BYTES.
WHOLE_BYTES = 32 * 2**20
CHUNK_BYTES = 8 * 2**20


def default_nb_features(head_dim: int) -> int:
    return max(2 * head_dim, math.ceil(head_dim * math.log(head_dim)))


def orthogonal_gaussian_features(nb_features: int, head_dim: int,
                                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``[m, E]`` rows orthogonal within each block of E, with chi(E) lengths like Gaussian rows."""
    n_blocks = math.ceil(nb_features / head_dim)
    gaussian = torch.randn(n_blocks, head_dim, head_dim, generator=generator)
    blocks, _ = torch.linalg.qr(gaussian)  # [n_blocks, E, E], orthonormal columns
    directions = blocks.transpose(1, 2).reshape(-1, head_dim)[:nb_features]  # [m, E]
    lengths = torch.randn(nb_features, head_dim, generator=generator).norm(dim=1, keepdim=True)  # [m, 1]
    return directions * lengths


def chunk_rows(length: int, batch_heads: int, nb_features: int, itemsize: int) -> int:
    """Positions per chunk: all of them when their features fit in WHOLE_BYTES, else CHUNK_BYTES' worth."""
    row_bytes = batch_heads * nb_features * itemsize
    if length * row_bytes <= WHOLE_BYTES:
        return max(1, length)
    return max(1, CHUNK_BYTES // row_bytes)


class FavorAttention(AttentionCore):
    """Performer FAVOR+ attention behind the common core interface (no dropout: no weight matrix)."""

    def __init__(self, causal: bool, head_dim: int, nb_features: int | None = None,
                 feature_redraw_interval: int = 1000, output_attention: bool = False,
                 chunk_size: int = 64, bidirectional_chunk: int | None = None) -> None:
        super().__init__(causal, 0.0, output_attention)
        self.head_dim = head_dim
        self.nb_features = nb_features or default_nb_features(head_dim)
        self.feature_redraw_interval = feature_redraw_interval
        self.chunk_size = chunk_size  # causal: positions per exact masked block
        self.bidirectional_chunk = bidirectional_chunk  # non-causal: positions per chunk (None: by size)
        self.calls_since_redraw = 0
        self.register_buffer("projection", orthogonal_gaussian_features(self.nb_features, head_dim))

    @torch.no_grad()
    def redraw_features(self) -> None:
        current = self.projection.detach().cpu().contiguous().view(torch.uint8).numpy()
        digest = hashlib.sha256(current).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        self.projection.copy_(orthogonal_gaussian_features(self.nb_features, self.head_dim, generator))
        self.calls_since_redraw = 0

    def feature_map(self, x: torch.Tensor, is_query: bool) -> torch.Tensor:
        """Positive random features ``[B, L, H, m]`` of ``x`` ``[B, L, H, E]``, stabilised.

        The stabiliser subtracted before ``exp`` is a constant per query row, or per (batch, head) over
        all keys; both cancel in ``D^-1``. For causal keys the constant is taken over all positions:
        outputs still depend only on the past (up to rounding).
        """
        x = x * self.head_dim ** -0.25
        logits = torch.einsum("blhe,me->blhm", x, self.projection.to(x.dtype))  # [B, L, H, m]
        logits = logits - x.pow(2).sum(-1, keepdim=True) / 2
        # queries: [B, L, H, 1]; keys: [B, 1, H, 1]
        shift = logits.amax(dim=-1, keepdim=True) if is_query else logits.amax(dim=(1, 3), keepdim=True)
        return torch.exp(logits - shift.detach())

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tau: torch.Tensor | None = None,
                delta: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if tau is not None or delta is not None:
            raise ValueError("FAVOR+ attention has no score matrix to rescale: de-stationary factors need "
                             "full or prob attention")
        if self.training and self.feature_redraw_interval > 0:
            if self.calls_since_redraw >= self.feature_redraw_interval:
                self.redraw_features()
            self.calls_since_redraw += 1
        dtype = q.dtype
        work = torch.promote_types(dtype, torch.float32)
        # exp of random projections overflows half precision: features in float32 at least
        with torch.autocast(device_type=q.device.type, enabled=False):
            q, k, v = q.to(work), k.to(work), v.to(work)
            b, _, h, _ = q.shape
            chunk = self.bidirectional_chunk or chunk_rows(max(q.shape[1], k.shape[1]), b * h,
                                                           self.nb_features, q.element_size())
            if not self.causal and chunk < max(q.shape[1], k.shape[1]):
                w = self.projection.to(work).t() * self.head_dim ** -0.25  # [E, m], input scale folded in
                out = _ChunkedBidirectionalFavor.apply(q, k, v, w, chunk)
                phi_q = phi_k = None
            else:
                phi_q = self.feature_map(q, is_query=True)  # [B, L_Q, H, m]
                phi_k = self.feature_map(k, is_query=False)  # [B, L_K, H, m]
                out = self._causal(phi_q, phi_k, v) if self.causal else self._bidirectional(phi_q, phi_k, v)
            weights = None
            if self.output_attention:
                if phi_q is None:
                    phi_q, phi_k = self.feature_map(q, is_query=True), self.feature_map(k, is_query=False)
                weights = self._weights(phi_q, phi_k)
        return out.to(dtype), weights

    @staticmethod
    def _bidirectional(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        kv = torch.einsum("bshm,bshe->bhme", phi_k, v)  # [B, H, m, E]
        num = torch.einsum("blhm,bhme->blhe", phi_q, kv)  # [B, L_Q, H, E]
        den = torch.einsum("blhm,bhm->blh", phi_q, phi_k.sum(dim=1))  # [B, L_Q, H]
        return num / den.clamp_min(torch.finfo(den.dtype).tiny).unsqueeze(-1)

    def _causal(self, phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, l, h, m = phi_q.shape
        if phi_k.shape[1] != l:
            raise ValueError("causal FAVOR+ attention needs as many keys as queries")
        e = v.shape[-1]
        n = math.ceil(l / self.chunk_size)
        c = math.ceil(l / n)  # chunks of at most chunk_size, as even as possible
        pad = n * c - l
        if pad:  # zero features on padded keys add nothing; padded query rows are cut off below
            phi_q, phi_k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (phi_q, phi_k, v))
        pq = phi_q.view(b, n, c, h, m)
        pk = phi_k.view(b, n, c, h, m)
        vc = v.view(b, n, c, h, e)
        # inside a chunk: exact masked products, [c, c] per chunk
        local = torch.einsum("bnihm,bnjhm->bnhij", pq, pk)  # [B, n, H, c, c]
        local = local.masked_fill(future_mask(c, c, local.device), 0.0)
        num = torch.einsum("bnhij,bnjhe->bnihe", local, vc)  # [B, n, c, H, E]
        den = local.sum(-1).transpose(2, 3)  # [B, n, c, H]
        # across chunks: the sums over every earlier chunk (exclusive prefix sums)
        kv = _exclusive_cumsum(torch.einsum("bnjhm,bnjhe->bnhme", pk, vc))  # [B, n, H, m, E]
        z = _exclusive_cumsum(pk.sum(dim=2))  # [B, n, H, m]
        num = num + torch.einsum("bnihm,bnhme->bnihe", pq, kv)
        den = den + torch.einsum("bnihm,bnhm->bnih", pq, z)
        out = num / den.clamp_min(torch.finfo(den.dtype).tiny).unsqueeze(-1)  # [B, n, c, H, E]
        return out.reshape(b, n * c, h, e)[:, :l]

    def _weights(self, phi_q: torch.Tensor, phi_k: torch.Tensor) -> torch.Tensor:
        """The attention matrix the features imply, ``[B, H, L_Q, L_K]`` (inspection only)."""
        w = torch.einsum("blhm,bshm->bhls", phi_q, phi_k)
        if self.causal:
            w = w.masked_fill(future_mask(w.shape[-2], w.shape[-1], w.device), 0.0)
        return w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, nb_features={self.nb_features}, "
                f"feature_redraw_interval={self.feature_redraw_interval}")


def _exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    """``out[:, i] = x[:, :i].sum(1)`` along dim 1 (``out[:, 0]`` is zero)."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1].cumsum(dim=1)], dim=1)


def _ranges(length: int, chunk: int) -> list[slice]:
    return [slice(s, min(s + chunk, length)) for s in range(0, length, chunk)]


def _with_ones(v: torch.Tensor) -> torch.Tensor:
    """``[B, c, H, E]`` -> ``[B, H, c, E + 1]`` with a last column of ones (gives the normaliser)."""
    return F.pad(v.transpose(1, 2), (0, 1), value=1.0)


def _key_logits(k: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``w x - |x|^2 / 2`` for keys ``k [B, c, H, E]`` (x = k / E^(1/4)) as ``[B, H, c, m]``."""
    e = k.shape[-1]
    half_norm = (k.pow(2).sum(-1) * (0.5 * e ** -0.5)).transpose(1, 2).unsqueeze(-1)  # [B, H, c, 1]
    return k.transpose(1, 2) @ w - half_norm


def _query_features(q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``phi(Q_c)`` ``[B, H, c, m]`` stabilised per row; ``|x|^2 / 2`` is constant along a row and
    cancels in ``D^-1`` together with the stabiliser, so it is left out."""
    logits = q.transpose(1, 2) @ w  # [B, H, c, m]
    return (logits - logits.amax(-1, keepdim=True)).exp()


class _ChunkedBidirectionalFavor(torch.autograd.Function):
    """Non-causal FAVOR+ one chunk of positions at a time, features recomputed in backward.

    forward    key chunks     phi(K_c), accumulate S = phi(K)^T [V, 1]   ([B, H, m, E + 1])
               query chunks   phi(Q_c) S -> numerator and normaliser -> out_c
    backward   query chunks   phi(Q_c) again; dS += phi(Q_c)^T d[num, den]; dQ_c
               key chunks     phi(K_c) again; dK_c, dV_c from dS

    The keys' stabiliser (one maximum per batch and head) grows as chunks arrive; the running sum is
    rescaled by ``exp(old - new)`` when it does, as a one-pass softmax does.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,  # type: ignore[override]
                w: torch.Tensor, chunk: int) -> torch.Tensor:
        b, l_q, h, e = q.shape
        state = q.new_zeros(b, h, w.shape[1], e + 1)  # phi(K)^T [V, 1]
        shift = None  # [B, H, 1, 1]
        for rows in _ranges(k.shape[1], chunk):
            logits = _key_logits(k[:, rows], w)  # [B, H, c, m]
            chunk_max = logits.amax(dim=(2, 3), keepdim=True)
            if shift is None:
                shift = chunk_max
            else:
                grown = torch.maximum(shift, chunk_max)
                state = state * torch.exp(shift - grown)
                shift = grown
            state = state + (logits - shift).exp().transpose(-2, -1) @ _with_ones(v[:, rows])
        out = q.new_empty(b, l_q, h, e)
        den = q.new_empty(b, h, l_q, 1)
        for rows in _ranges(l_q, chunk):
            num_den = _query_features(q[:, rows], w) @ state  # [B, H, c, E + 1]
            den[:, :, rows] = num_den[..., e:].clamp_min(torch.finfo(q.dtype).tiny)
            out[:, rows] = (num_den[..., :e] / den[:, :, rows]).transpose(1, 2)
        ctx.save_for_backward(q, k, v, w, state, shift, den, out)
        ctx.chunk = chunk
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        q, k, v, w, state, shift, den, out = ctx.saved_tensors
        e = q.shape[-1]
        grad_state = torch.zeros_like(state)
        grad_q = torch.empty_like(q, memory_format=torch.contiguous_format)
        for rows in _ranges(q.shape[1], ctx.chunk):
            phi_q = _query_features(q[:, rows], w)  # [B, H, c, m]
            g = grad_out[:, rows].transpose(1, 2)  # [B, H, c, E]
            d = den[:, :, rows]
            # out = num / den: d num = g / den, d den = -sum_e(g * out) / den
            grad_den = -(g * out[:, rows].transpose(1, 2)).sum(-1, keepdim=True) / d
            grad_num_den = torch.cat([g / d, grad_den], dim=-1)  # [B, H, c, E + 1]
            grad_state += phi_q.transpose(-2, -1) @ grad_num_den
            grad_logits = (grad_num_den @ state.transpose(-2, -1)) * phi_q  # [B, H, c, m]
            grad_q[:, rows] = (grad_logits @ w.t()).transpose(1, 2)
        grad_k = torch.empty_like(k, memory_format=torch.contiguous_format)
        grad_v = torch.empty_like(v, memory_format=torch.contiguous_format)
        for rows in _ranges(k.shape[1], ctx.chunk):
            kc = k[:, rows]
            phi_k = (_key_logits(kc, w) - shift).exp()  # [B, H, c, m]
            grad_v[:, rows] = (phi_k @ grad_state[..., :e]).transpose(1, 2)
            grad_logits = (_with_ones(v[:, rows]) @ grad_state.transpose(-2, -1)) * phi_k
            # the -|x|^2/2 term: d/dk = -(k / sqrt(E)) * sum_m grad_logits
            grad_xk = grad_logits @ w.t() - kc.transpose(1, 2) * grad_logits.sum(-1, keepdim=True) * e ** -0.5
            grad_k[:, rows] = grad_xk.transpose(1, 2)
        return grad_q, grad_k, grad_v, None, None

"""FAVOR+ attention (Choromanski et al., "Rethinking Attention with Performers", ICLR 2021).

Softmax attention ``softmax(q k^T / sqrt(E)) v`` is approximated with positive orthogonal random
features ``phi(x) = exp(w x - |x|^2 / 2)`` on ``x = q / E^(1/4)`` (resp. k), which makes the softmax
kernel an inner product: ``exp(q.k / sqrt(E)) = E_w[phi(q) . phi(k)]``. Then

    non-causal   out = D^-1 phi(Q) (phi(K)^T V),        D = diag(phi(Q) phi(K)^T 1),
                 in chunks of positions with a hand-written backward (favor_chunked.py)
    causal       the same with prefix sums over positions, done chunk by chunk: exact masked products
                 inside a chunk, a running [m, E] state between chunks (never an L x L matrix)

``nb_features`` (m) defaults to ``max(2E, ceil(E ln E))`` — the Performer paper's Theta(E log E)
(266 for E = 64), with a floor for tiny heads. Features are drawn at construction, redrawn in training
every ``feature_redraw_interval`` forward calls (0: never) and fixed in eval. They live in a buffer,
so a checkpoint restores exactly the features it was evaluated with.
"""

from __future__ import annotations

import math

import torch

from informer.model.core import AttentionCore, QueryRows
from informer.model.favor_chunked import favor_bidirectional
from informer.model.masking import future_mask


def default_nb_features(head_dim: int) -> int:
    return max(2 * head_dim, math.ceil(head_dim * math.log(head_dim)))


def orthogonal_gaussian_features(nb_features: int, head_dim: int,
                                 device: torch.device | str | None = None) -> torch.Tensor:
    """``[m, E]`` rows orthogonal within each block of E, with chi(E) lengths like Gaussian rows."""
    n_blocks = math.ceil(nb_features / head_dim)
    gaussian = torch.randn(n_blocks, head_dim, head_dim, device=device)
    blocks, _ = torch.linalg.qr(gaussian)  # [n_blocks, E, E], orthonormal columns
    directions = blocks.transpose(1, 2).reshape(-1, head_dim)[:nb_features]  # [m, E]
    lengths = torch.randn(nb_features, head_dim, device=device).norm(dim=1, keepdim=True)  # [m, 1]
    return directions * lengths


def _exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    """``out[:, i] = x[:, :i].sum(1)`` (dim 1 holds the chunks; ``out[:, 0]`` is zero)."""
    return _ExclusivePrefixSum.apply(x)


class _ExclusivePrefixSum(torch.autograd.Function):
    """One add per chunk, forward and backward. ``cumsum`` along a middle dimension runs a serial loop
    at about 0.5 GB/s here, and autograd's backward of it adds two flips; chunks are few (L / 64), so
    ``n`` whole-slice adds move each element about once."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = torch.empty_like(x)
        out[:, 0].zero_()
        for i in range(1, x.shape[1]):
            torch.add(out[:, i - 1], x[:, i - 1], out=out[:, i])
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # d x[:, i] = sum of grad[:, j] over j > i: a suffix sum, shifted
        grad_x = torch.empty_like(grad)
        n = grad.shape[1]
        grad_x[:, n - 1].zero_()
        for i in range(n - 2, -1, -1):
            torch.add(grad_x[:, i + 1], grad[:, i + 1], out=grad_x[:, i])
        return grad_x


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
        self.projection.copy_(orthogonal_gaussian_features(self.nb_features, self.head_dim,
                                                           self.projection.device))
        self.calls_since_redraw = 0

    def feature_map(self, x: torch.Tensor, is_query: bool) -> torch.Tensor:
        """Positive random features ``[B, L, H, m]`` of ``x`` ``[B, L, H, E]``, stabilised.

        The stabiliser subtracted before ``exp`` (as in the Performer paper) is a constant per query
        row, or per (batch, head) over all keys; both cancel in ``D^-1``, so it changes no output. For
        keys under a causal mask the constant is taken over all positions: the outputs still depend only
        on the past (up to float rounding), and the largest key feature is exactly 1.
        """
        x = x * self.head_dim ** -0.25
        logits = torch.einsum("blhe,me->blhm", x, self.projection.to(x.dtype))  # [B, L, H, m]
        logits = logits - x.pow(2).sum(-1, keepdim=True) / 2
        # queries: [B, L, H, 1]; keys: [B, 1, H, 1]
        shift = logits.amax(dim=-1, keepdim=True) if is_query else logits.amax(dim=(1, 3), keepdim=True)
        return torch.exp(logits - shift.detach())

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                query_rows: QueryRows | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.training and self.feature_redraw_interval > 0:
            if self.calls_since_redraw >= self.feature_redraw_interval:
                self.redraw_features()
            self.calls_since_redraw += 1
        dtype = q.dtype
        work = torch.promote_types(dtype, torch.float32)
        # exp of random projections overflows half precision: compute the features in float32 at least
        with torch.autocast(device_type=q.device.type, enabled=False):
            q, k, v = q.to(work), k.to(work), v.to(work)
            if not self.causal:
                out, weights = self._bidirectional(q, k, v)
                return out.to(dtype), weights
            phi_q = self.feature_map(q, is_query=True)  # [B, L_Q, H, m]
            phi_k = self.feature_map(k, is_query=False)  # [B, L_K, H, m]
            out = self._causal(phi_q, phi_k, v)
            weights = self._weights(phi_q, phi_k) if self.output_attention else None
        return out.to(dtype), weights

    def _bidirectional(self, q: torch.Tensor, k: torch.Tensor,
                       v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Non-causal FAVOR+ chunk by chunk (:mod:`informer.model.favor_chunked`): the same features
        as :meth:`feature_map`, never a full-length m-wide tensor."""
        out = favor_bidirectional(q, k, v, self.projection, self.bidirectional_chunk)
        weights = None
        if self.output_attention:
            weights = self._weights(self.feature_map(q, is_query=True), self.feature_map(k, is_query=False))
        return out, weights

    def _causal(self, phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, l, h, m = phi_q.shape
        if phi_k.shape[1] != l:
            raise ValueError("causal FAVOR+ attention needs as many keys as queries")
        e = v.shape[-1]
        n = math.ceil(l / self.chunk_size)
        c = math.ceil(l / n)  # chunks of at most chunk_size, as even as possible: 72 -> 2 x 36, not 64 + 64
        pad = n * c - l
        if pad:  # zero features on padded keys add nothing; padded query rows are cut off below
            phi_q, phi_k, v = (torch.nn.functional.pad(t, (0, 0, 0, 0, 0, pad)) for t in (phi_q, phi_k, v))
        pq = phi_q.view(b, n, c, h, m)
        pk = phi_k.view(b, n, c, h, m)
        vc = v.view(b, n, c, h, e)
        # inside a chunk: exact masked products, [c, c] per chunk
        local = torch.einsum("bnihm,bnjhm->bnhij", pq, pk)  # [B, n, H, c, c]
        local = local.masked_fill(future_mask(c, c, local.device), 0.0)
        num = torch.einsum("bnhij,bnjhe->bnihe", local, vc)  # [B, n, c, H, E]
        den = local.sum(-1).transpose(2, 3)  # [B, n, c, H]
        # across chunks: the state of every earlier chunk (exclusive prefix sum over chunks)
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

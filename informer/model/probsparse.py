"""ProbSparse self-attention (Zhou et al., AAAI 2021, section 3.1).

Each query gets a sparsity score ``M = max_j s_ij - sum_j s_ij / L_K`` from ``U = factor * ceil(ln L_K)``
keys sampled for it; the ``u = factor * ceil(ln L_Q)`` queries with the largest M attend exactly, the
other ("lazy") queries output the mean of the values (causal: the mean over positions ``<= i``).

Differences from the official code, on purpose:

* eval mode samples from a CPU generator seeded afresh on every call, so the same input gives the
  same output on any device; training samples from the global RNG (reproducible under
  ``torch.manual_seed``);
* with a causal mask, query ``i`` samples keys only from ``0..i``, and lazy queries get the mean of
  ``V[:i+1]`` where the official code uses an unnormalised cumulative sum;
* attention dropout is applied to the active queries' weights (the official code never calls it);
* the sampled scores never build the official ``[B, H, L_Q, U, E]`` tensor of gathered keys
  (2.2 GB at L = 3072, batch 8): see :func:`sampled_scores`.

The output has the dtype of ``q``, also under autocast (where the lazy means come out in float32).
"""

from __future__ import annotations

import math

import torch

from informer.model.attention import AttentionCore, future_mask, softmax_attention

EVAL_SEED = 2021  # eval-mode key sampling; any fixed value makes inference deterministic
# CPU: up to this many keys per sampled key the dense product beats gathering and matches the sparse one
DENSE_KEYS_PER_SAMPLE = 16


def sampled_scores(q: torch.Tensor, k: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``s[b, i, h, u] = q[b, i, h] . k[b, idx[i, u], h]``: ``[B, L_Q, H, U]``, without gradient.

    Device policy: accelerators run the plain :func:`sampled_scores_gathered`. On CPU gathering the
    keys costs over 10 % of a default training step (benchmarks/levers.md), so short key sequences take
    every score as one matrix product and keep the sampled columns (:func:`sampled_scores_dense`, as
    fast as the sparse product there), and long ones, where that would be quadratic, take
    :func:`sampled_scores_sddmm`. Tests check that all of them agree.
    """
    if q.device.type != "cpu":
        return sampled_scores_gathered(q, k, idx)
    if k.shape[1] <= DENSE_KEYS_PER_SAMPLE * idx.shape[1]:
        return sampled_scores_dense(q, k, idx)
    return sampled_scores_sddmm(q, k, idx)


def sampled_scores_dense(q: torch.Tensor, k: torch.Tensor, idx: torch.Tensor,
                         max_elements: int = 1 << 24) -> torch.Tensor:
    """Every score of a block of queries as one product, then the sampled columns (bounded memory)."""
    b, l_q, h, _ = q.shape
    block = max(1, max_elements // (b * h * k.shape[1]))
    parts = []
    for start in range(0, l_q, block):
        scores = torch.einsum("bche,bshe->bchs", q[:, start:start + block], k)  # [B, c, H, L_K]
        columns = idx[start:start + block].view(1, -1, 1, idx.shape[1]).expand(b, -1, h, -1)  # [B, c, H, U]
        parts.append(scores.gather(-1, columns))
    return torch.cat(parts, dim=1)  # [B, L_Q, H, U]


def sampled_scores_gathered(q: torch.Tensor, k: torch.Tensor, idx: torch.Tensor,
                            max_elements: int = 1 << 24) -> torch.Tensor:
    """The plain formula: gather the sampled keys for a block of queries at a time (bounded memory)."""
    b, l_q, h, e = q.shape
    block = max(1, max_elements // (b * idx.shape[1] * h * e))
    parts = []
    for start in range(0, l_q, block):
        keys = k[:, idx[start:start + block]]  # [B, c, U, H, E]
        parts.append(torch.einsum("bche,bcuhe->bchu", q[:, start:start + block], keys))  # [B, c, H, U]
    return torch.cat(parts, dim=1)  # [B, L_Q, H, U]


def sampled_scores_sddmm(q: torch.Tensor, k: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The same scores as ``torch.sparse.sampled_addmm`` of ``[B, L_Q*H, E] x [B, E, L_K*H]`` with
    ``U`` entries per row at the sampled keys of the same head (row ``(i, h)`` pairs with ``(j, h)``)."""
    b, l_q, h, e = q.shape
    l_k, n_sample = k.shape[1], idx.shape[1]
    dtype = q.dtype if q.dtype in (torch.float32, torch.float64) else torch.float32
    nnz = l_q * h * n_sample
    heads = torch.arange(h, device=idx.device).view(1, h, 1)
    cols = (idx.unsqueeze(1) * h + heads).reshape(-1)  # [L_Q*H*U], ordered (i, h, u)
    crow = torch.arange(0, nnz + 1, n_sample, device=q.device)  # [L_Q*H + 1]
    # long inputs on CPU only; torch notes once per process that its sparse CSR support is in beta
    pattern = torch.sparse_csr_tensor(crow.expand(b, -1), cols.expand(b, -1),
                                      torch.zeros(b, nnz, dtype=dtype, device=q.device),
                                      size=(b, l_q * h, l_k * h), check_invariants=False)
    scores = torch.sparse.sampled_addmm(pattern, q.reshape(b, l_q * h, e).to(dtype),
                                        k.reshape(b, l_k * h, e).to(dtype).transpose(1, 2), beta=0.0)
    return scores.values().view(b, l_q, h, n_sample).to(q.dtype)  # [B, L_Q, H, U]


class ProbAttention(AttentionCore):
    """ProbSparse attention; see the module docstring. ``factor`` is the paper's sampling factor c."""

    def __init__(self, causal: bool = False, factor: int = 5, dropout: float = 0.0,
                 output_attention: bool = False) -> None:
        super().__init__(causal, dropout, output_attention)
        self.factor = factor
        self.last_key_indices: torch.Tensor | None = None  # for inspection: the last sample, [L_Q, U]

    def budget(self, length: int) -> int:
        """``factor * ceil(ln length)``, at least 1 and at most ``length`` (gives both U and u)."""
        return min(length, max(1, self.factor * math.ceil(math.log(length))))

    def sample_key_indices(self, l_q: int, l_k: int, device: torch.device | str | None = None,
                           generator: torch.Generator | None = None) -> torch.Tensor | None:
        """Key indices ``[L_Q, U]`` sampled (with replacement) per query, or None when U covers L_K."""
        n_sample = self.budget(l_k)
        if n_sample >= l_k:
            return None
        if not self.causal:
            return torch.randint(l_k, (l_q, n_sample), device=device, generator=generator)
        # query i draws uniformly from keys 0..i, so its score never looks at the future
        r = torch.rand(l_q, n_sample, device=device, generator=generator)  # [L_Q, U] in [0, 1)
        visible = torch.arange(1, l_q + 1, device=device).clamp_max(l_k).unsqueeze(1)  # [L_Q, 1]
        return (r * visible).long().minimum(visible - 1)  # float rounding can reach r * n == n

    def sparsity_measure(self, q: torch.Tensor, k: torch.Tensor, idx: torch.Tensor | None,
                         tau: torch.Tensor | None = None, delta: torch.Tensor | None = None) -> torch.Tensor:
        """``M = max - sum / L_K`` over the sampled keys (all visible keys if idx is None): ``[B, L_Q, H]``.

        Scores are rescaled as attention rescales them (``s * tau + delta``) before the measure is
        taken. Divides by L_K rather than the sample size, as the official code does."""
        b, l_q, l_k = q.shape[0], q.shape[1], k.shape[1]
        if idx is not None:
            scores = sampled_scores(q, k, idx)  # [B, L_Q, H, U]
            shift = None if delta is None else delta[:, idx].unsqueeze(2)  # [B, L_Q, 1, U]
        else:
            scores = torch.einsum("blhe,bshe->blhs", q, k)  # [B, L_Q, H, L_K], small: U >= L_K
            shift = None if delta is None else delta.view(b, 1, 1, l_k)
        if tau is not None:
            scores = scores * tau.view(b, 1, 1, 1)
        if shift is not None:
            scores = scores + shift
        if idx is not None or not self.causal:
            return scores.amax(-1) - scores.sum(-1) / l_k
        future = future_mask(l_q, l_k, q.device).unsqueeze(1)  # [L_Q, 1, L_K]
        visible_max = scores.masked_fill(future, float("-inf")).amax(-1)
        return visible_max - scores.masked_fill(future, 0.0).sum(-1) / l_k

    def _sample(self, l_q: int, l_k: int, device: torch.device) -> torch.Tensor | None:
        if self.training:  # the global RNG of the device: reproducible under torch.manual_seed
            return self.sample_key_indices(l_q, l_k, device)
        # eval: a fixed CPU stream, so a checkpoint forecasts the same on every device
        idx = self.sample_key_indices(l_q, l_k, generator=torch.Generator().manual_seed(EVAL_SEED))
        return None if idx is None else idx.to(device)

    def _lazy_output(self, v: torch.Tensor, l_q: int) -> torch.Tensor:
        """What lazy queries output, ``[B, L_Q, H, E]``: the mean of V, or of ``V[:i+1]`` for query i."""
        b, l_k, h, e = v.shape
        if not self.causal:
            return v.mean(dim=1, keepdim=True).expand(b, l_q, h, e)
        counts = torch.arange(1, l_k + 1, device=v.device, dtype=v.dtype).view(1, l_k, 1, 1)
        means = v.cumsum(dim=1) / counts  # [B, L_K, H, E]
        if l_q != l_k:  # queries past the last key see every key
            means = means[:, torch.arange(l_q, device=v.device).clamp_max(l_k - 1)]
        return means

    def _lazy_weights(self, b: int, h: int, l_q: int, l_k: int, device: torch.device) -> torch.Tensor:
        if not self.causal:
            return torch.full((b, h, l_q, l_k), 1.0 / l_k, device=device)
        visible = (~future_mask(l_q, l_k, device)).float()  # [L_Q, L_K]
        return (visible / visible.sum(-1, keepdim=True)).expand(b, h, l_q, l_k)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tau: torch.Tensor | None = None,
                delta: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, l_q, h, e = q.shape
        l_k = k.shape[1]
        n_top = self.budget(l_q)
        self.last_key_indices = None
        if n_top >= l_q:  # every query active: exact attention
            out, weights = softmax_attention(q, k, v, self.dropout, self.output_attention,
                                             is_causal=self.causal, tau=tau, delta=delta)
            return out.to(q.dtype), weights

        with torch.no_grad():  # the selection is discrete: no gradient flows through M
            idx = self._sample(l_q, l_k, q.device)
            self.last_key_indices = idx
            # chosen across all queries, as in the paper, even under a causal mask
            measure = self.sparsity_measure(q, k, idx, tau, delta)  # [B, L_Q, H]
            top = measure.topk(n_top, dim=1, sorted=False).indices  # [B, u, H]
        rows = top.unsqueeze(-1).expand(b, n_top, h, e)  # [B, u, H, E]
        positions = top.transpose(1, 2)  # [B, H, u]: where each active query sits
        mask = None
        if self.causal:  # True where the key lies after the active query's position
            mask = torch.arange(l_k, device=q.device) > positions.unsqueeze(-1)  # [B, H, u, L_K]
        active, weights = softmax_attention(q.gather(1, rows), k, v, self.dropout, self.output_attention,
                                            mask=mask, tau=tau, delta=delta)  # [B, u, H, E]
        out = self._lazy_output(v, l_q).to(active.dtype).scatter(1, rows, active)  # [B, L_Q, H, E]
        if weights is not None:
            lazy = self._lazy_weights(b, h, l_q, l_k, q.device).to(weights.dtype)  # [B, H, L_Q, L_K]
            weights = lazy.scatter(2, positions.unsqueeze(-1).expand(-1, -1, -1, l_k), weights)
        return out.to(q.dtype), weights

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factor={self.factor}"

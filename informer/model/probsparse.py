"""ProbSparse self-attention (Zhou et al., AAAI 2021, section 3.1).

Each query gets a sparsity score M from ``U = factor * ceil(ln L_K)`` keys sampled for it; the
``u = factor * ceil(ln L_Q)`` queries with the largest M attend exactly, the other ("lazy") queries
output the mean of the values (causal: the mean over positions ``<= i``).

Differences from the official code, on purpose:

* eval mode samples from a generator seeded afresh on every call, so the same input gives the same
  output (the official code samples from the global RNG at test time too); training keeps the global
  RNG, so runs are reproducible under ``torch.manual_seed``;
* with a causal mask, query ``i`` samples keys only from ``0..i``, and lazy queries get the mean of
  ``V[:i+1]`` where the official code uses an unnormalised cumulative sum;
* attention dropout is applied to the active queries' weights (the official code builds it and never
  calls it);
* the sampled scores are a sampled dense-dense product (SDDMM) on CPU instead of a gathered
  ``[B, H, L_Q, U, E]`` key tensor, which at L = 3072 and batch 8 would take 2.2 GB.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from informer.model.core import AttentionCore, QueryRows
from informer.model.masking import future_mask, future_mask_at

EVAL_SEED = 2021  # eval-mode key sampling; any fixed value makes inference deterministic


def cumulative_mean(x: torch.Tensor, block: int = 64) -> torch.Tensor:
    """``out[:, i] = x[:, :i+1].mean(1)`` for ``x`` ``[B, L, D]``, as matrix products.

    ``cumsum`` along a middle dimension runs a serial loop (about 0.5 GB/s here). Up to ``2 * block``
    steps this is one product with the lower-triangular averaging matrix; longer inputs take
    triangular products inside blocks of ``block`` steps plus a running total of the block sums, so
    the work stays O(L * block) rather than O(L**2).
    """
    b, length, d = x.shape
    steps = torch.arange(1, length + 1, device=x.device, dtype=x.dtype).unsqueeze(-1)  # [L, 1]
    if length <= 2 * block:
        averaging = torch.ones(length, length, device=x.device, dtype=x.dtype).tril() / steps
        return torch.matmul(averaging, x)
    n_blocks = -(-length // block)
    padded = F.pad(x, (0, 0, 0, n_blocks * block - length)).view(b, n_blocks, block, d)
    lower = torch.ones(block, block, device=x.device, dtype=x.dtype).tril()
    sums = torch.matmul(lower, padded)  # [B, n_blocks, block, D]: running sums inside each block
    totals = sums[:, :, -1]  # [B, n_blocks, D]
    sums = sums + (totals.cumsum(dim=1) - totals).unsqueeze(2)  # plus every earlier block
    return sums.view(b, n_blocks * block, d)[:, :length] / steps


def sampled_scores(q: torch.Tensor, k: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``s[b, i, h, u] = q[b, i, h] . k[b, idx[i, u], h]`` for q ``[B, L_Q, H, E]``, k ``[B, L_K, H, E]``.

    Returns ``[B, L_Q, H, U]``; no per-query copy of the keys is ever made whole.
    """
    if q.device.type == "cpu":
        return _sampled_scores_sddmm(q, k, idx)
    return _sampled_scores_gather(q, k, idx)


def _sampled_scores_sddmm(q: torch.Tensor, k: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    b, l_q, h, e = q.shape
    l_k, n_sample = k.shape[1], idx.shape[1]
    dtype = q.dtype if q.dtype in (torch.float32, torch.float64) else torch.float32
    # Row (i, h) of Q seen as [B, L_Q*H, E] pairs with row (j, h) of K seen as [B, L_K*H, E]: one
    # sparsity pattern with U entries per row serves every head, and both views cost no copy.
    q_rows = q.reshape(b, l_q * h, e).to(dtype)  # [B, L_Q*H, E]
    k_rows = k.reshape(b, l_k * h, e).to(dtype)  # [B, L_K*H, E]
    nnz = l_q * h * n_sample
    index_dtype = torch.int32 if max(nnz, l_k * h) < 2**31 - 1 else torch.int64
    heads = torch.arange(h, device=idx.device).view(1, h, 1)
    cols = (idx.unsqueeze(1) * h + heads).reshape(-1).to(index_dtype)  # [L_Q*H*U], ordered (i, h, u)
    crow = torch.arange(0, nnz + 1, n_sample, device=q.device, dtype=index_dtype)  # [L_Q*H + 1]
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        pattern = torch.sparse_csr_tensor(
            crow.expand(b, -1), cols.expand(b, -1),  # the same pattern for every batch element
            torch.zeros(b, nnz, dtype=dtype, device=q.device),  # beta=0 still reads it: no empty()
            size=(b, l_q * h, l_k * h), check_invariants=False,
        )
        # written in place (out=pattern): a separate result would copy the indices and values first
        torch.sparse.sampled_addmm(pattern, q_rows, k_rows.transpose(1, 2), beta=0.0, out=pattern)
    _pass_on(notes)
    return pattern.values().view(b, l_q, h, n_sample).to(q.dtype)  # [B, L_Q, H, U]


def _pass_on(notes: list[warnings.WarningMessage]) -> None:
    """Re-issue caught warnings except torch's once-per-process notice that sparse CSR is in beta.

    That notice speaks to the API, not to the user's run (the product is exact, see the tests), and
    would otherwise land in the middle of a training log.
    """
    for note in notes:
        if "sparse csr tensor support is in beta" not in str(note.message).lower():
            warnings.warn_explicit(note.message, note.category, note.filename, note.lineno,
                                   source=note.source)


def _sampled_scores_gather(q: torch.Tensor, k: torch.Tensor, idx: torch.Tensor,
                           max_elements: int = 1 << 24) -> torch.Tensor:
    # Accelerators: gather keys for a block of queries at a time so the gathered block stays bounded.
    b, l_q, h, e = q.shape
    n_sample = idx.shape[1]
    block = max(1, max_elements // (b * n_sample * h * e))
    parts = []
    for start in range(0, l_q, block):
        keys = k[:, idx[start:start + block]]  # [B, c, U, H, E]
        parts.append(torch.einsum("bche,bcuhe->bchu", q[:, start:start + block], keys))  # [B, c, H, U]
    return torch.cat(parts, dim=1)  # [B, L_Q, H, U]


@torch.compiler.disable
def _sampled_sparsity(q: torch.Tensor, k: torch.Tensor, idx: torch.Tensor, l_k: int) -> torch.Tensor:
    """``max - sum / L_K`` of the sampled scores, ``[B, L_Q, H]``, run outside torch.compile.

    Dynamo can neither trace the sparse CSR kernel nor wrap a view of its values when it resumes after
    the graph break (torch 2.13), so the reduction happens here too and only a fresh tensor goes back.
    """
    scores = sampled_scores(q, k, idx)  # [B, L_Q, H, U]
    return scores.amax(-1) - scores.sum(-1) / l_k


def flat_rows(top: torch.Tensor, l_q: int) -> torch.Tensor:
    """Row numbers in ``[B * L_Q * H, E]`` of the active queries ``top`` ``[B, u, H]``, ordered as
    ``[B, u, H]``: (b, top[b, j, h], h) -> (b * L_Q + top[b, j, h]) * H + h."""
    b, _, h = top.shape
    batch = torch.arange(b, device=top.device).view(b, 1, 1) * l_q
    heads = torch.arange(h, device=top.device).view(1, 1, h)
    return ((batch + top) * h + heads).reshape(-1)


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """``[B, L, H, E]`` -> ``[B * L * H, E]`` (a view when the last three dims are packed)."""
    return x.reshape(-1, x.shape[-1])


class _TakeRows(torch.autograd.Function):
    """``x[b, top[b, j, h], h]`` as ``[B, u, H, E]``: ``gather`` along L, as whole E-wide rows.

    ``gather`` walks its expanded index element by element and its backward is a ``scatter_add`` into
    zeros; rows picked by ``index_select`` and put back by ``index_copy_`` (the rows are distinct: top-k
    per batch and head) are contiguous copies of E values each.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, _, h, e = x.shape
        ctx.save_for_backward(rows)
        ctx.shape = x.shape
        return _as_rows(x).index_select(0, rows).view(b, -1, h, e)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (rows,) = ctx.saved_tensors
        b, l_q, h, e = ctx.shape
        grad_x = grad.new_zeros(b * l_q * h, e).index_copy_(0, rows, _as_rows(grad))
        return grad_x.view(b, l_q, h, e), None


class _MeanOutsideActiveRows(torch.autograd.Function):
    """Non-causal output assembly: the active rows, and the mean of V everywhere else.

    Autograd of ``v.mean().expand().scatter()`` would clone the incoming gradient to zero the active rows
    and materialise the mean's broadcast gradient; here the gradient of the mean is a sum of the lazy
    rows, and it reaches V as a broadcast view (no [B, L, H, E] temporaries).
    """

    @staticmethod
    def forward(ctx, v: torch.Tensor, active: torch.Tensor, rows: torch.Tensor,  # type: ignore[override]
                l_q: int) -> torch.Tensor:
        b, l_k, h, e = v.shape
        ctx.save_for_backward(rows)
        ctx.l_k = l_k
        out = v.new_empty(b, l_q, h, e)
        out.copy_(v.mean(dim=1, keepdim=True).expand(b, l_q, h, e))  # [B, L_Q, H, E]
        out.view(-1, e).index_copy_(0, rows, _as_rows(active))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (rows,) = ctx.saved_tensors
        b, _, h, e = grad.shape
        grad_active = _as_rows(grad).index_select(0, rows).view(b, -1, h, e)  # [B, u, H, E]
        lazy_sum = grad.sum(dim=1, keepdim=True) - grad_active.sum(dim=1, keepdim=True)  # [B, 1, H, E]
        grad_v = (lazy_sum / ctx.l_k).expand(b, ctx.l_k, h, e)  # broadcast view, no copy
        return grad_v, grad_active, None, None


class ProbAttention(AttentionCore):
    """ProbSparse attention; see the module docstring. ``factor`` is the paper's sampling factor c."""

    def __init__(self, causal: bool = False, factor: int = 5, dropout: float = 0.0,
                 output_attention: bool = False) -> None:
        super().__init__(causal, dropout, output_attention)
        self.factor = factor
        # debug/test hook: the key indices sampled by the last forward ([L_Q, U]; None if all keys used)
        self.last_key_indices: torch.Tensor | None = None

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

    def sparsity_measure(self, q: torch.Tensor, k: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        """``M = max_j s_ij - sum_j s_ij / L_K`` over the sampled keys (all visible keys if idx is None).

        Divides by L_K rather than the sample size, as the issue specifies (and the official code does).
        Returns ``[B, L_Q, H]``.
        """
        l_q, l_k = q.shape[1], k.shape[1]
        if idx is None:
            scores = torch.einsum("blhe,bshe->blhs", q, k)  # [B, L_Q, H, L_K], small: U >= L_K
            if self.causal:
                future = future_mask(l_q, l_k, q.device).unsqueeze(1)  # [L_Q, 1, L_K]
                return (scores.masked_fill(future, float("-inf")).amax(-1)
                        - scores.masked_fill(future, 0.0).sum(-1) / l_k)
        else:
            return _sampled_sparsity(q, k, idx, l_k)
        return scores.amax(-1) - scores.sum(-1) / l_k

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.training:
            return None  # the global RNG: random in training, reproducible under torch.manual_seed
        generator = torch.Generator(device=device)
        generator.manual_seed(EVAL_SEED)
        return generator

    def _lazy_context(self, v: torch.Tensor, l_q: int) -> torch.Tensor:
        """Causal lazy queries: ``[B, L_Q, H, E]``, the mean of ``V[:i+1]`` for query i."""
        b, l_k, h, e = v.shape
        means = cumulative_mean(v.reshape(b, l_k, h * e)).view(b, l_k, h, e)  # mean of V[:i+1]
        if l_q != l_k:
            means = means.index_select(1, torch.arange(l_q, device=v.device).clamp_max(l_k - 1))
        return means

    def _lazy_weights(self, b: int, h: int, l_q: int, l_k: int, device: torch.device) -> torch.Tensor:
        if not self.causal:
            return torch.full((b, h, l_q, l_k), 1.0 / l_k, device=device)
        visible = (~future_mask(l_q, l_k, device)).float()  # [L_Q, L_K]
        return (visible / visible.sum(-1, keepdim=True)).expand(b, h, l_q, l_k)

    def _fused(self, q_top: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               positions: torch.Tensor | None) -> torch.Tensor:
        """Exact attention of the active queries through the fused kernel (strided views, no copies)."""
        p = self.dropout.p if self.training else 0.0
        mask, is_causal = None, False
        if self.causal and positions is None:
            is_causal = True  # every query active: the ordinary causal mask, no mask tensor needed
        elif self.causal:
            mask = ~future_mask_at(positions, k.shape[1])  # [B, H, u, L_K], True where allowed
        out = F.scaled_dot_product_attention(
            q_top.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),  # [B, H, L, E] views
            attn_mask=mask, dropout_p=p, is_causal=is_causal,
        )  # [B, H, u, E]
        return out.transpose(1, 2)  # [B, u, H, E]

    def _explicit(self, q_top: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  positions: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The same attention with its weights materialised (for ``output_attention``, and for dropout in
        training on CPU: see :meth:`explicit_weights`)."""
        l_k = k.shape[1]
        scores = torch.einsum("buhe,bshe->bhus", q_top, k) / math.sqrt(q_top.shape[-1])  # [B, H, u, L_K]
        if self.causal:
            if positions is None:
                positions = torch.arange(q_top.shape[1], device=q_top.device)  # [u]
            scores = scores.masked_fill(future_mask_at(positions, l_k), float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # [B, H, u, L_K]
        return torch.einsum("bhus,bshe->buhe", self.dropout(weights), v), weights  # [B, u, H, E]

    def selects_query_rows(self, l_q: int, n_heads: int) -> bool:
        # The re-projection keeps its input rows, [B, u*H, d_model], for the backward pass; below
        # u*H = L_Q that is less than the [B, L_Q, d_model] queries it saves (short inputs: not).
        n_top = self.budget(l_q)
        return n_top < l_q and n_top * n_heads < l_q

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                query_rows: QueryRows | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, l_q, h, e = q.shape
        l_k = k.shape[1]
        n_top = self.budget(l_q)
        top = None  # every query active
        self.last_key_indices = None
        if n_top < l_q:
            with torch.no_grad():  # the selection is discrete: no gradient flows through M
                idx = self.sample_key_indices(l_q, l_k, q.device, self._generator(q.device))
                self.last_key_indices = idx
                m = self.sparsity_measure(q, k, idx)  # [B, L_Q, H]
                # chosen across all queries, as in the paper, even under a causal mask
                top = m.topk(n_top, dim=1, sorted=False).indices  # [B, u, H]

        if top is None:
            q_top, positions = (q if query_rows is None else query_rows(None)), None
        else:
            rows = flat_rows(top, l_q)  # [B*u*H]
            # [B, u, H, E]; with query_rows projected again with gradient
            q_top = _TakeRows.apply(q, rows) if query_rows is None else query_rows(top)
            positions = top.transpose(1, 2)  # [B, H, u]: where each active query sits
        if self.explicit_weights(q.device):
            active, weights = self._explicit(q_top, k, v, positions)
            weights = weights if self.output_attention else None
        else:
            active, weights = self._fused(q_top, k, v, positions), None  # [B, u, H, E]
        if top is None:
            return active, weights

        if self.causal:
            out = self._lazy_context(v, l_q)  # [B, L_Q, H, E], a fresh contiguous tensor
            out.view(-1, e).index_copy_(0, rows, _as_rows(active))
        else:
            out = _MeanOutsideActiveRows.apply(v, active, rows, l_q)  # [B, L_Q, H, E]
        if weights is None:
            return out, None
        full = self._lazy_weights(b, h, l_q, l_k, q.device).to(weights.dtype)  # [B, H, L_Q, L_K]
        full = full.scatter(2, positions.unsqueeze(-1).expand(-1, -1, -1, l_k), weights)
        return out, full

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factor={self.factor}"

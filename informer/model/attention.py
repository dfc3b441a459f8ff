"""Multi-head attention: one core interface, exact softmax attention, and the projection layer.

Every core maps per-head queries, keys and values to per-head outputs with one signature, so the
layer, the encoder and the decoder never need to know which kind they hold:

    out, weights = core(q, k, v, tau=None, delta=None)
    q       [B, L_Q, H, E]      k, v    [B, L_K, H, E]
    out     [B, L_Q, H, E]      weights [B, H, L_Q, L_K] when ``output_attention`` else None

Cores: ``full`` (:class:`FullAttention`), ``prob`` (:class:`~informer.model.probsparse.ProbAttention`),
``favor`` (:class:`~informer.model.favor.FavorAttention`). ``tau [B, 1]`` and ``delta [B, L_K]`` are
the de-stationary factors (informer.model.normalization; full and prob only). Causal masks are
top-left aligned, as in ``scaled_dot_product_attention(is_causal=True)``: query ``i`` reads keys
``j <= i``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from informer.config import ModelConfig


def future_mask(l_q: int, l_k: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean ``[L_Q, L_K]``, True where key ``j`` lies in the future of query ``i`` (``j > i``)."""
    return torch.ones(l_q, l_k, dtype=torch.bool, device=device).triu(diagonal=1)


class AttentionCore(nn.Module):
    """Base class: a causal flag, attention dropout and whether to return the weights."""

    def __init__(self, causal: bool = False, dropout: float = 0.0, output_attention: bool = False) -> None:
        super().__init__()
        self.causal = causal
        self.output_attention = output_attention
        self.dropout = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tau: torch.Tensor | None = None,
                delta: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"causal={self.causal}, output_attention={self.output_attention}"


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: nn.Module,
                      want_weights: bool, mask: torch.Tensor | None = None, is_causal: bool = False,
                      tau: torch.Tensor | None = None, delta: torch.Tensor | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``softmax((q k^T * tau + delta) / sqrt(E)) v`` for q ``[B, L_Q, H, E]``, hiding the future when
    ``is_causal`` or where ``mask`` (True = hidden, broadcast to ``[B, H, L_Q, L_K]``) says so.

    ``tau`` ``[B, 1]`` and ``delta`` ``[B, L_K]`` are the de-stationary factors (absent: 1 and 0). Runs
    SDPA unless the weights are wanted, in which case they are materialised and returned (pre-dropout).
    """
    b, l_q, _, e = q.shape
    l_k = k.shape[1]
    if tau is not None:
        q = q * tau.view(b, 1, 1, 1).to(q.dtype)
    bias = None  # [B or 1, 1, L_Q or 1, L_K], added to the scaled scores
    if delta is not None:
        bias = (delta / math.sqrt(e)).view(b, 1, 1, l_k).to(q.dtype)
        if is_causal:
            mask, is_causal = future_mask(l_q, l_k, q.device), False
        if mask is not None:
            bias = torch.where(mask, float("-inf"), bias)  # [B, H or 1, L_Q, L_K]
    if not want_weights:
        p = dropout.p if dropout.training else 0.0
        attn_mask = bias if bias is not None else (None if mask is None else ~mask)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),  # [B, H, L, E]
            attn_mask=attn_mask, dropout_p=p, is_causal=is_causal,
        )  # [B, H, L_Q, E]
        return out.transpose(1, 2), None  # [B, L_Q, H, E]
    scores = torch.einsum("blhe,bshe->bhls", q, k) / math.sqrt(e)  # [B, H, L_Q, L_K]
    if is_causal:
        mask = future_mask(l_q, l_k, q.device)
    if bias is not None:
        scores = scores + bias
    elif mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    out = torch.einsum("bhls,bshe->blhe", dropout(weights).to(v.dtype), v)  # [B, L_Q, H, E]
    return out, weights


class FullAttention(AttentionCore):
    """Exact softmax attention (the canonical Transformer's)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tau: torch.Tensor | None = None,
                delta: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        return softmax_attention(q, k, v, self.dropout, self.output_attention, is_causal=self.causal,
                                 tau=tau, delta=delta)


class AttentionLayer(nn.Module):
    """Query/key/value/output projections around an attention core.

    ``mix`` reproduces the official decoder self-attention: the core's ``[B, L, H, E]`` output is
    transposed to ``[B, H, L, E]`` and that memory is read back as ``[B, L, H*E]``, so each output row
    mixes several positions of one head. It changes the function (not just the layout), which is why
    checkpoints trained with it need it.
    """

    def __init__(self, core: AttentionCore, d_model: int, n_heads: int, mix: bool = False) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"model.d_model ({d_model}) must be divisible by model.n_heads ({n_heads})")
        self.inner_attention = core
        self.n_heads = n_heads
        self.mix = mix
        self.query_projection = nn.Linear(d_model, d_model)
        self.key_projection = nn.Linear(d_model, d_model)
        self.value_projection = nn.Linear(d_model, d_model)
        self.out_projection = nn.Linear(d_model, d_model)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                tau: torch.Tensor | None = None, delta: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``tau``/``delta``: de-stationary factors for the core (self-attention with ``destationary``)."""
        b, l_q, _ = queries.shape
        l_k, h = keys.shape[1], self.n_heads
        q = self.query_projection(queries).view(b, l_q, h, -1)  # [B, L_Q, H, E]
        k = self.key_projection(keys).view(b, l_k, h, -1)  # [B, L_K, H, E]
        v = self.value_projection(values).view(b, l_k, h, -1)  # [B, L_K, H, E]
        out, weights = self.inner_attention(q, k, v, tau, delta)  # [B, L_Q, H, E]
        if self.mix:
            out = out.transpose(1, 2)  # [B, H, L_Q, E], flattened below in this order, as officially
        return self.out_projection(out.reshape(b, l_q, -1)), weights  # [B, L_Q, d_model]

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}, mix={self.mix}"


def build_attention(kind: str, cfg: ModelConfig, causal: bool) -> AttentionCore:
    """The core named ``kind`` (one of config.ATTENTION_KINDS) with the config's settings."""
    from informer.model.favor import FavorAttention
    from informer.model.probsparse import ProbAttention

    if kind == "full":
        return FullAttention(causal, cfg.dropout, cfg.output_attention)
    if kind == "prob":
        return ProbAttention(causal, cfg.factor, cfg.dropout, cfg.output_attention)
    if kind == "favor":
        return FavorAttention(causal, cfg.d_model // cfg.n_heads, cfg.nb_features,
                              cfg.feature_redraw_interval, cfg.output_attention)
    raise ValueError(f"unknown attention kind {kind!r}")

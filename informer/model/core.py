"""The attention-core interface and exact softmax attention.

Every core maps per-head queries, keys and values to per-head outputs with one signature, so the
multi-head layer, the encoder and the decoder never need to know which kind they hold:

    out, weights = core(q, k, v, query_rows=None)
    q       [B, L_Q, H, E]      k, v    [B, L_K, H, E]
    out     [B, L_Q, H, E]      weights [B, H, L_Q, L_K] when ``output_attention`` else None

The ``[B, L, H, E]`` layout is what a Linear projection followed by ``view`` gives for free, so no core
input costs a copy; a core may return a strided view (the layer reshapes once).

A core that attends with only a few query rows it picks itself (ProbSparse) says so through
``selects_query_rows(L_Q, H)``; the layer then hands it ``q`` without autograd history plus
``query_rows(rows)``, which projects just those rows with gradient
(``rows [B, u, H] -> [B, u, H, E]``; None -> every row).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from informer.model.dropout import Dropout
from informer.model.masking import future_mask

QueryRows = Callable[[torch.Tensor | None], torch.Tensor]


class AttentionCore(nn.Module):
    """Base class: a causal flag, attention dropout and whether to return the weights."""

    def __init__(self, causal: bool = False, dropout: float = 0.0, output_attention: bool = False) -> None:
        super().__init__()
        self.causal = causal
        self.output_attention = output_attention
        self.dropout = Dropout(dropout)

    def explicit_weights(self, device: torch.device) -> bool:
        """Whether to materialise the softmax weights: when they are returned, and for dropout in training
        on CPU, where ``scaled_dot_product_attention`` runs its unfused math path anyway (weights
        materialised, mask from ``bernoulli_``); the explicit path is that work with the cheaper mask."""
        return self.output_attention or (self.training and self.dropout.p > 0 and device.type == "cpu")

    def selects_query_rows(self, l_q: int, n_heads: int) -> bool:
        """True when the core attends with a few query rows of its own choice (per head), few enough
        that projecting them again with gradient beats keeping every projected query."""
        return False

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                query_rows: QueryRows | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"causal={self.causal}, output_attention={self.output_attention}"


def explicit_softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                               dropout: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention with the weight matrix materialised; returns (out, pre-dropout weights)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.einsum("blhe,bshe->bhls", q, k) * scale  # [B, H, L_Q, L_K]
    if causal:
        scores = scores.masked_fill(future_mask(q.shape[1], k.shape[1], q.device), float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # [B, H, L_Q, L_K]
    out = torch.einsum("bhls,bshe->blhe", dropout(weights), v)  # [B, L_Q, H, E]
    return out, weights


class FullAttention(AttentionCore):
    """Exact softmax attention (the canonical Transformer's).

    Without weights requested it runs ``scaled_dot_product_attention`` (fused kernels, memory linear in
    L); causal masking uses ``is_causal=True`` rather than a mask tensor so the fused kernels stay
    eligible. With ``output_attention``, and for dropout in training on CPU (:meth:`explicit_weights`),
    it takes the explicit path, which is numerically the same.
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                query_rows: QueryRows | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.explicit_weights(q.device):
            out, weights = explicit_softmax_attention(q, k, v, self.causal, self.dropout)
            return out, (weights if self.output_attention else None)
        p = self.dropout.p if self.training else 0.0
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),  # [B, H, L, E] views
            dropout_p=p, is_causal=self.causal,
        )  # [B, H, L_Q, E]
        return out.transpose(1, 2), None  # [B, L_Q, H, E] view

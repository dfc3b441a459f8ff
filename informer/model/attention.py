"""Multi-head attention layer and the factory that picks a core by name.

Cores (one interface, see :mod:`informer.model.core`):

* ``full``  — :class:`~informer.model.core.FullAttention`, exact softmax attention;
* ``prob``  — :class:`~informer.model.probsparse.ProbAttention`, Informer's ProbSparse attention;
* ``favor`` — :class:`~informer.model.favor.FavorAttention`, Performer's FAVOR+ linear attention.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from informer.config import ModelConfig
from informer.model.core import AttentionCore, FullAttention
from informer.model.dropout import linear_then_dropout
from informer.model.favor import FavorAttention
from informer.model.probsparse import ProbAttention
from informer.model.projection import project_shared

__all__ = ["AttentionCore", "AttentionLayer", "FavorAttention", "FullAttention", "ProbAttention",
           "build_attention"]


def build_attention(kind: str, cfg: ModelConfig, causal: bool) -> AttentionCore:
    """The core named ``kind`` ('full', 'prob' or 'favor') with the config's settings."""
    if kind == "full":
        return FullAttention(causal, cfg.dropout, cfg.output_attention)
    if kind == "prob":
        return ProbAttention(causal, cfg.factor, cfg.dropout, cfg.output_attention)
    if kind == "favor":
        return FavorAttention(causal, cfg.d_model // cfg.n_heads, cfg.nb_features,
                              cfg.feature_redraw_interval, cfg.output_attention)
    raise ValueError(f"model.attn must be one of ['prob', 'full', 'favor'], got {kind!r}")


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
                output_dropout: nn.Dropout | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B, L_Q, d_model]`` and the weights if the core returns them. With ``output_dropout`` the
        output has been through it (applied inside the output projection: no separate pass)."""
        b, l_q, _ = queries.shape
        l_k = keys.shape[1]
        h = self.n_heads
        query_rows = None
        late_queries = torch.is_grad_enabled() and self.inner_attention.selects_query_rows(l_q, h)
        if late_queries:
            # ProbSparse ranks every query without gradient and attends with only u of them: project
            # all rows outside autograd and the chosen rows again inside it, so the query projection's
            # backward pass costs u rows per head instead of L_Q (identical gradients).
            with torch.no_grad():
                q = self.query_projection(queries)
            query_rows = functools.partial(self._project_query_rows, queries)
            k, v = self._project([(keys, self.key_projection), (values, self.value_projection)])
        else:
            q, k, v = self._project([(queries, self.query_projection), (keys, self.key_projection),
                                     (values, self.value_projection)])
        q = q.view(b, l_q, h, -1)  # [B, L_Q, H, E]
        k = k.view(b, l_k, h, -1)  # [B, L_K, H, E]
        v = v.view(b, l_k, h, -1)  # [B, L_K, H, E]
        out, weights = self.inner_attention(q, k, v, query_rows)  # [B, L_Q, H, E]
        if self.mix:
            out = out.transpose(1, 2)  # [B, H, L_Q, E]: flattened below in this order, as officially
        out = out.reshape(b, l_q, -1)  # [B, L_Q, H*E]
        if output_dropout is None:
            return self.out_projection(out), weights  # [B, L_Q, d_model]
        dropped = linear_then_dropout(out, self.out_projection, output_dropout.p, output_dropout.training)
        return dropped, weights

    @staticmethod
    def _project(pairs: list[tuple[torch.Tensor, nn.Linear]]) -> list[torch.Tensor]:
        """Each (input, projection) applied; projections of one tensor share one input gradient."""
        outs: list[torch.Tensor | None] = [None] * len(pairs)
        for i, (x, _) in enumerate(pairs):
            if outs[i] is None:
                same = [j for j in range(i, len(pairs)) if pairs[j][0] is x]
                for j, out in zip(same, project_shared(x, [pairs[j][1] for j in same]), strict=True):
                    outs[j] = out
        return outs  # type: ignore[return-value]

    def _project_query_rows(self, queries: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """Queries of the given rows ``[B, u, H]`` (row per head) -> ``[B, u, H, E]``; None: all rows."""
        b, l_q, d = queries.shape
        h = self.n_heads
        if rows is None:
            return self.query_projection(queries).view(b, l_q, h, -1)
        u = rows.shape[1]
        picked = queries.gather(1, rows.reshape(b, u * h, 1).expand(-1, -1, d)).view(b, u, h, d)
        weight = self.query_projection.weight.view(h, -1, d)  # [H, E, d_model]
        out = torch.einsum("buhd,hed->buhe", picked, weight)  # [B, u, H, E]
        return out + self.query_projection.bias.view(h, -1).to(out.dtype)

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}, mix={self.mix}"

"""Causal masks shared by the attention cores.

All cores use the same convention as ``scaled_dot_product_attention(is_causal=True)``: the mask is
top-left aligned, so query ``i`` may read keys ``j <= i`` whatever the two lengths are.
"""

from __future__ import annotations

import torch


def future_mask(l_q: int, l_k: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean ``[L_Q, L_K]``, True where key ``j`` lies in the future of query ``i`` (``j > i``)."""
    return torch.ones(l_q, l_k, dtype=torch.bool, device=device).triu(diagonal=1)


def future_mask_at(positions: torch.Tensor, l_k: int) -> torch.Tensor:
    """Boolean ``[..., L_K]``: True where key ``j`` is after the query position in ``positions[...]``."""
    keys = torch.arange(l_k, device=positions.device)
    return keys > positions.unsqueeze(-1)

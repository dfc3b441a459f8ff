"""Dropout whose CPU mask costs a fraction of ``F.dropout``'s.

torch's CPU random number generator runs on one thread whatever the thread count, so the mask is the
serial part of dropout: ``F.dropout`` draws one float per element with ``bernoulli_`` (about 7 ns each on
the benchmark machine: 18 % of a two-thread training step at the default config), then divides and
multiplies in further passes. Here each keep / drop decision compares a 16-bit random integer with a
threshold; the integers are the four quarters of 64-bit words from numpy's PCG64-DXSM generator (about
0.5 ns per element, half the time of torch's Mersenne Twister), seeded for each mask by one draw from
torch's global generator, so ``torch.manual_seed`` governs them, and the comparison writes the float
mask directly. The keep probability is ``1 - p`` rounded to a multiple of 2**-16 (p = 0.05 drops with
probability 0.0500031; p below 2**-17 rounds to no dropout, p above 1 - 2**-17 to dropping everything)
and kept elements are scaled by the inverse of that rounded keep probability, so the expected output is
the input exactly. Other devices, and code being compiled, use ``F.dropout``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_INT64_MIN = -(2**63)
_LEVELS = 2**16


def keep_levels(p: float) -> int:
    """How many of the 2**16 equally likely 16-bit draws keep an element: ``1 - p`` rounded."""
    return min(max(round((1.0 - p) * _LEVELS), 0), _LEVELS)


def random_words(n: int) -> torch.Tensor:
    """``n`` int64 words with every bit uniformly random, from a PCG64-DXSM stream (numpy) seeded
    by one draw from torch's global CPU generator: ``torch.manual_seed`` governs them, and they come
    twice as fast as from torch's Mersenne Twister, which fills tensors one value at a time."""
    seed = int(torch.empty((), dtype=torch.int64).random_())  # uniform over [0, 2**63)
    return torch.from_numpy(np.random.PCG64DXSM(seed).random_raw(n).view(np.int64))


def scaled_keep_mask(shape: torch.Size | tuple[int, ...], p: float,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """CPU tensor of ``shape``: 0 (dropped) or ``1 / keep probability`` (kept), independently per element."""
    kept = keep_levels(p)
    n = math.prod(shape)
    bits = random_words((n + 3) // 4)
    draws = bits.view(torch.int16)[:n].view(shape)  # uniform over [-2**15, 2**15)
    mask = torch.empty(shape, dtype=dtype)
    torch.lt(draws, kept - _LEVELS // 2, out=mask)
    return mask.mul_(_LEVELS / kept) if kept else mask


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Functional form of :class:`Dropout`: zero each element with probability ``p``, scale the rest."""
    if not training or p == 0.0:
        return x
    if x.device.type == "cpu" and keep_levels(p) == _LEVELS:
        return x
    if p >= 1.0 or x.device.type != "cpu" or not x.is_floating_point() or torch.compiler.is_compiling():
        return F.dropout(x, p, training)
    # a float mask (not bools): the product's backward is then one multiply by the saved mask
    return x * scaled_keep_mask(x.shape, p, x.dtype)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same state dict, same ``train()`` / ``eval()`` behaviour) with the
    cheaper CPU mask of :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)

"""The initialisations of the xLSTM paper's code; what each starts at and why: docs/blocks.md."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def small_init_(w: Tensor, dim: int) -> Tensor:
    """N(0, sqrt(2 / (5 d))): the "small init" of Nguyen & Salazar (2019), used for up-projections and q/k/v."""
    return nn.init.normal_(w, mean=0.0, std=math.sqrt(2.0 / (5.0 * dim)))


def wang_init_(w: Tensor, dim: int, num_blocks: int) -> Tensor:
    """N(0, 2 / (num_blocks sqrt(d))): "wang init" for the down-projections that write into the residual stream."""
    return nn.init.normal_(w, mean=0.0, std=2.0 / num_blocks / math.sqrt(dim))


def powerlaw_forget_bias(head_dim: int, block_idx: int, num_blocks: int) -> Tensor:
    """The sLSTM forget-gate bias "powerlaw_blockdependent": for j = 0..DH-1,
    b_f[j] = -(-5 + 12 (j / (DH - 1)) ** (0.3 + 1.3 block_idx / (num_blocks - 1))), from +5 down to -7."""
    ratio = block_idx / (num_blocks - 1) if num_blocks > 1 else 0.0
    x = torch.arange(head_dim, dtype=torch.float64) / max(head_dim - 1, 1)
    return (-(-5.0 + 12.0 * x ** (0.3 + 1.3 * ratio))).float()

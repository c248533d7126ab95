"""Normalisation layers with a residual weight: the stored weight w is applied as (1 + w), initialised at 0."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension, scale (1 + w), optional bias (off in the paper's models)."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (x.shape[-1],), 1.0 + self.weight, self.bias, self.eps)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class MultiHeadLayerNorm(nn.Module):
    """Head-wise LayerNorm (GroupNorm with one group per head): x (..., NH, DH) normalised over DH, then scaled by
    a per-channel (1 + w) of size NH * DH. Output (..., NH * DH)."""

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.eps = num_heads, head_dim, eps
        self.weight = nn.Parameter(torch.zeros(num_heads * head_dim))

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x, (self.head_dim,), None, None, self.eps)  # (..., NH, DH)
        return x.flatten(-2) * (1.0 + self.weight)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)

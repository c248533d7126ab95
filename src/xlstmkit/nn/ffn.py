"""Gated feed-forward (GeGLU): proj_down(act(gate) * up) with [gate, up] = proj_up(x)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class GatedFFN(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.proj_up = nn.Linear(dim, 2 * hidden_dim, bias=bias)
        self.proj_down = nn.Linear(hidden_dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.proj_up(x).split(self.hidden_dim, dim=-1)
        y = self.proj_down(F.gelu(gate) * up)
        return self.dropout(y) if self.training else y  # (an eval-mode dropout call is pure overhead per token)

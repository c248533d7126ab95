"""Gated feed-forward: proj_down(act(gate) * up) with [gate, up] = proj_up(x).

`activation="gelu"` (the default) is GeGLU, the NeurIPS sLSTM block's FFN; `activation="silu"` is SwiGLU, the FFN
of xLSTM-7B and TiRex (Shazeer 2020 compares the variants; both gate one half of the up-projection with the other).
The two halves live in one `proj_up` of width 2 * hidden_dim, gate first, so one matmul computes both.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = {"gelu": F.gelu, "silu": F.silu}


class GatedFFN(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, bias: bool = False, dropout: float = 0.0,
                 activation: str = "gelu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        self.hidden_dim = hidden_dim
        self.activation = activation
        self._act = ACTIVATIONS[activation]
        self.proj_up = nn.Linear(dim, 2 * hidden_dim, bias=bias)
        self.proj_down = nn.Linear(hidden_dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.proj_up(x).split(self.hidden_dim, dim=-1)
        y = self.proj_down(self._act(gate) * up)
        return self.dropout(y) if self.training else y  # (an eval-mode dropout call is pure overhead per token)

    def extra_repr(self) -> str:
        return f"hidden_dim={self.hidden_dim}, activation={self.activation}"

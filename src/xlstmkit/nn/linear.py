"""Block-diagonal ("head-wise") linear map: the input is split into NH groups, each mapped by its own matrix."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class HeadwiseLinear(nn.Module):
    """x (..., NH * DIN) -> (..., NH * DOUT) with weight (NH, DOUT, DIN) (one nn.Linear-layout matrix per head)."""

    def __init__(self, in_features: int, out_features: int, num_heads: int, bias: bool = False) -> None:
        super().__init__()
        if in_features % num_heads or out_features % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide in_features ({in_features}) and out_features "
                             f"({out_features})")
        self.num_heads = num_heads
        self.weight = nn.Parameter(torch.empty(num_heads, out_features // num_heads, in_features // num_heads))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.normal_(self.weight, std=in_features**-0.5)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        NH = self.num_heads
        xh = x.reshape(-1, NH, x.shape[-1] // NH).transpose(0, 1)  # (NH, N, DIN)
        y = torch.bmm(xh, self.weight.transpose(1, 2))  # (NH, N, DOUT): one batched matmul, no einsum planning
        y = y.transpose(0, 1).reshape(*lead, -1)
        return y if self.bias is None else y + self.bias

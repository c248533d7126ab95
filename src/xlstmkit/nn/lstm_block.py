"""A residual block around the classic LSTM cell (Hochreiter & Schmidhuber 1997, with a forget gate): the rungs of
the xLSTM paper's ablation ladder (Table 2) between a vanilla multi-layer LSTM and xLSTM[0:1].

The cell, per time step, with sigmoid gates and no normaliser or stabiliser (what exponential gating changes):

    i, f, o = sigmoid(W_{i,f,o} x_t + R_{i,f,o} h_{t-1} + b_{i,f,o})
    z       = tanh(W_z x_t + R_z h_{t-1} + b_z)
    c_t     = f * c_{t-1} + i * z
    h_t     = o * tanh(c_t)

`R` is a full matrix: every channel's gates see every channel of h (memory mixing across all of them; the sLSTM
restricts it to the channels of one head). The block (`xLSTMConfig.lstm_at` places it in a stack):

    x = x + LSTM(LN(x))                       the paper's "+ ResNet backbone" rung
    x = x + GatedFFN(LN(x))                   with `lstm_ffn`: the "+ up-projection backbone" rung, the layout of
                                              the sLSTM block (cell, then a GeLU feed-forward of width ffn_dim)

The sequence path is `torch.nn.LSTM` (PyTorch's fused kernel). With a mask (B, S) (True = real step) the block steps
through time itself with the same weights and keeps (h, c) unchanged at padded steps, as every xlstmkit block does.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..config import xLSTMConfig
from ..ops.gates import state_dtype
from .ffn import GatedFFN
from .init import small_init_, wang_init_
from .norms import LayerNorm


class LSTMBlockState(NamedTuple):
    h: Tensor  # (B, E)
    c: Tensor  # (B, E)


class LSTMBlock(nn.Module):
    """x (B, S, E) -> (B, S, E) and the new state (h, c); see the module docstring."""

    def __init__(self, cfg: xLSTMConfig, block_idx: int) -> None:
        super().__init__()
        E = cfg.embedding_dim
        self.cfg, self.block_idx = cfg, block_idx
        self.norm = LayerNorm(E, eps=cfg.norm_eps, bias=cfg.bias)
        self.lstm = nn.LSTM(E, E, batch_first=True)
        self.dropout = nn.Dropout(cfg.dropout)
        self.ffn_norm = self.ffn = None
        if cfg.lstm_ffn:
            self.ffn_norm = LayerNorm(E, eps=cfg.norm_eps, bias=cfg.bias)
            self.ffn = GatedFFN(E, cfg.ffn_dim, bias=cfg.bias, dropout=cfg.dropout)
            small_init_(self.ffn.proj_up.weight, E)
            wang_init_(self.ffn.proj_down.weight, E, cfg.num_blocks)

    def zero_state(self, batch_size: int, device=None) -> LSTMBlockState:
        E = self.cfg.embedding_dim
        return LSTMBlockState(torch.zeros(batch_size, E, device=device), torch.zeros(batch_size, E, device=device))

    def state_shapes(self, batch_size: int) -> LSTMBlockState:
        E = self.cfg.embedding_dim
        return LSTMBlockState((batch_size, E), (batch_size, E))

    def _cell(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """One step of the equations above with nn.LSTM's weights (gate order i, f, z, o): x, h, c (B, E)."""
        lstm = self.lstm
        gates = x @ lstm.weight_ih_l0.t() + lstm.bias_ih_l0 + h.to(x.dtype) @ lstm.weight_hh_l0.t() + lstm.bias_hh_l0
        i, f, z, o = gates.to(c.dtype).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(z)
        return torch.sigmoid(o) * torch.tanh(c), c

    def _layer(self, x: Tensor, state: LSTMBlockState | None, mask: Tensor | None) -> tuple[Tensor, LSTMBlockState]:
        B, S, E = x.shape
        sd = state_dtype(x.dtype)
        if mask is None:
            hc = None if state is None else (state.h[None].to(x.dtype), state.c[None].to(x.dtype))
            y, (h, c) = self.lstm(x, hc)
            return y, LSTMBlockState(h[0].to(sd), c[0].to(sd))
        h, c = self.zero_state(B, x.device) if state is None else state
        h, c = h.to(sd), c.to(sd)
        ys = []
        for t in range(S):
            h_new, c_new = self._cell(x[:, t], h, c)
            keep = mask[:, t, None]
            h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
            ys.append(h)
        return torch.stack(ys, dim=1).to(x.dtype), LSTMBlockState(h, c)

    def forward(self, x: Tensor, state: LSTMBlockState | None = None, mask: Tensor | None = None
                ) -> tuple[Tensor, LSTMBlockState]:
        """x (B, S, E) -> (B, S, E), new state; mask (B, S) bool, False at padded steps (they change no state)."""
        y, state = self._layer(self.norm(x), state, mask)
        x = x + (self.dropout(y) if self.training else y)
        if self.ffn is not None:
            x = x + self.ffn(self.ffn_norm(x))
        return x, state

    def step(self, x: Tensor, state: LSTMBlockState) -> tuple[Tensor, LSTMBlockState]:
        """One token, x (B, E) -> (B, E), new state."""
        sd = state_dtype(x.dtype)
        h, c = self._cell(self.norm(x), state.h.to(sd), state.c.to(sd))
        x = x + h.to(x.dtype)
        if self.ffn is not None:
            x = x + self.ffn(self.ffn_norm(x))
        return x, LSTMBlockState(h, c)

"""The sLSTM block of the NeurIPS paper: post up-projection, like a Transformer block (docs/blocks.md).

    x_c          = SiLU(CausalConv1d(x))          (optional; kernel 0 disables it and x_c = x)
    i~, f~       = Headwise(x_c);   z~, o~ = Headwise(x)       (x already normalised by the block)
    h            = sLSTM(i~, f~, z~, o~ + R h_{t-1} + b)
    y            = MultiHeadNorm(h)
    block:  x += y(LN(x));  x += GatedFFN(LN(x))   # GeLU, projection factor 1.3 rounded up to 64

The sLSTM is recurrent by nature: one computation form, no `form` argument. `SLSTMLayer.forward` and `.step` are
these lines; with `cfg.fused` (the default) `step` hands over to `step_fused`, which applies the four gate projections
as one cached block matrix.

With an attention mask (B, S) (True = real step), a padded step changes no state: the convolution skips it and the
sLSTM op holds (c, n, m, h) there.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import xLSTMConfig
from ..ops.gates import state_dtype
from ..ops.slstm import SLSTMState, _slstm_step_unchecked, slstm_sequence, slstm_step, slstm_zero_state
from .conv import CausalConv1d
from .ffn import GatedFFN
from .init import powerlaw_forget_bias, small_init_, wang_init_
from .linear import HeadwiseLinear
from .mlstm_block import mask_kwargs
from .norms import LayerNorm, MultiHeadLayerNorm
from .weight_cache import cached_derived


class SLSTMBlockState(NamedTuple):
    conv: Tensor  # (B, K-1, E); (B, 0, E) without convolution
    cell: SLSTMState  # (c, n, m, h), each (B, NH, DH)


class SLSTMLayer(nn.Module):
    """x (B, S, E) (normalised) -> y (B, S, E) and the new state; the equations in this module's docstring."""

    def __init__(self, cfg: xLSTMConfig, block_idx: int) -> None:
        super().__init__()
        E, NH = cfg.embedding_dim, cfg.slstm_num_heads
        self.cfg, self.block_idx, self.num_heads, self.head_dim = cfg, block_idx, NH, cfg.slstm_head_dim
        self.conv = CausalConv1d(E, cfg.slstm_conv_kernel) if cfg.slstm_conv_kernel > 0 else None
        self.igate = HeadwiseLinear(E, E, NH)
        self.fgate = HeadwiseLinear(E, E, NH)
        self.zgate = HeadwiseLinear(E, E, NH)
        self.ogate = HeadwiseLinear(E, E, NH)
        # recurrent matrices, block-diagonal over heads: a head's h (DH) -> its 4 gate pre-activations (4 DH)
        self.recurrent = nn.Parameter(torch.zeros(NH, self.head_dim, 4 * self.head_dim))
        # gate biases, flat (NH * 4 * DH) laid out as (NH, 4, DH) with gate order i, f, z, o
        self.bias = nn.Parameter(torch.zeros(NH * 4 * self.head_dim))
        self.outnorm = MultiHeadLayerNorm(NH, self.head_dim, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fused = cfg.fused  # step hands over to step_fused (same function, faster)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        cfg = self.cfg
        for g in (self.igate, self.fgate, self.zgate, self.ogate):
            small_init_(g.weight, cfg.embedding_dim)
        nn.init.zeros_(self.recurrent)
        with torch.no_grad():
            b = torch.zeros(self.num_heads, 4, self.head_dim)
            if cfg.slstm_bias_init == "powerlaw_blockdependent":
                b[:, 1] = powerlaw_forget_bias(self.head_dim, self.block_idx, cfg.num_blocks)
            elif cfg.slstm_bias_init == "small_init":
                b[:, 1] = torch.linspace(3.0, 6.0, self.head_dim)
            elif cfg.slstm_bias_init == "standard":
                b.uniform_(-self.head_dim**-0.5, self.head_dim**-0.5)
            self.bias.copy_(b.flatten())
        if self.conv is not None:
            self.conv.reset_parameters()
        self.outnorm.reset_parameters()

    def zero_state(self, batch_size: int, device=None) -> SLSTMBlockState:
        K = self.cfg.slstm_conv_kernel
        conv = torch.zeros(batch_size, max(K - 1, 0), self.cfg.embedding_dim, device=device)
        return SLSTMBlockState(conv, slstm_zero_state(batch_size, self.num_heads, self.head_dim, device=device))

    def state_shapes(self, batch_size: int) -> SLSTMBlockState:
        """The shape of every tensor of the state, in the state's layout (for validating a given state)."""
        B, NH, DH = batch_size, self.num_heads, self.head_dim
        cell = (B, NH, DH)
        return SLSTMBlockState((B, max(self.cfg.slstm_conv_kernel - 1, 0), self.cfg.embedding_dim),
                               SLSTMState(cell, cell, cell, cell))

    def _gate_preacts(self, x_c: Tensor, x: Tensor) -> Tensor:
        """(i~, f~) from x_c, (z~, o~) from x, plus the biases: (..., E) -> (..., NH, 4, DH)."""
        NH, DH = self.num_heads, self.head_dim
        gates = torch.stack([self.igate(x_c), self.fgate(x_c), self.zgate(x), self.ogate(x)], dim=-2)  # (..., 4, E)
        return gates.unflatten(-1, (NH, DH)).transpose(-3, -2) + self.bias.view(NH, 4, DH)

    def forward(self, x: Tensor, state: SLSTMBlockState | None = None, mask: Tensor | None = None
                ) -> tuple[Tensor, SLSTMBlockState]:
        """x (B, S, E) -> (B, S, E), new state. mask (B, S) bool: False at padded steps (they change no state)."""
        B, S, E = x.shape
        if self.conv is not None:
            x_c, conv_state = self.conv(x, None if state is None else state.conv, mask)
            x_c = F.silu(x_c)
        else:
            x_c, conv_state = x, x.new_zeros(B, 0, E)
        gates = self._gate_preacts(x_c, x)  # (B, S, NH, 4, DH)
        h, cell = slstm_sequence(gates, self.recurrent, initial_state=None if state is None else state.cell,
                                 return_state=True, forget_gate=self.cfg.forget_gate, **mask_kwargs(mask))
        # dropout before the head-wise norm, where the official sLSTM layer applies it
        y = self.outnorm(self.dropout(h))  # (B, S, E)
        return y, SLSTMBlockState(conv_state.to(state_dtype(x.dtype)), cell)

    def step(self, x: Tensor, state: SLSTMBlockState) -> tuple[Tensor, SLSTMBlockState]:
        """One token: x (B, E), state given -> (B, E), new state: forward on a length-1 sequence, without the
        sequence axis (generation). Any dtype, autocast included; hands over to `step_fused` when `fused`, no
        gradient is needed and the model computes in its state's dtype (float32/float64, no autocast)."""
        if (self.fused and x.dtype == state.cell.c.dtype and not torch.is_autocast_enabled(x.device.type)
                and not (torch.is_grad_enabled() and (self.igate.weight.requires_grad or self.bias.requires_grad))):
            return self.step_fused(x, state)
        if self.conv is not None:
            x_c, conv_state = self.conv.step(x, state.conv)
            x_c = F.silu(x_c)
        else:
            x_c, conv_state = x, state.conv
        h, cell = slstm_step(self._gate_preacts(x_c, x), self.recurrent, state.cell, forget_gate=self.cfg.forget_gate)
        y = self.outnorm(self.dropout(h))  # (B, E)
        return y, SLSTMBlockState(conv_state.to(state_dtype(x.dtype)), cell)

    # -- the fused variant ----------------------------------------------------------------------------------------
    def _fused_gates(self) -> tuple[Tensor, Tensor]:
        """The four gate projections as one block matrix per head, (NH, 2 DH, 4 DH), mapping a head's [x_c, x] to
        its (i, f, z, o) pre-activations, and the bias as (NH, 1, 4 DH): one batched matmul per token."""

        def build() -> tuple[Tensor, Tensor]:
            NH, DH = self.num_heads, self.head_dim
            w = self.igate.weight.new_zeros(NH, 2 * DH, 4 * DH)
            for g, (lin, rows) in enumerate(((self.igate, 0), (self.fgate, 0), (self.zgate, DH), (self.ogate, DH))):
                w[:, rows:rows + DH, g * DH:(g + 1) * DH] = lin.weight.transpose(1, 2)  # (NH, DIN, DOUT)
            return w, self.bias.view(NH, 1, 4 * DH).clone()

        sources = [self.igate.weight, self.fgate.weight, self.zgate.weight, self.ogate.weight, self.bias]
        return cached_derived(self, "gates", sources, build)

    def step_fused(self, x: Tensor, state: SLSTMBlockState) -> tuple[Tensor, SLSTMBlockState]:
        """`step` with the four gate projections as one batched matmul on the cached block matrix of
        `_fused_gates` (inference: the cache holds no graph), for x in the state's dtype without autocast."""
        B, E = x.shape
        NH, DH = self.num_heads, self.head_dim
        if self.conv is not None:
            x_c, conv_state = self.conv.step(x, state.conv)
            x_c = F.silu(x_c)
        else:
            x_c, conv_state = x, state.conv
        w, b = self._fused_gates()
        inp = torch.cat([x_c.view(B, NH, DH), x.view(B, NH, DH)], dim=-1).transpose(0, 1)  # (NH, B, 2 DH)
        gates = torch.baddbmm(b, inp, w).transpose(0, 1).view(B, NH, 4, DH)
        # the model validated the state once (check_state): the unchecked core skips the per-token checks
        h, cell = _slstm_step_unchecked(gates, self.recurrent, state.cell, self.cfg.forget_gate)
        return self.outnorm(self.dropout(h) if self.training else h), SLSTMBlockState(conv_state, cell)


class SLSTMBlock(nn.Module):
    """x + SLSTMLayer(LN(x)), then x + GatedFFN(LN(x))."""

    def __init__(self, cfg: xLSTMConfig, block_idx: int) -> None:
        super().__init__()
        E = cfg.embedding_dim
        self.norm = LayerNorm(E, eps=cfg.norm_eps, bias=cfg.bias)
        self.layer = SLSTMLayer(cfg, block_idx)
        self.ffn_norm = LayerNorm(E, eps=cfg.norm_eps, bias=cfg.bias)
        self.ffn = GatedFFN(E, cfg.ffn_dim, bias=cfg.bias, dropout=cfg.dropout)
        small_init_(self.ffn.proj_up.weight, E)
        wang_init_(self.ffn.proj_down.weight, E, cfg.num_blocks)

    def zero_state(self, batch_size: int, device=None) -> SLSTMBlockState:
        return self.layer.zero_state(batch_size, device)

    def state_shapes(self, batch_size: int) -> SLSTMBlockState:
        return self.layer.state_shapes(batch_size)

    def forward(self, x: Tensor, state: SLSTMBlockState | None = None, mask: Tensor | None = None
                ) -> tuple[Tensor, SLSTMBlockState]:
        """x (B, S, E) -> (B, S, E), new state; mask (B, S) bool as in SLSTMLayer.forward."""
        y, state = self.layer(self.norm(x), state, mask)
        x = x + y
        return x + self.ffn(self.ffn_norm(x)), state

    def step(self, x: Tensor, state: SLSTMBlockState) -> tuple[Tensor, SLSTMBlockState]:
        """One token, x (B, E) (see SLSTMLayer.step)."""
        y, state = self.layer.step(self.norm(x), state)
        x = x + y
        return x + self.ffn(self.ffn_norm(x)), state

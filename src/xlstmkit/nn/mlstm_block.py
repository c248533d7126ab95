"""The mLSTM block of the NeurIPS paper: pre up-projection, like Mamba (docs/blocks.md).

    x_in, z = split(proj_up(x))                          # 2 x inner (x already normalised by the block)
    x_c     = SiLU(CausalConv1d(x_in))
    q, k    = BlockDiag(x_c), BlockDiag(x_c);  v = BlockDiag(x_in)
    i~, f~  = Linear(cat[q, k, v]) -> one scalar per head each
    h       = MultiHeadNorm(mLSTM(q, k, v, i~, f~)) + skip * x_c
    y       = proj_down(h * SiLU(z))
    block:  x + y(LN(x))

`MLSTMLayer.forward` and `.step` are these lines. With `cfg.fused` (the default) they hand over to `forward_fused`
and `step_fused`, which compute the same function in fewer, larger operations (tests/test_nn_mlstm_layer.py holds
them to the plain methods, values and gradients, float32 and bf16 autocast).

With an attention mask (B, S) (True = real step), a padded step changes no state: the convolution skips it (its
window holds the row's previous real inputs) and the mLSTM op holds (C, n, m) there.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import xLSTMConfig
from ..ops.gates import state_dtype
from ..ops.mlstm import MLSTMState, _mlstm_step_unchecked, mlstm, mlstm_step, zero_state
from .conv import CausalConv1d
from .init import small_init_, wang_init_
from .linear import HeadwiseLinear, headwise_linear_shared, headwise_linear_stack
from .norms import LayerNorm, MultiHeadLayerNorm


class MLSTMBlockState(NamedTuple):
    conv: Tensor  # (B, K-1, inner): the convolution's last inputs
    cell: MLSTMState  # (C, n, m) of the mLSTM heads


def mask_kwargs(mask: Tensor | None) -> dict:
    """`mask=` for an op only when a mask is given (unmasked calls keep the ops' plain signature)."""
    return {} if mask is None else {"mask": mask}


class MLSTMLayer(nn.Module):
    """x (B, S, E) (normalised) -> y (B, S, E) and the new state; the equations in this module's docstring."""

    def __init__(self, cfg: xLSTMConfig, block_idx: int, *, conv: nn.Module | None = None,
                 norm_bias: bool = False) -> None:
        """`conv` replaces the causal convolution by another module with its interface (`forward(x (B, S, inner),
        state, mask) -> (y, state)` and `reset_parameters()`), e.g. Vision-LSTM's `GridConv2d` over the patch grid;
        `norm_bias` gives the head-wise output norm a bias (Vision-LSTM v2). Neither changes the default layer."""
        super().__init__()
        E, inner, NH = cfg.embedding_dim, cfg.mlstm_inner_dim, cfg.mlstm_num_heads
        self.cfg, self.inner, self.num_heads, self.head_dim = cfg, inner, NH, cfg.mlstm_head_dim
        qkv_heads = inner // cfg.qkv_proj_blocksize
        self.proj_up = nn.Linear(E, 2 * inner, bias=cfg.bias)
        self.conv = CausalConv1d(inner, cfg.mlstm_conv_kernel) if conv is None else conv
        self.q_proj = HeadwiseLinear(inner, inner, qkv_heads, bias=cfg.bias)
        self.k_proj = HeadwiseLinear(inner, inner, qkv_heads, bias=cfg.bias)
        self.v_proj = HeadwiseLinear(inner, inner, qkv_heads, bias=cfg.bias)
        self.igate = nn.Linear(3 * inner, NH, bias=True)
        self.fgate = nn.Linear(3 * inner, NH, bias=True)
        self.outnorm = MultiHeadLayerNorm(NH, self.head_dim, eps=cfg.norm_eps, bias=norm_bias)
        self.learnable_skip = nn.Parameter(torch.ones(inner))
        self.proj_down = nn.Linear(inner, E, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fused = cfg.fused  # forward/step hand over to forward_fused/step_fused (same function, faster)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        E = self.cfg.embedding_dim
        small_init_(self.proj_up.weight, E)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            small_init_(proj.weight, E)
        wang_init_(self.proj_down.weight, E, self.cfg.num_blocks)
        for lin in (self.proj_up, self.q_proj, self.k_proj, self.v_proj, self.proj_down):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        nn.init.zeros_(self.igate.weight)
        nn.init.normal_(self.igate.bias, mean=0.0, std=0.1)
        nn.init.zeros_(self.fgate.weight)
        with torch.no_grad():
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, self.num_heads))
        nn.init.ones_(self.learnable_skip)
        self.conv.reset_parameters()
        self.outnorm.reset_parameters()

    def zero_state(self, batch_size: int, device=None) -> MLSTMBlockState:
        return MLSTMBlockState(
            self.conv.zero_state(batch_size, torch.float32, device),
            zero_state(batch_size, self.num_heads, self.head_dim, self.head_dim, device=device),
        )

    def state_shapes(self, batch_size: int) -> MLSTMBlockState:
        """The shape of every tensor of the state, in the state's layout (for validating a given state)."""
        B, NH, DH = batch_size, self.num_heads, self.head_dim
        return MLSTMBlockState((B, self.conv.kernel_size - 1, self.inner), MLSTMState((B, NH, DH, DH), (B, NH, DH),
                                                                                     (B, NH)))

    # -- the plain equations ------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, state: MLSTMBlockState | None = None, form: str = "chunkwise",
                mask: Tensor | None = None) -> tuple[Tensor, MLSTMBlockState]:
        """x (B, S, E) -> (B, S, E), new state. mask (B, S) bool: False at padded steps (they change no state)."""
        if self.fused:
            return self.forward_fused(x, state, form, mask)
        x_in, z = self.proj_up(x).split(self.inner, dim=-1)  # (B, S, inner) each
        x_c, conv_state = self.conv(x_in, None if state is None else state.conv, mask)
        x_c = F.silu(x_c)
        q, k, v = self.q_proj(x_c), self.k_proj(x_c), self.v_proj(x_in)
        qkv = torch.cat([q, k, v], dim=-1)
        i, f = self.igate(qkv), self.fgate(qkv)  # (B, S, NH) each
        h, cell = self._cell(q, k, v, i, f, state, form, mask)  # (B, S, NH, DH)
        h = self.outnorm(h) + self.learnable_skip * x_c
        y = self.dropout(self.proj_down(h * F.silu(z)))
        return y, MLSTMBlockState(conv_state.to(state_dtype(x.dtype)), cell)

    def step(self, x: Tensor, state: MLSTMBlockState) -> tuple[Tensor, MLSTMBlockState]:
        """One token: x (B, E), state given -> (B, E), new state: forward on a length-1 sequence, without the
        sequence axis (generation). Any dtype, autocast included; hands over to `step_fused` when `fused` and the
        model computes in its state's dtype (float32/float64, no autocast)."""
        if self.fused and x.dtype == state.cell.C.dtype and not torch.is_autocast_enabled(x.device.type):
            return self.step_fused(x, state)
        B = x.shape[0]
        NH, DH, cfg = self.num_heads, self.head_dim, self.cfg
        x_in, z = self.proj_up(x).split(self.inner, dim=-1)  # (B, inner) each
        x_c, conv_state = self.conv.step(x_in, state.conv)
        x_c = F.silu(x_c)
        q, k, v = self.q_proj(x_c), self.k_proj(x_c), self.v_proj(x_in)
        qkv = torch.cat([q, k, v], dim=-1)
        i, f = self.igate(qkv), self.fgate(qkv)  # (B, NH) each
        h, cell = mlstm_step(q.view(B, NH, DH), k.view(B, NH, DH), v.view(B, NH, DH), i, f, state.cell,
                             eps=cfg.mlstm_eps, forget_gate=cfg.forget_gate)
        h = self.outnorm(h) + self.learnable_skip * x_c
        y = self.dropout(self.proj_down(h * F.silu(z)))
        return y, MLSTMBlockState(conv_state.to(state_dtype(x.dtype)), cell)

    def _cell(self, q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, state: MLSTMBlockState | None,
              form: str, mask: Tensor | None) -> tuple[Tensor, MLSTMState]:
        """The mLSTM op over the heads: q, k, v (B, S, inner), i, f (B, S, NH) -> h (B, S, NH, DH), new cell state."""
        B, S, _ = q.shape
        NH, DH, cfg = self.num_heads, self.head_dim, self.cfg

        def heads(t: Tensor) -> Tensor:  # (B, S, inner) -> (B, NH, S, DH)
            return t.view(B, S, NH, DH).transpose(1, 2)

        h, cell = mlstm(heads(q), heads(k), heads(v), i.transpose(1, 2), f.transpose(1, 2), form=form,
                        chunk_size=cfg.chunk_size, initial_state=None if state is None else state.cell,
                        return_state=True, eps=cfg.mlstm_eps, forget_gate=cfg.forget_gate, **mask_kwargs(mask))
        return h.transpose(1, 2), cell

    # -- the fused variants ---------------------------------------------------------------------------------------

    def gate_maps(self) -> tuple[Tensor, Tensor, Tensor]:
        """The input and forget gates' linear map on cat[q, k, v] folded through the q, k, v projections:
        (M_c (2 NH, inner), M_in (2 NH, inner), b (2 NH,)) with cat[i~, f~] = x_c @ M_c^T + x_in @ M_in^T + b.

        Why: q, k, v are linear in x_c and x_in, so the gates need no concatenation of q, k, v and no (3 inner -> NH)
        matmuls over every row: two (inner -> 2 NH) matmuls do, and the backward pass skips the gates' gradient
        contributions to q, k and v. The maps are parameter-sized (a few thousand multiply-adds per call); they are
        computed in float32 even under autocast (the matmuls over the rows then run in the autocast dtype)."""
        inner = self.inner
        w = torch.cat([self.igate.weight, self.fgate.weight]).t()  # (3 inner, 2 NH): columns i~ then f~
        b = torch.cat([self.igate.bias, self.fgate.bias])  # (2 NH,)
        with torch.autocast(w.device.type, enabled=False):
            w_q, w_k, w_v = w.split(inner)  # (inner, 2 NH) each
            m_c = (self.q_proj.compose(w_q) + self.k_proj.compose(w_k)).t().contiguous()
            m_in = self.v_proj.compose(w_v).t().contiguous()
            for proj, w_part in ((self.q_proj, w_q), (self.k_proj, w_k), (self.v_proj, w_v)):
                if proj.bias is not None:
                    b = torch.addmv(b, w_part.t(), proj.bias)
        return m_c, m_in, b

    def _gates(self, x_c: Tensor, x_in: Tensor) -> Tensor:
        """x_c, x_in (..., inner) -> cat[i~, f~] (..., 2 NH)."""
        m_c, m_in, b = self.gate_maps()
        # (measured against a transposed (2 NH, N) formulation and one matmul on cat[x_c, x_in]: this is fastest,
        # its input gradients come out row-major like x_c's and x_in's other gradient terms)
        return F.linear(x_c, m_c, b) + F.linear(x_in, m_in)  # (..., 2 NH)

    def _output(self, h: Tensor, x_c: Tensor, z: Tensor) -> Tensor:
        """h (..., NH, DH) from the cell, x_c and z (..., inner) -> proj_down((MultiHeadNorm(h) + skip * x_c) *
        SiLU(z)), with the norm's (1 + w) scale and the skip in one addcmul (its bias, when it has one, added to the
        skip term first). The elementwise part runs in x_c's
        dtype: under bf16 autocast float32 skip/scale vectors would promote it to float32 (mixed-dtype kernels,
        twice the memory traffic, and proj_down casts back to bf16 anyway)."""
        dt = x_c.dtype
        hn = F.layer_norm(h, (self.head_dim,), None, None, self.outnorm.eps).flatten(-2)  # (..., inner)
        skip = x_c * self.learnable_skip.to(dt)
        if self.outnorm.bias is not None:
            skip = skip + self.outnorm.bias.to(dt)
        hs = torch.addcmul(skip, hn, (1.0 + self.outnorm.weight).to(dt))
        return self.proj_down(hs * F.silu(z))

    def forward_fused(self, x: Tensor, state: MLSTMBlockState | None = None, form: str = "chunkwise",
                      mask: Tensor | None = None) -> tuple[Tensor, MLSTMBlockState]:
        """`forward` with q and k from one batched matmul, the gates from the folded maps of `gate_maps` and the
        head norm, its scale and the skip in one pass (`_output`)."""
        x_in, z = self.proj_up(x).split(self.inner, dim=-1)  # (B, S, inner) each
        x_c, conv_state = self.conv(x_in, None if state is None else state.conv, mask)
        # row-major x_c (free when the convolution returns it so): the SiLU, head-wise projections, gates, skip and
        # their backward passes are several times slower on a transposed (channel-major) view
        x_c = F.silu(x_c.contiguous())
        q, k = headwise_linear_shared(x_c, [self.q_proj, self.k_proj])  # one batched matmul for both
        v = self.v_proj(x_in)
        i, f = self._gates(x_c, x_in).split(self.num_heads, dim=-1)  # (B, S, NH) each
        h, cell = self._cell(q, k, v, i, f, state, form, mask)
        out = self.dropout(self._output(h, x_c, z))
        return out, MLSTMBlockState(conv_state.to(state_dtype(x.dtype)), cell)

    def step_fused(self, x: Tensor, state: MLSTMBlockState) -> tuple[Tensor, MLSTMBlockState]:
        """`step` in the fewest operator calls per token, for x in the state's dtype without autocast (float32 or
        float64 models): q, k, v from one stacked batched matmul whose rows are already cat[q, k, v]; the gates as
        two (3 inner -> NH) matvecs on it (here cheaper than the folded maps of `gate_maps`, which cost a dozen small
        calls to build); the output norm and its (1 + w) scale as one group_norm. (Calls the projections' weights
        directly: module hooks on q/k/v_proj do not run here.)"""
        B = x.shape[0]
        NH, DH, inner, cfg = self.num_heads, self.head_dim, self.inner, self.cfg
        x_in, z = self.proj_up(x).split(inner, dim=-1)  # (B, inner) each
        x_c, conv_state = self.conv.step(x_in, state.conv)
        x_c = F.silu(x_c)
        qkv3 = headwise_linear_stack([x_c, x_c, x_in], [self.q_proj, self.k_proj, self.v_proj])  # (3, B, inner)
        q, k, v = qkv3.unbind(0)
        qkv = qkv3.view(B, 3 * inner) if B == 1 else qkv3.transpose(0, 1).reshape(B, 3 * inner)
        # the model validated the state once (check_state): the unchecked core skips the per-token checks
        h, cell = _mlstm_step_unchecked(q.view(B, NH, DH), k.view(B, NH, DH), v.view(B, NH, DH), self.igate(qkv),
                                        self.fgate(qkv), state.cell, eps=cfg.mlstm_eps, forget_gate=cfg.forget_gate)
        hn = F.group_norm(h.reshape(B, inner), NH, 1.0 + self.outnorm.weight, self.outnorm.bias, self.outnorm.eps)
        y = self.proj_down(torch.addcmul(hn, self.learnable_skip, x_c) * F.silu(z))  # (B, E)
        return (self.dropout(y) if self.training else y), MLSTMBlockState(conv_state, cell)


class MLSTMBlock(nn.Module):
    """x + MLSTMLayer(LN(x)). The mLSTM block has no separate feed-forward: its up-projection plays that part."""

    def __init__(self, cfg: xLSTMConfig, block_idx: int) -> None:
        super().__init__()
        self.norm = LayerNorm(cfg.embedding_dim, eps=cfg.norm_eps, bias=cfg.bias)
        self.layer = MLSTMLayer(cfg, block_idx)

    def zero_state(self, batch_size: int, device=None) -> MLSTMBlockState:
        return self.layer.zero_state(batch_size, device)

    def state_shapes(self, batch_size: int) -> MLSTMBlockState:
        return self.layer.state_shapes(batch_size)

    def forward(self, x: Tensor, state: MLSTMBlockState | None = None, form: str = "chunkwise",
                mask: Tensor | None = None) -> tuple[Tensor, MLSTMBlockState]:
        """x (B, S, E) -> (B, S, E), new state; mask (B, S) bool as in MLSTMLayer.forward."""
        y, state = self.layer(self.norm(x), state, form, mask)
        return x + y, state

    def step(self, x: Tensor, state: MLSTMBlockState) -> tuple[Tensor, MLSTMBlockState]:
        """One token, x (B, E) (see MLSTMLayer.step)."""
        y, state = self.layer.step(self.norm(x), state)
        return x + y, state

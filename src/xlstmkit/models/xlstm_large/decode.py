"""The fused one-token step of `xLSTMLarge`: the numbers of the blocks' plain `step`, in a few large operations.

Token-by-token generation costs one pass over every weight per token, and on a CPU small models spend as much time
in operator calls as in arithmetic. This module therefore keeps, per block, a rearranged copy of the weights
(`_DecodeBlock`: norm weights, key scale and gate caps folded in, transposed for matrix-vector products) and runs a
block as: one matmul for all of the mLSTM layer's projections, the recurrence on a memory [C | n] that one outer
product and one matmul update and read, one matmul for the output, one for the FFN's two up-projections, one for its
down-projection. The copies are cached with `nn.weight_cache.cached_derived` on each block (and on the model for the
head), keyed by the current parameters, so optimiser steps, `load_state_dict`, replaced parameters and conversions
rebuild them; edits through `param.data` need `model.clear_decode_cache()`.

Used by `xLSTMLarge.decode_step` when `config.fused`, no gradient is recorded, autocast is off, the weights are float32
or float64 and the model is at most `decode_cache_max_bytes` (a 7B model is not held twice): see `fused_decode_step`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn.weight_cache import cached_derived
from ...ops.mlstm import MLSTMState
from ..native_decode import weight_sources
from .config import xLSTMLargeConfig

if TYPE_CHECKING:
    from .model import xLSTMLarge, xLSTMLargeBlock


class _DecodeBlock(NamedTuple):
    """One block's weights rearranged for the fused step (transposed to (in, out), contiguous).

    w_in (E, P) maps the *un-weighted* RMS-normalised input x * rsqrt(sum(x^2) + E eps) (note: sum, not mean) to
    every per-token quantity of the mLSTM layer at once; the columns are
        [q (NH*DQK) | k * DQK**-0.5 (NH*DQK) | per head (v, 1) (NH*(DV+1)) | o~ (NH*DV) | f~/cap | i~/cap (NH each)]
    so that the RMSNorm weight and sqrt(E), the key scale and the gates' 1/cap are folded in, and the constant 1
    after each head's value (from b_in, its weight column is 0) makes the normaliser n the last column of an
    extended memory [C | n] (DQK, DV+1): one outer-product update and one matmul serve both C and n.
    """

    w_in: Tensor  # (E, P)
    b_in: Tensor  # (P,)
    w_out: Tensor  # (NH*DV, E): the head norm's scale folded in unless the head norm has a bias
    b_out: Tensor | None  # (E,)
    head_norm: tuple[Tensor, Tensor] | None  # (scale, bias) (NH*DV,) when the head norm has a bias
    w_up: Tensor  # (E, 2*D): [gate | up], the FFN RMSNorm scale and sqrt(E) folded in
    b_up: Tensor | None  # (2*D,)
    w_down: Tensor  # (D, E)
    b_down: Tensor | None  # (E,)


class _DecodeHead(NamedTuple):
    w_head: Tensor  # (E, V): out norm scale, sqrt(E) and 1/cap folded in
    root_eps: Tensor  # sqrt(E * norm_eps), 0-dim


def fused_decode_applies(model: xLSTMLarge, tokens: Tensor) -> bool:
    """Whether `fused_decode_step` may run: `config.fused`, no autograd graph to record, autocast off, float32 or
    float64 weights, and the model within `decode_cache_max_bytes`. When the weights do not fit (dtype or size), a
    copy built earlier is freed."""
    if not model.config.fused or torch.is_grad_enabled() or torch.is_autocast_enabled(tokens.device.type):
        return False
    w = model.embedding.weight
    fits = (w.dtype in (torch.float32, torch.float64) and model.lm_head.weight.dtype == w.dtype
            and model._parameter_count * w.element_size() <= model.decode_cache_max_bytes)
    if not fits and "_derived_decode_head" in model.__dict__:
        model.clear_decode_cache()
    return fits


def fused_decode_step(model: xLSTMLarge, tokens: Tensor, state: tuple[MLSTMState, ...] | None
                      ) -> tuple[Tensor, tuple[MLSTMState, ...]]:
    """tokens (B,) -> logits (B, V) float32, new state, as the plain step computes them (to rounding). The memory C
    and normaliser n of a returned state are views into one [C | n] buffer; the input state is not modified."""
    c = model.config
    head = _head_weights(model)
    x = F.embedding(tokens, model.embedding.weight)  # (B, E)
    B = x.shape[0]
    NH, DQK, DV = c.num_heads, c.qk_head_dim, c.v_head_dim
    new_states = []
    for b, block in enumerate(model.blocks):
        w = _block_weights(block, c)
        if state is None or state[b] is None:
            Cx = x.new_zeros(B, NH, DQK, DV + 1)
            m = x.new_zeros(B, NH)
        else:
            C, n, m = state[b]
            Cx = _extended_memory(C, n, x.dtype)
            m = m.to(x.dtype)
        x, Cx, m = _decode_block(w, c, x, Cx, m, head.root_eps)
        new_states.append(MLSTMState(Cx[..., :DV], Cx[..., DV], m))
    if model.out_norm is not None:
        x = _rms_scaled(x, head.root_eps)
    logits = torch.mm(x, head.w_head).float()  # (B, V)
    if c.output_logit_soft_cap is not None:
        logits = torch.tanh(logits).mul_(c.output_logit_soft_cap)
    return logits, tuple(new_states)


# ----------------------------------------------------------------------------------------------------------------------
# building the fused weights


def _head_weights(model: xLSTMLarge) -> _DecodeHead:
    c = model.config
    sources = weight_sources(model.lm_head) + ([] if model.out_norm is None else weight_sources(model.out_norm))

    def build() -> _DecodeHead:
        cap = 1.0 if c.output_logit_soft_cap is None else c.output_logit_soft_cap
        w_head, _ = _folded_norm(model.out_norm, model.lm_head.weight / cap, None, c.embedding_dim)
        root_eps = torch.tensor(math.sqrt(c.embedding_dim * c.norm_eps), dtype=w_head.dtype, device=w_head.device)
        return _DecodeHead(w_head.t().contiguous(), root_eps)

    return cached_derived(model, "decode_head", sources, _outside_inference_mode(build))


def _block_weights(block: xLSTMLargeBlock, c: xLSTMLargeConfig) -> _DecodeBlock:
    return cached_derived(block, "decode", weight_sources(block),
                          _outside_inference_mode(lambda: _build_decode_block(block, c)))


def _outside_inference_mode(build):
    """build() outside inference mode (generate runs under it): the cached copies stay usable by later calls made
    under plain no_grad."""
    def wrapped():
        with torch.inference_mode(False), torch.no_grad():  # (leaving inference mode turns grad mode back on)
            return build()
    return wrapped


def _folded_norm(norm: nn.Module | None, lin_weight: Tensor, lin_bias: Tensor | None,
                 E: int) -> tuple[Tensor, Tensor | None]:
    """(W diag(s) sqrt(E), W b + bias) for lin(norm(x)) = lin(x * rsqrt(sum x^2 + E eps) * sqrt(E) * s + b), s the
    RMSNorm's scale and b its bias."""
    if norm is None:
        return lin_weight, lin_bias
    w = lin_weight * (norm.scale() * math.sqrt(E))
    bias = lin_bias
    if norm.bias is not None:
        extra = lin_weight @ norm.bias
        bias = extra if bias is None else bias + extra
    return w, bias


def _build_decode_block(block: xLSTMLargeBlock, c: xLSTMLargeConfig) -> _DecodeBlock:
    layer, ffn, E = block.mlstm_layer, block.ffn, c.embedding_dim
    NH, DQK, DV = c.num_heads, c.qk_head_dim, c.v_head_dim
    cap = 1.0 if c.gate_soft_cap is None else c.gate_soft_cap

    def wb(lin: nn.Linear, scale: float = 1.0) -> tuple[Tensor, Tensor]:
        b = lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.weight.shape[0])
        return lin.weight * scale, b * scale

    wq, bq = wb(layer.q)
    wk, bk = wb(layer.k, DQK**-0.5)
    wv, bv = wb(layer.v)
    # per head: DV value rows, then a zero row whose bias is 1
    wv = torch.cat([wv.view(NH, DV, E), wv.new_zeros(NH, 1, E)], 1).view(NH * (DV + 1), E)
    bv = torch.cat([bv.view(NH, DV), bv.new_ones(NH, 1)], 1).view(-1)
    wo, bo = wb(layer.ogate_preact)
    wf, bf = wb(layer.fgate_preact, 1.0 / cap)
    wi, bi = wb(layer.igate_preact, 1.0 / cap)
    w_in, b_in = _folded_norm(block.norm_mlstm, torch.cat([wq, wk, wv, wo, wf, wi]),
                              torch.cat([bq, bk, bv, bo, bf, bi]), E)
    hn = layer.multihead_norm
    w_out = layer.out_proj.weight
    head_norm = None
    if hn.bias is None:
        w_out = w_out * hn.scale()
    else:
        head_norm = (hn.scale().clone(), hn.bias.clone())
    up_b = None
    if ffn.proj_up_gate.bias is not None:
        up_b = torch.cat([ffn.proj_up_gate.bias, ffn.proj_up.bias])
    w_up, b_up = _folded_norm(block.norm_ffn, torch.cat([ffn.proj_up_gate.weight, ffn.proj_up.weight]), up_b, E)

    def t(w: Tensor | None) -> Tensor | None:
        return None if w is None else w.t().contiguous()

    return _DecodeBlock(t(w_in), b_in.contiguous(), t(w_out), layer.out_proj.bias, head_norm, t(w_up), b_up,
                        t(ffn.proj_down.weight), ffn.proj_down.bias)


# ----------------------------------------------------------------------------------------------------------------------
# the step


def _extended_memory(C: Tensor, n: Tensor, dtype: torch.dtype) -> Tensor:
    """[C | n] (B, NH, DQK, DV+1): a view when C and n are the views `fused_decode_step` returned, else a new
    tensor."""
    B, NH, DQK, DV = C.shape
    if C.dtype == n.dtype == dtype:
        stride = (NH * DQK * (DV + 1), DQK * (DV + 1), DV + 1, 1)
        if (C.stride() == stride and n.stride() == stride[:3]
                and n.data_ptr() == C.data_ptr() + DV * C.element_size()):
            return C.as_strided((B, NH, DQK, DV + 1), stride)
    return torch.cat([C.to(dtype), n.to(dtype).unsqueeze(-1)], -1)


def _rms_scaled(x: Tensor, root_eps: Tensor) -> Tensor:
    """x / sqrt(sum(x^2) + E eps) (B, E): RMSNorm without its scale and without the factor sqrt(E), both folded
    into the next matmul's weights; hypot(|x|, sqrt(E eps)) is the denominator in one operation."""
    return x / torch.hypot(torch.linalg.vector_norm(x, dim=-1, keepdim=True), root_eps)


def _decode_block(w: _DecodeBlock, c: xLSTMLargeConfig, x: Tensor, Cx: Tensor, m: Tensor,
                  root_eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One block for one token: x (B, E), extended memory Cx = [C | n] (B, NH, DQK, DV+1), m (B, NH) ->
    new x, new Cx, new m. The recurrence is the mLSTM step's (stabilised, sigmoid forget gate, docs/blocks.md)."""
    B = x.shape[0]
    NH, DQK, DV = c.num_heads, c.qk_head_dim, c.v_head_dim
    # RMSNorm (its scale and sqrt(E) are in w_in) and every projection in one matmul
    y = torch.addmm(w.b_in, _rms_scaled(x, root_eps), w.w_in)  # (B, P)
    q, k, v, o, g = y.split([NH * DQK, NH * DQK, NH * (DV + 1), NH * DV, 2 * NH], 1)  # o: (B, NH*DV)
    if c.gate_soft_cap is not None:
        g = torch.tanh(g).mul_(c.gate_soft_cap)
    f, i = g.split(NH, 1)  # (B, NH) each
    lm = F.logsigmoid(f).add_(m)  # log f + m_prev
    m_new = torch.maximum(lm, i)  # (B, NH)
    # exp(log f + m_prev - m), exp(i - m), exp(-m) in one pass, each (B, NH, 1, 1)
    fp, ip, thr = torch.stack((lm, i, torch.zeros_like(i))).sub_(m_new).exp_().view(3, B, NH, 1, 1).unbind(0)
    Cx = Cx * fp
    Cx.addcmul_(k.view(B, NH, DQK, 1) * ip, v.view(B, NH, 1, DV + 1))  # k exp(i - m) [v, 1]^T
    num, qn = torch.matmul(q.view(B, NH, 1, DQK), Cx).split(DV, -1)  # (B, NH, 1, DV), (B, NH, 1, 1)
    h = F.layer_norm(num / torch.maximum(qn.abs(), thr).add_(c.eps), (DV,), eps=c.norm_eps).view(B, NH * DV)
    if w.head_norm is not None:
        h = torch.addcmul(w.head_norm[1], h, w.head_norm[0])
    x = torch.addmm(x, torch.sigmoid(o).mul_(h), w.w_out)
    if w.b_out is not None:
        x = x + w.b_out
    # SwiGLU
    xs = _rms_scaled(x, root_eps)
    u = torch.mm(xs, w.w_up) if w.b_up is None else torch.addmm(w.b_up, xs, w.w_up)  # (B, 2*D)
    gate, up = u.chunk(2, 1)
    x = torch.addmm(x, F.silu(gate).mul_(up), w.w_down)
    if w.b_down is not None:
        x = x + w.b_down
    return x, Cx, m_new

"""xLSTM Large: the xLSTM-7B architecture (Beck et al. 2025, arXiv 2503.13427), in one file.

A stack of Transformer-like residual blocks that use an mLSTM layer where a Transformer has attention:

    x = x + mLSTMLayer(RMSNorm(x))          # dense q/k/v, soft-capped scalar gates per head, no convolution
    x = x + SwiGLU(RMSNorm(x))              # up-projection width rounded up to a multiple of 64
    logits = cap * tanh(lm_head(RMSNorm(x)) / cap)

mLSTM layer, per head (head count NH, key size DQK, value size DV):

    q, k = W_q x, W_k x                     # (NH * DQK = int(E * qk_dim_factor))
    v, o~ = W_v x, W_o x                    # (NH * DV  = int(E * v_dim_factor))
    i~, f~ = softcap15(W_i x + b_i), softcap15(W_f x + b_f)      # one scalar per head
    h = mLSTM(q, k, v, i~, f~)              # xlstmkit.ops (stabilised, exp input gate, sigmoid forget gate)
    y = W_out (sigmoid(o~) * LayerNorm_per_head(h))

The parameter names follow the official `xlstm_large` module and Hugging Face transformers' `xLSTMForCausalLM`
(`blocks.{i}.mlstm_layer.q`, `...ffn.proj_up_gate`, ...), so that `xlstmkit.interop.hf` maps checkpoints by
renaming a prefix only. Sizes are computed once, in `xLSTMLargeConfig`, with the same arithmetic as transformers'
layer code (which is what its weights have), so every checkpoint it writes loads here, including sizes that are
not multiples of 64.

Speed: the sequence forward computes each mLSTM layer's six projections as one matmul on the concatenated weights
(likewise the FFN's two up-projections), uses fused RMS/layer norms, and works in place where autograd allows (and
on every large temporary when no graph is recorded). Token-by-token generation runs `xLSTMLarge.decode_step`: a
cached, fused copy of the weights (norm weights, key scale and gate caps folded in, transposed for matrix-vector
products) and a memory [C | n] that one outer product and one matmul update and read; see `_DecodeBlock`.

The recurrent state is a tuple over blocks of `MLSTMState(C, n, m)` in float32 whatever the weight dtype; keys are
scaled by DQK**-0.5 inside the op (transformers scales the queries: same outputs, the stored C and n differ by that
factor, which only matters when exchanging states with a transformers `xLSTMCache`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from xlstmkit.config import FrozenConfig
from xlstmkit.generation import GenerationMixin
from xlstmkit.ops.mlstm import MLSTMState, mlstm_chunkwise, mlstm_parallel, mlstm_recurrent

FORMS = {"chunkwise": mlstm_chunkwise, "parallel": mlstm_parallel, "recurrent": mlstm_recurrent}


def round_up_like_transformers(x: float, multiple_of: int) -> int:
    """transformers' / xlstm's rounding rule for the FFN width: int(((x + m - 1) // m) * m), on a float x.

    For integer x this is the usual round-up to a multiple. For a non-integer x just above a multiple (e.g. 64.5 with
    m = 64) it gives the multiple below, unlike ceil; the checkpoints are shaped by this exact rule, so we use it.
    """
    return int(((x + multiple_of - 1) // multiple_of) * multiple_of)


# ----------------------------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class xLSTMLargeConfig(FrozenConfig):
    """Sizes and numerics of an xLSTM-Large model; defaults are xLSTM-7B. Field names follow transformers'
    `xLSTMConfig` (`embedding_dim` = its `hidden_size`, `num_blocks` = its `num_hidden_layers`).

    Validated once, at construction; frozen (use `replace`). Derived sizes are properties: `qk_dim`, `v_dim`,
    `qk_head_dim`, `v_head_dim`, `ffn_dim`.
    """

    vocab_size: int = 50304
    embedding_dim: int = 4096
    num_heads: int = 8
    num_blocks: int = 32
    use_bias: bool = False
    norm_eps: float = 1e-6
    norm_reduction_force_float32: bool = True
    add_out_norm: bool = True
    qk_dim_factor: float = 0.5
    v_dim_factor: float = 1.0
    gate_soft_cap: float | None = 15.0
    output_logit_soft_cap: float | None = 30.0
    ffn_proj_factor: float = 2.667
    ffn_round_up_to_multiple_of: int = 64
    chunk_size: int = 64
    eps: float = 1e-6
    mlstm_form: str = "chunkwise"
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embedding_dim", "num_heads", "num_blocks", "ffn_round_up_to_multiple_of",
                     "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("qk_dim_factor", "v_dim_factor", "ffn_proj_factor", "norm_eps", "eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        for name in ("gate_soft_cap", "output_logit_soft_cap"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise ValueError(f"{name} must be a positive number or None (no cap), got {value!r}")
        for name in ("use_bias", "norm_reduction_force_float32", "add_out_norm"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"{name} must be an int or None, got {value!r}")
        if self.mlstm_form not in FORMS:
            raise ValueError(f"mlstm_form must be one of {sorted(FORMS)}, got {self.mlstm_form!r}")
        for what, dim in (("qk_dim = int(embedding_dim * qk_dim_factor)", self.qk_dim),
                          ("v_dim = int(embedding_dim * v_dim_factor)", self.v_dim)):
            if dim < self.num_heads or dim % self.num_heads:
                raise ValueError(f"{what} = {dim} must be a positive multiple of num_heads = {self.num_heads}")

    # -- derived sizes (the single place they are computed) -------------------------------------------------------
    @property
    def qk_dim(self) -> int:
        """Total query/key width: int(E * qk_dim_factor), as in transformers' layer (not its rounded-up cache)."""
        return int(self.embedding_dim * self.qk_dim_factor)

    @property
    def v_dim(self) -> int:
        """Total value / output-gate width: int(E * v_dim_factor)."""
        return int(self.embedding_dim * self.v_dim_factor)

    @property
    def qk_head_dim(self) -> int:
        return self.qk_dim // self.num_heads

    @property
    def v_head_dim(self) -> int:
        return self.v_dim // self.num_heads

    @property
    def ffn_dim(self) -> int:
        """SwiGLU up-projection width: E * ffn_proj_factor rounded up to `ffn_round_up_to_multiple_of`."""
        return round_up_like_transformers(self.embedding_dim * self.ffn_proj_factor, self.ffn_round_up_to_multiple_of)


# ----------------------------------------------------------------------------------------------------------------------
# layers


def soft_cap(x: Tensor, cap: float | None) -> Tensor:
    """cap * tanh(x / cap): bounds x to (-cap, cap) smoothly, identity near 0; None means no cap."""
    if cap is None:
        return x
    t = (x / cap).tanh_()  # in place on the quotient, which no backward needs
    return t.mul_(cap) if no_autograd() else t * cap  # (tanh's backward needs its output)


def no_autograd() -> bool:
    """True when no autograd graph is being recorded: then the layers reuse their large temporaries in place. (A
    fresh buffer of a few MB costs a page fault per 4 KB on first touch, often more than the arithmetic on it.)"""
    return not torch.is_grad_enabled()


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight (+ bias), the reduction in float32 (then cast back before the weight)."""

    def __init__(self, dim: int, eps: float = 1e-6, bias: bool = False, force_float32: bool = True):
        super().__init__()
        self.eps, self.force_float32 = eps, force_float32
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:  # (..., dim)
        xf = x.float() if self.force_float32 else x
        # F.rms_norm: one fused pass forward and backward (the composite x * rsqrt(mean(x^2) + eps) takes several)
        y = F.rms_norm(xf, (xf.shape[-1],), None, self.eps).to(x.dtype)
        if no_autograd():
            return y.mul_(self.weight) if self.bias is None else y.mul_(self.weight).add_(self.bias)
        y = y * self.weight
        return y if self.bias is None else y + self.bias


class MultiHeadLayerNorm(nn.Module):
    """LayerNorm over each head's DV channels separately (no centring across heads), then a flat weight (NH * DV)."""

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-6, bias: bool = False,
                 force_float32: bool = True):
        super().__init__()
        self.num_heads, self.head_dim, self.eps, self.force_float32 = num_heads, head_dim, eps, force_float32
        self.weight = nn.Parameter(torch.ones(num_heads * head_dim))
        self.bias = nn.Parameter(torch.zeros(num_heads * head_dim)) if bias else None

    def forward(self, h: Tensor) -> Tensor:  # (B, S, NH, DV) -> (B, S, NH * DV)
        hf = h.float() if self.force_float32 else h
        # F.layer_norm over each head without an affine part (fused; torch.var alone is several times slower)
        y = F.layer_norm(hf, (self.head_dim,), None, None, self.eps).to(h.dtype).flatten(-2)
        if no_autograd():
            return y.mul_(self.weight) if self.bias is None else y.mul_(self.weight).add_(self.bias)
        y = y * self.weight
        return y if self.bias is None else y + self.bias


def fused_linear(x: Tensor, linears: Sequence[nn.Linear], bias: bool = True) -> Tensor:
    """torch.cat([lin(x) for lin in linears], -1) as one matmul on the concatenated weights (same parameters and
    gradients; one pass over x and one input-gradient matmul instead of one per layer). `bias=False` leaves the
    biases out (for the caller to add where they are)."""
    weight = torch.cat([lin.weight for lin in linears])
    if not bias or all(lin.bias is None for lin in linears):
        return F.linear(x, weight)
    bias = torch.cat([lin.weight.new_zeros(lin.out_features) if lin.bias is None else lin.bias for lin in linears])
    return F.linear(x, weight, bias)


class mLSTMLayer(nn.Module):
    """The xLSTM-7B mLSTM layer: dense projections, soft-capped per-head gates, sigmoid output gate, head norm."""

    def __init__(self, config: xLSTMLargeConfig):
        super().__init__()
        c = config
        self.config = config
        E, bias = c.embedding_dim, c.use_bias
        self.q = nn.Linear(E, c.qk_dim, bias=bias)
        self.k = nn.Linear(E, c.qk_dim, bias=bias)
        self.v = nn.Linear(E, c.v_dim, bias=bias)
        self.ogate_preact = nn.Linear(E, c.v_dim, bias=bias)
        self.igate_preact = nn.Linear(E, c.num_heads, bias=True)
        self.fgate_preact = nn.Linear(E, c.num_heads, bias=True)
        self.multihead_norm = MultiHeadLayerNorm(c.num_heads, c.v_head_dim, eps=c.norm_eps, bias=bias,
                                                 force_float32=c.norm_reduction_force_float32)
        self.out_proj = nn.Linear(c.v_dim, E, bias=bias)

    def forward(self, x: Tensor, state: MLSTMState | None, form: str,
                return_state: bool) -> tuple[Tensor, MLSTMState | None]:
        c = self.config
        B, S, _ = x.shape  # (B, S, E)
        NH = c.num_heads
        # without use_bias only the two gates have biases: added to their 2 * NH columns rather than through the
        # matmul (addmm first copies a bias row into every one of the (B * S, P) outputs)
        y = fused_linear(x, (self.q, self.k, self.v, self.ogate_preact, self.igate_preact, self.fgate_preact),
                         bias=c.use_bias)
        # split, not slicing: its backward concatenates the pieces' gradients (slices' backward zero-fills y-sized
        # buffers, one per slice)
        q, k, v, o, gates = y.split([c.qk_dim, c.qk_dim, c.v_dim, c.v_dim, 2 * NH], -1)  # o: (B, S, NH * DV)
        q = q.view(B, S, NH, c.qk_head_dim).transpose(1, 2)  # (B, NH, S, DQK)
        k = k.view(B, S, NH, c.qk_head_dim).transpose(1, 2)
        v = v.view(B, S, NH, c.v_head_dim).transpose(1, 2)  # (B, NH, S, DV)
        if not c.use_bias:
            gates = gates + torch.cat([self.igate_preact.bias, self.fgate_preact.bias])
        gates = soft_cap(gates, c.gate_soft_cap).transpose(1, 2)  # (B, 2 * NH, S)
        i, f = gates[:, :NH], gates[:, NH:]  # (B, NH, S)
        kwargs: dict[str, Any] = {"chunk_size": c.chunk_size} if form == "chunkwise" else {}
        out = FORMS[form](q, k, v, i, f, initial_state=state, return_state=return_state, eps=c.eps, **kwargs)
        h, new_state = out if return_state else (out, None)
        h = self.multihead_norm(h.transpose(1, 2))  # (B, S, NH * DV)
        g = torch.sigmoid(o)
        return self.out_proj(g.mul_(h) if no_autograd() else g * h), new_state


class FeedForward(nn.Module):
    """SwiGLU: proj_down(silu(proj_up_gate(x)) * proj_up(x))."""

    def __init__(self, config: xLSTMLargeConfig):
        super().__init__()
        E, D, bias = config.embedding_dim, config.ffn_dim, config.use_bias
        self.proj_up_gate = nn.Linear(E, D, bias=bias)
        self.proj_up = nn.Linear(E, D, bias=bias)
        self.proj_down = nn.Linear(D, E, bias=bias)

    def forward(self, x: Tensor) -> Tensor:  # (B, S, E)
        u = fused_linear(x, (self.proj_up_gate, self.proj_up))  # (B, S, 2 * D)
        gate, up = u.chunk(2, -1)
        a = F.silu(gate)
        return self.proj_down(a.mul_(up) if no_autograd() else a * up)


class mLSTMBlock(nn.Module):
    """x + mLSTM(RMSNorm(x)), then + SwiGLU(RMSNorm(.))."""

    def __init__(self, config: xLSTMLargeConfig):
        super().__init__()
        c = config
        self.norm_mlstm = RMSNorm(c.embedding_dim, c.norm_eps, c.use_bias, c.norm_reduction_force_float32)
        self.mlstm_layer = mLSTMLayer(c)
        self.norm_ffn = RMSNorm(c.embedding_dim, c.norm_eps, c.use_bias, c.norm_reduction_force_float32)
        self.ffn = FeedForward(c)

    def forward(self, x: Tensor, state: MLSTMState | None, form: str,
                return_state: bool) -> tuple[Tensor, MLSTMState | None]:
        y, state = self.mlstm_layer(self.norm_mlstm(x), state, form, return_state)
        x = y.add_(x)  # in place on the projection's output, which no backward needs
        return self.ffn(self.norm_ffn(x)).add_(x), state


# ----------------------------------------------------------------------------------------------------------------------
# token-by-token decoding: the same function as the recurrent form, in few large operations


class _DecodeBlock(NamedTuple):
    """One block's weights rearranged for `xLSTMLarge.decode_step` (transposed to (in, out), float, contiguous).

    w_in (E, P) maps the *un-weighted* RMS-normalised input x * rsqrt(sum(x^2) + E eps) (note: sum, not mean) to
    every per-token quantity of the mLSTM layer at once; the columns are
        [q (NH*DQK) | k * DQK**-0.5 (NH*DQK) | per head (v, 1) (NH*(DV+1)) | o~ (NH*DV) | f~/cap | i~/cap (NH each)]
    so that the RMSNorm weight and sqrt(E), the key scale and the gates' 1/cap are folded in, and the constant 1
    after each head's value (from b_in, its weight column is 0) makes the normaliser n the last column of an
    extended memory [C | n] (DQK, DV+1): one outer-product update and one matmul serve both C and n.
    """

    w_in: Tensor  # (E, P)
    b_in: Tensor  # (P,)
    w_out: Tensor  # (NH*DV, E): the head norm's weight folded in unless the head norm has a bias
    b_out: Tensor | None  # (E,)
    head_norm: tuple[Tensor, Tensor] | None  # (weight, bias) (NH*DV,) when the head norm has a bias
    w_up: Tensor  # (E, 2*D): [gate | up], the FFN RMSNorm weight and sqrt(E) folded in
    b_up: Tensor | None  # (2*D,)
    w_down: Tensor  # (D, E)
    b_down: Tensor | None  # (E,)


class _DecodeWeights(NamedTuple):
    key: tuple  # (decode_cache_max_bytes, (version, data_ptr) of every parameter the weights were built from)
    blocks: tuple[_DecodeBlock, ...]
    w_head: Tensor  # (E, V): out norm weight, sqrt(E) and 1/cap folded in
    root_eps: Tensor  # sqrt(E * norm_eps), 0-dim


def _folded_norm(norm: RMSNorm | None, lin_weight: Tensor, lin_bias: Tensor | None,
                 E: int) -> tuple[Tensor, Tensor | None]:
    """(W diag(w) sqrt(E), W b + bias) for lin(norm(x)) = lin(x * rsqrt(sum x^2 + E eps) * sqrt(E) * w + b)."""
    if norm is None:
        return lin_weight, lin_bias
    w = lin_weight * (norm.weight * math.sqrt(E))
    bias = lin_bias
    if norm.bias is not None:
        extra = lin_weight @ norm.bias
        bias = extra if bias is None else bias + extra
    return w, bias


@torch.no_grad()
def _build_decode_block(block: mLSTMBlock, c: xLSTMLargeConfig) -> _DecodeBlock:
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
        w_out = w_out * hn.weight
    else:
        head_norm = (hn.weight.clone(), hn.bias.clone())
    up_b = None
    if ffn.proj_up_gate.bias is not None:
        up_b = torch.cat([ffn.proj_up_gate.bias, ffn.proj_up.bias])
    w_up, b_up = _folded_norm(block.norm_ffn, torch.cat([ffn.proj_up_gate.weight, ffn.proj_up.weight]), up_b, E)

    def t(w: Tensor | None) -> Tensor | None:
        return None if w is None else w.t().contiguous()

    return _DecodeBlock(t(w_in), b_in.contiguous(), t(w_out), layer.out_proj.bias, head_norm, t(w_up), b_up,
                        t(ffn.proj_down.weight), ffn.proj_down.bias)


def _rms_scaled(x: Tensor, root_eps: Tensor) -> Tensor:
    """x / sqrt(sum(x^2) + E eps) (B, E): RMSNorm without its weight and without the factor sqrt(E), both folded
    into the next matmul's weights; hypot(|x|, sqrt(E eps)) is the denominator in one operation."""
    return x / torch.hypot(torch.linalg.vector_norm(x, dim=-1, keepdim=True), root_eps)


def _decode_block(w: _DecodeBlock, c: xLSTMLargeConfig, x: Tensor, Cx: Tensor, m: Tensor,
                  root_eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One block for one token: x (B, E), extended memory Cx = [C | n] (B, NH, DQK, DV+1), m (B, NH) ->
    new x, new Cx, new m. The recurrence is `mlstm_step`'s (stabilised, sigmoid forget gate)."""
    B = x.shape[0]
    NH, DQK, DV = c.num_heads, c.qk_head_dim, c.v_head_dim
    # RMSNorm (its weight and sqrt(E) are in w_in) and every projection in one matmul
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


# how many parameters have been (re)registered on any module in this process: a parameter replaced by assignment
# (`layer.q.weight = nn.Parameter(...)`, `load_state_dict(assign=True)`) invalidates the decoding cache's list
_PARAMETER_REGISTRATIONS = [0]


def _count_registration(module: nn.Module, name: str, param: Tensor | None) -> None:
    _PARAMETER_REGISTRATIONS[0] += 1


torch.nn.modules.module.register_module_parameter_registration_hook(_count_registration)


def _extended_memory(C: Tensor, n: Tensor, dtype: torch.dtype) -> Tensor:
    """[C | n] (B, NH, DQK, DV+1): a view when C and n are the views `decode_step` returned, else a new tensor."""
    B, NH, DQK, DV = C.shape
    if C.dtype == n.dtype == dtype:
        stride = (NH * DQK * (DV + 1), DQK * (DV + 1), DV + 1, 1)
        if (C.stride() == stride and n.stride() == stride[:3]
                and n.data_ptr() == C.data_ptr() + DV * C.element_size()):
            return C.as_strided((B, NH, DQK, DV + 1), stride)
    return torch.cat([C.to(dtype), n.to(dtype).unsqueeze(-1)], -1)


# ----------------------------------------------------------------------------------------------------------------------
# model


class xLSTMLarge(GenerationMixin, nn.Module):
    """The xLSTM-7B language model: embedding, `num_blocks` mLSTM blocks, out norm, untied head, logit soft-cap.

    Same calling convention as `xLSTMLM`: `model(input_ids)` -> logits (B, S, V) in float32, or with
    `return_state=True` -> (logits, state) where state is a tuple over blocks of float32 `MLSTMState`s that can be
    fed back as `state=` to continue the sequence. Any S >= 1, in any of the three mLSTM forms.
    """

    def __init__(self, config: xLSTMLargeConfig):
        super().__init__()
        if not isinstance(config, xLSTMLargeConfig):
            raise TypeError(f"config must be an xLSTMLargeConfig, got {type(config).__name__}")
        c = self.config = config
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_dim)
        self.blocks = nn.ModuleList(mLSTMBlock(c) for _ in range(c.num_blocks))
        self.out_norm = (RMSNorm(c.embedding_dim, c.norm_eps, False, c.norm_reduction_force_float32)
                         if c.add_out_norm else None)
        self.lm_head = nn.Linear(c.embedding_dim, c.vocab_size, bias=False)
        # recompute each block in the backward pass instead of keeping its activations (fine-tuning large models)
        self.gradient_checkpointing = False
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The xLSTM-7B initialisation (transformers' `_init_weights`, xlstm-jax configs).

        Input/forget gate weights 0, input gate bias -10 (tiny initial writes), forget gate bias linspace(3, 6, NH)
        (long to medium memory per head); embedding and projections "small init" N(0, sqrt(2 / (5 E))); the layers
        that write into the residual stream (out_proj, proj_down) "wang init" N(0, 2 / (num_blocks * sqrt(E)));
        other biases 0, norm weights 1. (transformers also zeroes the output-gate and FFN-gate weights because their
        names contain "gate"; that leaves every FFN output 0 at init, so we small-init them like the other layers.)
        """
        c = self.config
        small = math.sqrt(2.0 / (5.0 * c.embedding_dim))
        wang = 2.0 / (c.num_blocks * math.sqrt(c.embedding_dim))
        nn.init.normal_(self.embedding.weight, std=small)
        nn.init.normal_(self.lm_head.weight, std=small)
        for block in self.blocks:
            layer, ffn = block.mlstm_layer, block.ffn
            for lin in (layer.q, layer.k, layer.v, layer.ogate_preact, ffn.proj_up_gate, ffn.proj_up):
                nn.init.normal_(lin.weight, std=small)
            for lin in (layer.out_proj, ffn.proj_down):
                nn.init.normal_(lin.weight, std=wang)
            for lin in (layer.q, layer.k, layer.v, layer.ogate_preact, layer.out_proj, ffn.proj_up_gate, ffn.proj_up,
                        ffn.proj_down):
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)
            nn.init.zeros_(layer.igate_preact.weight)
            nn.init.constant_(layer.igate_preact.bias, -10.0)
            nn.init.zeros_(layer.fgate_preact.weight)
            layer.fgate_preact.bias.copy_(torch.linspace(3.0, 6.0, c.num_heads))
        for module in self.modules():
            if isinstance(module, (RMSNorm, MultiHeadLayerNorm)):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: Tensor,  # (B, S) int64
        state: Sequence[MLSTMState] | None = None,
        return_state: bool = False,
        mlstm_form: str | None = None,
    ) -> Tensor | tuple[Tensor, tuple[MLSTMState, ...]]:
        """Logits (B, S, V) in float32 for token ids (B, S); with `return_state`, also the state after the last token.

        `state` (from a previous call) continues a sequence: feeding it in pieces gives the logits of feeding it
        whole. `mlstm_form` overrides `config.mlstm_form` ("chunkwise", "parallel" or "recurrent").
        """
        c = self.config
        if not isinstance(input_ids, Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError("input_ids must be an integer (int64) tensor of shape (B, S)")
        if input_ids.dim() != 2 or input_ids.shape[1] < 1:
            raise ValueError(f"input_ids must have shape (B, S) with S >= 1, got {tuple(input_ids.shape)}")
        form = c.mlstm_form if mlstm_form is None else mlstm_form
        if form not in FORMS:
            raise ValueError(f"mlstm_form must be one of {sorted(FORMS)}, got {form!r}")
        if state is not None and (not isinstance(state, (tuple, list)) or len(state) != c.num_blocks):
            raise ValueError(f"state must be a tuple of {c.num_blocks} MLSTMState (one per block), "
                             f"got {type(state).__name__} of length {len(state) if hasattr(state, '__len__') else '?'}")
        x = self.embedding(input_ids)  # (B, S, E)
        new_states = []
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for b, block in enumerate(self.blocks):
            block_state = None if state is None else state[b]
            if recompute:
                x, st = checkpoint(block, x, block_state, form, return_state, use_reentrant=False)
            else:
                x, st = block(x, block_state, form, return_state)
            new_states.append(st)
        if self.out_norm is not None:
            x = self.out_norm(x)
        logits = soft_cap(self.lm_head(x.to(self.lm_head.weight.dtype)).float(), c.output_logit_soft_cap)
        return (logits, tuple(new_states)) if return_state else logits

    # -- token-by-token decoding ------------------------------------------------------------------------------------
    #: Largest model (parameter bytes) for which `decode_step` keeps a fused copy of the weights; bigger models
    #: decode through `forward` instead, so that a 7B model does not hold its weights twice.
    decode_cache_max_bytes: int = 2 << 30

    def _decode_weights(self) -> _DecodeWeights | None:
        """The fused decoding weights, rebuilt whenever a parameter changed (in place: its version counter; or
        replaced: its storage). Changes made through `param.data` bypass the version counter: call
        `clear_decode_cache()` after those. None when the fast path does not apply (see `decode_step`)."""
        params = self._decode_params
        key = (self.decode_cache_max_bytes, tuple([(p._version, p.data_ptr()) for p in params]))
        cache = self.__dict__.get("_decode_cache")
        if cache is not None and cache.key == key:
            return cache
        if self.__dict__.get("_decode_unfit") == key:
            return None
        dtype = params[0].dtype
        if (dtype not in (torch.float32, torch.float64) or any(p.dtype != dtype for p in params)
                or sum(p.numel() for p in params) * params[0].element_size() > self.decode_cache_max_bytes):
            self.__dict__.pop("_decode_cache", None)  # free a copy made for weights that have since changed
            self.__dict__["_decode_unfit"] = key  # and do not test again until they change
            return None
        c = self.config
        with torch.no_grad(), torch.inference_mode(False):
            blocks = tuple(_build_decode_block(b, c) for b in self.blocks)
            cap = 1.0 if c.output_logit_soft_cap is None else c.output_logit_soft_cap
            w_head, _ = _folded_norm(self.out_norm, self.lm_head.weight / cap, None, c.embedding_dim)
            root_eps = torch.tensor(math.sqrt(c.embedding_dim * c.norm_eps), dtype=dtype,
                                    device=self.lm_head.weight.device)
            cache = _DecodeWeights(key, blocks, w_head.t().contiguous(), root_eps)
        self.__dict__["_decode_cache"] = cache
        return cache

    @property
    def _decode_params(self) -> list[Tensor]:
        """list(self.parameters()), kept until any module anywhere registers a parameter (listing them costs more
        than a decoding step's arithmetic on small models)."""
        entry = self.__dict__.get("_decode_param_list")
        # module conversions under torch.__future__.set_overwrite_module_params_on_conversion(True) replace every
        # parameter without registering it: the first and last parameters being the listed ones catches those
        if (entry is None or entry[0] != _PARAMETER_REGISTRATIONS[0] or entry[1][0] is not self.embedding.weight
                or entry[1][-1] is not self.lm_head.weight):
            entry = self.__dict__["_decode_param_list"] = (_PARAMETER_REGISTRATIONS[0], list(self.parameters()))
        return entry[1]

    def clear_decode_cache(self) -> None:
        """Drop the fused decoding weights (rebuilt on the next `decode_step`). Needed only after changing
        parameters through `.data`, which torch does not track; optimiser steps, `load_state_dict`, `.to()` and
        in-place updates under `torch.no_grad()` are detected."""
        self.__dict__.pop("_decode_cache", None)
        self.__dict__.pop("_decode_param_list", None)

    def decode_step(self, tokens: Tensor, state: Sequence[MLSTMState] | None = None
                    ) -> tuple[Tensor, tuple[MLSTMState, ...]]:
        """One token per row, tokens (B,) -> logits (B, V) in float32, new state: the numbers of
        `forward(tokens[:, None], state, return_state=True, mlstm_form="recurrent")` (to rounding), without the
        input checks and the sequence axis. Generation's hot path (`stream` calls it once per token).

        Without autograd (under `torch.no_grad()` / `inference_mode`, as `generate` runs) and with float32 or float64
        weights, it runs on a fused copy of the weights (one matmul for all of an mLSTM layer's projections, one for
        the FFN's two up-projections, norms, key scale and gate caps folded in), cached and rebuilt when the
        parameters change; the memory C and normaliser n live side by side in one buffer (the returned C and n are
        views into it). The input state is not modified. Otherwise (autograd, bf16, autocast, very large models)
        it calls `forward`.
        """
        c = self.config
        fused = None
        if not (torch.is_grad_enabled() or torch.is_autocast_enabled("cpu")
                or torch.is_autocast_enabled(tokens.device.type)):
            fused = self._decode_weights()
        if fused is None:
            logits, new_state = self(tokens[:, None], state=state, return_state=True, mlstm_form="recurrent")
            return logits[:, 0], new_state
        x = F.embedding(tokens, self.embedding.weight)  # (B, E)
        B = x.shape[0]
        NH, DQK, DV = c.num_heads, c.qk_head_dim, c.v_head_dim
        new_states = []
        for b, w in enumerate(fused.blocks):
            if state is None:
                Cx = x.new_zeros(B, NH, DQK, DV + 1)
                m = x.new_zeros(B, NH)
            else:
                C, n, m = state[b]
                Cx = _extended_memory(C, n, x.dtype)
                m = m.to(x.dtype)
            x, Cx, m = _decode_block(w, c, x, Cx, m, fused.root_eps)
            new_states.append(MLSTMState(Cx[..., :DV], Cx[..., DV], m))
        if self.out_norm is not None:
            x = _rms_scaled(x, fused.root_eps)
        logits = torch.mm(x, fused.w_head).float()  # (B, V)
        if c.output_logit_soft_cap is not None:
            logits = torch.tanh(logits).mul_(c.output_logit_soft_cap)
        return logits, tuple(new_states)

    def zero_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[MLSTMState, ...]:
        """The empty state (all zeros) for `batch_size` sequences: what `state=None` means."""
        c = self.config
        dev = self.lm_head.weight.device if device is None else device
        return tuple(MLSTMState(torch.zeros(batch_size, c.num_heads, c.qk_head_dim, c.v_head_dim, device=dev),
                                torch.zeros(batch_size, c.num_heads, c.qk_head_dim, device=dev),
                                torch.zeros(batch_size, c.num_heads, device=dev)) for _ in range(c.num_blocks))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["xLSTMLargeConfig", "xLSTMLarge", "RMSNorm", "MultiHeadLayerNorm", "mLSTMLayer", "FeedForward",
           "mLSTMBlock", "soft_cap", "round_up_like_transformers", "fused_linear"]

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

The recurrent state is a tuple over blocks of `MLSTMState(C, n, m)` in float32 whatever the weight dtype; keys are
scaled by DQK**-0.5 inside the op (transformers scales the queries: same outputs, the stored C and n differ by that
factor, which only matters when exchanging states with a transformers `xLSTMCache`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

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
    return x if cap is None else cap * torch.tanh(x / cap)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight (+ bias), the reduction in float32 (then cast back before the weight)."""

    def __init__(self, dim: int, eps: float = 1e-6, bias: bool = False, force_float32: bool = True):
        super().__init__()
        self.eps, self.force_float32 = eps, force_float32
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:  # (..., dim)
        xf = x.float() if self.force_float32 else x
        y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight
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
        mean = hf.mean(-1, keepdim=True)
        var = hf.var(-1, keepdim=True, unbiased=False)
        y = ((hf - mean) * torch.rsqrt(var + self.eps)).to(h.dtype).flatten(-2) * self.weight
        return y if self.bias is None else y + self.bias


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
        q = self.q(x).view(B, S, NH, c.qk_head_dim).transpose(1, 2)  # (B, NH, S, DQK)
        k = self.k(x).view(B, S, NH, c.qk_head_dim).transpose(1, 2)
        v = self.v(x).view(B, S, NH, c.v_head_dim).transpose(1, 2)  # (B, NH, S, DV)
        i = soft_cap(self.igate_preact(x), c.gate_soft_cap).transpose(1, 2)  # (B, NH, S)
        f = soft_cap(self.fgate_preact(x), c.gate_soft_cap).transpose(1, 2)
        kwargs: dict[str, Any] = {"chunk_size": c.chunk_size} if form == "chunkwise" else {}
        out = FORMS[form](q, k, v, i, f, initial_state=state, return_state=return_state, eps=c.eps, **kwargs)
        h, new_state = out if return_state else (out, None)
        h = self.multihead_norm(h.transpose(1, 2))  # (B, S, NH * DV)
        return self.out_proj(torch.sigmoid(self.ogate_preact(x)) * h), new_state


class FeedForward(nn.Module):
    """SwiGLU: proj_down(silu(proj_up_gate(x)) * proj_up(x))."""

    def __init__(self, config: xLSTMLargeConfig):
        super().__init__()
        E, D, bias = config.embedding_dim, config.ffn_dim, config.use_bias
        self.proj_up_gate = nn.Linear(E, D, bias=bias)
        self.proj_up = nn.Linear(E, D, bias=bias)
        self.proj_down = nn.Linear(D, E, bias=bias)

    def forward(self, x: Tensor) -> Tensor:  # (B, S, E)
        return self.proj_down(F.silu(self.proj_up_gate(x)) * self.proj_up(x))


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
        x = x + y
        return x + self.ffn(self.norm_ffn(x)), state


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
           "mLSTMBlock", "soft_cap", "round_up_like_transformers"]

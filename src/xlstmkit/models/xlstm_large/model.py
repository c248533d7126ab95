"""xLSTM Large: the xLSTM-7B architecture (Beck et al. 2025, arXiv 2503.13427; docs/blocks.md).

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

The layers' `forward` and `step` are these lines. With `config.fused` (the default) the layer's and the FFN's sequence
forward compute their projections as one matmul on the concatenated weights (`forward_fused`), and the model's
`decode_step` runs the fused one-token step of decode.py; both compute the same function as the plain lines (tested).

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
import os
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ...config import FORMS
from ...generation import GenerationMixin, check_attention_mask, check_tokens
from ...nn.block_stack import check_state, expected_state_shapes
from ...nn.mlstm_block import mask_kwargs
from ...nn.norms import MultiHeadLayerNorm, RMSNorm
from ...nn.weight_cache import clear_derived
from ...ops.mlstm import MLSTMState, mlstm, mlstm_step
from .config import xLSTMLargeConfig
from .. import native_decode
from .decode import fused_decode_applies, fused_decode_step


def soft_cap(x: Tensor, cap: float | None) -> Tensor:
    """cap * tanh(x / cap): bounds x to (-cap, cap) smoothly, identity near 0; None means no cap."""
    if cap is None:
        return x
    t = (x / cap).tanh_()  # in place on the quotient, which no backward needs
    return t.mul_(cap) if not torch.is_grad_enabled() else t * cap  # (tanh's backward needs its output)


def fused_linear(x: Tensor, linears: Sequence[nn.Linear], bias: bool = True) -> Tensor:
    """torch.cat([lin(x) for lin in linears], -1) as one matmul on the concatenated weights (same parameters and
    gradients; one pass over x and one input-gradient matmul instead of one per layer). `bias=False` leaves the
    biases out (for the caller to add where they are)."""
    weight = torch.cat([lin.weight for lin in linears])
    if not bias or all(lin.bias is None for lin in linears):
        return F.linear(x, weight)
    bias = torch.cat([lin.weight.new_zeros(lin.out_features) if lin.bias is None else lin.bias for lin in linears])
    return F.linear(x, weight, bias)


class xLSTMLargeMLSTMLayer(nn.Module):
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
                                                 residual_weight=False, force_float32=c.norm_reduction_force_float32)
        self.out_proj = nn.Linear(c.v_dim, E, bias=bias)
        self.fused = c.fused  # forward hands over to forward_fused (same function, faster)

    def state_shapes(self, batch_size: int) -> MLSTMState:
        c = self.config
        B, NH = batch_size, c.num_heads
        return MLSTMState((B, NH, c.qk_head_dim, c.v_head_dim), (B, NH, c.qk_head_dim), (B, NH))

    def forward(self, x: Tensor, state: MLSTMState | None = None, form: str = "chunkwise",
                mask: Tensor | None = None) -> tuple[Tensor, MLSTMState]:
        """x (B, S, E) (normalised) -> (B, S, E), new state. mask (B, S) bool: False at padded steps (no state
        change)."""
        if self.fused:
            return self.forward_fused(x, state, form, mask)
        cap = self.config.gate_soft_cap
        q, k, v, o = self.q(x), self.k(x), self.v(x), self.ogate_preact(x)
        i, f = soft_cap(self.igate_preact(x), cap), soft_cap(self.fgate_preact(x), cap)  # (B, S, NH) each
        h, state = self._cell(q, k, v, i, f, state, form, mask)  # (B, S, NH, DV)
        return self.out_proj(torch.sigmoid(o) * self.multihead_norm(h)), state

    def step(self, x: Tensor, state: MLSTMState) -> tuple[Tensor, MLSTMState]:
        """One token: x (B, E) (normalised), state given -> (B, E), new state (forward without the sequence axis)."""
        c = self.config
        B, NH = x.shape[0], c.num_heads
        q, k, v, o = self.q(x), self.k(x), self.v(x), self.ogate_preact(x)
        i, f = soft_cap(self.igate_preact(x), c.gate_soft_cap), soft_cap(self.fgate_preact(x), c.gate_soft_cap)
        h, state = mlstm_step(q.view(B, NH, -1), k.view(B, NH, -1), v.view(B, NH, -1), i, f, state, eps=c.eps)
        return self.out_proj(torch.sigmoid(o) * self.multihead_norm(h)), state

    def _cell(self, q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, state: MLSTMState | None, form: str,
              mask: Tensor | None) -> tuple[Tensor, MLSTMState]:
        """q, k (B, S, NH*DQK), v (B, S, NH*DV), i, f (B, S, NH) -> h (B, S, NH, DV), new state."""
        c = self.config
        B, S, _ = q.shape
        NH = c.num_heads

        def heads(t: Tensor) -> Tensor:  # (B, S, NH * D) -> (B, NH, S, D)
            return t.view(B, S, NH, -1).transpose(1, 2)

        h, state = mlstm(heads(q), heads(k), heads(v), i.transpose(1, 2), f.transpose(1, 2), form=form,
                         chunk_size=c.chunk_size, initial_state=state, return_state=True, eps=c.eps,
                         **mask_kwargs(mask))
        return h.transpose(1, 2), state

    def forward_fused(self, x: Tensor, state: MLSTMState | None = None, form: str = "chunkwise",
                      mask: Tensor | None = None) -> tuple[Tensor, MLSTMState]:
        """`forward` with the six projections as one matmul on the concatenated weights, and the output gate
        applied in place when no autograd graph is recorded."""
        c = self.config
        NH = c.num_heads
        # without use_bias only the two gates have biases: added to their 2 * NH columns rather than through the
        # matmul (addmm first copies a bias row into every one of the (B * S, P) outputs)
        y = fused_linear(x, (self.q, self.k, self.v, self.ogate_preact, self.igate_preact, self.fgate_preact),
                         bias=c.use_bias)
        # split, not slicing: its backward concatenates the pieces' gradients (slices' backward zero-fills y-sized
        # buffers, one per slice)
        q, k, v, o, gates = y.split([c.qk_dim, c.qk_dim, c.v_dim, c.v_dim, 2 * NH], -1)  # o: (B, S, NH * DV)
        if not c.use_bias:
            gates = gates + torch.cat([self.igate_preact.bias, self.fgate_preact.bias])
        i, f = soft_cap(gates, c.gate_soft_cap).split(NH, -1)  # (B, S, NH) each
        h, state = self._cell(q, k, v, i, f, state, form, mask)
        h = self.multihead_norm(h)  # (B, S, NH * DV)
        g = torch.sigmoid(o)
        return self.out_proj(g.mul_(h) if not torch.is_grad_enabled() else g * h), state


class xLSTMLargeFFN(nn.Module):
    """SwiGLU: proj_down(silu(proj_up_gate(x)) * proj_up(x))."""

    def __init__(self, config: xLSTMLargeConfig):
        super().__init__()
        E, D, bias = config.embedding_dim, config.ffn_dim, config.use_bias
        self.proj_up_gate = nn.Linear(E, D, bias=bias)
        self.proj_up = nn.Linear(E, D, bias=bias)
        self.proj_down = nn.Linear(D, E, bias=bias)
        self.fused = config.fused  # both up-projections as one matmul

    def forward(self, x: Tensor) -> Tensor:  # (..., E)
        if self.fused:
            gate, up = fused_linear(x, (self.proj_up_gate, self.proj_up)).chunk(2, -1)
        else:
            gate, up = self.proj_up_gate(x), self.proj_up(x)
        a = F.silu(gate)
        return self.proj_down(a.mul_(up) if self.fused and not torch.is_grad_enabled() else a * up)


class xLSTMLargeBlock(nn.Module):
    """x + mLSTM(RMSNorm(x)), then + SwiGLU(RMSNorm(.))."""

    def __init__(self, config: xLSTMLargeConfig):
        super().__init__()
        c = config
        norm = dict(eps=c.norm_eps, bias=c.use_bias, residual_weight=False,
                    force_float32=c.norm_reduction_force_float32)
        self.norm_mlstm = RMSNorm(c.embedding_dim, **norm)
        self.mlstm_layer = xLSTMLargeMLSTMLayer(c)
        self.norm_ffn = RMSNorm(c.embedding_dim, **norm)
        self.ffn = xLSTMLargeFFN(c)

    def state_shapes(self, batch_size: int) -> MLSTMState:
        return self.mlstm_layer.state_shapes(batch_size)

    def forward(self, x: Tensor, state: MLSTMState | None = None, form: str = "chunkwise",
                mask: Tensor | None = None) -> tuple[Tensor, MLSTMState]:
        y, state = self.mlstm_layer(self.norm_mlstm(x), state, form, mask)
        x = x + y
        return x + self.ffn(self.norm_ffn(x)), state

    def step(self, x: Tensor, state: MLSTMState) -> tuple[Tensor, MLSTMState]:
        """One token, x (B, E)."""
        y, state = self.mlstm_layer.step(self.norm_mlstm(x), state)
        x = x + y
        return x + self.ffn(self.norm_ffn(x)), state


#: `xLSTMLarge.stream`'s default for stop_tokens: the config's eos_token_id
EOS = "eos"


class xLSTMLarge(GenerationMixin, nn.Module):
    """The xLSTM-7B language model: embedding, `num_blocks` mLSTM blocks, out norm, untied head, logit soft-cap.

    Same calling convention as `xLSTMLM`: `model(input_ids)` -> logits (B, S, V) in float32, or with
    `return_state=True` -> (logits, state) where state is a tuple over blocks of float32 `MLSTMState`s that can be
    fed back as `state=` to continue the sequence. Any S >= 1, in any of the three mLSTM forms; `attention_mask` for
    padded batches; `decode_step(tokens, state)` for one token per row. `generate` / `stream` stop at the config's
    `eos_token_id` unless told otherwise (as transformers does). `save_pretrained` / `from_pretrained`: Hugging Face
    folders in transformers' own xLSTM layout (`xlstmkit.interop.hf`).
    """

    #: Largest model (parameter bytes) for which `decode_step` keeps a fused copy of the weights; bigger models step
    #: through the plain blocks instead, so that a 7B model does not hold its weights twice.
    decode_cache_max_bytes: int = 2 << 30

    def __init__(self, config: xLSTMLargeConfig):
        super().__init__()
        if not isinstance(config, xLSTMLargeConfig):
            raise TypeError(f"config must be an xLSTMLargeConfig, got {type(config).__name__}")
        c = self.config = config
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_dim)
        self.blocks = nn.ModuleList(xLSTMLargeBlock(c) for _ in range(c.num_blocks))
        self.out_norm = (RMSNorm(c.embedding_dim, eps=c.norm_eps, force_float32=c.norm_reduction_force_float32)
                         if c.add_out_norm else None)
        self.lm_head = nn.Linear(c.embedding_dim, c.vocab_size, bias=False)
        # recompute each block in the backward pass instead of keeping its activations (fine-tuning large models)
        self.gradient_checkpointing = False
        self._parameter_count = sum(p.numel() for p in self.parameters())  # fixed by the config
        self._block_names = tuple(f"block {i} (mLSTM)" for i in range(c.num_blocks))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The xLSTM-7B initialisation (transformers' `_init_weights`, xlstm-jax configs; docs/blocks.md).

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
                module.reset_parameters()

    def zero_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[MLSTMState, ...]:
        """The empty state (all zeros) for `batch_size` sequences: what `state=None` means."""
        c = self.config
        dev = self.lm_head.weight.device if device is None else device
        return tuple(MLSTMState(torch.zeros(batch_size, c.num_heads, c.qk_head_dim, c.v_head_dim, device=dev),
                                torch.zeros(batch_size, c.num_heads, c.qk_head_dim, device=dev),
                                torch.zeros(batch_size, c.num_heads, device=dev)) for _ in range(c.num_blocks))

    def check_state(self, state: object, batch_size: int) -> tuple[MLSTMState | None, ...]:
        """`state` validated against this model for `batch_size` rows (shapes only; lists work like tuples); a
        ValueError names the block, the expected and the given shape."""
        return check_state(state, expected_state_shapes(self, batch_size), self._block_names)

    def forward(
        self,
        input_ids: Tensor,  # (B, S) int64
        state: Sequence[MLSTMState] | None = None,
        return_state: bool = False,
        mlstm_form: str | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, tuple[MLSTMState, ...]]:
        """Logits (B, S, V) in float32 for token ids (B, S); with `return_state`, also the state after the last token.

        `state` (from a previous call) continues a sequence: feeding it in pieces gives the logits of feeding it
        whole. `mlstm_form` overrides `config.mlstm_form` ("chunkwise", "parallel" or "recurrent").
        `attention_mask` (B, S) of 0/1: padded positions leave the state as it was (their logits are not meaningful).
        """
        c = self.config
        if not isinstance(input_ids, Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError("input_ids must be an integer (int64) tensor of shape (B, S)")
        if input_ids.dim() != 2 or input_ids.shape[1] < 1:
            raise ValueError(f"input_ids must have shape (B, S) with S >= 1, got {tuple(input_ids.shape)}")
        form = c.mlstm_form if mlstm_form is None else mlstm_form
        if form not in FORMS:
            raise ValueError(f"mlstm_form must be one of {FORMS}, got {form!r}")
        if state is not None:
            state = self.check_state(state, input_ids.shape[0])
        mask = check_attention_mask(attention_mask, input_ids)
        x = self.embedding(input_ids)  # (B, S, E)
        new_states = []
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for b, block in enumerate(self.blocks):
            block_state = None if state is None else state[b]
            if recompute:
                x, st = checkpoint(block, x, block_state, form, mask, use_reentrant=False)
            else:
                x, st = block(x, block_state, form, mask)
            new_states.append(st)
        if self.out_norm is not None:
            x = self.out_norm(x)
        logits = soft_cap(self.lm_head(x.to(self.lm_head.weight.dtype)).float(), c.output_logit_soft_cap)
        return (logits, tuple(new_states)) if return_state else logits

    def decode_step(self, tokens: Tensor, state: Sequence[MLSTMState] | None = None, *, reuse_state: bool = False
                    ) -> tuple[Tensor, tuple[MLSTMState, ...]]:
        """One token per row, tokens (B,) -> logits (B, V) in float32, new state: the numbers of
        `forward(tokens[:, None], state, return_state=True)` through the blocks' one-token `step`. Generation's hot
        path (`stream` calls it once per token).

        With `config.fused`, without autograd (under `torch.no_grad()` / `inference_mode`, as `generate` runs) and
        with float32 or float64 weights it runs the fused step of decode.py on a cached copy of the weights (rebuilt
        when the parameters change); the returned C and n are then views into one [C | n] buffer. On a CPU with the
        native library the step is instead one native call per block on the model's own weights (float32, bfloat16
        or int8; models/native_decode.py, docs/inference.md). The input state is not modified, unless
        `reuse_state=True` allows the native step to write the new state into it (generation's loop).
        """
        check_tokens(tokens)
        if state is not None:
            state = self.check_state(state, tokens.shape[0])
        out = native_decode.large_decode_step(self, tokens, state, reuse_state)
        if out is not None:
            return out
        if fused_decode_applies(self, tokens):
            return fused_decode_step(self, tokens, state)
        B = tokens.shape[0]
        if state is None or any(s is None for s in state):  # None: start (that block) from zeros
            zeros = self.zero_state(B, tokens.device)
            state = zeros if state is None else tuple(z if s is None else s for s, z in zip(state, zeros))
        x = self.embedding(tokens)  # (B, E)
        new_states = []
        for block, s in zip(self.blocks, state):
            x, s = block.step(x, s)
            new_states.append(s)
        if self.out_norm is not None:
            x = self.out_norm(x)
        logits = soft_cap(self.lm_head(x.to(self.lm_head.weight.dtype)).float(), self.config.output_logit_soft_cap)
        return logits, tuple(new_states)

    def clear_decode_cache(self) -> None:
        """Drop the fused decoding weights (rebuilt on the next `decode_step`). Needed only after changing
        parameters through `.data`, which torch does not track, or after replacing a submodule; optimiser steps,
        `load_state_dict`, `.to()`, replaced parameters and in-place updates under `torch.no_grad()` are detected."""
        clear_derived(self)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def stream(self, input_ids: Tensor, max_new_tokens: int, *, stop_tokens: Sequence[int] | str | None = EOS,
               pad_token: int | None = None, **kwargs) -> Iterator[Tensor]:
        """`GenerationMixin.stream` with transformers' default end: `stop_tokens="eos"` (the default) stops a row at
        `config.eos_token_id` (when the config has one) and fills the rows that stopped with `pad_token`, by default
        `config.pad_token_id`. `stop_tokens=None` (or []) generates max_new_tokens whatever comes; a list of ids
        stops at those instead. (`generate` passes its keyword arguments here.)"""
        if isinstance(stop_tokens, str):
            if stop_tokens != EOS:
                raise ValueError(f"stop_tokens must be a list of token ids, None, or {EOS!r} (the config's "
                                 f"eos_token_id), got {stop_tokens!r}")
            eos = self.config.eos_token_id
            stop_tokens = None if eos is None else [eos]
            if stop_tokens and pad_token is None:
                pad_token = self.config.pad_token_id
        return super().stream(input_ids, max_new_tokens, stop_tokens=stop_tokens, pad_token=pad_token, **kwargs)

    def save_pretrained(self, path: str | os.PathLike, tokenizer=None, max_shard_size: int | str | None = None
                        ) -> None:
        """Write a folder in transformers' own xLSTM layout (`model_type: "xlstm"`, as NX-AI/xLSTM-7b): transformers'
        `xLSTMForCausalLM` / `AutoModelForCausalLM` load it without xlstmkit, `xLSTMLarge.from_pretrained` reads it
        back. tokenizer: an xlstmkit tokenizer or a transformers tokenizer, written beside it for `AutoTokenizer`
        (None: none); max_shard_size: e.g. "5GB" for shards with an index (`xlstmkit.interop.hf.save`)."""
        from ...interop import hf

        hf.save(self, path, max_shard_size=max_shard_size, tokenizer=tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: torch.dtype | str | None = None,
                        device: torch.device | str | None = None, mmap: bool = True) -> xLSTMLarge:
        """The model of a Hugging Face xLSTM folder (transformers' layout, e.g. NX-AI/xLSTM-7b downloaded; or an
        xlstmkit folder holding an xLSTMLarge), in eval mode, without a second copy of the weights
        (`xlstmkit.interop.hf.load`). dtype casts (None: as stored)."""
        from ...interop import hf, pretrained

        if pretrained.is_xlstmkit_folder(path):
            model = pretrained.load(path, dtype=dtype, device=device)
            if not isinstance(model, cls):
                raise ValueError(f"{path} holds an {type(model).__name__}, not an {cls.__name__}: load it with "
                                 f"{type(model).__name__}.from_pretrained")
            return model
        return hf.load(path, dtype=dtype, device=device, mmap=mmap)

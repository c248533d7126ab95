"""The native decoders' Python side: packing a model's weights for them, and calling them (docs/inference.md).

Generation feeds one token at a time, and for the paper's models a token costs a few MFLOP over about 10 MB of
weights: a CPU does that in a fraction of a millisecond, while the same step as PyTorch operations costs hundreds of
operator calls. So:

- `xLSTMLM.decode_step` runs the whole model (embedding, every block, post norm, head) in one native call,
  `lm_decode` (ops/native/lm_decode.h), on a packed copy of the weights: one byte buffer (the "blob") and an int64
  "plan" that says where each weight is and in which format (the model's dtype, bfloat16, or int8 with per-row
  scales from `quantize.Int8Linear`). The pack is cached on the model with `nn.weight_cache.cached_derived`, keyed by
  every parameter and buffer, so optimiser steps, `load_state_dict`, replaced parameters and `quantize_` rebuild it.
- `xLSTMLarge.decode_step` runs one native call per block, `large_block` (large_decode.h), on the model's own weights
  (no copy: a memory-mapped 7B checkpoint stays where it is), plus the head through `linear`.

The PyTorch steps remain the definition and the fallback: the native path is taken only for inference (no autograd
graph to record, no autocast, eval mode or no dropout) on a CPU with the library available, and computes the same
numbers to rounding (tests/test_decode_native.py holds the two together over 1,000 steps).

States. The native LM step keeps the model's state format (a tuple over blocks of named tuples of tensors), but
returns it as a `NativeState`: the same tuple, whose tensors are views into one flat buffer in the plan's layout.
Given back to `decode_step`, that buffer goes to C as it is; any other state is copied into a new buffer first.
`decode_step(..., reuse_state=True)` lets the step overwrite the state it is given (generation's loop, which owns its
state, uses it: no buffer is allocated or copied per token); by default the given state is never modified.
"""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.weight_cache import cached_derived
from ..ops import native
from ..ops.mlstm import MLSTMState
from ..quantize import Int8Linear

if TYPE_CHECKING:
    from .xlstm_large import xLSTMLarge
    from .xlstm_lm import xLSTMLM

# the plan layout: mirrors the enum at the top of ops/native/lm_decode.h
LM_MAGIC, LM_HEADER, LM_BLOCK = 0x784C4D31, 24, 48
H_NBLOCKS, H_E, H_V, H_STATE, H_SCRATCH, H_EXPF, H_CONSTS, H_EMB, H_POST_W, H_POST_B, H_HEAD, H_BLOCKLEN = (
    1, 2, 3, 4, 5, 6, 7, 8, 13, 14, 15, 20)
(M_I, M_NH, M_DH, M_K, M_QB, M_NORM_W, M_NORM_B, M_UP, M_UP_B, M_CONV_W, M_CONV_B, M_Q_W, M_Q_B, M_K_W, M_K_B, M_V_W,
 M_V_B, M_GATE_W, M_GATE_B, M_ON_W, M_SKIP, M_DOWN, M_DOWN_B, M_ST_CONV, M_ST_C, M_ST_N, M_ST_M) = (
    1, 2, 3, 4, 5, 6, 7, 8, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 31, 32, 33, 34, 35)
(S_NH, S_DH, S_K, S_F, S_NORM_W, S_NORM_B, S_CONV_W, S_CONV_B, S_GATE_W, S_GATE_B, S_R, S_ON_W, S_FFN_NORM_W,
 S_FFN_NORM_B, S_UP, S_UP_B, S_DOWN, S_DOWN_B, S_ST_CONV, S_ST_C, S_ST_N, S_ST_M, S_ST_H) = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 20, 21, 26, 27, 28, 29, 30, 31)
S_HW_FMT = 32  # the format of the sLSTM's head-wise gate weights and recurrent matrix (FMT_SAME or FMT_BF16)
FMT_SAME, FMT_BF16, FMT_I8 = 0, 1, 2
BLOCKDIAG_T_MAX = 16  # XK_BLOCKDIAG_T_MAX in decode_cells.h: q, k, v blocks up to this size are stored transposed
STATUS = {1: "the decoding plan does not match its arrays", 2: "a token id is outside the vocabulary",
          3: "the weight format does not match its scales"}
ALIGN = 64  # every packed array starts on a cache line
_enabled: bool | None = None  # use_native_decode's override of XLSTMKIT_NATIVE_DECODE


def native_decode_enabled() -> bool:
    """Whether decode_step may take the native path: `use_native_decode`'s setting inside its block, else the
    environment (XLSTMKIT_NATIVE_DECODE=0 turns the native decoders off; XLSTMKIT_NATIVE=0 turns off every native
    routine, these included)."""
    if _enabled is not None:
        return _enabled
    return os.environ.get("XLSTMKIT_NATIVE_DECODE", "1") != "0"


@contextlib.contextmanager
def use_native_decode(enabled: bool) -> Iterator[None]:
    """Turn the native decoders on or off inside a `with` block (off: decode_step runs the PyTorch step, which
    still uses the ops' native one-token cells where they apply; `ops.native.use_native(False)` turns those off
    too). For comparisons, benchmarks and debugging."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


class NativeState(tuple):
    """A model state (one entry per block) whose tensors are views into one flat buffer, `flat`, laid out as the
    native decoder reads it. Behaves exactly like the tuple it is; `decoder` is the pack it was made with."""

    flat: Tensor
    decoder: LMPack
    work: tuple[Tensor, Tensor] | None  # the step's scratch and status buffers, kept for the next in-place step

    def __reduce__(self):
        """Copied or pickled, a NativeState becomes the plain tuple it shows (copy.deepcopy, torch.save): the copy
        owns its tensors and never aliases the original's buffer."""
        return (tuple, (tuple(self),))


# pytree (torch.utils._pytree.tree_leaves / tree_map, torch.compile, torch.testing) sees the tuple's entries;
# unflattened it is a plain tuple
torch.utils._pytree.register_pytree_node(
    NativeState, lambda s: (list(s), None), lambda children, context: tuple(children),
    serialized_type_name="xlstmkit.models.native_decode.NativeState")


def weight_sources(module: nn.Module) -> list[Tensor]:
    """Every parameter and buffer of `module` as registered now (the cache key of a pack), listed in a few
    microseconds: the (submodule, name) slots are found once and kept on the module (see
    nn.weight_cache.current_parameters, which lists parameters only; an Int8Linear keeps its weights in buffers)."""
    slots = module.__dict__.get("_derived_native_slots")  # (the prefix: clear_derived drops it too)
    if slots is None:
        slots = module.__dict__["_derived_native_slots"] = [
            (table, name) for m in module.modules() for table in (m._parameters, m._buffers)
            for name, t in table.items() if t is not None]
    return [table[name] for table, name in slots]


def _outside_inference_mode(build):
    """build() outside inference mode (generate runs under it): a pack built there stays usable later."""
    def wrapped():
        with torch.inference_mode(False), torch.no_grad():  # (leaving inference mode turns grad mode back on)
            return build()
    return wrapped


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _raise_status(status: Tensor, what: str, tokens: Tensor | None = None, vocab: int | None = None) -> None:
    code, detail = (int(v) for v in status.tolist())
    if code == 2:
        token = "" if tokens is None else f" {int(tokens[detail])}"
        limit = "" if vocab is None else f" [0, {vocab})"
        raise IndexError(f"{what}: token id{token} in batch row {detail} is outside the vocabulary{limit}; "
                         "check the tokenizer matches the model's vocab_size")
    raise ValueError(f"{what}: {STATUS.get(code, f'native status {code}')} (at plan entry {detail}); "
                     "call model.clear_decode_cache() if the model was edited in a way the cache cannot see")


# ----------------------------------------------------------------------------------------------------------------------
# packing


class _Blob:
    """Arrays appended to one byte buffer, each at a multiple of ALIGN bytes; `finish()` gives the uint8 tensor."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.parts: list[Tensor] = []
        self.size = 0
        self.matrices: dict[int, list[int]] = {}

    def _add(self, t: Tensor) -> int:
        raw = t.detach().contiguous().view(-1).view(torch.uint8)
        off = self.size
        self.parts.append(raw)
        self.size += raw.numel()
        pad = -self.size % ALIGN
        if pad:
            self.parts.append(torch.zeros(pad, dtype=torch.uint8))
            self.size += pad
        return off

    def vec(self, t: Tensor | None) -> int:
        """A small array in the compute dtype; -1 for None."""
        return -1 if t is None else self._add(t.detach().to(self.dtype))

    def raw(self, t: Tensor) -> int:
        """An array in its own dtype (bfloat16 weights the C code widens as it reads them)."""
        return self._add(t.detach())

    def mat(self, module_or_weight) -> list[int]:
        """A matrix (O, I) in its own format: [format, rows, cols, weight offset, scale offset]. An Int8Linear is
        stored as int8 with its scales, a bfloat16 weight as bfloat16, anything else in the compute dtype. One
        matrix held by two modules (a tied head) is stored once."""
        if isinstance(module_or_weight, Int8Linear):
            m = module_or_weight
            key = id(m.qweight)
            if key not in self.matrices:
                q = m.qweight
                self.matrices[key] = [FMT_I8, q.shape[0], q.shape[1], self._add(q), self.vec(m.scale)]
            return self.matrices[key]
        w = module_or_weight.weight if isinstance(module_or_weight, nn.Module) else module_or_weight
        key = id(w)
        if key not in self.matrices:
            if w.dtype == torch.bfloat16 and self.dtype == torch.float32:
                self.matrices[key] = [FMT_BF16, w.shape[0], w.shape[1], self._add(w), -1]
            else:
                self.matrices[key] = [FMT_SAME, w.shape[0], w.shape[1], self.vec(w), -1]
        return self.matrices[key]

    def finish(self) -> Tensor:
        return torch.cat(self.parts) if self.parts else torch.zeros(ALIGN, dtype=torch.uint8)


def _norm_scale(norm: nn.Module, dtype: torch.dtype = torch.float32) -> Tensor:
    """A norm's effective scale (`norm.scale()`: 1 + w or w) computed in the compute dtype from its weight as
    stored: for a bfloat16 weight, 1 + w is formed in float32 (computing it in bfloat16 would round it a second
    time, changing the function the stored weights define)."""
    w = norm.weight.detach().to(torch.promote_types(norm.weight.dtype, dtype))
    return 1.0 + w if getattr(norm, "residual_weight", False) else w


class LMPack(NamedTuple):
    """An xLSTMLM's weights packed for `lm_decode`, and the state layout: `slots[b]` lists block b's state tensors
    as (per-row offset, per-row shape) in the order of its named tuples."""

    plan: Tensor  # int64
    blob: Tensor  # uint8
    dtype: torch.dtype
    vocab: int
    state_per_row: int
    scratch_per_row: int
    slots: tuple
    owner: object  # weakref to the model


def _scratch_per_row(E: int, blocks: list[dict]) -> int:
    """The scratch width the C code derives from the plan (lm_scratch_widths in lm_decode.h)."""
    u, c, q, g, h = 1, E, 4 * E, 4 * E, E
    for b in blocks:
        if b["kind"] == 0:
            I = b["I"]
            u, c, q, g, h = max(u, 2 * I), max(c, I), max(q, 3 * I), max(g, 2 * b["NH"]), max(h, I)
        else:
            u = max(u, 2 * b["F"])
    return 2 * E + u + c + q + g + h


def pack_lm(model: xLSTMLM, dtype: torch.dtype) -> LMPack:
    """The plan and blob of `model` for compute dtype `dtype` (float32 or float64)."""
    from ..nn.mlstm_block import MLSTMBlock

    cfg = model.config
    E = cfg.embedding_dim
    blob = _Blob(dtype)
    header = [0] * LM_HEADER
    header[0], header[H_E], header[H_BLOCKLEN] = LM_MAGIC, E, LM_BLOCK
    header[H_EXPF] = int(cfg.forget_gate == "exp")
    header[H_CONSTS] = blob.vec(torch.tensor([cfg.norm_eps, cfg.mlstm_eps], dtype=torch.float64))
    header[H_EMB:H_EMB + 5] = blob.mat(model.embedding.weight)
    post = model.stack.post_norm
    has_post = isinstance(post, nn.Module) and hasattr(post, "weight")
    header[H_POST_W] = blob.vec(_norm_scale(post)) if has_post else -1
    header[H_POST_B] = blob.vec(post.bias) if has_post else -1
    header[H_HEAD:H_HEAD + 5] = blob.mat(model.head)
    header[H_V] = header[H_HEAD + 1]
    records, slots, per_row, shapes = [], [], 0, []
    for block in model.stack.blocks:
        rec = [0] * LM_BLOCK
        if isinstance(block, MLSTMBlock):
            layer = block.layer
            I, NH, DH, K = layer.inner, layer.num_heads, layer.head_dim, layer.conv.kernel_size
            QB = layer.q_proj.weight.shape[-1]
            rec[0], rec[M_I], rec[M_NH], rec[M_DH], rec[M_K], rec[M_QB] = 0, I, NH, DH, K, QB
            rec[M_NORM_W], rec[M_NORM_B] = blob.vec(_norm_scale(block.norm)), blob.vec(block.norm.bias)
            rec[M_UP:M_UP + 5], rec[M_UP_B] = blob.mat(layer.proj_up), blob.vec(layer.proj_up.bias)
            rec[M_CONV_W] = blob.vec(layer.conv.weight[:, 0, :].t())  # (K, I) taps
            rec[M_CONV_B] = blob.vec(layer.conv.bias)
            for w_at, b_at, proj in ((M_Q_W, M_Q_B, layer.q_proj), (M_K_W, M_K_B, layer.k_proj),
                                     (M_V_W, M_V_B, layer.v_proj)):
                w = proj.weight.reshape(I // QB, QB, QB)  # (blocks, out, in)
                if QB <= BLOCKDIAG_T_MAX:  # small blocks: transposed, (out, in, blocks) (blockdiag_t)
                    w = w.permute(1, 2, 0)
                rec[w_at], rec[b_at] = blob.vec(w), blob.vec(proj.bias)
            rec[M_GATE_W] = blob.vec(torch.cat([layer.igate.weight, layer.fgate.weight]))
            rec[M_GATE_B] = blob.vec(torch.cat([layer.igate.bias, layer.fgate.bias]))
            rec[M_ON_W], rec[M_SKIP] = blob.vec(_norm_scale(layer.outnorm)), blob.vec(layer.learnable_skip)
            rec[M_DOWN:M_DOWN + 5], rec[M_DOWN_B] = blob.mat(layer.proj_down), blob.vec(layer.proj_down.bias)
            sizes = [((K - 1) * I, (K - 1, I)), (NH * DH * DH, (NH, DH, DH)), (NH * DH, (NH, DH)), (NH, (NH,))]
            at = (M_ST_CONV, M_ST_C, M_ST_N, M_ST_M)
            shapes.append({"kind": 0, "I": I, "NH": NH})
        else:
            layer = block.layer
            NH, DH = layer.num_heads, layer.head_dim
            K = 0 if layer.conv is None else layer.conv.kernel_size
            F_ = block.ffn.hidden_dim
            rec[0], rec[S_NH], rec[S_DH], rec[S_K], rec[S_F] = 1, NH, DH, K, F_
            rec[S_NORM_W], rec[S_NORM_B] = blob.vec(_norm_scale(block.norm)), blob.vec(block.norm.bias)
            rec[S_CONV_W] = -1 if K == 0 else blob.vec(layer.conv.weight[:, 0, :].t())
            rec[S_CONV_B] = -1 if K == 0 else blob.vec(layer.conv.bias)
            gates = torch.stack([layer.igate.weight, layer.fgate.weight, layer.zgate.weight, layer.ogate.weight])
            if gates.dtype == layer.recurrent.dtype == torch.bfloat16 and dtype == torch.float32:
                # a bf16 model: these two, half of an sLSTM block's weights, stay bfloat16 (widened as they load)
                rec[S_HW_FMT] = FMT_BF16
                rec[S_GATE_W], rec[S_R] = blob.raw(gates), blob.raw(layer.recurrent)
            else:
                rec[S_HW_FMT] = FMT_SAME
                rec[S_GATE_W], rec[S_R] = blob.vec(gates), blob.vec(layer.recurrent)
            rec[S_GATE_B] = blob.vec(layer.bias)
            rec[S_ON_W] = blob.vec(_norm_scale(layer.outnorm))
            rec[S_FFN_NORM_W], rec[S_FFN_NORM_B] = blob.vec(_norm_scale(block.ffn_norm)), blob.vec(block.ffn_norm.bias)
            rec[S_UP:S_UP + 5], rec[S_UP_B] = blob.mat(block.ffn.proj_up), blob.vec(block.ffn.proj_up.bias)
            rec[S_DOWN:S_DOWN + 5], rec[S_DOWN_B] = blob.mat(block.ffn.proj_down), blob.vec(block.ffn.proj_down.bias)
            Kc = max(K - 1, 0)
            sizes = [(Kc * E, (Kc, E))] + [(NH * DH, (NH, DH))] * 4
            at = (S_ST_CONV, S_ST_C, S_ST_N, S_ST_M, S_ST_H)
            shapes.append({"kind": 1, "F": F_})
        block_slots = []
        for index, (size, shape) in zip(at, sizes):
            rec[index] = per_row
            block_slots.append((per_row, shape))
            per_row += size
        records.append(rec)
        slots.append(tuple(block_slots))
    header[1] = len(records)
    header[H_STATE] = per_row
    header[H_SCRATCH] = _scratch_per_row(E, shapes)
    plan = torch.tensor(header + [v for rec in records for v in rec], dtype=torch.int64)
    return LMPack(plan, blob.finish(), dtype, header[H_V], per_row, header[H_SCRATCH], tuple(slots),
                  weakref.ref(model))


def lm_pack(model: xLSTMLM, dtype: torch.dtype) -> LMPack:
    """The cached pack of `model` (rebuilt when a parameter or buffer changes)."""
    return cached_derived(model, f"native_lm_{dtype}", weight_sources(model),
                          _outside_inference_mode(lambda: pack_lm(model, dtype)))


# ----------------------------------------------------------------------------------------------------------------------
# the LM step


def _context_allows(model: nn.Module, tokens: Tensor) -> bool:
    """The checks that cost nothing: switched on, CPU tokens, no torch.compile tracing, no autocast, no active
    dropout."""
    if not native_decode_enabled():
        return False
    if tokens.device.type != "cpu" or torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu"):
        return False
    return not (model.training and getattr(model.config, "dropout", 0.0) > 0)


def native_dtype(model: nn.Module) -> torch.dtype | None:
    """The compute dtype of a native step of `model` (float64 for float64 weights, float32 for float32, bfloat16 and
    int8 weights), or None when the PyTorch step must run: a gradient may be needed, weights off the CPU or of
    another dtype, no native library. Walks the model's tensors (tens of microseconds for a large stack)."""
    dtypes = set()
    grad = torch.is_grad_enabled()
    for t in weight_sources(model):
        if t.device.type != "cpu" or (grad and t.requires_grad):
            return None
        if t.is_floating_point():
            dtypes.add(t.dtype)
    if not dtypes or not dtypes <= {torch.float32, torch.float64, torch.bfloat16}:
        return None
    dtype = torch.float64 if dtypes == {torch.float64} else torch.float32 if torch.float64 not in dtypes else None
    if dtype is None or native.library() is None:
        return None
    return dtype


def _state_views(pack: LMPack, flat: Tensor, B: int) -> NativeState:
    from ..nn.mlstm_block import MLSTMBlockState
    from ..nn.slstm_block import SLSTMBlockState
    from ..ops.slstm import SLSTMState

    blocks = []
    for block_slots in pack.slots:
        views = [flat[B * off:B * off + B * math.prod(shape)].view(B, *shape) for off, shape in block_slots]
        if len(views) == 4:
            blocks.append(MLSTMBlockState(views[0], MLSTMState(*views[1:])))
        else:
            blocks.append(SLSTMBlockState(views[0], SLSTMState(*views[1:])))
    state = NativeState(blocks)
    state.flat = flat
    state.decoder = pack
    state.work = None
    return state


def _flat_state(model: xLSTMLM, pack: LMPack, state, B: int) -> Tensor:
    """A given state (any tuple the model accepts; None entries are zeros) copied into a new flat buffer."""
    flat = torch.zeros(B * pack.state_per_row, dtype=pack.dtype)
    if state is None:
        return flat
    state = model.stack.check_state(state, B)
    for block_state, block_slots in zip(state, pack.slots):
        if block_state is None:
            continue
        tensors = [block_state.conv, *block_state.cell]
        for t, (off, shape) in zip(tensors, block_slots):
            flat[B * off:B * off + B * math.prod(shape)].view(B, *shape).copy_(t)
    return flat


def lm_decode_step(model: xLSTMLM, tokens: Tensor, state, reuse_state: bool = False
                   ) -> tuple[Tensor, NativeState] | None:
    """tokens (B,) -> logits (B, V), new state (a NativeState), through one `lm_decode` call; None (nothing computed)
    when the native step does not apply here (see `native_dtype`; the caller then runs the PyTorch step).

    The pack is looked up through its cache, which checks every parameter's version (a few tens of microseconds for
    the paper's models), except when `reuse_state` is given with a NativeState of this model: then the state's own
    pack is used as it is. That is generation's loop, which steps one state with fixed weights; after changing
    weights, step with reuse_state=False once (or start from a new state)."""
    if not _context_allows(model, tokens):
        return None
    B = tokens.shape[0]
    flat = getattr(state, "flat", None)
    pack = getattr(state, "decoder", None)
    if not (reuse_state and isinstance(pack, LMPack) and pack.owner() is model and not torch.is_grad_enabled()
            and native.library() is not None):
        dtype = native_dtype(model)
        if dtype is None:
            return None
        pack = lm_pack(model, dtype)
    dtype = pack.dtype
    if flat is not None and (state.decoder is not pack or flat.numel() != B * pack.state_per_row):
        flat = None
    if flat is None:
        flat = _flat_state(model, pack, state, B)
        out_flat, reuse_state, state = flat, True, None
    else:
        out_flat = flat if reuse_state else torch.empty_like(flat)
    if tokens.dtype != torch.int64 or not tokens.is_contiguous():
        tokens = tokens.to(torch.int64).contiguous()
    logits = torch.empty(B, pack.vocab, dtype=dtype)
    # the scratch and status buffers: an in-place step reuses its state's (a scratch that stays in the cache from one
    # token to the next, instead of tens of kilobytes of fresh memory per token); otherwise new ones, which then
    # belong to the state returned
    work = state.work if reuse_state and state is not None else None
    if work is None or work[0].numel() != B * pack.scratch_per_row or work[0].dtype != dtype:
        work = (torch.empty(B * pack.scratch_per_row, dtype=dtype), torch.zeros(2, dtype=torch.int32))
    scratch, status = work
    native.call(native.library(), "lm_decode", dtype,
                (B, pack.plan.numel(), pack.blob.numel(), out_flat.numel(), pack.vocab, scratch.numel(), _threads()),
                (pack.plan, pack.blob, tokens, flat, out_flat, logits, scratch, status))
    if status[0].item():
        _raise_status(status, "decode_step", tokens, model.embedding.weight.shape[0])
    if reuse_state and state is not None:
        state.work = work
        return logits, state  # the same views now show the new state
    new_state = _state_views(pack, out_flat, B)
    new_state.work = work
    return logits, new_state


# ----------------------------------------------------------------------------------------------------------------------
# xLSTMLarge: one call per block on the model's own weights


class _LargeBlockArgs(NamedTuple):
    wb: int
    arrays: tuple  # the tensors of large_block's declaration from norm1_w to bdown


def _bytes(t: Tensor) -> Tensor:
    return t.detach().contiguous().view(-1).view(torch.uint8)


def _matrix_args(lin: nn.Module, dtype: torch.dtype) -> tuple[int, Tensor, Tensor | None, Tensor | None]:
    """(byte width, weight bytes, scales or None, bias or None) of one linear layer, without copying the weight."""
    bias = None if lin.bias is None else lin.bias.detach().to(dtype)
    if isinstance(lin, Int8Linear):
        return 1, _bytes(lin.qweight), lin.scale.detach().to(dtype), bias
    w = lin.weight
    if w.dtype == torch.bfloat16 and dtype == torch.float32:
        return 2, _bytes(w), None, bias
    if w.dtype != dtype:
        w = w.to(dtype)
    return w.element_size(), _bytes(w), None, bias


def _build_large_block(block, dtype: torch.dtype) -> _LargeBlockArgs | None:
    layer, ffn = block.mlstm_layer, block.ffn
    mats = [_matrix_args(lin, dtype) for lin in (layer.q, layer.k, layer.v, layer.ogate_preact, layer.out_proj,
                                                 ffn.proj_up_gate, ffn.proj_up, ffn.proj_down)]
    wbs = {m[0] for m in mats}
    if len(wbs) != 1:
        return None  # mixed weight formats within a block: the PyTorch step
    small = lambda t: None if t is None else t.detach().to(dtype).contiguous()  # noqa: E731
    wif = torch.cat([layer.igate_preact.weight.detach(), layer.fgate_preact.weight.detach()]).to(dtype)
    bif = torch.cat([layer.igate_preact.bias.detach(), layer.fgate_preact.bias.detach()]).to(dtype)
    (q, k, v, o, out, g, u, d) = mats
    arrays = (small(_norm_scale(block.norm_mlstm, dtype)), small(block.norm_mlstm.bias),
              *q[1:], *k[1:], *v[1:], *o[1:], wif.contiguous(), bif.contiguous(),
              small(_norm_scale(layer.multihead_norm, dtype)), small(layer.multihead_norm.bias), *out[1:],
              small(_norm_scale(block.norm_ffn, dtype)), small(block.norm_ffn.bias), *g[1:], *u[1:], *d[1:])
    return _LargeBlockArgs(wbs.pop(), arrays)


def _large_block_args(block, dtype: torch.dtype) -> _LargeBlockArgs | None:
    return cached_derived(block, f"native_large_{dtype}", weight_sources(block),
                          _outside_inference_mode(lambda: _build_large_block(block, dtype)))


def _large_head_args(model: xLSTMLarge, dtype: torch.dtype):
    def build():
        wb, w, scale, bias = _matrix_args(model.lm_head, dtype)
        norm = model.out_norm
        scale_n = None if norm is None else _norm_scale(norm, dtype).to(dtype).contiguous()
        bias_n = None if norm is None or norm.bias is None else norm.bias.detach().to(dtype)
        return wb, w, scale, bias, scale_n, bias_n
    sources = weight_sources(model.lm_head) + ([] if model.out_norm is None else weight_sources(model.out_norm))
    return cached_derived(model, f"native_large_head_{dtype}", sources, _outside_inference_mode(build))


def large_decode_step(model: xLSTMLarge, tokens: Tensor, state: Sequence[MLSTMState] | None,
                      reuse_state: bool = False) -> tuple[Tensor, tuple[MLSTMState, ...]] | None:
    """tokens (B,) -> logits (B, V) float32, new state, one `large_block` call per block; None (before anything is
    computed) when the native step does not apply (`native_dtype`, `config.fused` off, or a block whose weights mix
    formats). The given state is overwritten only with `reuse_state` and when it already has the layout the native
    step writes (contiguous, in the compute dtype)."""
    if not _context_allows(model, tokens) or not model.config.fused:
        return None
    dtype = native_dtype(model)
    if dtype is None:
        return None
    lib = native.library()
    c = model.config
    args = [_large_block_args(block, dtype) for block in model.blocks]
    if any(a is None for a in args):
        return None
    B = tokens.shape[0]
    E, NH, DQK, DV, F_ = c.embedding_dim, c.num_heads, c.qk_head_dim, c.v_head_dim, c.ffn_dim
    x = F.embedding(tokens, model.embedding.weight).to(dtype).contiguous()  # (B, E)
    scratch = torch.empty(B, E + 2 * NH * DQK + 3 * NH * DV + 2 * NH + 2 * F_, dtype=dtype)
    status = torch.zeros(1, dtype=torch.int32)
    threads = _threads()
    cap = -1.0 if c.gate_soft_cap is None else float(c.gate_soft_cap)
    new_states = []
    for b, a in enumerate(args):
        st = None if state is None else state[b]
        if st is None:
            C0 = torch.zeros(B, NH, DQK, DV, dtype=dtype)
            n0 = torch.zeros(B, NH, DQK, dtype=dtype)
            m0 = torch.zeros(B, NH, dtype=dtype)
            C1, n1, m1 = C0, n0, m0
        else:
            C0, n0, m0 = (t if t.dtype == dtype and t.is_contiguous() else t.to(dtype).contiguous() for t in st)
            own = reuse_state and C0 is st[0] and n0 is st[1] and m0 is st[2]
            C1, n1, m1 = (C0, n0, m0) if own else (torch.empty_like(C0), torch.empty_like(n0), torch.empty_like(m0))
        native.call(lib, "large_block", dtype,
                    (B, E, NH, DQK, DV, F_, a.wb, threads, float(c.norm_eps), float(c.eps), cap),
                    (*a.arrays, x, C0, n0, m0, C1, n1, m1, scratch, status))
        if status[0].item():
            _raise_status(torch.tensor([int(status[0]), b]), "decode_step")
        new_states.append(MLSTMState(C1, n1, m1))
    wb, w, scale, bias, scale_n, bias_n = _large_head_args(model, dtype)
    if model.out_norm is not None:
        x = F.rms_norm(x, (E,), scale_n, c.norm_eps)
        if bias_n is not None:
            x = x + bias_n
    logits = torch.empty(B, c.vocab_size, dtype=dtype)
    native.call(lib, "linear", dtype, (B, c.vocab_size, E, wb, threads),
                (x.contiguous(), w, scale, bias, logits, status))
    if status[0].item():
        _raise_status(torch.tensor([int(status[0]), -1]), "decode_step")
    logits = logits.float()
    if c.output_logit_soft_cap is not None:
        logits = torch.tanh(logits.div_(c.output_logit_soft_cap)).mul_(c.output_logit_soft_cap)
    return logits, tuple(new_states)


__all__ = ["LMPack", "NativeState", "large_decode_step", "lm_decode_step", "lm_pack", "native_decode_enabled",
           "native_dtype", "pack_lm", "use_native_decode"]

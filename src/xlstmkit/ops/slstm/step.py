"""One sLSTM step (docs/slstm.md): the public, validated `slstm_step` over a private unchecked core.

Token-by-token generation calls a step per sLSTM layer and token, so the core does as little as possible: without
a gradient to record, the whole step (R h, the gates, the state update) is one native call (ops/native, whose
`call` still checks every tensor's shape against the declaration, so a state of other sizes is a ValueError, never
a read past a buffer); otherwise it is the pointwise step of cell.py after one batched matmul.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import native
from ..gates import ForgetGate, state_dtype
from .cell import SLSTMState, slstm_pointwise
from .checks import check_inputs, prepare_state


def _native_step(gates: Tensor, R: Tensor, st: SLSTMState, forget_gate: ForgetGate, mask: Tensor | None
                 ) -> tuple[Tensor, SLSTMState] | None:
    """One inference step in the native library (None when a gradient is needed, when the library is not
    available for these tensors, and while torch.compile traces: the compiled PyTorch step fuses better than a
    graph break around a native call)."""
    lib = native.usable_for_inference(gates, R, *st)
    if lib is None:
        return None
    B, NH, _, DH = gates.shape
    new = torch.empty(4, B, NH, DH, dtype=gates.dtype)  # c, n, m, h
    raw = torch.empty(B, NH, 4 * DH, dtype=gates.dtype)  # scratch
    native.call(lib, "slstm_step", gates.dtype, (NH, B, DH, forget_gate == "exp"),
                (gates.contiguous(), R.contiguous(), None if mask is None else mask.contiguous(),
                 *(t.contiguous() for t in st), *new, raw))
    c, n, m, h = new
    return h, SLSTMState(c, n, m, h)


def _slstm_step_unchecked(gates: Tensor, R: Tensor, state: tuple[Tensor, Tensor, Tensor, Tensor],
                          forget_gate: ForgetGate = "sigmoid", mask: Tensor | None = None
                          ) -> tuple[Tensor, SLSTMState]:
    """slstm_step without its checks, for callers that validated once (a layer's decode loop): gates
    (B, NH, 4, DH) and R (NH, DH, 4 DH) in the state's dtype, state (c, n, m, h) given, mask (B,) bool or None.
    Returns h (B, NH, DH) and the new state (the old one is left untouched)."""
    st = SLSTMState(*state)
    out = _native_step(gates, R, st, forget_gate, mask)
    if out is not None:
        return out
    B, NH, _, DH = gates.shape
    raw = torch.baddbmm(gates.transpose(0, 1).reshape(NH, B, 4 * DH), st.h.transpose(0, 1), R)  # (NH, B, 4 DH)
    raw = raw.view(NH, B, 4, DH).transpose(0, 1)
    if mask is None:
        new = slstm_pointwise(raw, st, forget_gate)
    else:  # padding: the whole state carries over; the step is computed on zeros (no gradient, no NaN from pads)
        keep = mask.view(B, 1, 1)
        new = slstm_pointwise(torch.where(keep.unsqueeze(-1), raw, 0.0), st, forget_gate)
        new = SLSTMState(*(torch.where(keep, a, b) for a, b in zip(new, st)))
    return new.h, new


def slstm_step(
    gates: Tensor,
    R: Tensor,
    state: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
    *,
    forget_gate: ForgetGate = "sigmoid",
    mask: Tensor | None = None,
) -> tuple[Tensor, SLSTMState]:
    """One step of the recurrence that `slstm_reference` defines. gates (B, NH, 4, DH): input pre-activations
    (bias included), gate order i, f, z, o; R (NH, DH, 4 DH); state (c, n, m, h) each (B, NH, DH), zeros if None;
    mask (B,) bool (False: that row's state carries over and its output is the carried h). Returns h (B, NH, DH)
    in the dtype of gates and the new state (float32, or float64 for float64 gates).

    The inputs are always checked (shapes and dtypes, never values); layers that validate once call
    `_slstm_step_unchecked`."""
    check_inputs(gates, R, mask, step=True, forget_gate=forget_gate)
    dt = state_dtype(gates.dtype)
    B, NH, _, DH = gates.shape
    st = prepare_state(state, B, NH, DH, dt, gates.device)
    h, new = _slstm_step_unchecked(gates if gates.dtype == dt else gates.to(dt), R if R.dtype == dt else R.to(dt), st,
                                   forget_gate, mask)
    return (h if h.dtype == gates.dtype else h.to(gates.dtype)), new


__all__ = ["slstm_step"]

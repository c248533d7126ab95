"""The sLSTM recurrence by its definition (docs/slstm.md): a plain loop over time with PyTorch autograd.

This is what users import to know what the sLSTM computes, and what every fast form (`slstm_sequence` with its
hand-written backward, in PyTorch or C, and `slstm_step`) is tested against, values and gradients, in float64 where
it helps. It is slow (a dozen autograd operations per time step) and readable on purpose.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..gates import ForgetGate, state_dtype
from .cell import SLSTMState, slstm_pointwise
from .checks import check_inputs, prepare_state


def recurrent_preactivation(h: Tensor, R: Tensor) -> Tensor:
    """R h_{t-1} per head (memory mixing within a head only): h (B, NH, DH), R (NH, DH, 4 DH) -> (B, NH, 4, DH)."""
    B, NH, DH = h.shape
    return torch.einsum("bhd,hdg->bhg", h, R).reshape(B, NH, 4, DH)


def slstm_reference(
    gates: Tensor,
    R: Tensor,
    *,
    initial_state: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
    return_state: bool = False,
    forget_gate: ForgetGate = "sigmoid",
    mask: Tensor | None = None,
) -> Tensor | tuple[Tensor, SLSTMState]:
    """The sLSTM over a sequence, step by step. gates (B, S, NH, 4, DH): the input pre-activations W x_t + b in gate
    order (i, f, z, o); R (NH, DH, 4 DH): per head, the map from h_{t-1} to its four gate pre-activations;
    initial_state (c, n, m, h), each (B, NH, DH), zeros if None; mask (B, S) bool, False at padding. Returns h
    (B, S, NH, DH) in the dtype of gates [, the final state in float32 (float64 for float64 gates)].

    Per step t: raw = gates_t + R h_{t-1}, then the pointwise step `slstm_pointwise` (cell.py). Where mask is False
    the whole state (c, n, m, h) carries over unchanged and the output is the carried h; the step is then computed
    on zeros and discarded, so whatever the padding holds gives no gradient (and no NaN)."""
    check_inputs(gates, R, mask, step=False, forget_gate=forget_gate)
    dt = state_dtype(gates.dtype)
    B, S, NH, _, DH = gates.shape
    st = prepare_state(initial_state, B, NH, DH, dt, gates.device)
    g, R = gates.to(dt), R.to(dt)
    outputs = []
    for t in range(S):
        raw = g[:, t] + recurrent_preactivation(st.h, R)
        if mask is None:
            st = slstm_pointwise(raw, st, forget_gate)
        else:
            keep = mask[:, t].view(B, 1, 1)
            new = slstm_pointwise(torch.where(keep.unsqueeze(-1), raw, 0.0), st, forget_gate)
            st = SLSTMState(*(torch.where(keep, a, b) for a, b in zip(new, st)))
        outputs.append(st.h)
    h = torch.stack(outputs, dim=1).to(gates.dtype)
    return (h, st) if return_state else h


__all__ = ["recurrent_preactivation", "slstm_reference"]

"""The sLSTM cell: scalar memory, exponential gating, memory mixing within a head (Beck et al. 2024, eqs. 8-17).

Per head, with recurrent matrix R (block-diagonal over heads) and gate pre-activations g = W x + b from the input:

    (i~, f~, z~, o~) = g_t + R h_{t-1}
    log f   = logsigmoid(f~)            (or f~ for the exp forget gate)
    m_t     = max(log f + m_{t-1}, i~)  (= i~ while the state is empty, n_{t-1} = 0)
    i'      = exp(i~ - m_t),   f' = exp(log f + m_{t-1} - m_t)
    c_t     = f' c_{t-1} + i' tanh(z~)
    n_t     = f' n_{t-1} + i'
    h_t     = sigmoid(o~) c_t / n_t

c and n are the paper's states times exp(-m); their ratio, and so h and every gradient, is unchanged by the
stabiliser, which therefore carries no gradient. Starting m from i~ on an empty state keeps n >= 1 afterwards, so
c / n never divides by zero, for any gate values. The choice is made per element with `torch.where`: no
data-dependent Python branch.

Shapes: gates (B, S, NH, 4, DH) in the order (i, f, z, o); R (NH, DH, 4 * DH) mapping a head's h to its four gate
pre-activations; state (c, n, m, h) each (B, NH, DH), float32 (float64 for float64 inputs).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .mlstm import ForgetGate, log_forget, state_dtype


class SLSTMState(NamedTuple):
    """Recurrent state of an sLSTM layer, each (B, NH, DH)."""

    c: Tensor  # cell state (stabilised)
    n: Tensor  # normaliser state (stabilised)
    m: Tensor  # stabiliser
    h: Tensor  # hidden state fed back through R


def slstm_zero_state(B: int, NH: int, DH: int, *, dtype=torch.float32, device=None) -> SLSTMState:
    z = torch.zeros(B, NH, DH, dtype=dtype, device=device)
    return SLSTMState(z, z.clone(), z.clone(), z.clone())


def _check(gates: Tensor, R: Tensor, step: bool) -> None:
    for name, t in (("gates", gates), ("R", R)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    rank = 4 if step else 5
    expect = "(B, NH, 4, DH)" if step else "(B, S, NH, 4, DH)"
    if gates.dim() != rank or gates.shape[-2] != 4:
        raise ValueError(f"gates must have shape {expect} (gate order i, f, z, o), got {tuple(gates.shape)}")
    NH, DH = gates.shape[-3], gates.shape[-1]
    if tuple(R.shape) != (NH, DH, 4 * DH):
        raise ValueError(f"R must have shape (NH, DH, 4 * DH) = {(NH, DH, 4 * DH)}, got {tuple(R.shape)}")
    if not step and gates.shape[1] < 1:
        raise ValueError("gates must hold at least one time step (S >= 1)")


def _prepare_state(state, B, NH, DH, dtype, device) -> SLSTMState:
    if state is None:
        return slstm_zero_state(B, NH, DH, dtype=dtype, device=device)
    if not isinstance(state, (tuple, list)) or len(state) != 4:
        raise TypeError("state must be a tuple (c, n, m, h)")
    for name, t in zip("cnmh", state):
        if tuple(t.shape) != (B, NH, DH):
            raise ValueError(f"state {name} must have shape {(B, NH, DH)}, got {tuple(t.shape)}")
    return SLSTMState(*(t.to(dtype) for t in state))


def slstm_pointwise(raw: Tensor, st: SLSTMState, forget_gate: ForgetGate) -> SLSTMState:
    """The gate arithmetic of one step, from the total pre-activations raw (B, NH, 4, DH)."""
    i_raw, f_raw, z_raw, o_raw = raw.unbind(-2)
    logf = log_forget(f_raw, forget_gate)
    m_new = torch.where(st.n == 0, i_raw, torch.maximum(logf + st.m, i_raw)).detach()
    ip = torch.exp(i_raw - m_new)
    # the exponent is <= 0 except on an empty state, where it multiplies zeros: clamp so it cannot overflow to inf
    fp = torch.exp(torch.clamp(logf + st.m - m_new, max=0.0))
    c = fp * st.c + ip * torch.tanh(z_raw)
    n = fp * st.n + ip
    h = torch.sigmoid(o_raw) * c / n
    return SLSTMState(c, n, m_new, h)


def _recurrent_preact(h: Tensor, R: Tensor) -> Tensor:
    """R h per head: h (B, NH, DH), R (NH, DH, 4 DH) -> (B, NH, 4, DH)."""
    B, NH, DH = h.shape
    return torch.bmm(h.transpose(0, 1), R).transpose(0, 1).reshape(B, NH, 4, DH)


def slstm_step(
    gates: Tensor,
    R: Tensor,
    state: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
    *,
    forget_gate: ForgetGate = "sigmoid",
) -> tuple[Tensor, SLSTMState]:
    """One step. gates (B, NH, 4, DH) input pre-activations (bias included). Returns h (B, NH, DH) and the state."""
    _check(gates, R, step=True)
    dt = state_dtype(gates.dtype)
    B, NH, _, DH = gates.shape
    st = _prepare_state(state, B, NH, DH, dt, gates.device)
    Rf = R.to(dt)
    st = slstm_pointwise(gates.to(dt) + _recurrent_preact(st.h, Rf), st, forget_gate)
    return st.h.to(gates.dtype), st


def slstm_sequence(
    gates: Tensor,
    R: Tensor,
    *,
    initial_state: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
    return_state: bool = False,
    forget_gate: ForgetGate = "sigmoid",
) -> Tensor | tuple[Tensor, SLSTMState]:
    """The recurrence over a sequence. gates (B, S, NH, 4, DH). Returns h (B, S, NH, DH) [, final state]."""
    _check(gates, R, step=False)
    dt = state_dtype(gates.dtype)
    B, S, NH, _, DH = gates.shape
    st = _prepare_state(initial_state, B, NH, DH, dt, gates.device)
    g, Rf = gates.to(dt), R.to(dt)
    hs = []
    for t in range(S):
        st = slstm_pointwise(g[:, t] + _recurrent_preact(st.h, Rf), st, forget_gate)
        hs.append(st.h)
    h = torch.stack(hs, dim=1).to(gates.dtype)
    return (h, st) if return_state else h


__all__ = ["SLSTMState", "slstm_step", "slstm_sequence", "slstm_zero_state", "slstm_pointwise"]

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

from . import native
from .gates import ForgetGate, autocast_off as _autocast_off, check_forget_gate, log_forget, state_dtype


class SLSTMState(NamedTuple):
    """Recurrent state of an sLSTM layer, each (B, NH, DH)."""

    c: Tensor  # cell state (stabilised)
    n: Tensor  # normaliser state (stabilised)
    m: Tensor  # stabiliser
    h: Tensor  # hidden state fed back through R


def slstm_zero_state(B: int, NH: int, DH: int, *, dtype=torch.float32, device=None) -> SLSTMState:
    z = torch.zeros(B, NH, DH, dtype=dtype, device=device)
    return SLSTMState(z, z.clone(), z.clone(), z.clone())


def _check(gates: Tensor, R: Tensor, step: bool, forget_gate: str) -> None:
    check_forget_gate(forget_gate)
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
    c, n, m, h = (t.to(dtype) for t in state)
    return SLSTMState(c, n, m.detach(), h)  # the stabiliser carries no gradient


def _gates_step(i_raw: Tensor, f_raw: Tensor, z_raw: Tensor, o_raw: Tensor, c: Tensor, n: Tensor, m: Tensor,
                forget_gate: ForgetGate) -> SLSTMState:
    """The gate arithmetic of one step from the total pre-activations (any layout, all of one shape)."""
    lm = log_forget(f_raw, forget_gate) + m
    m_new = torch.where(n == 0, i_raw, torch.maximum(lm, i_raw)).detach()
    ip = torch.exp(i_raw - m_new)
    # the exponent is <= 0 except on an empty state, where it multiplies zeros: clamp so it cannot overflow to inf
    fp = torch.exp(torch.clamp(lm - m_new, max=0.0))
    c = torch.addcmul(fp * c, ip, torch.tanh(z_raw))
    n = torch.addcmul(ip, fp, n)
    h = torch.sigmoid(o_raw) * c / n
    return SLSTMState(c, n, m_new, h)


def slstm_pointwise(raw: Tensor, st: SLSTMState, forget_gate: ForgetGate) -> SLSTMState:
    """One step from the total pre-activations raw (B, NH, 4, DH) (gate order i, f, z, o)."""
    return _gates_step(*raw.unbind(-2), st.c, st.n, st.m, forget_gate)


def _forward_loop(gx: Tensor, R: Tensor, C: Tensor, N: Tensor, M: Tensor, H: Tensor, raws: Tensor,
                  forget_gate: ForgetGate) -> None:
    """The forward steps as PyTorch ops (layouts of _Sequence), filling C, N, M, H [1..S] and raws in place.

    The step of _gates_step, written into preallocated per-step buffers with in-place and out= operations (no
    autograd here): no allocation per step and no stacking at the end.
    """
    for t in range(gx.shape[0]):
        raw = torch.baddbmm(gx[t], H[t], R, out=raws[t])  # (NH, B, 4 DH)
        i_raw, f_raw, z_raw, o_raw = raw.chunk(4, dim=-1)
        lm = log_forget(f_raw, forget_gate).add(M[t])  # log f + m (a new tensor)
        m_new = torch.where(N[t] == 0, i_raw, torch.maximum(lm, i_raw), out=M[t + 1])
        ip = torch.sub(i_raw, m_new).exp_()
        fp = lm.sub_(m_new).clamp_(max=0.0).exp_()  # clamped: <= 0 except on an empty state (times zeros)
        c = torch.mul(fp, C[t], out=C[t + 1]).addcmul_(ip, torch.tanh(z_raw))
        n = torch.mul(fp, N[t], out=N[t + 1]).add_(ip)
        torch.sigmoid(o_raw, out=H[t + 1]).mul_(c).div_(n)


def _backward_loop(dH: Tensor | None, R: Tensor, f: dict[str, Tensor], C: Tensor, N: Tensor, dc: Tensor,
                   dn: Tensor, dh_rec: Tensor, dgx: Tensor) -> Tensor:
    """The carries of the backward as PyTorch ops: dc, dn updated in place, dgx filled; returns dh_rec at t = 0."""
    Rt = R.transpose(1, 2)  # (NH, 4 DH, DH)
    for t in range(dgx.shape[0] - 1, -1, -1):
        dh = dh_rec if dH is None else dH[t] + dh_rec
        dc.addcmul_(dh, f["h_over_c"][t])
        dn.addcmul_(dh, f["h_over_n"][t], value=-1.0)
        di, df, dz, do = dgx[t].chunk(4, dim=-1)  # (NH, B, DH) views
        torch.mul(dc, f["z"][t], out=di).add_(dn).mul_(f["ip"][t])
        torch.mul(dc, C[t], out=df).addcmul_(dn, N[t]).mul_(f["df_fac"][t])
        torch.mul(dc, f["dz_fac"][t], out=dz)
        torch.mul(dh, f["do_fac"][t], out=do)
        dc.mul_(f["fp"][t])
        dn.mul_(f["fp"][t])
        dh_rec = torch.bmm(dgx[t], Rt)
    return dh_rec


def _backward_factors(raw: Tensor, C: Tensor, N: Tensor, M: Tensor, H: Tensor,
                      forget_gate: ForgetGate) -> dict[str, Tensor]:
    """The per-step factors of the backward recursion, each (S, NH, B, DH), computed for all steps at once."""
    i_raw, f_raw, z_raw, o_raw = raw.chunk(4, dim=-1)  # (S, NH, B, DH) each
    m_new = M[1:]
    ip = torch.exp(i_raw - m_new)
    expo = log_forget(f_raw, forget_gate) + M[:-1] - m_new
    fp = torch.exp(torch.clamp(expo, max=0.0))
    z, o = torch.tanh(z_raw), torch.sigmoid(o_raw)
    c_t, n_t = C[1:], N[1:]
    dlogf = torch.sigmoid(-f_raw) if forget_gate == "sigmoid" else torch.ones_like(f_raw)
    return {
        "h_over_c": o / n_t,  # dh/dc
        "h_over_n": H[1:] / n_t,  # -dh/dn
        "z": z,
        "ip": ip,
        # df'/df~ is f' dlogf, except where the clamp was active: only possible on an empty state (n = 0), as
        # elsewhere m_t >= log f + m_{t-1}. Testing n rather than the sign of the recomputed exponent keeps the
        # gradient right when that exponent is recomputed a rounding error above 0.
        "df_fac": fp * ((expo <= 0) | (N[:-1] != 0)).to(fp.dtype) * dlogf,
        "dz_fac": ip * (1 - z * z),
        "do_fac": c_t / n_t * o * (1 - o),  # dh/do~
        "fp": fp,
    }


class _Sequence(torch.autograd.Function):
    """The recurrence over S steps with a hand-written backward through time.

    Layout inside: gates gx (S, NH, B, 4 DH), states (NH, B, DH), so that the recurrent matmul of a step is one
    baddbmm straight into the gate layout. Every state is saved; the backward first computes all pointwise
    derivatives at once, then runs only the carries (dc, dn, dh) and the recurrent matmul backwards in time. The
    two time loops run in C when the native library is available (ops/native), else as PyTorch ops.
    """

    @staticmethod
    @_autocast_off
    def forward(ctx, gx, R, c0, n0, m0, h0, forget_gate):
        S = gx.shape[0]
        gx = gx.contiguous()
        C, N, M, H = (torch.empty(S + 1, *c0.shape, dtype=c0.dtype, device=c0.device) for _ in range(4))
        raws = torch.empty_like(gx, memory_format=torch.contiguous_format)  # (S, NH, B, 4 DH)
        C[0], N[0], M[0], H[0] = c0, n0, m0, h0
        lib = native.usable(gx, R)
        if lib is not None:
            NH, B, DH = c0.shape
            native.call(lib, "slstm_forward", gx.dtype, (S, NH, B, DH, forget_gate == "exp"),
                        (gx, R.contiguous(), C, N, M, H, raws))
        else:
            _forward_loop(gx, R, C, N, M, H, raws, forget_gate)
        ctx.forget_gate = forget_gate
        ctx.save_for_backward(R, raws, C, N, M, H)
        return H[1:], C[S], N[S], M[S], H[S]

    @staticmethod
    @_autocast_off
    def backward(ctx, dH, dc_T, dn_T, _dm_T, dh_T):
        R, raw, C, N, M, H = ctx.saved_tensors
        S = raw.shape[0]
        # the carries dc, dn, dh are our own buffers, updated in place; each step's gate gradients are written
        # straight into their slot of dgx
        dc, dn, dh_rec = (torch.zeros_like(C[0]) if g is None else g.clone(memory_format=torch.contiguous_format)
                          for g in (dc_T, dn_T, dh_T))
        dgx = torch.empty_like(raw, memory_format=torch.contiguous_format)  # (S, NH, B, 4 DH)
        lib = native.usable(raw, R)
        if lib is not None:  # the whole backward loop in C, gate values recomputed per step
            NH, B, DH = C.shape[1:]
            native.call(lib, "slstm_backward", raw.dtype, (S, NH, B, DH, ctx.forget_gate == "exp"),
                        (None if dH is None else dH.contiguous(), R.transpose(1, 2).contiguous(), raw, C, N, M, H,
                         dc, dn, dh_rec, dgx))
        else:
            dh_rec = _backward_loop(dH, R, _backward_factors(raw, C, N, M, H, ctx.forget_gate), C, N, dc, dn,
                                    dh_rec, dgx)
        NH, B, DH = H.shape[1:]
        h_prev = H[:-1].permute(1, 3, 0, 2).reshape(NH, DH, S * B)
        dR = torch.bmm(h_prev, dgx.permute(1, 0, 2, 3).reshape(NH, S * B, 4 * DH))
        return dgx, dR, dc, dn, None, dh_rec, None


def _recurrent_preact(h: Tensor, R: Tensor) -> Tensor:
    """R h per head: h (B, NH, DH), R (NH, DH, 4 DH) -> (B, NH, 4, DH)."""
    B, NH, DH = h.shape
    return torch.bmm(h.transpose(0, 1), R).transpose(0, 1).reshape(B, NH, 4, DH)


def _native_step(gates: Tensor, R: Tensor, st: SLSTMState, forget_gate: ForgetGate
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
                (gates.contiguous(), R.contiguous(), *(t.contiguous() for t in st), *new, raw))
    c, n, m, h = new
    return h, SLSTMState(c, n, m, h)


@torch.compiler.disable  # the time loop stays one opaque call under torch.compile (native or not)
def _sequence(gx: Tensor, R: Tensor, c0: Tensor, n0: Tensor, m0: Tensor, h0: Tensor, forget_gate: ForgetGate):
    return _Sequence.apply(gx, R, c0, n0, m0, h0, forget_gate)


def slstm_step(
    gates: Tensor,
    R: Tensor,
    state: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
    *,
    forget_gate: ForgetGate = "sigmoid",
    check: bool = True,
) -> tuple[Tensor, SLSTMState]:
    """One step. gates (B, NH, 4, DH) input pre-activations (bias included). Returns h (B, NH, DH) and the state.

    `check=False` is the hot path of token-by-token generation, for callers that validated the shapes once: it
    skips the input checks and expects `state` given, as (c, n, m, h), and gates and R in the state's dtype.
    """
    if not check:
        st = SLSTMState(*state)
        out = _native_step(gates, R, st, forget_gate)  # inference: the whole step in one native call
        if out is not None:
            return out
        st = slstm_pointwise(torch.baddbmm(gates.transpose(0, 1).flatten(2), st.h.transpose(0, 1), R)
                             .view(gates.shape[1], gates.shape[0], 4, -1).transpose(0, 1), st, forget_gate)
        return st.h, st
    _check(gates, R, step=True, forget_gate=forget_gate)
    dt = state_dtype(gates.dtype)
    B, NH, _, DH = gates.shape
    st = _prepare_state(state, B, NH, DH, dt, gates.device)
    st = slstm_pointwise(gates.to(dt) + _recurrent_preact(st.h, R.to(dt)), st, forget_gate)
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
    _check(gates, R, step=False, forget_gate=forget_gate)
    dt = state_dtype(gates.dtype)
    B, S, NH, _, DH = gates.shape
    st = _prepare_state(initial_state, B, NH, DH, dt, gates.device)
    gx = gates.to(dt).permute(1, 2, 0, 3, 4).reshape(S, NH, B, 4 * DH)  # (S, NH, B, 4 DH)
    inner = (t.transpose(0, 1).contiguous() for t in st)  # (NH, B, DH) each
    H, c, n, m, h = _sequence(gx, R.to(dt), *inner, forget_gate)
    out = H.permute(2, 0, 1, 3).to(gates.dtype)  # (B, S, NH, DH)
    if not return_state:
        return out
    return out, SLSTMState(*(t.transpose(0, 1) for t in (c, n, m, h)))


__all__ = ["SLSTMState", "slstm_step", "slstm_sequence", "slstm_zero_state", "slstm_pointwise"]

"""The mLSTM one step at a time (docs/mlstm.md, "Recurrent form"): `mlstm_step` (one token, validated), the private
unchecked step `_mlstm_step_unchecked` for callers that validated once (the layers' decode path), the recurrent
form `mlstm_recurrent`, and the call site of the native inference step (ops/native/mlstm.c).

One step, in stabilised coordinates (inputs prepared as in common.prepare: k scaled, i~ <= BIG, m within +-BIG):

    m_t = max(log f_t + m_{t-1}, i~_t)  (at least -BIG);   f' = exp(log f_t + m_{t-1} - m_t);   i' = exp(i~_t - m_t)
    C_t = f' C_{t-1} + i' k_t v_t^T;   n_t = f' n_{t-1} + i' k_t
    h_t = C_t^T q_t / (max(|n_t^T q_t|, exp(-m_t)) + eps)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import native
from ..gates import ForgetGate, check_forget_gate, state_dtype
from .common import (MLSTMState, big, check_eps, check_inputs, check_mask, finish, prepare, prepare_gates,
                     prepare_state, to_infinite)


def _step_core(q, k, v, i, logf, st: MLSTMState, eps: float) -> tuple[Tensor, MLSTMState]:
    """The recurrence for one step on prepared inputs, in as few tensor operations as possible (it runs once per
    position of the recurrent form). Returns h and the state with m within +-BIG."""
    C, n, m = st
    lm = logf + m  # (B, NH)
    m_new = torch.maximum(lm, i).clamp_min(-big(m.dtype)).detach()  # an empty state's -inf as -BIG: no inf - inf
    fp = torch.exp(lm - m_new).unsqueeze(-1)  # (B, NH, 1)
    kip = k * torch.exp(i - m_new).unsqueeze(-1)  # (B, NH, DQK)
    n = torch.addcmul(kip, n, fp)
    C = torch.addcmul(C * fp.unsqueeze(-1), kip.unsqueeze(-1), v.unsqueeze(-2))  # (B, NH, DQK, DV)
    num = torch.matmul(q.unsqueeze(-2), C).squeeze(-2)  # (B, NH, DV)
    qn = torch.linalg.vecdot(q, n)
    h = num / (torch.maximum(qn.abs(), torch.exp(-m_new)) + eps).unsqueeze(-1)
    return h, MLSTMState(C, n, m_new)


def _native_step(q, k, v, i, f, state, eps: float, forget_gate: ForgetGate) -> tuple[Tensor, MLSTMState] | None:
    """One inference step in the native library (ops/native/mlstm.c); None when it does not apply: a gradient is
    needed, no library, not CPU float32/float64 in one dtype, torch.compile is tracing, or an infinity or NaN in a
    gate, the stabiliser or the normaliser (seen in the step's result)."""
    C, n, m = state
    lib = native.usable_for_inference(q, k, v, i, f, C, n, m)
    if lib is None:
        return None
    if q.dim() != 3 or v.dim() != 3:
        raise ValueError(f"mlstm step: q must have shape (B, NH, DQK) and v (B, NH, DV), got {tuple(q.shape)}, "
                         f"{tuple(v.shape)}")
    B, NH, DQK = q.shape
    DV = v.shape[-1]
    # the C code reads BH * DQK etc. numbers behind each pointer: every tensor must have exactly these shapes
    for name, t, shape in (("k", k, (B, NH, DQK)), ("v", v, (B, NH, DV)), ("i", i, (B, NH)), ("f", f, (B, NH)),
                           ("initial_state C", C, (B, NH, DQK, DV)), ("initial_state n", n, (B, NH, DQK)),
                           ("initial_state m", m, (B, NH))):
        if t.shape != shape:
            raise ValueError(f"mlstm step: {name} must have shape {shape}, got {tuple(t.shape)}")
    C1 = torch.empty(B, NH, DQK, DV, dtype=q.dtype)
    n1 = torch.empty(B, NH, DQK, dtype=q.dtype)
    m1 = torch.empty(B, NH, dtype=q.dtype)
    h = torch.empty(B, NH, DV, dtype=q.dtype)
    native.call(lib, "mlstm_step", q.dtype, (B * NH, DQK, DV, forget_gate == "exp", eps),
                (*(t.contiguous() for t in (q, k, v, i, f, C, n, m)), C1, n1, m1, h))
    # the C code computes the plain IEEE recurrence: where a gate, m or n was infinite or NaN its n or m comes out
    # non-finite (inf - inf), and the PyTorch step gives those inputs their documented meaning instead
    return (h, MLSTMState(C1, n1, m1)) if _finite(n1, m1) else None


def _finite(*tensors: Tensor) -> bool:
    """All values finite (a sum that overflows says no too: the caller then takes the slower, exact path). Through
    NumPy where available: a few microseconds instead of a dozen for the tensor ops."""
    try:
        return math.isfinite(sum(float(t.numpy().sum()) for t in tensors))
    except RuntimeError:  # no NumPy
        return all(bool(torch.isfinite(t).all()) for t in tensors)


def _mlstm_step_unchecked(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, state: tuple[Tensor, Tensor, Tensor],
                          *, eps: float = 1e-6, forget_gate: ForgetGate = "sigmoid", mask: Tensor | None = None
                          ) -> tuple[Tensor, MLSTMState]:
    """`mlstm_step` without the input checks, for callers that validated the shapes once (the layers' decode path):
    `state` given as (C, n, m), every input already in the state's dtype (float32 or float64), on one device.
    Runs the native step where it applies (inference on CPU), else the PyTorch step. The returned m may hold an
    infinite stabiliser as +-BIG, the largest finite number (the same state to every op; common.to_infinite maps
    it to +-inf): that saves the mapping's operator calls on every generated token."""
    if mask is None:
        out = _native_step(q, k, v, i, f, state, eps, forget_gate)
        if out is not None:
            return out
    C, n, m = state
    lim = big(C.dtype)
    if mask is not None:
        mk = mask.view(mask.shape[0], 1, 1)
        q, k, v = torch.where(mk, q, 0.0), torch.where(mk, k, 0.0), torch.where(mk, v, 0.0)
    i_, logf = prepare_gates(i, f, forget_gate, mask, C.dtype)
    k = k * (q.shape[-1] ** -0.5)
    return _step_core(q, k, v, i_, logf, MLSTMState(C, n, m.detach().clamp(-lim, lim)), eps)


def mlstm_step(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    state: tuple[Tensor, Tensor, Tensor] | None = None,
    *,
    eps: float = 1e-6,
    forget_gate: ForgetGate = "sigmoid",
    mask: Tensor | None = None,
) -> tuple[Tensor, MLSTMState]:
    """One time step. q, k (B, NH, DQK); v (B, NH, DV); i, f (B, NH); state (C, n, m) or None (the empty state);
    mask (B,) bool, False = a padded step that leaves the state unchanged. Returns h (B, NH, DV) in v's dtype and
    the new state. Always validates shapes, dtypes and devices (cheap; no look at values); callers that validated
    once (the layers' decode path) call the private `_mlstm_step_unchecked`."""
    check_inputs(q, k, v, i, f, step=True)
    check_forget_gate(forget_gate)
    check_eps(eps)
    B, NH, DQK, DV = q.shape[0], q.shape[1], q.shape[-1], v.shape[-1]
    check_mask(mask, (B,), q.device)
    dt = state_dtype(v.dtype)
    st = prepare_state(state, B, NH, DQK, DV, dt, q.device, clamp=False)
    with torch.autocast(q.device.type, enabled=False):  # float32 throughout, under autocast too
        h, new = _mlstm_step_unchecked(q.to(dt), k.to(dt), v.to(dt), i.to(dt), f.to(dt), st, eps=float(eps),
                                       forget_gate=forget_gate, mask=mask)
    return h.to(v.dtype), MLSTMState(new.C, new.n, to_infinite(new.m))


def mlstm_recurrent(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    *,
    initial_state: tuple[Tensor, Tensor, Tensor] | None = None,
    return_state: bool = False,
    eps: float = 1e-6,
    forget_gate: ForgetGate = "sigmoid",
    mask: Tensor | None = None,
) -> Tensor | tuple[Tensor, MLSTMState]:
    """Step-by-step form: the recurrence, one step per position. O(S) time, O(1) state. Same arguments and result
    as `mlstm_chunkwise` (without chunk_size)."""
    qf, kf, vf, i_, logf, st = prepare(q, k, v, i, f, initial_state, forget_gate, eps, mask)
    hs = []
    with torch.autocast(qf.device.type, enabled=False):  # float32 throughout, under autocast too
        for t in range(qf.shape[2]):
            h, st = _step_core(qf[:, :, t], kf[:, :, t], vf[:, :, t], i_[:, :, t], logf[:, :, t], st, float(eps))
            hs.append(h)
    return finish(torch.stack(hs, dim=2), v.dtype, st, return_state)

"""The sLSTM pointwise step, defined once, and its derivative (docs/slstm.md).

From the total gate pre-activations (i~, f~, z~, o~) = W x_t + b + R h_{t-1} of one step and the state
(c, n, m) before it:

    log f = logsigmoid(f~)  (or f~ for the exp forget gate)
    m_t   = max(log f + m_{t-1}, i~)   (= i~ on an empty state, n_{t-1} = 0), clipped to the finite range
    i'    = exp(min(i~ - m_t, 0)),      f' = exp(min(log f + m_{t-1} - m_t, 0))
    c_t   = f' c_{t-1} + i' tanh(z~)
    n_t   = f' n_{t-1} + i'
    h_t   = sigmoid(o~) c_t / n_t       (0 on an empty state, n_t = 0)

c and n are the paper's states times exp(-m); their ratio, and so h and every gradient, is unchanged by the
stabiliser m, which therefore carries no gradient. Both exponents are <= 0 in exact arithmetic except on an empty
state (where f' multiplies zeros) and at +inf, so the clip at 0 only decides those cases. Keeping m finite defines
every infinity without a special case: a gate exp(x - m) is 0 at x = -inf whatever m, 1 at x = m = +inf (m is then
the largest finite number and the exponent is clipped to 0); o~ = -inf gives h = 0; forgetting everything while
writing nothing (f~ = i~ = -inf) empties the state, whose output is 0, not 0/0. NaN in any input propagates to the
outputs. The choices use `torch.where`, never a Python branch on values.

`slstm_pointwise` is the definition that `slstm_reference` (reference.py) loops over; the fast forms (the in-place
PyTorch loop in sequence.py, the C loops in ops/native) are tested against it. `cell_backward_factors` is the
derivative of the same step, used by the hand-written backward through time; it recomputes the gate values with the
functions above and the stabiliser saved by the forward.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..gates import ForgetGate, log_forget


class SLSTMState(NamedTuple):
    """Recurrent state of an sLSTM layer, each (B, NH, DH)."""

    c: Tensor  # cell state (stabilised)
    n: Tensor  # normaliser state (stabilised); 0 = empty (nothing written yet)
    m: Tensor  # stabiliser (no gradient)
    h: Tensor  # hidden state, fed back through R


def slstm_zero_state(B: int, NH: int, DH: int, *, dtype=torch.float32, device=None) -> SLSTMState:
    """The empty state (all zeros), each (B, NH, DH)."""
    z = torch.zeros(B, NH, DH, dtype=dtype, device=device)
    return SLSTMState(z, z.clone(), z.clone(), z.clone())


def stabiliser(lm: Tensor, i: Tensor, n_prev: Tensor) -> Tensor:
    """m_t = max(log f + m_{t-1}, i~), or i~ where the state is empty (n_{t-1} = 0), clipped to the finite range of
    the dtype (NaN stays NaN). Detached: the stabiliser carries no gradient."""
    fin = torch.finfo(i.dtype)
    return torch.where(n_prev == 0, i, torch.maximum(lm, i)).clamp(fin.min, fin.max).detach()


def _clip_at_zero(x: Tensor) -> Tensor:
    """min(x, 0) whose gradient is 1 at x = 0 (where the gate's exponent usually is: m_t = i~ makes i~ - m_t = 0
    exactly) and 0 only where the clip is active. Written with `torch.where` because the gradient of `clamp` at
    its bound is a convention that changed between PyTorch releases (1 up to 2.13, 0 from 2.14)."""
    return torch.where(x > 0, 0.0, x)


def slstm_cell(i: Tensor, f: Tensor, z: Tensor, o: Tensor, c: Tensor, n: Tensor, m: Tensor,
               forget_gate: ForgetGate) -> SLSTMState:
    """The step of the module docstring on total pre-activations i, f, z, o and state c, n, m (any one shape)."""
    lm = log_forget(f, forget_gate) + m.detach()
    m_new = stabiliser(lm, i, n)
    ip = torch.exp(_clip_at_zero(i - m_new))
    fp = torch.exp(_clip_at_zero(lm - m_new))
    c_new = fp * c + ip * torch.tanh(z)
    n_new = fp * n + ip
    empty = n_new == 0
    h = torch.where(empty, 0.0, torch.sigmoid(o) * c_new / torch.where(empty, 1.0, n_new))
    return SLSTMState(c_new, n_new, m_new, h)


def slstm_pointwise(raw: Tensor, st: SLSTMState, forget_gate: ForgetGate) -> SLSTMState:
    """One step from the total pre-activations raw (B, NH, 4, DH) (gate order i, f, z, o) and the state st."""
    return slstm_cell(*raw.unbind(-2), st.c, st.n, st.m, forget_gate)


def cell_backward_factors(i: Tensor, f: Tensor, z: Tensor, o: Tensor, c_prev: Tensor, n_prev: Tensor,
                          m_prev: Tensor, m: Tensor, c: Tensor, n: Tensor, h: Tensor,
                          forget_gate: ForgetGate) -> dict[str, Tensor]:
    """The local derivatives of slstm_cell at given pre-activations, state before (c_prev, n_prev, m_prev) and
    after (m, c, n, h) (any one shape; all steps at once in the backward). With the carries dc, dn (cotangents of
    c, n from later steps) and dh (of h), the backward of one step is:

        dc += dh * h_over_c;   dn -= dh * h_over_n
        di~ = (dc * z + dn) * ip;   df~ = (dc * c_prev + dn * n_prev) * df;   dz~ = dc * dz;   do~ = dh * do
        dc_prev = dc * fp;   dn_prev = dn * fp

    A clip at 0 passes no gradient where it is active: for i' only at i~ = +inf; for f' only at log f + m_prev =
    +inf or on an empty state. On a non-empty state the clip of f' is tested from n_prev rather than from the
    recomputed exponent, which may come out a rounding error above 0 (it is <= 0 in exact arithmetic)."""
    ef = log_forget(f, forget_gate) + m_prev - m  # log f + m_prev - m: the exponent of f'
    ei = i - m  # the exponent of i'
    # f' is clipped only on an empty state or at log f + m_prev = +inf
    f_open = ((ef <= 0) | (n_prev != 0)) & (ef < torch.inf)
    fp = ef.clamp_(max=0.0).exp_()
    df = torch.where(f_open, fp * torch.sigmoid(-f) if forget_gate == "sigmoid" else fp, 0.0)
    i_clipped = ei > 0  # only at i~ = +inf
    ip = ei.clamp_(max=0.0).exp_()
    zt, og = torch.tanh(z), torch.sigmoid(o)
    dz = (1 - zt * zt).mul_(ip)
    inv_n = torch.reciprocal(n).masked_fill_(n == 0, 0.0)  # 1 / n, 0 on an empty state (where h = 0)
    h_over_c = og * inv_n
    return {
        "h_over_c": h_over_c,  # dh/dc
        "h_over_n": h * inv_n,  # -dh/dn
        "z": zt,
        "ip": ip.masked_fill_(i_clipped, 0.0),
        "df": df,
        "dz": dz,
        "do": (1 - og).mul_(c).mul_(h_over_c),  # dh/do~
        "fp": fp,
    }


__all__ = ["SLSTMState", "cell_backward_factors", "slstm_cell", "slstm_pointwise", "slstm_zero_state", "stabiliser"]

"""The mLSTM's definition: the paper's stabilised recurrence, one step at a time, in plain PyTorch autograd.

Every fast form (parallel, chunkwise, recurrent, step) is tested against this function, values and gradients; use
it to check your own. It is written for reading, not speed. The equations, the stabiliser and the meaning of
infinite gates and masked steps are in docs/mlstm.md.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..gates import ForgetGate, check_forget_gate, log_forget, state_dtype
from .common import MLSTMState, check_eps, check_inputs, check_mask, prepare_state


def mlstm_reference(
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
    """h (B, NH, S, DV) from q, k (B, NH, S, DQK), v (B, NH, S, DV), gate pre-activations i, f (B, NH, S), and the
    final state (C, n, m) with `return_state=True`. Same arguments as the fast forms (docs/mlstm.md)."""
    check_inputs(q, k, v, i, f)
    check_forget_gate(forget_gate)
    check_eps(eps)
    B, NH, S, DQK = q.shape
    DV = v.shape[-1]
    check_mask(mask, (B, S), q.device)
    out_dtype, dt = v.dtype, state_dtype(v.dtype)  # state and arithmetic: float32, float64 for float64 inputs
    BIG = torch.finfo(dt).max  # an infinite input gate or stabiliser, as the largest finite number
    C, n, m = prepare_state(initial_state, B, NH, DQK, DV, dt, q.device)  # m: detached, within +-BIG
    if mask is not None:  # a padded step forgets nothing (log f = 0), writes nothing (i~ = -inf), reads nothing
        real = mask[:, None, :]
        q, k, v = (torch.where(real[..., None], t, 0.0) for t in (q, k, v))
        i, f = torch.where(real, i, -math.inf), torch.where(real, f, 0.0)
    q, k, v = q.to(dt), k.to(dt) * DQK**-0.5, v.to(dt)  # keys scaled by DQK^-1/2
    logf, i = log_forget(f.to(dt), forget_gate), i.to(dt)  # log f = logsigmoid(f~), or f~ for the exp gate
    if forget_gate == "exp":
        logf = torch.where(logf == math.inf, math.nan, logf)  # an infinite exponential forget gate: undefined
    if mask is not None:
        logf = torch.where(real, logf, 0.0)
    i = i.clamp(max=BIG)
    hs = []
    for t in range(S):
        qt, kt, vt = q[:, :, t], k[:, :, t], v[:, :, t]
        log_fm = logf[:, :, t] + m  # log f_t + m_{t-1}
        m = torch.maximum(log_fm, i[:, :, t]).clamp_min(-BIG).detach()  # m_t: the stabiliser has no gradient
        f_ = torch.exp(log_fm - m)[..., None]  # f'_t = exp(log f_t + m_{t-1} - m_t)
        i_ = torch.exp(i[:, :, t] - m)[..., None]  # i'_t = exp(i~_t - m_t)
        C = f_[..., None] * C + i_[..., None] * (kt[..., :, None] * vt[..., None, :])  # C_t = f' C + i' k v^T
        n = f_ * n + i_ * kt  # n_t = f' n + i' k
        num = (C * qt[..., :, None]).sum(-2)  # C_t^T q_t
        den = torch.maximum((n * qt).sum(-1).abs(), torch.exp(-m)) + eps  # max(|n^T q|, exp(-m_t)) + eps
        hs.append(num / den[..., None])
    h = torch.stack(hs, dim=2).to(out_dtype)
    if not return_state:
        return h
    return h, MLSTMState(C, n, torch.where(m.abs() < BIG, m, m * math.inf))  # +-BIG back to +-inf

"""What every mLSTM form shares: the state, input validation, input preparation (keys, gates, masks, infinities)
and the chunk-state summary. The equations and the reasons for each choice are in docs/mlstm.md.

Stabilised coordinates (docs/mlstm.md, "The stabiliser"): the state (C, n, m) stands for the paper's
(C exp(m), n exp(m)). Every form keeps m equal to the recurrence's own stabiliser

    m_t = max(log f_t + m_{t-1}, i~_t)

so that all forms agree to rounding, the eps term of the denominator included.

Infinite values (docs/mlstm.md, "Infinities"): an input gate i~ = +inf, and a stabiliser m = +inf carried in a state,
enter the arithmetic as the largest finite number BIG of the computation dtype, and a stabiliser of -inf as -BIG.
BIG absorbs every ordinary number (BIG + x = BIG for |x| < 1e31 in float32), so exp(x - m) = 1 when x = m = +inf,
exp(x - m) = 0 when x = -inf whatever m, and no inf - inf ever makes a NaN. m = +-BIG comes back as +-inf.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch
from torch import Tensor

from ..gates import ForgetGate, check_forget_gate, log_forget, state_dtype


class MLSTMState(NamedTuple):
    """Recurrent state of an mLSTM head group, in stabilised coordinates (docs/mlstm.md)."""

    C: Tensor  # (B, NH, DQK, DV) matrix memory
    n: Tensor  # (B, NH, DQK) normaliser
    m: Tensor  # (B, NH) stabiliser (log scale of C and n)


def zero_state(B: int, NH: int, DQK: int, DV: int, *, dtype=torch.float32, device=None) -> MLSTMState:
    """The empty memory (C, n, m) = (0, 0, 0) that every form starts from by default."""
    return MLSTMState(
        torch.zeros(B, NH, DQK, DV, dtype=dtype, device=device),
        torch.zeros(B, NH, DQK, dtype=dtype, device=device),
        torch.zeros(B, NH, dtype=dtype, device=device),
    )


def big(dtype: torch.dtype) -> float:
    """BIG, the finite stand-in for an infinite input gate or stabiliser (module docstring)."""
    return torch.finfo(dtype).max


def to_infinite(m: Tensor) -> Tensor:
    """m = +-BIG back to +-inf, for a state handed to the caller."""
    return m / (m.abs() < big(m.dtype))  # +-BIG / 0 = +-inf; anything else / 1


# ----------------------------------------------------------------------------------------------------------------------
# validation: shapes, dtypes and devices only (no look at tensor values, no synchronisation)


def check_inputs(q, k, v, i, f, step: bool = False) -> None:
    """One-line TypeError/ValueError for wrong types, ranks, shapes, dtypes or devices of q, k, v, i, f."""
    names = ("q", "k", "v", "i", "f")
    for name, t in zip(names, (q, k, v, i, f)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    lead = "(B, NH)" if step else "(B, NH, S)"
    if not step and q.dim() == 4 and q.shape[2] < 1:
        raise ValueError(f"q, k, v, i, f must hold at least one time step (S >= 1), got S = {q.shape[2]}")
    rank = 3 if step else 4
    if q.dim() != rank:
        raise ValueError(f"q must have shape {lead[:-1]}, DQK), got shape {tuple(q.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.dim() != rank or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"v must have shape {lead[:-1]}, DV) = {tuple(q.shape[:-1])} + (DV,), got {tuple(v.shape)}")
    for name, t in (("i", i), ("f", f)):
        if t.shape != q.shape[:-1]:
            raise ValueError(f"{name} must have shape {lead} = {tuple(q.shape[:-1])}, got {tuple(t.shape)}")
    if q.shape[-1] < 1 or v.shape[-1] < 1:
        raise ValueError(f"the head dims must be >= 1, got DQK = {q.shape[-1]}, DV = {v.shape[-1]}")
    for name, t in zip(names[1:], (k, v, i, f)):
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}: put all inputs on one device")


def check_eps(eps: object) -> None:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}")


def check_chunk_size(chunk_size: object) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def check_mask(mask: object, shape: tuple[int, ...], device: torch.device) -> None:
    """mask: None, or a bool tensor of `shape` ((B, S) for the forms, (B,) for the step); True = a real step."""
    if mask is None:
        return
    what = "(B, S)" if len(shape) == 2 else "(B,)"
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a bool torch.Tensor of shape {what}, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must have dtype torch.bool (True = a real step), got {mask.dtype}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"mask must have shape {what} = {shape}, got {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"mask is on {mask.device} but q is on {device}: put all inputs on one device")


def prepare_state(initial_state, B: int, NH: int, DQK: int, DV: int, dtype, device, clamp: bool = True
                  ) -> MLSTMState:
    """The validated state in the computation dtype, m detached (it carries no gradient) and, with `clamp`, within
    +-BIG. A list works like a tuple."""
    if initial_state is None:
        return zero_state(B, NH, DQK, DV, dtype=dtype, device=device)
    if isinstance(initial_state, Tensor) or not isinstance(initial_state, (tuple, list)) or len(initial_state) != 3:
        raise TypeError(f"initial_state must be a tuple (C, n, m) of three tensors, got {type(initial_state).__name__}"
                        + (f" of length {len(initial_state)}" if isinstance(initial_state, (tuple, list)) else ""))
    out = []
    for name, t, shape in zip("Cnm", initial_state, ((B, NH, DQK, DV), (B, NH, DQK), (B, NH))):
        if not isinstance(t, Tensor):
            raise TypeError(f"initial_state {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"initial_state {name} must be a floating-point tensor, got dtype {t.dtype}")
        if tuple(t.shape) != shape:
            raise ValueError(f"initial_state {name} must have shape {shape} (B, NH, DQK, DV = {B}, {NH}, {DQK}, "
                             f"{DV}), got {tuple(t.shape)}")
        if t.device != device:
            raise ValueError(f"initial_state {name} is on {t.device} but q is on {device}")
        out.append(t.to(dtype))
    C, n, m = out
    lim = big(dtype)
    return MLSTMState(C, n, m.detach().clamp(-lim, lim) if clamp else m.detach())


# ----------------------------------------------------------------------------------------------------------------------
# preparation: what each form computes on


def autocast_mm_dtype(t: Tensor) -> torch.dtype | None:
    """The low-precision dtype the chunkwise matmuls use under autocast (None outside autocast or for float64)."""
    dev = t.device.type
    if t.dtype == torch.float64 or not torch.is_autocast_enabled(dev):
        return None
    return torch.get_autocast_dtype(dev)


def prepare_gates(i: Tensor, f: Tensor, forget_gate: ForgetGate, mask: Tensor | None, dtype) -> tuple[Tensor, Tensor]:
    """(i~, log f) in `dtype`, as every form computes on them (docs/mlstm.md, "Infinities" and "Padding masks"):

    - log f = logsigmoid(f~) (or f~ for the exp gate, where f~ = +inf, an infinite forget gate, is undefined: NaN);
    - at a masked step (mask False) log f = 0 and i~ = -inf: the step leaves the state exactly as it was;
    - i~ = +inf becomes BIG (module docstring)."""
    mk = None if mask is None else mask.unsqueeze(1)  # (B, 1, S) or (B, 1): over the heads
    if mk is not None:  # masked first: a padded step's contents never reach the arithmetic, nor its gradient
        i, f = torch.where(mk, i, -math.inf), torch.where(mk, f, 0.0)
    logf = log_forget(f.to(dtype), forget_gate)
    if forget_gate == "exp":
        logf = torch.where(logf == math.inf, math.nan, logf)
    if mk is not None:
        logf = torch.where(mk, logf, 0.0)
    return i.to(dtype).clamp(max=big(dtype)), logf


def prepare(q, k, v, i, f, initial_state, forget_gate, eps, mask, *, step: bool = False, keep_low: bool = False):
    """Validate everything, then: the state in the computation dtype (float32, float64 for float64 inputs), keys
    scaled by DQK^-1/2, gates as `prepare_gates`, masked steps' q, k, v zeroed (a padded step writes and reads
    nothing, whatever its contents, and its h is 0). With `keep_low` (the chunkwise form), q, k, v that arrive in
    autocast's dtype stay in it: they are only ever matmul operands there."""
    check_inputs(q, k, v, i, f, step=step)
    check_forget_gate(forget_gate)
    check_eps(eps)
    B, NH, DQK, DV = q.shape[0], q.shape[1], q.shape[-1], v.shape[-1]
    check_mask(mask, (B,) if step else (B, q.shape[2]), q.device)
    dt = state_dtype(v.dtype)
    state = prepare_state(initial_state, B, NH, DQK, DV, dt, q.device)
    mm_dtype = autocast_mm_dtype(v) if keep_low else None
    mdt = mm_dtype if mm_dtype is not None and q.dtype == k.dtype == v.dtype == mm_dtype else dt
    if mask is not None:
        mk = mask.view(B, 1, 1) if step else mask.view(B, 1, q.shape[2], 1)
        q, k, v = torch.where(mk, q, 0.0), torch.where(mk, k, 0.0), torch.where(mk, v, 0.0)
    qf, kf, vf = q.to(mdt), k.to(mdt) * (DQK**-0.5), v.to(mdt)
    i_, logf = prepare_gates(i, f, forget_gate, mask, dt)
    return qf, kf, vf, i_, logf, state


def finish(h: Tensor, out_dtype: torch.dtype, state: MLSTMState | None, return_state: bool):
    """h in the caller's dtype, and the state with m = +-BIG back to +-inf."""
    h = h.to(out_dtype)
    if not return_state:
        return h
    return h, MLSTMState(state.C, state.n, to_infinite(state.m))


# ----------------------------------------------------------------------------------------------------------------------
# the chunk-state summary: what a segment of positions does to the state (docs/mlstm.md, "Chunkwise form")


class ChunkStates(NamedTuple):
    """The states at the chunk boundaries of (N, NC) chunks of L positions, and what the backward pass needs."""

    C0: Tensor  # (N, NC, DQK, DV) the state each chunk starts from
    n0: Tensor  # (N, NC, DQK)
    m0: Tensor  # (N, NC) its stabiliser
    C: Tensor  # (N, DQK, DV) the state after the last chunk
    n: Tensor  # (N, DQK)
    m: Tensor  # (N,)
    decay: Tensor  # (N, NC) exp(g + m0 - m'): the weight of the state before a chunk in the state after it
    ew: Tensor  # (N, NC, L) exp(a_t - m'): the weight of each position's k v^T in the state after its chunk
    kw: Tensor  # (N * NC, L, DQK) k * ew, in the matmul dtype


def chunk_states(k: Tensor, v: Tensor, logf: Tensor, i: Tensor, C_init: Tensor, n_init: Tensor, m_init: Tensor,
                 mm_dtype: torch.dtype | None = None) -> ChunkStates:
    """The state after each chunk from the state before it (no autograd: the chunkwise backward differentiates it).

    Per chunk, with g = sum_s log f_s and a_t = sum_{s>t} log f_s + i~_t (each a suffix sum, summed directly so a
    large log forget value costs no precision elsewhere):

        m' = max(g + m0, max_t a_t);   C' = exp(g + m0 - m') C0 + sum_t exp(a_t - m') k_t v_t^T   (n' likewise)

    Shapes: k (N, NC, L, DQK) (scaled), v (N, NC, L, DV) (either in the matmul dtype), logf, i (N, NC, L);
    C_init (N, DQK, DV), n_init (N, DQK), m_init (N,) within +-BIG."""
    N, NC, L, DQK = k.shape
    DV = v.shape[-1]
    lim = big(logf.dtype)
    incl = logf.flip(-1).cumsum(-1).flip(-1)  # (N, NC, L): sum_{s>=t} log f_s
    g = incl[..., 0]
    a = torch.cat([incl[..., 1:], torch.zeros_like(incl[..., :1])], dim=-1) + i
    m_loc = a.amax(-1)
    ms = [m_init]
    for c in range(NC):  # a max-plus recurrence over the chunks: sequential, hence exact
        ms.append(torch.maximum(g[:, c] + ms[-1], m_loc[:, c]))
    m_all = torch.stack(ms, dim=1).clamp_min_(-lim)  # (N, NC + 1); an empty state's -inf as -BIG
    m_end = m_all[:, 1:]
    decay = torch.exp(g + m_all[:, :-1] - m_end)
    ew = torch.exp(a - m_end.unsqueeze(-1))
    kw = k * ew.unsqueeze(-1)  # (N, NC, L, DQK), in the state dtype by type promotion
    kw_ = (kw.to(mm_dtype) if mm_dtype is not None else kw).view(N * NC, L, DQK)
    C_add = torch.bmm(kw_.transpose(1, 2), v.reshape(N * NC, L, DV)).view(N, NC, DQK, DV)
    n_add = kw.sum(-2)  # (N, NC, DQK)
    C0 = C_init.new_empty(N, NC, DQK, DV)
    n0 = C_init.new_empty(N, NC, DQK)
    C0[:, 0], n0[:, 0] = C_init, n_init
    for c in range(NC - 1):
        dc = decay[:, c, None]
        torch.addcmul(C_add[:, c], dc[..., None], C0[:, c], out=C0[:, c + 1])
        torch.addcmul(n_add[:, c], dc, n0[:, c], out=n0[:, c + 1])
    C_fin = torch.addcmul(C_add[:, -1], decay[:, -1, None, None], C0[:, -1])
    n_fin = torch.addcmul(n_add[:, -1], decay[:, -1, None], n0[:, -1])
    return ChunkStates(C0, n0, m_all[:, :NC], C_fin, n_fin, m_all[:, -1], decay, ew, kw_)

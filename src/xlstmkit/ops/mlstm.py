"""The mLSTM cell (matrix memory, covariance update) in three computation forms that give the same function.

Notation (Beck et al. 2024, eqs. 19-27, stabilised as in App. A.2/A.3):

    log f_t = logsigmoid(f~_t)       (or f~_t for the exp forget gate)
    m_t     = max(log f_t + m_{t-1}, i~_t)                      stabiliser, carries no gradient
    C_t     = exp(log f_t + m_{t-1} - m_t) C_{t-1} + exp(i~_t - m_t) k_t v_t^T
    n_t     = exp(log f_t + m_{t-1} - m_t) n_{t-1} + exp(i~_t - m_t) k_t
    h_t     = C_t^T q_t / (max(|n_t^T q_t|, exp(-m_t)) + eps)

with keys scaled by DQK ** -0.5. C and n are the paper's states times exp(-m), so exp(-m) is the stabilised form of
the paper's lower bound 1. Every form starts from the same state (C, n, m) = (0, 0, 0) unless `initial_state` is
given, and unrolls the stabiliser the same way, m_t = max(b_t + m_0, max_{j<=t} b_t - b_j + i~_j) with
b_t = sum_{s<=t} log f_s, so that all forms agree to rounding, including in the eps term.

Shapes: q, k (B, NH, S, DQK); v (B, NH, S, DV); i, f (B, NH, S). State C (B, NH, DQK, DV), n (B, NH, DQK),
m (B, NH). Arithmetic runs in float32 (float64 if the inputs are float64); h comes back in v's dtype. Under bf16/fp16
autocast the chunkwise form takes its matmul operands in the autocast dtype (as autocast gives any matmul) and keeps
the states, gate exponentials and normaliser in float32; the other forms run in float32 under autocast.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from . import native
from .gates import ForgetGate, autocast_off as _autocast_off, check_forget_gate, log_forget, state_dtype


class MLSTMState(NamedTuple):
    """Recurrent state of an mLSTM head group, in stabilised coordinates."""

    C: Tensor  # (B, NH, DQK, DV) matrix memory
    n: Tensor  # (B, NH, DQK) normaliser
    m: Tensor  # (B, NH) stabiliser (log scale of C and n)


# ----------------------------------------------------------------------------------------------------------------------
# shared pieces


def zero_state(B: int, NH: int, DQK: int, DV: int, *, dtype=torch.float32, device=None) -> MLSTMState:
    """The empty memory (C, n, m) = (0, 0, 0) that every form starts from by default."""
    return MLSTMState(
        torch.zeros(B, NH, DQK, DV, dtype=dtype, device=device),
        torch.zeros(B, NH, DQK, dtype=dtype, device=device),
        torch.zeros(B, NH, dtype=dtype, device=device),
    )


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, step: bool = False) -> None:
    """Clear errors for wrong ranks, shapes or dtypes (shapes only: no look at tensor values)."""
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


def _prepare_state(initial_state, B: int, NH: int, DQK: int, DV: int, dtype, device) -> MLSTMState:
    if initial_state is None:
        return zero_state(B, NH, DQK, DV, dtype=dtype, device=device)
    if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 3:
        raise TypeError("initial_state must be a tuple (C, n, m)")
    C, n, m = initial_state
    for name, t, shape in (("C", C, (B, NH, DQK, DV)), ("n", n, (B, NH, DQK)), ("m", m, (B, NH))):
        if tuple(t.shape) != shape:
            raise ValueError(f"initial_state {name} must have shape {shape}, got {tuple(t.shape)}")
    return MLSTMState(C.to(dtype), n.to(dtype), m.to(dtype).detach())  # the stabiliser carries no gradient


def _denominator(qn: Tensor, m: Tensor, eps: float) -> Tensor:
    """max(|n^T q|, exp(-m)) + eps: the stabilised form of the paper's max(|n^T q|, 1)."""
    return torch.maximum(qn.abs(), torch.exp(-m)) + eps


def _segsum(x: Tensor) -> Tensor:
    """out[..., i, j] = sum_{j < s <= i} x[..., s] for i >= j, -inf above the diagonal.

    Summing each segment directly (rather than differencing one long cumsum) keeps the log forget products exact
    when the cumulative sum grows large in magnitude.
    """
    L = x.shape[-1]
    xx = x.unsqueeze(-1).expand(*x.shape, L)  # (..., L(s), L(j)) = x_s
    strict = torch.ones(L, L, dtype=torch.bool, device=x.device).tril(-1)
    xx = xx.masked_fill(~strict, 0.0)
    out = xx.cumsum(dim=-2)  # (..., i, j) = sum_{j < s <= i} x_s
    return out.masked_fill(~strict.logical_or(torch.eye(L, dtype=torch.bool, device=x.device)), float("-inf"))


def _log_weights(logf: Tensor, i: Tensor, exact: bool) -> tuple[Tensor, Tensor]:
    """log D (..., L, L) with log D_ij = sum_{j<s<=i} log f_s + i~_j (j <= i, else -inf), and b = cumsum(log f).

    `exact` sums each segment directly (for long sequences, where differencing one long cumsum loses precision);
    otherwise the within-segment cumsum is differenced, which is exact enough for chunk-length segments.
    """
    b = logf.cumsum(-1)
    if exact:
        log_d = _segsum(logf)
    else:
        L = logf.shape[-1]
        upper = torch.ones(L, L, dtype=torch.bool, device=logf.device).triu(1)
        log_d = (b.unsqueeze(-1) - b.unsqueeze(-2)).masked_fill(upper, float("-inf"))
    return log_d + i.unsqueeze(-2), b


class _Intra(torch.autograd.Function):
    """h over a segment of L positions that starts from the state (C0, n0, m0): the quadratic part of the parallel
    and chunkwise forms, with a hand-written backward (a few L x L elementwise passes instead of autograd's dozens).

    Forward, per segment (m and m0 carry no gradient):
        m_i  = max(b_i + m0, max_j log D_ij);   D = exp(log D - m);   w0 = exp(b + m0 - m)
        P    = (q k^T) * D;   num = P v + w0 * (q C0);   qn = P 1 + w0 * (q n0)
        h    = num / (max(|qn|, exp(-m)) + eps)
    """

    @staticmethod
    @_autocast_off
    def forward(ctx, q, k, v, logf, i, C0, n0, m0, eps: float, exact: bool):
        log_d, b = _log_weights(logf, i, exact)  # (..., L, L), (..., L)
        m_init = b + m0.unsqueeze(-1)
        m = torch.maximum(log_d.amax(-1), m_init)  # (..., L)
        d = torch.exp(log_d - m.unsqueeze(-1))
        w0 = torch.exp(m_init - m)
        P = (q @ k.transpose(-1, -2)) * d  # (..., L, L)
        qC0 = q @ C0  # (..., L, DV)
        qn0 = (q @ n0.unsqueeze(-1)).squeeze(-1)  # (..., L)
        num = P @ v + w0.unsqueeze(-1) * qC0
        qn = P.sum(-1) + w0 * qn0
        thr = torch.exp(-m)
        den = torch.maximum(qn.abs(), thr) + eps
        h = num / den.unsqueeze(-1)
        ctx.save_for_backward(q, k, v, C0, n0, P, d, w0, qn, thr, den, qC0, qn0, h)
        return h

    @staticmethod
    @_autocast_off
    def backward(ctx, dh):
        q, k, v, C0, n0, P, d, w0, qn, thr, den, qC0, qn0, h = ctx.saved_tensors
        dnum = dh / den.unsqueeze(-1)  # (..., L, DV)
        dden = -(dh * h).sum(-1) / den  # (..., L)
        # d max(|qn|, thr) / d|qn|: 1 where |qn| wins, 1/2 on a tie (as torch.maximum), 0 where the bound wins
        absqn = qn.abs()
        wins = (absqn > thr).to(qn.dtype) + 0.5 * (absqn == thr).to(qn.dtype)
        dqn = dden * torch.sign(qn) * wins
        dP = dnum @ v.transpose(-1, -2) + dqn.unsqueeze(-1)  # (..., L, L)
        dS = dP * d  # gradient of q k^T
        dlog_d = dP * P  # gradient of log D (zero above the diagonal, where P = 0)
        w0_dnum = w0.unsqueeze(-1) * dnum
        w0_dqn = w0 * dqn
        dq = dS @ k + w0_dnum @ C0.transpose(-1, -2) + w0_dqn.unsqueeze(-1) * n0.unsqueeze(-2)
        dk = dS.transpose(-1, -2) @ q
        dv = P.transpose(-1, -2) @ dnum
        dC0 = q.transpose(-1, -2) @ w0_dnum
        dn0 = (q.transpose(-1, -2) @ w0_dqn.unsqueeze(-1)).squeeze(-1)
        dm_init = ((dnum * qC0).sum(-1) + dqn * qn0) * w0
        col = dlog_d.sum(-2)  # (..., L): gradient of i~_j, and minus that of b_j
        db = dlog_d.sum(-1) - col + dm_init
        dlogf = db.flip(-1).cumsum(-1).flip(-1)  # b_t = sum_{s<=t} log f_s
        return dq, dk, dv, dlogf, col, dC0, dn0, None, None, None


def _intra(q, k, v, logf, i, C0, n0, m0, eps: float, exact: bool) -> Tensor:
    """Shapes: q, k (..., L, DQK) with k scaled; v (..., L, DV); logf, i (..., L); C0 (..., DQK, DV); n0 (..., DQK);
    m0 (...). Returns h (..., L, DV)."""
    return _Intra.apply(q, k, v, logf, i, C0, n0, m0.detach(), eps, exact)


class _Summary(NamedTuple):
    """What a segment of positions adds to the state, relative to the scale exp(m_loc)."""

    g: Tensor  # (...) total log forget over the segment
    m_loc: Tensor  # (...) max log weight of a position in the segment's end state
    C: Tensor  # (..., DQK, DV)
    n: Tensor  # (..., DQK)


def _summarise(k: Tensor, v: Tensor, logf: Tensor, i: Tensor) -> _Summary:
    """The segment's own contribution to the state at its end: sum_t exp(a_t - m_loc) k_t v_t^T with
    a_t = sum_{s>t} log f_s + i~_t, each a_t summed directly from the end (exact for long segments)."""
    incl = logf.flip(-1).cumsum(-1).flip(-1)  # (..., L): sum_{s>=t} log f_s
    a = torch.cat([incl[..., 1:], torch.zeros_like(incl[..., :1])], dim=-1) + i
    m_loc = a.amax(-1).detach()
    kw = k * torch.exp(a - m_loc.unsqueeze(-1)).unsqueeze(-1)  # (..., L, DQK)
    return _Summary(incl[..., 0], m_loc, kw.transpose(-1, -2) @ v, kw.sum(-2))


def _advance(state: MLSTMState, seg: _Summary) -> MLSTMState:
    """The state after a segment, from the state before it and the segment's summary."""
    m_new = torch.maximum(seg.g + state.m, seg.m_loc).detach()  # the stabiliser carries no gradient
    decay = torch.exp(seg.g + state.m - m_new)
    scale = torch.exp(seg.m_loc - m_new)
    return MLSTMState(
        decay[..., None, None] * state.C + scale[..., None, None] * seg.C,
        decay[..., None] * state.n + scale[..., None] * seg.n,
        m_new,
    )


def _addbmm_(acc: Tensor, a: Tensor, b: Tensor, low: bool) -> Tensor:
    """acc += a @ b in place; `low`: a and b are low-precision matmul operands, acc float32."""
    return acc.add_(torch.bmm(a, b)) if low else acc.baddbmm_(a, b)


class _Chunkwise(torch.autograd.Function):
    """The chunkwise form over NC chunks of L positions in one piece: segment summaries, the recurrence over chunk
    states and the intra-chunk quadratic part, with one hand-written backward (a reverse recurrence over the
    chunk-state gradients) instead of autograd through NC small steps. Every matrix product is an L x L, L x D or
    D x D batched matmul over all chunks at once (sizes the matmul library handles at full speed); the normaliser's
    products are elementwise passes. Per chunk (m, M carry no gradient):

        b = cumsum(log f);  r = i~ - b;  M_t = max(m0, max_{j<=t} r_j);  m_t = b_t + M_t
        D_tj = exp(r_j - M_t) (j <= t, else 0);  w0 = exp(m0 - M)      (= exp(log D_tj - m_t), exp(b + m0 - m))
        P = (q k^T) * D;  num = P v + w0 * (q C0);  qn = P 1 + w0 * (q . n0);  h = num / (max(|qn|, exp(-m)) + eps)
        a_t = sum_{s>t} log f_s + i~_t;  g = sum_s log f_s;  m' = max(g + m0, max_t a_t);  kw = k * exp(a - m')
        C' = exp(g + m0 - m') C0 + kw^T v;   n' = exp(g + m0 - m') n0 + kw^T 1

    With `mm_dtype` (autocast's bf16/fp16) the matmul operands are cast to it once each (names ending in _) and
    the products come back into float32 arithmetic by type promotion; states, gate exponentials and the
    normaliser stay float32.

    Shapes: q, k (N, NC, L, DQK) with k scaled; v (N, NC, L, DV); logf, i (N, NC, L); C_init (N, DQK, DV); n_init
    (N, DQK); m_init (N,). Saved for backward: O(S (L + D)) numbers plus NC chunk states, linear in S.
    """

    @staticmethod
    @_autocast_off
    def forward(ctx, q, k, v, logf, i, C_init, n_init, m_init, eps: float, mm_dtype: torch.dtype | None):
        N, NC, L, DQK = q.shape
        DV = v.shape[-1]
        BC = N * NC
        low = mm_dtype is not None

        def lo(t: Tensor) -> Tensor:  # a matmul operand
            return t.to(mm_dtype) if low else t

        # ---- stabilisers of the chunk states: a tiny max-plus recurrence over NC chunks
        incl = logf.flip(-1).cumsum(-1).flip(-1)  # (N, NC, L): sum_{s>=t} log f_s, summed from the end (exact)
        g = incl[..., 0]  # (N, NC)
        a = torch.cat([incl[..., 1:], torch.zeros_like(incl[..., :1])], dim=-1) + i  # (N, NC, L)
        m_loc = a.amax(-1)
        ms = [m_init]
        for c in range(NC):
            ms.append(torch.maximum(g[:, c] + ms[-1], m_loc[:, c]))
        m_all = torch.stack(ms, dim=1)  # (N, NC + 1)
        m_end = m_all[:, 1:]
        decay = torch.exp(g + m_all[:, :-1] - m_end)  # (N, NC)
        # ---- what each chunk adds to the state (already on the scale of the state after it), then the recurrence
        ew = torch.exp(a - m_end.unsqueeze(-1))  # (N, NC, L)
        kw = k * ew.unsqueeze(-1)  # (N, NC, L, DQK)
        q_, k_, v_, kw_ = (lo(t).view(BC, L, t.shape[-1]) for t in (q, k, v, kw))
        C_add = torch.bmm(kw_.transpose(1, 2), v_).view(N, NC, DQK, DV)
        n_add = kw.sum(-2)  # (N, NC, DQK)
        C0 = C_init.new_empty(N, NC, DQK, DV)  # the state each chunk starts from
        n0 = C_init.new_empty(N, NC, DQK)
        C0[:, 0], n0[:, 0] = C_init, n_init
        for c in range(NC - 1):
            dc = decay[:, c, None]
            torch.addcmul(C_add[:, c], dc[..., None], C0[:, c], out=C0[:, c + 1])
            torch.addcmul(n_add[:, c], dc, n0[:, c], out=n0[:, c + 1])
        C_fin = torch.addcmul(C_add[:, -1], decay[:, -1, None, None], C0[:, -1])
        n_fin = torch.addcmul(n_add[:, -1], decay[:, -1, None], n0[:, -1])
        # ---- intra-chunk part, every chunk at once from the state it starts from
        m0 = m_all[:, :NC, None]  # (N, NC, 1)
        b = logf.cumsum(-1)
        r = i - b
        M = torch.maximum(r.cummax(-1).values, m0)  # (N, NC, L)
        upper = torch.ones(L, L, dtype=torch.bool, device=q.device).triu(1)
        d = (r.unsqueeze(-2) - M.unsqueeze(-1)).masked_fill_(upper, float("-inf")).exp_().view(BC, L, L)
        w0 = torch.exp(m0 - M).view(BC, L)
        S = torch.bmm(q_, k_.transpose(1, 2))  # (BC, L, L)
        P = S * d if low else S.mul_(d)
        P_ = lo(P)
        C0_ = lo(C0).view(BC, DQK, DV)
        qC = torch.bmm(q_, C0_)  # (BC, L, DV)
        wqC = qC * w0.unsqueeze(-1) if low else qC.mul_(w0.unsqueeze(-1))  # w0 * (q C0)
        num = wqC + torch.bmm(P_, v_) if low else torch.baddbmm(wqC, P, v_)
        qn0 = (q * n0.unsqueeze(-2)).sum(-1).view(BC, L)  # q . n0
        qn = P.sum(-1) + w0 * qn0
        thr = torch.exp(-(b + M)).view(BC, L)
        den = torch.maximum(qn.abs(), thr) + eps
        h = num.div_(den.unsqueeze(-1))  # (BC, L, DV)
        ctx.low = low
        ctx.save_for_backward(q_, k_, v_, kw_, C0, C0_, n0, decay, ew, d, P_, w0, wqC, qn0, qn, thr, den, h)
        m_fin = m_all[:, -1]
        ctx.mark_non_differentiable(m_fin)
        return h.view(N, NC, L, DV), C_fin, n_fin, m_fin

    @staticmethod
    @_autocast_off
    def backward(ctx, dh, dC_fin, dn_fin, _dm):
        q_, k_, v_, kw_, C0, C0_, n0, decay, ew, d, P_, w0, wqC, qn0, qn, thr, den, h = ctx.saved_tensors
        low = ctx.low
        N, NC, DQK, DV = C0.shape
        BC, L = d.shape[:2]

        def lo(t: Tensor) -> Tensor:
            return t.to(q_.dtype) if low else t

        # ---- through h = num / den, den = max(|qn|, thr) + eps
        dh = dh.reshape(BC, L, DV)
        dnum = dh / den.unsqueeze(-1)  # (BC, L, DV)
        dden = -(dh * h).sum(-1) / den  # (BC, L)
        # d max(|qn|, thr) / d|qn|: 1 where |qn| wins, 1/2 on a tie (as torch.maximum), 0 where the bound wins
        absqn = qn.abs()
        wins = (absqn > thr).to(qn.dtype) + 0.5 * (absqn == thr).to(qn.dtype)
        dqn = dden * torch.sign(qn) * wins  # (BC, L)
        # ---- intra-chunk part
        dnum_ = lo(dnum)
        dP = torch.bmm(dnum_, v_.transpose(1, 2))  # (BC, L, L)
        dP = dP + dqn.unsqueeze(-1) if low else dP.add_(dqn.unsqueeze(-1))
        dlogD = dP * P_  # gradient of the log weights (zero above the diagonal, where P = 0)
        dS = dP.mul_(d)  # gradient of q k^T
        dS_ = lo(dS)
        wd = dnum * w0.unsqueeze(-1)  # (BC, L, DV)
        wd_ = lo(wd)
        wdqn = dqn * w0  # (BC, L)
        n0b = n0.view(BC, 1, DQK)
        dq = torch.bmm(wd_, C0_.transpose(1, 2))
        dq = _addbmm_(dq.float() if low else dq, dS_, k_, low).addcmul_(wdqn.unsqueeze(-1), n0b)  # (BC, L, DQK)
        dC0 = torch.bmm(q_.transpose(1, 2), wd_).view(N, NC, DQK, DV)
        dn0 = (q_ * wdqn.unsqueeze(-1)).sum(-2).view(N, NC, DQK)
        dw0 = (dnum * wqC).sum(-1) + wdqn * qn0  # through w0 = exp(b + m0 - m)
        col = dlogD.sum(-2).view(N, NC, L)  # gradient of i~_j, and minus that of b_j
        db = (dlogD.sum(-1) + dw0).view(N, NC, L) - col
        # ---- reverse recurrence over chunk states: G_c = dS0_c + decay_c G_{c+1}, from the final state's gradient
        GC = torch.empty(N, NC, DQK, DV, dtype=C0.dtype, device=C0.device)  # gradient of C after each chunk
        Gn = torch.empty(N, NC, DQK, dtype=C0.dtype, device=C0.device)  # gradient of n after each chunk
        GC[:, NC - 1] = 0 if dC_fin is None else dC_fin
        Gn[:, NC - 1] = 0 if dn_fin is None else dn_fin
        for c in range(NC - 1, 0, -1):
            dc = decay[:, c, None]
            torch.addcmul(dC0[:, c], dc[..., None], GC[:, c], out=GC[:, c - 1])
            torch.addcmul(dn0[:, c], dc, Gn[:, c], out=Gn[:, c - 1])
        dC_init = torch.addcmul(dC0[:, 0], decay[:, 0, None, None], GC[:, 0])
        dn_init = torch.addcmul(dn0[:, 0], decay[:, 0, None], Gn[:, 0])
        GCb = GC.view(BC, DQK, DV)
        # through decay = exp(g + m0 - m'): one dot product <G, state> per chunk
        dg = decay * (torch.linalg.vecdot(GC.flatten(-2), C0.flatten(-2)) + (Gn * n0).sum(-1))
        # ---- through the chunk's own addition kw^T v (and kw^T 1) to the state
        GC_ = lo(GCb)
        dkw = torch.bmm(v_, GC_.transpose(1, 2))  # (BC, L, DQK)
        dkw = dkw + Gn.view(BC, 1, DQK) if low else dkw.add_(Gn.view(BC, 1, DQK))
        dv = torch.bmm(kw_, GC_)
        dv = _addbmm_(dv.float() if low else dv, P_.transpose(1, 2), dnum_, low)  # (BC, L, DV)
        da = (dkw * kw_).sum(-1).view(N, NC, L)  # through ew = exp(a - m')
        dk = _addbmm_(dkw.mul_(ew.view(BC, L, 1)), dS_.transpose(1, 2), q_, low)
        # ---- to the gates: a_t = sum_{s>t} log f_s + i~_t, g = sum_s log f_s, b_t = sum_{s<=t} log f_s
        di = col + da
        dlogf = db.flip(-1).cumsum(-1).flip(-1) + (da.cumsum(-1) - da) + dg.unsqueeze(-1)
        return (dq.view(N, NC, L, DQK), dk.view(N, NC, L, DQK), dv.view(N, NC, L, DV), dlogf, di, dC_init, dn_init,
                None, None, None)


def _chunks(q, k, v, logf, i, C, n, m, eps: float) -> tuple[Tensor, MLSTMState]:
    """Run _Chunkwise on (B, NH, NC, L, .) chunk views; the state as (C, n, m). Returns h (B, NH, NC * L, DV).

    Under bf16/fp16 autocast the matmuls take operands in the autocast dtype, as autocast would give any matmul,
    while the states, the gates' exponentials and the normaliser stay float32."""
    B, NH, NC, L, DQK = q.shape
    mm_dtype = _autocast_mm_dtype(C)
    DV = v.shape[-1]
    N = B * NH
    h, C_fin, n_fin, m_fin = _Chunkwise.apply(
        *(t.reshape(N, NC, L, -1).contiguous() for t in (q, k, v)),
        *(t.reshape(N, NC, L).contiguous() for t in (logf, i)),
        C.reshape(N, DQK, DV), n.reshape(N, DQK), m.detach().reshape(N), eps, mm_dtype)
    return h.view(B, NH, NC * L, DV), MLSTMState(C_fin.view(B, NH, DQK, DV), n_fin.view(B, NH, DQK),
                                                 m_fin.view(B, NH))


def _autocast_mm_dtype(t: Tensor) -> torch.dtype | None:
    """The low-precision dtype the chunkwise matmuls use under autocast (None outside autocast or for float64)."""
    dev = t.device.type
    if t.dtype == torch.float64 or not torch.is_autocast_enabled(dev):
        return None
    return torch.get_autocast_dtype(dev)


def _begin(q, k, v, i, f, initial_state, forget_gate, step=False, keep_low=False):
    """Validate, upcast to the state dtype, scale the keys and take log forget gates. With `keep_low` (the chunkwise
    form), q, k, v that arrive in autocast's dtype stay in it: they are only ever matmul operands there."""
    _check_inputs(q, k, v, i, f, step=step)
    mm_dtype = _autocast_mm_dtype(v) if keep_low else None
    dt = state_dtype(v.dtype)
    B, NH, DQK, DV = q.shape[0], q.shape[1], q.shape[-1], v.shape[-1]
    state = _prepare_state(initial_state, B, NH, DQK, DV, dt, q.device)
    mdt = mm_dtype if mm_dtype is not None and q.dtype == k.dtype == v.dtype == mm_dtype else dt
    qf, kf, vf = q.to(mdt), k.to(mdt) * (DQK**-0.5), v.to(mdt)
    return qf, kf, vf, i.to(dt), log_forget(f.to(dt), forget_gate), state


def _finish(h: Tensor, out_dtype: torch.dtype, state: MLSTMState | None, return_state: bool):
    h = h.to(out_dtype)
    return (h, state) if return_state else h


# ----------------------------------------------------------------------------------------------------------------------
# the three forms


def mlstm_parallel(
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
) -> Tensor | tuple[Tensor, MLSTMState]:
    """Quadratic (S x S) form: the reference for short sequences. Memory O(S^2) per head."""
    qf, kf, vf, i_, logf, st = _begin(q, k, v, i, f, initial_state, forget_gate)
    h = _intra(qf, kf, vf, logf, i_, st.C, st.n, st.m, eps, exact=True)
    final = _advance(st, _summarise(kf, vf, logf, i_)) if return_state else None
    return _finish(h, v.dtype, final, return_state)


def mlstm_chunkwise(
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
    chunk_size: int = 64,
) -> Tensor | tuple[Tensor, MLSTMState]:
    """Chunkwise-parallel form: a recurrence over chunk states, quadratic only inside a chunk.

    Time O(S * chunk_size), memory linear in S. Any S: the full chunks are processed together, a last partial chunk
    runs the same intra-chunk computation on its own length (no padding).
    """
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    qf, kf, vf, i_, logf, st = _begin(q, k, v, i, f, initial_state, forget_gate, keep_low=True)
    B, NH, S, DQK = qf.shape
    DV = vf.shape[-1]
    L = chunk_size
    NC = S // L
    full = NC * L
    outs = []
    if NC > 0:  # the full chunks, as (B, NH, NC, L, .) views
        h, st = _chunks(qf[:, :, :full].reshape(B, NH, NC, L, DQK), kf[:, :, :full].reshape(B, NH, NC, L, DQK),
                        vf[:, :, :full].reshape(B, NH, NC, L, DV), logf[:, :, :full].reshape(B, NH, NC, L),
                        i_[:, :, :full].reshape(B, NH, NC, L), *st, eps)
        outs.append(h)
    if full < S:  # the last, partial chunk: one chunk of its own length (no padding)
        R = S - full
        sl = slice(full, S)
        h, st = _chunks(qf[:, :, sl].reshape(B, NH, 1, R, DQK), kf[:, :, sl].reshape(B, NH, 1, R, DQK),
                        vf[:, :, sl].reshape(B, NH, 1, R, DV), logf[:, :, sl].reshape(B, NH, 1, R),
                        i_[:, :, sl].reshape(B, NH, 1, R), *st, eps)
        outs.append(h)
    h = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return _finish(h, v.dtype, st, return_state)


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
    check: bool = True,
) -> tuple[Tensor, MLSTMState]:
    """One time step. q, k (B, NH, DQK); v (B, NH, DV); i, f (B, NH). Returns h (B, NH, DV) and the new state.

    `check=False` is the hot path of token-by-token generation, for callers that validated the shapes once: it
    skips the input checks and expects `state` given, as (C, n, m), and every input in the state's dtype.
    """
    if not check:
        out = _native_step(q, k, v, i, f, state, eps, forget_gate)  # inference: one native call
        if out is not None:
            return out
        return _step_core(q, k * (q.shape[-1] ** -0.5), v, i, log_forget(f, forget_gate), state, eps)
    qf, kf, vf, i_, logf, st = _begin(q, k, v, i, f, state, forget_gate, step=True)
    h, new = _step_core(qf, kf, vf, i_, logf, st, eps)
    return h.to(v.dtype), new


def _native_step(q, k, v, i, f, state, eps: float, forget_gate: ForgetGate) -> tuple[Tensor, MLSTMState] | None:
    """One inference step in the native library (ops/native/mlstm.c); None when it does not apply (a gradient is
    needed, no library, not CPU float32/float64, or while torch.compile traces, which fuses the PyTorch step
    better)."""
    lib = native.usable_for_inference(q, k, v, i, f, *state)
    if lib is None:
        return None
    B, NH, DQK = q.shape
    DV = v.shape[-1]
    C1 = torch.empty(B, NH, DQK, DV, dtype=q.dtype)
    n1 = torch.empty(B, NH, DQK, dtype=q.dtype)
    m1 = torch.empty(B, NH, dtype=q.dtype)
    h = torch.empty(B, NH, DV, dtype=q.dtype)
    native.call(lib, "mlstm_step", q.dtype, (B * NH, DQK, DV, forget_gate == "exp", eps),
                (*(t.contiguous() for t in (q, k, v, i, f, *state)), C1, n1, m1, h))
    return h, MLSTMState(C1, n1, m1)


def _step_core(q, k, v, i, logf, st: MLSTMState, eps: float) -> tuple[Tensor, MLSTMState]:
    """The recurrence for one step, in as few tensor operations as possible (it runs once per generated token)."""
    C, n, m = st
    lm = logf + m.detach()  # (B, NH)
    m_new = torch.maximum(lm, i).detach()
    fp = torch.exp(lm - m_new).unsqueeze(-1)  # (B, NH, 1)
    kip = k * torch.exp(i - m_new).unsqueeze(-1)  # (B, NH, DQK)
    n = torch.addcmul(kip, n, fp)
    C = torch.addcmul(C * fp.unsqueeze(-1), kip.unsqueeze(-1), v.unsqueeze(-2))  # (B, NH, DQK, DV)
    num = torch.matmul(q.unsqueeze(-2), C).squeeze(-2)  # (B, NH, DV)
    qn = torch.linalg.vecdot(q, n)
    h = num / _denominator(qn, m_new, eps).unsqueeze(-1)
    return h, MLSTMState(C, n, m_new)


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
) -> Tensor | tuple[Tensor, MLSTMState]:
    """Step-by-step form: the literal recurrence, one step per position. O(S) time, O(1) state."""
    qf, kf, vf, i_, logf, st = _begin(q, k, v, i, f, initial_state, forget_gate)
    hs = []
    for t in range(qf.shape[2]):
        h, st = _step_core(qf[:, :, t], kf[:, :, t], vf[:, :, t], i_[:, :, t], logf[:, :, t], st, eps)
        hs.append(h)
    return _finish(torch.stack(hs, dim=2), v.dtype, st, return_state)


MLSTM_FORMS = {"parallel": mlstm_parallel, "chunkwise": mlstm_chunkwise, "recurrent": mlstm_recurrent}


def mlstm(q, k, v, i, f, *, form: str = "chunkwise", chunk_size: int = 64, **kwargs):
    """Dispatch to one of the forms by name ('parallel', 'chunkwise', 'recurrent')."""
    if form not in MLSTM_FORMS:
        raise ValueError(f"form must be one of {sorted(MLSTM_FORMS)}, got {form!r}")
    if form == "chunkwise":
        kwargs["chunk_size"] = chunk_size
    return MLSTM_FORMS[form](q, k, v, i, f, **kwargs)


__all__ = [
    "MLSTMState",
    "mlstm",
    "mlstm_parallel",
    "mlstm_chunkwise",
    "mlstm_recurrent",
    "mlstm_step",
    "zero_state",
    "log_forget",
    "state_dtype",
]

"""The chunkwise-parallel mLSTM form: a recurrence over chunk states, quadratic only inside a chunk (docs/mlstm.md,
"Chunkwise form"). The training hot path: one custom autograd Function with a hand-written backward, tested against
`mlstm_reference` (values and gradients).

Shapes: q, k (B, NH, S, DQK); v (B, NH, S, DV); i, f (B, NH, S); mask (B, S). State C (B, NH, DQK, DV), n (B, NH, DQK),
m (B, NH), float32 (float64 for float64 inputs); h comes back in v's dtype. Under bf16/fp16 autocast the matmul
operands are in the autocast dtype (as autocast gives any matmul) while the states, the gate exponentials and the
normaliser stay float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..gates import ForgetGate, autocast_off
from .common import MLSTMState, autocast_mm_dtype, big, check_chunk_size, chunk_states, finish, prepare

# log weights below this are flushed to a weight of exactly 0 (their exp would be a float32 subnormal, below 1e-38
# of the row's largest weight, 1): exp of subnormal results and of -inf takes a slow path on CPUs (3-30x), and the
# clamp also turns -inf into an exact 0 without a NaN
_LOG_FLOOR = {torch.float32: -87.0, torch.float64: -708.0}


def _log_weights_t(logf: Tensor, i: Tensor) -> Tensor:
    """The within-chunk log weights, transposed: out[..., j, t] = i~_j + sum_{j<s<=t} log f_s for t >= j, -inf for
    t < j. Each entry is its own segment sum (a cumulative sum along t that starts at j), never a difference of two
    long cumulative sums, so a large log forget value (or -inf, a reset) costs no precision to any other entry.

    logf, i (BC, L) -> (BC, L, L)."""
    BC, L = logf.shape
    A = logf.unsqueeze(-2).expand(BC, L, L).clone().triu_(1)  # [j, t] = log f_t for t > j, else 0
    A.diagonal(dim1=-2, dim2=-1).copy_(i)
    A.cumsum_(-1)
    below = torch.zeros(L, L, dtype=A.dtype, device=A.device).masked_fill_(
        torch.ones(L, L, dtype=torch.bool, device=A.device).tril_(-1), -math.inf)
    return A.add_(below)


def _exp_weights_(x: Tensor) -> Tensor:
    """exp(x) in place for x <= 0, with x below _LOG_FLOOR (and -inf) giving exactly 0 (see _LOG_FLOOR)."""
    lo = _LOG_FLOOR[x.dtype]
    cut = math.exp(lo) * (1 + 2**-16)  # just above exp(lo) as any exp implementation rounds it
    return x.clamp_min_(lo).exp_().sub_(cut).clamp_min_(0.0)


def _addbmm_(acc: Tensor, a: Tensor, b: Tensor, low: bool) -> Tensor:
    """acc += a @ b in place; `low`: a and b are low-precision matmul operands, acc float32."""
    return acc.add_(torch.bmm(a, b)) if low else acc.baddbmm_(a, b)


class _Chunkwise(torch.autograd.Function):
    """The chunkwise form over NC chunks of L positions in one piece: the chunk-state summary and recurrence
    (common.chunk_states), then the intra-chunk quadratic part of every chunk at once, with one hand-written backward
    (a reverse recurrence over the chunk-state gradients) instead of autograd through NC small steps. Every matrix
    product is an L x L, L x D or D x D batched matmul over all chunks. Per chunk, from its start state (C0, n0, m0)
    (m carries no gradient):

        log D_tj = i~_j + sum_{j<s<=t} log f_s  (j <= t);   b_t = sum_{s<=t} log f_s
        m_t = max(b_t + m0, max_j log D_tj);   D = exp(log D - m);   w0 = exp(b + m0 - m)
        P = (q k^T) * D;   num = P v + w0 * (q C0);   qn = P 1 + w0 * (q . n0);   h = num / (max(|qn|, exp(-m)) + eps)

    The L x L matrices are kept transposed ([j, t]: the log weights are built as cumulative sums along t), and each
    row of D is exponentiated against its own largest entry, then scaled by s_t = exp(max_j log D_tj - m_t).

    With `mm_dtype` (autocast's bf16/fp16) the matmul operands are cast to it once each (names ending in _) and the
    products come back into float32 arithmetic by type promotion. Inputs: q, k (N, NC, L, DQK) with k scaled;
    v (N, NC, L, DV); logf, i (N, NC, L) with i <= BIG; C_init (N, DQK, DV); n_init (N, DQK); m_init (N,).
    Saved for backward: O(S (L + D)) numbers plus NC chunk states, linear in S.
    """

    @staticmethod
    @autocast_off
    def forward(ctx, q, k, v, logf, i, C_init, n_init, m_init, eps: float, mm_dtype: torch.dtype | None):
        N, NC, L, DQK = q.shape
        DV = v.shape[-1]
        BC = N * NC
        low = mm_dtype is not None
        lim = big(logf.dtype)

        def lo(t: Tensor) -> Tensor:  # a matmul operand
            return t.to(mm_dtype) if low else t

        q_, k_, v_ = (lo(t).reshape(BC, L, t.shape[-1]) for t in (q, k, v))
        # ---- the state each chunk starts from, and the final state
        cs = chunk_states(k, v_.view(N, NC, L, DV), logf, i, C_init, n_init, m_init.clamp(-lim, lim), mm_dtype)
        # ---- intra-chunk part, every chunk at once from the state it starts from
        m0 = cs.m0.reshape(BC, 1)
        b = logf.cumsum(-1).reshape(BC, L)
        logd_t = _log_weights_t(logf.reshape(BC, L), i.reshape(BC, L))  # (BC, L(j), L(t))
        m_in = logd_t.amax(-2)  # (BC, L): the largest within-chunk log weight of each row
        m = torch.maximum(m_in, b + m0).clamp_min_(-lim)  # the stabiliser (the init state's weight included)
        m_in = m_in.clamp_min_(-lim)
        # D = s * D' with D' = exp(log D - m_in) (largest entry 1) and s = exp(m_in - m): flushing D' below
        # exp(_LOG_FLOOR) never loses a weight that matters, even where the initial state's weight dominates
        d_t = _exp_weights_(logd_t.sub_(m_in.unsqueeze(-2))).mul_(torch.exp(m_in - m).unsqueeze(-2))
        w0 = torch.exp(b + m0 - m)
        S_t = torch.bmm(k_, q_.transpose(1, 2))  # [j, t] = k_j . q_t
        P_t = S_t * d_t if low else S_t.mul_(d_t)  # P = (q k^T) * D, transposed
        P_t_ = lo(P_t)
        C0_ = lo(cs.C0).view(BC, DQK, DV)
        qC = torch.bmm(q_, C0_)  # (BC, L, DV)
        wqC = qC * w0.unsqueeze(-1) if low else qC.mul_(w0.unsqueeze(-1))  # w0 * (q C0)
        num = wqC + torch.bmm(P_t_.transpose(1, 2), v_) if low else torch.baddbmm(wqC, P_t.transpose(1, 2), v_)
        qn0 = (q * cs.n0.unsqueeze(-2)).sum(-1).view(BC, L)  # q . n0
        qn = P_t.sum(-2) + w0 * qn0
        thr = torch.exp(-m)
        den = torch.maximum(qn.abs(), thr) + eps
        h = num.div_(den.unsqueeze(-1))  # (BC, L, DV)
        ctx.low = low
        ctx.save_for_backward(q_, k_, v_, cs.kw, cs.C0, C0_, cs.n0, cs.decay, cs.ew, d_t, P_t_, w0, wqC, qn0, qn,
                              thr, den, h)
        ctx.mark_non_differentiable(cs.m)
        return h.view(N, NC, L, DV), cs.C, cs.n, cs.m

    @staticmethod
    @autocast_off
    def backward(ctx, dh, dC_fin, dn_fin, _dm):
        q_, k_, v_, kw_, C0, C0_, n0, decay, ew, d_t, P_t_, w0, wqC, qn0, qn, thr, den, h = ctx.saved_tensors
        low = ctx.low
        N, NC, DQK, DV = C0.shape
        BC, L = d_t.shape[:2]

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
        # ---- intra-chunk part, transposed ([j, t])
        dnum_ = lo(dnum)
        dP_t = torch.bmm(v_, dnum_.transpose(1, 2))  # (BC, L, L)
        dP_t = dP_t + dqn.unsqueeze(-2) if low else dP_t.add_(dqn.unsqueeze(-2))
        dlogd_t = dP_t * P_t_  # gradient of the log weights (zero for t < j, where P = 0)
        dS_t = dP_t.mul_(d_t)  # gradient of k_j . q_t
        dS_t_ = lo(dS_t)
        wd = dnum * w0.unsqueeze(-1)  # (BC, L, DV)
        wd_ = lo(wd)
        wdqn = dqn * w0  # (BC, L)
        n0b = n0.view(BC, 1, DQK)
        dq = torch.bmm(wd_, C0_.transpose(1, 2))
        dq = _addbmm_(dq.float() if low else dq, dS_t_.transpose(1, 2), k_, low).addcmul_(wdqn.unsqueeze(-1), n0b)
        dC0 = torch.bmm(q_.transpose(1, 2), wd_).view(N, NC, DQK, DV)
        dn0 = (q_ * wdqn.unsqueeze(-1)).sum(-2).view(N, NC, DQK)
        dw0 = (dnum * wqC).sum(-1) + wdqn * qn0  # through w0 = exp(b + m0 - m)
        col = dlogd_t.sum(-1).view(N, NC, L)  # gradient of i~_j, and minus that of b_j
        db = (dlogd_t.sum(-2) + dw0).view(N, NC, L) - col
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
        dv = _addbmm_(dv.float() if low else dv, P_t_, dnum_, low)  # (BC, L, DV)
        da = (dkw * kw_).sum(-1).view(N, NC, L)  # through ew = exp(a - m')
        dk = _addbmm_(dkw.mul_(ew.view(BC, L, 1)), dS_t_, q_, low)
        # ---- to the gates: a_t = sum_{s>t} log f_s + i~_t, g = sum_s log f_s, b_t = sum_{s<=t} log f_s
        di = col + da
        da_before = torch.cat([torch.zeros_like(da[..., :1]), da[..., :-1].cumsum(-1)], dim=-1)  # sum_{t<s} da_t
        dlogf = db.flip(-1).cumsum(-1).flip(-1) + da_before + dg.unsqueeze(-1)
        return (dq.view(N, NC, L, DQK), dk.view(N, NC, L, DQK), dv.view(N, NC, L, DV), dlogf, di, dC_init, dn_init,
                None, None, None)


def run_chunks(q, k, v, logf, i, state: MLSTMState, eps: float, L: int, mm_dtype) -> tuple[Tensor, MLSTMState]:
    """The full chunks of L positions as one _Chunkwise call, a last partial chunk (S not a multiple of L) as a
    second call of one chunk of its own length (no padding). Inputs prepared (common.prepare); h in the state dtype.
    """
    B, NH, S, DQK = q.shape
    DV = v.shape[-1]
    N = B * NH
    NC, R = divmod(S, L)
    outs = []
    st = state
    for start, nc, ln in ((0, NC, L), (NC * L, 1 if R else 0, R)):
        if nc == 0:
            continue
        sl = slice(start, start + nc * ln)
        h, C, n, m = _Chunkwise.apply(
            *(t[:, :, sl].reshape(N, nc, ln, t.shape[-1]).contiguous() for t in (q, k, v)),
            *(t[:, :, sl].reshape(N, nc, ln).contiguous() for t in (logf, i)),
            st.C.reshape(N, DQK, DV), st.n.reshape(N, DQK), st.m.reshape(N), eps, mm_dtype)
        outs.append(h.view(B, NH, nc * ln, DV))
        st = MLSTMState(C.view(B, NH, DQK, DV), n.view(B, NH, DQK), m.view(B, NH))
    return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)), st


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
    mask: Tensor | None = None,
    chunk_size: int = 64,
) -> Tensor | tuple[Tensor, MLSTMState]:
    """Chunkwise-parallel form (docs/mlstm.md): a recurrence over chunk states, quadratic only inside a chunk.

    Time O(S * chunk_size), memory linear in S. Any S: the full chunks are processed together, a last partial chunk
    runs the same computation on its own length. `mask` (B, S) bool, True = a real step; at a masked step the state
    passes unchanged and h is what the unchanged state gives (callers ignore it). Returns h (B, NH, S, DV), and the
    final state with `return_state=True`.
    """
    check_chunk_size(chunk_size)
    qf, kf, vf, i_, logf, st = prepare(q, k, v, i, f, initial_state, forget_gate, eps, mask, keep_low=True)
    h, st = run_chunks(qf, kf, vf, logf, i_, st, float(eps), int(chunk_size), autocast_mm_dtype(st.C))
    return finish(h, v.dtype, st, return_state)

"""The sLSTM over a sequence, fast (docs/slstm.md): one autograd Function with a hand-written backward through time,
its two time loops in C (ops/native) when the library is available, else as PyTorch ops written in place.

Layout inside: gates gx (S, NH, B, 4 DH); states of every step, index 0 the initial state, as cn (S + 1, 2, NH, B,
DH) (c and n side by side: one multiply-add updates both), m and h (S + 1, NH, B, DH), so that a step's recurrent
matmul is one baddbmm straight into the gate layout. (The outputs are views of h only, and the final state is
copied out, so that the caller's tensors do not keep every step's c, n and m alive.) Every state is saved; the
backward first computes the pointwise derivatives of all steps at once (cell.cell_backward_factors), then runs only
the carries (dc, dn, dh) and the recurrent matmul backwards in time. Both compute the function `slstm_reference`
defines, and are tested against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import native
from ..gates import ForgetGate, autocast_off, state_dtype
from .cell import SLSTMState, cell_backward_factors
from .checks import check_inputs, prepare_state


def _forward_loop(gx: Tensor, R: Tensor, cn: Tensor, m: Tensor, h: Tensor, raws: Tensor, keep: Tensor | None,
                  forget_gate: ForgetGate) -> None:
    """The forward steps as PyTorch ops, filling the states of steps 1..S and raws in place (no autograd here).

    The step of cell.slstm_cell, rearranged for few operator calls (each costs microseconds, far more than its
    arithmetic here): the per-step views are made once, before the loop; i' and f' are computed in one buffer, c
    and n in one multiply-add; the test for an empty state of step t + 1 is the one that zeroes step t's h; no
    tensor is allocated per step but the forget gate's log."""
    S, NH, B, G = gx.shape
    DH = G // 4
    fin = torch.finfo(gx.dtype)
    exps = torch.empty(2, NH, B, DH, dtype=gx.dtype)  # exponents, then gates: (i', f')
    ip, fp = exps.unbind(0)
    zs = torch.ones(2, NH, B, DH, dtype=gx.dtype)  # (tanh z~, 1): c and n get f' (c, n) + i' (tanh z~, 1)
    empty = cn[0, 1] == 0  # (NH, B, DH): the state before step t is empty (n = 0)
    gxs, raw_s, cn_s, m_s, h_s = gx.unbind(0), raws.unbind(0), cn.unbind(0), m.unbind(0), h.unbind(0)
    c_s, n_s = cn[:, 0].unbind(0), cn[:, 1].unbind(0)
    i_s, f_s, z_s, o_s = (raws[..., k * DH:(k + 1) * DH].unbind(0) for k in range(4))
    for t in range(S):
        torch.baddbmm(gxs[t], h_s[t], R, out=raw_s[t])  # (NH, B, 4 DH)
        i, m1, h1, n1 = i_s[t], m_s[t + 1], h_s[t + 1], n_s[t + 1]
        # log f + m_{t-1} (gates.log_forget, written to allocate one tensor)
        lm = F.logsigmoid(f_s[t]).add_(m_s[t]) if forget_gate == "sigmoid" else torch.add(f_s[t], m_s[t])
        torch.maximum(lm, i, out=m1)
        torch.where(empty, i, m1, out=m1).clamp_(fin.min, fin.max)
        torch.sub(i, m1, out=ip)
        torch.sub(lm, m1, out=fp)
        exps.clamp_(max=0.0).exp_()
        torch.tanh(z_s[t], out=zs[0])
        torch.mul(cn_s[t], fp, out=cn_s[t + 1]).addcmul_(zs, ip)
        torch.eq(n1, 0, out=empty)
        torch.sigmoid(o_s[t], out=h1).mul_(c_s[t + 1]).div_(n1).masked_fill_(empty, 0.0)
        if keep is not None:  # padding: the whole state carries over
            for x in (cn_s, m_s, h_s):
                torch.where(keep[t], x[t + 1], x[t], out=x[t + 1])
            torch.eq(n1, 0, out=empty)


def _backward_loop(dH: Tensor | None, R: Tensor, fac: dict[str, Tensor], cn: Tensor, pad: Tensor | None,
                   dc: Tensor, dn: Tensor, dh_rec: Tensor, dgx: Tensor) -> Tensor:
    """The carries of the backward as PyTorch ops: dc, dn updated in place, dgx filled; returns dh_rec at t = 0.
    At a padded step the factors are those of the identity (cell factors 0, f' = 1) and h's cotangent passes on.
    As in the forward, the per-step views are made once."""
    S, DH = dgx.shape[0], dgx.shape[-1] // 4
    Rt = R.transpose(1, 2)  # (NH, 4 DH, DH)
    f = {k: v.unbind(0) for k, v in fac.items()}
    c_s, n_s = cn[:, 0].unbind(0), cn[:, 1].unbind(0)
    dg_s = dgx.unbind(0)
    di_s, df_s, dz_s, do_s = (dgx[..., k * DH:(k + 1) * DH].unbind(0) for k in range(4))
    dH_s = None if dH is None else dH.unbind(0)
    pad_s = None if pad is None else pad.unbind(0)
    for t in range(S - 1, -1, -1):
        dh = dh_rec if dH_s is None else dH_s[t] + dh_rec
        dc.addcmul_(dh, f["h_over_c"][t])
        dn.addcmul_(dh, f["h_over_n"][t], value=-1.0)
        torch.mul(dc, f["z"][t], out=di_s[t]).add_(dn).mul_(f["ip"][t])
        torch.mul(dc, c_s[t], out=df_s[t]).addcmul_(dn, n_s[t]).mul_(f["df"][t])
        torch.mul(dc, f["dz"][t], out=dz_s[t])
        torch.mul(dh, f["do"][t], out=do_s[t])
        dc.mul_(f["fp"][t])
        dn.mul_(f["fp"][t])
        dh_rec = torch.bmm(dg_s[t], Rt) if pad_s is None else torch.baddbmm(dh * pad_s[t], dg_s[t], Rt)
    return dh_rec


def _factors(raws: Tensor, cn: Tensor, m: Tensor, h: Tensor, keep: Tensor | None,
             forget_gate: ForgetGate) -> dict[str, Tensor]:
    """cell_backward_factors for all steps, (S, NH, B, DH) each; at padded steps those of the identity."""
    fac = cell_backward_factors(*raws.chunk(4, dim=-1), cn[:-1, 0], cn[:-1, 1], m[:-1], m[1:], cn[1:, 0], cn[1:, 1],
                                h[1:], forget_gate)
    if keep is not None:
        fac = {k: torch.where(keep, v, 1.0 if k == "fp" else 0.0) for k, v in fac.items()}
    return fac


class _Sequence(torch.autograd.Function):
    """The recurrence over S steps with a hand-written backward through time (module docstring)."""

    @staticmethod
    @autocast_off
    def forward(ctx, gx, R, c0, n0, m0, h0, mask, forget_gate):
        S, NH, B, G = gx.shape
        gx, R = gx.contiguous(), R.contiguous()
        new = dict(dtype=gx.dtype, device=gx.device)
        cn = torch.empty(S + 1, 2, NH, B, G // 4, **new)
        m, h = torch.empty(S + 1, NH, B, G // 4, **new), torch.empty(S + 1, NH, B, G // 4, **new)
        cn[0, 0], cn[0, 1], m[0], h[0] = c0, n0, m0, h0
        raws = torch.empty_like(gx)  # (S, NH, B, 4 DH): the total pre-activations, for the backward
        lib = native.usable(gx, R)
        if lib is not None:
            native.call(lib, "slstm_forward", gx.dtype, (S, NH, B, G // 4, forget_gate == "exp"),
                        (gx, R, mask, cn, m, h, raws))
        else:
            keep = None if mask is None else mask.view(S, 1, B, 1)
            _forward_loop(gx, R, cn, m, h, raws, keep, forget_gate)
        ctx.forget_gate = forget_gate
        ctx.save_for_backward(R, raws, cn, m, h, mask)
        m_last = m[S].clone()
        ctx.mark_non_differentiable(m_last)  # the stabiliser
        return h[1:], cn[S, 0].clone(), cn[S, 1].clone(), m_last, h[S].clone()

    @staticmethod
    @autocast_off
    def backward(ctx, dH, dc_T, dn_T, _dm_T, dh_T):
        R, raws, cn, m, h, mask = ctx.saved_tensors
        S, NH, B, G = raws.shape
        # the carries dc, dn, dh are our own buffers, updated in place; each step's gate gradients are written
        # straight into their slot of dgx
        dc, dn, dh_rec = (torch.zeros_like(h[0]) if g is None else g.clone(memory_format=torch.contiguous_format)
                          for g in (dc_T, dn_T, dh_T))
        dH = None if dH is None else dH.contiguous()
        dgx = torch.empty_like(raws)
        lib = native.usable(raws, R)
        if lib is not None:  # the whole backward loop in C, gate values recomputed per step
            native.call(lib, "slstm_backward", raws.dtype, (S, NH, B, G // 4, ctx.forget_gate == "exp"),
                        (dH, R.transpose(1, 2).contiguous(), mask, raws, cn, m, h, dc, dn, dh_rec, dgx))
        else:
            keep = None if mask is None else mask.view(S, 1, B, 1)
            pad = None if mask is None else (~keep).to(raws.dtype)
            dh_rec = _backward_loop(dH, R, _factors(raws, cn, m, h, keep, ctx.forget_gate), cn, pad, dc, dn,
                                    dh_rec, dgx)
        DH = G // 4
        h_prev = h[:-1].permute(1, 3, 0, 2).reshape(NH, DH, S * B)
        dR = torch.bmm(h_prev, dgx.permute(1, 0, 2, 3).reshape(NH, S * B, G))
        return dgx, dR, dc, dn, None, dh_rec, None, None


@torch.compiler.disable  # the time loop stays one opaque call under torch.compile (native or not)
def _sequence(gx, R, c0, n0, m0, h0, mask, forget_gate: ForgetGate):
    return _Sequence.apply(gx, R, c0, n0, m0, h0, mask, forget_gate)


def slstm_sequence(
    gates: Tensor,
    R: Tensor,
    *,
    initial_state: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
    return_state: bool = False,
    forget_gate: ForgetGate = "sigmoid",
    mask: Tensor | None = None,
) -> Tensor | tuple[Tensor, SLSTMState]:
    """The sLSTM over a sequence; the same function as `slstm_reference` (arguments and semantics there), fast.
    gates (B, S, NH, 4, DH), R (NH, DH, 4 DH), mask (B, S) bool (False = padding: the state carries over).
    Returns h (B, S, NH, DH) [, final state (c, n, m, h), each (B, NH, DH), float32 or float64]."""
    check_inputs(gates, R, mask, step=False, forget_gate=forget_gate)
    dt = state_dtype(gates.dtype)
    B, S, NH, _, DH = gates.shape
    st = prepare_state(initial_state, B, NH, DH, dt, gates.device)
    gx = gates.to(dt).permute(1, 2, 0, 3, 4).reshape(S, NH, B, 4 * DH)  # (S, NH, B, 4 DH)
    inner = (t.transpose(0, 1) for t in st)  # (NH, B, DH) each
    mask_sb = None if mask is None else mask.t().contiguous()  # (S, B)
    H, c, n, m, h = _sequence(gx, R.to(dt), *inner, mask_sb, forget_gate)
    out = H.permute(2, 0, 1, 3).to(gates.dtype)  # (B, S, NH, DH)
    if not return_state:
        return out
    return out, SLSTMState(*(t.transpose(0, 1) for t in (c, n, m, h)))


__all__ = ["slstm_sequence"]

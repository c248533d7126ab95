"""Tests of the sLSTM ops (src/xlstmkit/ops/slstm, docs/slstm.md).

slstm_reference (the definition, plain autograd) against a naive unstabilised loop of the paper's eqs. 8-14; every
fast form against slstm_reference, values and every gradient in float64: slstm_sequence with its native C loop and
with its PyTorch loop (forward AND backward inside each path's context), and slstm_step, at lengths 1, 7, 63, 64, 65,
130, with and without an initial state and a padding mask, both forget gates; the semantics at infinities on
hand-computed cases; padding (each row of a padded batch equals that sequence alone, zero gradients at pads);
pieces with carried state equal the whole; bfloat16 in, float32 state out; bad input rejected with a message naming
the argument. Extreme-value grids and the native library itself are in tests/test_ops_native.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xlstmkit.ops import native
from xlstmkit.ops.slstm import (
    SLSTMState,
    _slstm_step_unchecked,
    slstm_reference,
    slstm_sequence,
    slstm_step,
    slstm_zero_state,
)

from conftest import assert_close, assert_finite, make_slstm_inputs

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
F32 = torch.float32
TOL64 = dict(rtol=1e-9, atol=1e-11)
GATES = ["sigmoid", "exp"]
NATIVE = native.library() is not None  # where a compiler exists, tests/test_ops_native.py fails if this is False
PATHS = ["native", "torch"] if NATIVE else ["torch"]


def f_mean_for(forget_gate: str) -> float:
    """Forget pre-activation mean giving forget gates mostly around 0.75-0.9 for either gate function."""
    return 2.0 if forget_gate == "sigmoid" else -0.2


def prefix_state(B, NH, DH, *, seed=1000, dtype=F64, S_prefix=7, forget_gate="sigmoid", requires_grad=True):
    """A realistic initial state: the final state of the op on a random prefix, with strong input gates so that m
    is far from 0. c, n, h are fresh leaves; m is a plain tensor (it carries no gradient)."""
    gates, R = make_slstm_inputs(B, S_prefix, NH, DH, seed=seed, dtype=dtype, f_mean=f_mean_for(forget_gate))
    gates[:, :, :, 0] = gates[:, :, :, 0] * 3 + 2
    _, s = slstm_reference(gates, R, return_state=True, forget_gate=forget_gate)
    assert s.m.abs().max() > 1.0
    c, n, h = (t.detach().clone().requires_grad_(requires_grad) for t in (s.c, s.n, s.h))
    return SLSTMState(c, n, s.m.detach().clone(), h)


def by_steps(gates, R, *, initial_state=None, return_state=True, forget_gate="sigmoid", mask=None):
    """slstm_sequence rebuilt from slstm_step."""
    state = initial_state
    hs = []
    for t in range(gates.shape[1]):
        h_t, state = slstm_step(gates[:, t], R, state, forget_gate=forget_gate,
                                mask=None if mask is None else mask[:, t])
        hs.append(h_t)
    return torch.stack(hs, dim=1), state


FORMS = {"reference": slstm_reference, "sequence": slstm_sequence, "steps": by_steps}


def run(form, path, gates, R, state0=None, *, mask=None, forget_gate="sigmoid", seed=7):
    """Forward and backward of a fixed random loss on h and the final c, n, h, both inside the chosen path's context
    (native C loops or PyTorch ops). form: a name in FORMS, or a function with slstm_sequence's signature. Returns
    (h, final state, {name: grad}) for gates, R and the initial c, n, h."""
    fn = FORMS[form] if isinstance(form, str) else form
    with native.use_native(path == "native"):
        h, s = fn(gates, R, initial_state=state0, return_state=True, forget_gate=forget_gate, mask=mask)
        g = torch.Generator().manual_seed(seed)
        outs = (h, s.c, s.n, s.h)
        loss = sum((t * torch.randn(t.shape, generator=g, dtype=F64).to(t.dtype)).sum() for t in outs)
        names, leaves = ["gates", "R"], [gates, R]
        if state0 is not None:
            names += ["c0", "n0", "h0"]
            leaves += [state0.c, state0.n, state0.h]
        grads = torch.autograd.grad(loss, leaves)
    return h.detach(), SLSTMState(*(t.detach() for t in s)), dict(zip(names, grads))


def compare_runs(tag, ref, got, *, rtol, atol, grad_rtol=None, grad_atol=None):
    h_r, s_r, g_r = ref
    h_g, s_g, g_g = got
    assert_close(f"{tag} h", h_r, h_g, rtol, atol)
    for name in SLSTMState._fields:
        assert_close(f"{tag} final {name}", getattr(s_r, name), getattr(s_g, name), rtol, atol)
    assert g_r.keys() == g_g.keys()
    for name in g_r:
        assert_close(f"{tag} grad {name}", g_r[name], g_g[name], grad_rtol or rtol, grad_atol or atol)


def leaves(B=2, S=20, NH=2, DH=8, *, seed=0, dtype=F64, forget_gate="sigmoid", **kw):
    return make_slstm_inputs(B, S, NH, DH, seed=seed, dtype=dtype, f_mean=f_mean_for(forget_gate),
                             requires_grad=True, **kw)


def random_mask(B, S, seed):
    """A padding mask with every pattern at once: row 0 right-padded, row 1 left-padded, row 2 with holes, row 3
    all padding (B >= 4), further rows random."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, S, generator=g) > 0.3
    mask[0] = torch.arange(S) < max(S // 2, 1)
    if B > 1:
        mask[1] = torch.arange(S) >= S // 3
    if B > 3:
        mask[3] = False
    return mask


# ----------------------------------------------------------------------------------------------------------------------
# the reference against a naive, unstabilised float64 loop (paper eqs. 8-14, block-diagonal R)


def naive_slstm(gates, R, forget_gate="sigmoid", c0=None, n0=None, h0=None):
    """Literal eqs. 8-14 per head: (i~, f~, z~, o~) = gates_t + h_{t-1} R_head (row vector times (DH, 4 DH), the
    4 DH columns in gate order i, f, z, o); no stabiliser. c0, n0 in the paper's (unstabilised) coordinates."""
    B, S, NH, _, DH = gates.shape
    c = torch.zeros(B, NH, DH, dtype=F64) if c0 is None else c0.clone()
    n = torch.zeros(B, NH, DH, dtype=F64) if n0 is None else n0.clone()
    h = torch.zeros(B, NH, DH, dtype=F64) if h0 is None else h0.clone()
    out = []
    for t in range(S):
        c_new, n_new, h_new = torch.empty_like(c), torch.empty_like(n), torch.empty_like(h)
        for head in range(NH):
            pre = gates[:, t, head] + (h[:, head] @ R[head]).reshape(B, 4, DH)
            i_gate = torch.exp(pre[:, 0])
            f_gate = torch.sigmoid(pre[:, 1]) if forget_gate == "sigmoid" else torch.exp(pre[:, 1])
            z = torch.tanh(pre[:, 2])
            o = torch.sigmoid(pre[:, 3])
            c_new[:, head] = f_gate * c[:, head] + i_gate * z
            n_new[:, head] = f_gate * n[:, head] + i_gate
            h_new[:, head] = o * c_new[:, head] / n_new[:, head]
        c, n, h = c_new, n_new, h_new
        out.append(h)
    return torch.stack(out, dim=1), c, n, h


@pytest.mark.parametrize("init", [False, True], ids=["zero_state", "prefix_state"])
@pytest.mark.parametrize("forget_gate", GATES)
def test_reference_matches_naive_unstabilised_equations(forget_gate, init):
    B, S, NH, DH = 2, 15, 3, 4
    gates, R = make_slstm_inputs(B, S, NH, DH, seed=11, f_mean=f_mean_for(forget_gate), r_std=0.5)
    s0 = prefix_state(B, NH, DH, forget_gate=forget_gate, requires_grad=False) if init else None
    if init:
        scale = torch.exp(s0.m)
        h_ref, c_ref, n_ref, hl_ref = naive_slstm(gates, R, forget_gate, s0.c * scale, s0.n * scale, s0.h)
    else:
        h_ref, c_ref, n_ref, hl_ref = naive_slstm(gates, R, forget_gate)
    h, s = slstm_reference(gates, R, initial_state=s0, return_state=True, forget_gate=forget_gate)
    assert h.shape == (B, S, NH, DH)
    assert_close("h", h_ref, h, rtol=1e-10, atol=1e-12)
    scale = torch.exp(s.m)
    assert_close("c", c_ref, s.c * scale, rtol=1e-10, atol=1e-12)
    assert_close("n", n_ref, s.n * scale, rtol=1e-10, atol=1e-12)
    assert_close("last h", hl_ref, s.h, rtol=1e-10, atol=1e-12)


def test_recurrent_weights_mix_within_a_head_only():
    """Guard for the reference tests: a non-zero R changes the output, and a change to one head's R block changes
    only that head's outputs."""
    gates, R = make_slstm_inputs(2, 10, 3, 4, seed=12, r_std=0.5)
    h = slstm_reference(gates, R)
    assert (h - slstm_reference(gates, torch.zeros_like(R))).abs().max() > 1e-2
    R2 = R.clone()
    R2[1] += 0.5
    diff = (slstm_reference(gates, R2) - h).abs().amax(dim=(0, 1, 3))  # per head
    assert diff[1] > 1e-3 and diff[0] == 0 and diff[2] == 0


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("forget_gate", GATES)
def test_reference_gradcheck(forget_gate, masked):
    """The reference's autograd gradients (with its where-guards) against finite differences."""
    gates, R = leaves(B=4, S=5, NH=1, DH=2, seed=31, forget_gate=forget_gate)
    s0 = prefix_state(4, 1, 2, forget_gate=forget_gate)
    mask = random_mask(4, 5, seed=3) if masked else None

    def func(gates, R, c0, n0, h0):
        h, s = slstm_reference(gates, R, initial_state=(c0, n0, s0.m, h0), return_state=True,
                               forget_gate=forget_gate, mask=mask)
        scale = torch.exp(s.m - s0.m.max())  # c, n in the paper's coordinates (the stabilised ones are not smooth)
        return h, s.c * scale, s.n * scale, s.h

    assert torch.autograd.gradcheck(func, (gates, R, s0.c, s0.n, s0.h), eps=1e-6, atol=1e-7, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# every fast form against the reference: values and every gradient, float64


@pytest.mark.parametrize("variant", ["plain", "state", "state_mask"])
@pytest.mark.parametrize("forget_gate", GATES)
@pytest.mark.parametrize("S", [1, 7, 63, 64, 65, 130])
def test_fast_forms_equal_reference(S, forget_gate, variant):
    B, NH, DH = 4, 2, 4
    gates, R = leaves(B=B, S=S, NH=NH, DH=DH, seed=S, forget_gate=forget_gate, r_std=0.5)
    s0 = prefix_state(B, NH, DH, forget_gate=forget_gate) if variant != "plain" else None
    mask = random_mask(B, S, seed=S) if variant == "state_mask" else None
    ref = run("reference", "torch", gates, R, s0, mask=mask, forget_gate=forget_gate)
    for path in PATHS:
        got = run("sequence", path, gates, R, s0, mask=mask, forget_gate=forget_gate)
        compare_runs(f"sequence ({path}) S={S}", ref, got, **TOL64)
    if S <= 65:
        compare_runs(f"steps S={S}", ref, run("steps", "torch", gates, R, s0, mask=mask, forget_gate=forget_gate),
                     **TOL64)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("forget_gate", GATES)
def test_inference_step_equals_reference(forget_gate, path):
    """Under no_grad slstm_step (and the unchecked core) run natively where available: same values as the
    reference, step by step, with a padding mask."""
    B, S, NH, DH = 4, 9, 2, 8
    gates, R = make_slstm_inputs(B, S, NH, DH, seed=5, f_mean=f_mean_for(forget_gate), r_std=0.5)
    mask = random_mask(B, S, seed=5)
    s0 = prefix_state(B, NH, DH, forget_gate=forget_gate, requires_grad=False)
    h_ref, st_ref = slstm_reference(gates, R, initial_state=s0, return_state=True, forget_gate=forget_gate,
                                    mask=mask)
    with torch.no_grad(), native.use_native(path == "native"):
        st, st_core = s0, s0
        for t in range(S):
            h, st = slstm_step(gates[:, t], R, st, forget_gate=forget_gate, mask=mask[:, t])
            h_core, st_core = _slstm_step_unchecked(gates[:, t], R, st_core, forget_gate, mask[:, t])
            assert_close(f"step {t} h", h_ref[:, t], h, **TOL64)
            assert_close(f"step {t} h (core)", h_ref[:, t], h_core, **TOL64)
    for name in SLSTMState._fields:
        assert_close(f"final {name}", getattr(st_ref, name), getattr(st, name), **TOL64)
        assert_close(f"final {name} (core)", getattr(st_ref, name), getattr(st_core, name), **TOL64)


@pytest.mark.parametrize("forget_gate", GATES)
def test_sequence_gradcheck(forget_gate):
    """The default path (native where available) against finite differences, with state and mask."""
    gates, R = leaves(B=4, S=6, NH=2, DH=3, seed=31, forget_gate=forget_gate)
    s0 = prefix_state(4, 2, 3, forget_gate=forget_gate)
    mask = random_mask(4, 6, seed=1)
    m_ref = s0.m.max().item()

    def func(gates, R, c0, n0, h0):
        h, s = slstm_sequence(gates, R, initial_state=(c0, n0, s0.m, h0), return_state=True,
                              forget_gate=forget_gate, mask=mask)
        scale = torch.exp(s.m - m_ref)
        return h, s.c * scale, s.n * scale, s.h

    assert torch.autograd.gradcheck(func, (gates, R, s0.c, s0.n, s0.h), eps=1e-6, atol=1e-7, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# the semantics at infinities, on cases computed by hand (R = 0, one step)

INF = math.inf


def one_step(i, f, z, o, state=None, forget_gate="sigmoid", path="torch", form="sequence"):
    gates = torch.tensor([i, f, z, o], dtype=F64).view(1, 1, 1, 4, 1)
    R = torch.zeros(1, 1, 4, dtype=F64)
    with native.use_native(path == "native"):
        h, s = FORMS[form](gates, R, initial_state=state, return_state=True, forget_gate=forget_gate)
    return h.item(), tuple(t.item() for t in s)


def state_of(c, n, m, h=0.0):
    return SLSTMState(*(torch.tensor([[[v]]], dtype=F64) for v in (c, n, m, h)))


BIG = torch.finfo(F64).max
CASES = [
    # (name, (i, f, z, o), state (c, n, m), expected h, expected (c, n, m))
    ("i=-inf on an empty state writes nothing", (-INF, 0.0, 0.5, 0.0), None, 0.0, (0.0, 0.0, -BIG)),
    ("f=i=-inf empties a state", (-INF, -INF, 0.5, 0.0), (0.3, 1.0, 0.0), 0.0, (0.0, 0.0, -BIG)),
    ("i=+inf replaces the state", (INF, 3.0, 0.5, 0.0), (0.3, 1.0, 0.0), 0.5 * math.tanh(0.5),
     (math.tanh(0.5), 1.0, BIG)),
    ("o=-inf outputs 0", (0.0, 0.0, 0.5, -INF), None, 0.0, (math.tanh(0.5), 1.0, 0.0)),
    ("o=+inf outputs c/n", (0.0, 0.0, 0.5, INF), None, math.tanh(0.5), (math.tanh(0.5), 1.0, 0.0)),
    ("z=+inf writes 1", (0.0, 0.0, INF, 0.0), None, 0.5, (1.0, 1.0, 0.0)),
    ("f=-inf forgets", (0.0, -INF, 0.5, 0.0), (0.3, 1.0, 0.0), 0.5 * math.tanh(0.5), (math.tanh(0.5), 1.0, 0.0)),
    ("f=+inf keeps (sigmoid)", (-INF, INF, 0.5, INF), (0.3, 1.5, 2.0), 0.2, (0.3, 1.5, 2.0)),
]


@pytest.mark.parametrize("form", ["reference", "sequence", "steps"])
@pytest.mark.parametrize("name,gates,state,h_expect,state_expect", CASES, ids=[c[0] for c in CASES])
def test_semantics_at_infinities(name, gates, state, h_expect, state_expect, form):
    """docs/slstm.md: m stays finite, so exp(x - m) is 0 at x = -inf whatever m and 1 at x = m = +inf; o = -inf
    gives h = 0; an empty state outputs 0, never NaN."""
    st0 = None if state is None else state_of(*state)
    for path in PATHS if form == "sequence" else ["torch"]:
        h, (c, n, m, h_last) = one_step(*gates, state=st0, path=path, form=form)
        assert h == pytest.approx(h_expect, abs=1e-15), (path, h)
        assert (c, n, m) == pytest.approx(state_expect, abs=1e-15), (path, c, n, m)
        assert h_last == h


@pytest.mark.parametrize("gate", range(4), ids="ifzo")
def test_nan_propagates(gate):
    """A NaN pre-activation gives a NaN output at its step, in every form."""
    args = [0.0, 1.0, 0.5, 0.0]
    args[gate] = math.nan
    for form in FORMS:
        for path in PATHS if form == "sequence" else ["torch"]:
            h, _ = one_step(*args, state=state_of(0.3, 1.0, 0.0), path=path, form=form)
            assert math.isnan(h), (form, path)


def test_exp_forget_gate_at_plus_inf_keeps_the_state_at_infinite_scale():
    """exp forget gate, f = +inf: log f + m = +inf, so m becomes the largest finite number, f' = 1, i' = 0."""
    h, (c, n, m, _) = one_step(0.0, INF, 0.5, INF, state=state_of(0.3, 1.5, 2.0), forget_gate="exp")
    assert (h, c, n, m) == pytest.approx((0.2, 0.3, 1.5, BIG))


# ----------------------------------------------------------------------------------------------------------------------
# padding: each row of a padded batch equals that sequence alone


@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "state_in"])
@pytest.mark.parametrize("form,path", [("sequence", p) for p in PATHS] + [("steps", "torch"), ("reference", "torch")])
def test_padded_rows_equal_their_sequences_alone(form, path, with_state):
    """Rows right-padded, left-padded, with holes and all padding; the padding holds garbage (NaN and 1e30). Each
    row's outputs at its real steps, final state and gradients equal those of its real steps run alone (the
    reference, no mask); at a pad the output is the carried h and the gate gradient is exactly 0."""
    B, S, NH, DH = 4, 11, 2, 3
    gates, R = make_slstm_inputs(B, S, NH, DH, seed=3, r_std=0.5)
    mask = random_mask(B, S, seed=4)
    g = torch.Generator().manual_seed(5)
    garbage = torch.where(torch.rand(gates.shape, generator=g) > 0.5, math.nan, 1e30).to(F64)
    gates = torch.where(mask[:, :, None, None, None], gates, garbage).requires_grad_()
    R.requires_grad_()
    s0 = prefix_state(B, NH, DH) if with_state else SLSTMState(*slstm_zero_state(B, NH, DH, dtype=F64))
    s0 = SLSTMState(*(t.detach().requires_grad_(k != 2) for k, t in enumerate(s0)))
    cot_h = torch.randn(B, S, NH, DH, generator=g, dtype=F64) * mask[:, :, None, None]  # no loss on pad outputs
    cot_s = [torch.randn(B, NH, DH, generator=g, dtype=F64) for _ in range(3)]  # on the final c, n, h

    def loss_and_grads(fn, gates, R, st, rows, steps, **kw):
        h, s = fn(gates, R, initial_state=st, return_state=True, **kw)
        loss = (h * cot_h[rows][:, steps]).sum() + sum((t * ct[rows]).sum() for t, ct in zip((s.c, s.n, s.h), cot_s))
        return h.detach(), s, torch.autograd.grad(loss, [gates, R, st.c, st.n, st.h])

    with native.use_native(path == "native"):
        h, s, (d_gates, d_R, d_c0, d_n0, d_h0) = loss_and_grads(FORMS[form], gates, R, s0, slice(None), slice(None),
                                                                mask=mask)
    for name, t in (("h", h), ("grad gates", d_gates), ("grad R", d_R), ("grad c0", d_c0), ("grad h0", d_h0)):
        assert_finite(name, t)
    assert (d_gates[~mask] == 0).all()
    d_R_rows = torch.zeros_like(R)
    for b in range(B):
        real = mask[b].nonzero().squeeze(1)
        st_b = SLSTMState(*(t[b:b + 1].detach().requires_grad_(k != 2) for k, t in enumerate(s0)))
        if len(real):
            g_b, R_b = gates[b:b + 1, real].detach().requires_grad_(), R.detach().requires_grad_()
            h_b, s_b, (dg_b, dR_b, dc_b, dn_b, dh_b) = loss_and_grads(slstm_reference, g_b, R_b, st_b,
                                                                      slice(b, b + 1), real)
            h_b = h_b[0]
            assert_close(f"row {b} h", h_b, h[b, real], **TOL64)
            assert_close(f"row {b} grad gates", dg_b[0], d_gates[b, real], **TOL64)
            d_R_rows += dR_b
        else:  # all padding: the state passes through untouched, and so do the gradients of the final state
            h_b, s_b, (dc_b, dn_b, dh_b) = None, st_b, [ct[b:b + 1] for ct in cot_s]
        for t in range(S):  # at a pad, the carried h: the last real step's output, or the initial h
            if not mask[b, t]:
                before = real[real < t]
                carried = h_b[before[-1]] if len(before) else s0.h[b].detach()
                assert_close(f"row {b} pad {t}", carried, h[b, t], **TOL64)
        for name in SLSTMState._fields:
            assert_close(f"row {b} final {name}", getattr(s_b, name)[0].detach(), getattr(s, name)[b].detach(),
                         **TOL64)
        for name, alone, got in (("c0", dc_b, d_c0), ("n0", dn_b, d_n0), ("h0", dh_b, d_h0)):
            assert_close(f"row {b} grad {name}", alone[0], got[b], **TOL64)
    assert_close("grad R (sum of the rows alone)", d_R_rows, d_R, **TOL64)


# ----------------------------------------------------------------------------------------------------------------------
# state passing


@pytest.mark.parametrize("split", [1, 9, 19], ids=lambda s: f"split{s}")
def test_pieces_equal_whole(split):
    gates, R = leaves(S=20, seed=41)
    s0 = prefix_state(2, 2, 8)

    def two_pieces(gates, R, *, initial_state, return_state, forget_gate, mask):
        h1, s1 = slstm_sequence(gates[:, :split], R, initial_state=initial_state, return_state=True)
        h2, s2 = slstm_sequence(gates[:, split:], R, initial_state=s1, return_state=True)
        return torch.cat([h1, h2], dim=1), s2

    compare_runs(f"pieces at {split} vs whole", run("sequence", PATHS[0], gates, R, s0),
                 run(two_pieces, PATHS[0], gates, R, s0), **TOL64)


def test_default_initial_state_is_zero_state():
    gates, R = make_slstm_inputs(2, 9, 2, 4, seed=42)
    h0 = slstm_sequence(gates, R)
    assert_close("zero state", h0, slstm_sequence(gates, R, initial_state=slstm_zero_state(2, 2, 4, dtype=F64)), 0, 0)
    h_step, _ = slstm_step(gates[:, 0], R)
    assert_close("first step", h0[:, 0], h_step, 1e-12, 1e-15)


@settings(max_examples=15, deadline=None)
@given(S=st.integers(2, 40), data=st.data())
def test_property_pieces_equal_whole(S, data):
    split = data.draw(st.integers(1, S - 1), label="split")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    gates, R = make_slstm_inputs(1, S, 2, 3, seed=seed)
    h, s = slstm_sequence(gates, R, return_state=True)
    h1, s1 = slstm_sequence(gates[:, :split], R, return_state=True)
    h2, s2 = slstm_sequence(gates[:, split:], R, initial_state=s1, return_state=True)
    assert_close("pieces h", h, torch.cat([h1, h2], dim=1), **TOL64)
    for name in SLSTMState._fields:
        assert_close(f"pieces final {name}", getattr(s, name), getattr(s2, name), **TOL64)


# ----------------------------------------------------------------------------------------------------------------------
# float32 at large gate values, long sequence, bfloat16


@pytest.mark.parametrize("forget_gate", GATES)
@pytest.mark.parametrize("f_val", [-50, 50], ids=lambda v: f"f{v:+d}")
@pytest.mark.parametrize("i_val", [-100, 100], ids=lambda v: f"i{v:+d}")
def test_float32_large_gates_match_float64(i_val, f_val, forget_gate):
    """float32 at input pre-activations +-100 and forget +-50, from a prefix state: outputs and gradients (gates,
    R, initial state) finite, and equal to the float64 ones."""
    B, S, NH, DH = 2, 17, 2, 4
    gates, R = make_slstm_inputs(B, S, NH, DH, seed=51, dtype=F32, r_std=0.5)
    gates[:, :, :, 0] = i_val + 0.1 * gates[:, :, :, 0]
    gates[:, :, :, 1] = f_val + 0.1 * gates[:, :, :, 1]
    gates[:, 5:8, :, 0] = 0.0  # an ordinary stretch in the middle
    gates.requires_grad_()
    R.requires_grad_()
    s0 = prefix_state(B, NH, DH, dtype=F32, forget_gate=forget_gate)
    h, s, grads = run("sequence", PATHS[0], gates, R, s0, forget_gate=forget_gate)
    s64 = SLSTMState(*(t.detach().double().requires_grad_(t.requires_grad) for t in s0))
    g64, R64 = gates.detach().double().requires_grad_(), R.detach().double().requires_grad_()
    h64, _, grads64 = run("reference", "torch", g64, R64, s64, forget_gate=forget_gate)
    assert_close("h vs float64", h64, h, rtol=1e-4, atol=1e-5)
    for name, g in grads.items():
        assert_close(f"grad {name} vs float64", grads64[name], g, rtol=1e-3, atol=1e-4)


def test_long_sequence_float32_matches_float64():
    gates, R = make_slstm_inputs(1, 1000, 2, 4, seed=71, dtype=F64)
    h64 = slstm_sequence(gates, R)
    h32 = slstm_sequence(gates.float(), R.float())
    assert_close("S=1000 float32 vs float64", h64, h32, rtol=1e-3, atol=1e-4)


def test_bfloat16_inputs():
    gates, R = make_slstm_inputs(2, 13, 2, 8, seed=81, dtype=F32)
    g16, R16 = gates.to(torch.bfloat16).requires_grad_(), R.to(torch.bfloat16).requires_grad_()
    s0 = prefix_state(2, 2, 8, dtype=F32, requires_grad=False)
    h16, s16 = slstm_sequence(g16, R16, initial_state=s0, return_state=True)
    assert h16.dtype == torch.bfloat16
    assert all(t.dtype == F32 for t in s16), [t.dtype for t in s16]
    h32, s32 = slstm_sequence(g16.detach().float(), R16.detach().float(), initial_state=s0, return_state=True)
    assert_close("bf16 h", h32, h16, rtol=1e-2, atol=1e-2)
    for name in SLSTMState._fields:
        assert_close(f"bf16 final {name}", getattr(s32, name), getattr(s16, name), rtol=1e-4, atol=1e-5)
    h16.float().square().sum().backward()
    for name, t in (("gates", g16), ("R", R16)):
        assert t.grad is not None and t.grad.dtype == torch.bfloat16, name
        assert_finite(f"bf16 grad {name}", t.grad)
    h_step, st_step = slstm_step(g16[:, 0].detach(), R16.detach())
    assert h_step.dtype == torch.bfloat16 and st_step.c.dtype == F32


def test_stabiliser_output_needs_no_gradient():
    gates, R = leaves(S=3)
    _, s = slstm_sequence(gates, R, return_state=True)
    assert not s.m.requires_grad and s.c.requires_grad


# ----------------------------------------------------------------------------------------------------------------------
# bad input


def _state(B=2, NH=2, DH=4):
    return tuple(slstm_zero_state(B, NH, DH, dtype=F64))


BAD = [
    ("gates_rank4", lambda kw: kw.update(gates=kw["gates"][:, 0]), ValueError, r"gates must have shape"),
    ("gates_three_gates", lambda kw: kw.update(gates=kw["gates"][:, :, :, :3]), ValueError, r"gates must have shape"),
    ("gates_int", lambda kw: kw.update(gates=kw["gates"].long()), TypeError, r"gates must be a floating-point"),
    ("gates_not_tensor", lambda kw: kw.update(gates=kw["gates"].tolist()), TypeError, r"gates must be a torch"),
    ("S0", lambda kw: kw.update(gates=kw["gates"][:, :0]), ValueError, r"S >= 1"),
    ("R_transposed", lambda kw: kw.update(R=kw["R"].transpose(1, 2)), ValueError, r"\bR must have shape"),
    ("R_wrong_heads", lambda kw: kw.update(R=kw["R"][:1]), ValueError, r"\bR must have shape"),
    ("R_int", lambda kw: kw.update(R=kw["R"].to(torch.int32)), TypeError, r"\bR must be a floating-point"),
    ("state_c_shape", lambda kw: kw.update(initial_state=(kw["initial_state"][0][..., :-1], *kw["initial_state"][1:])),
     ValueError, r"state c must have shape .*\(2, 2, 4\), got \(2, 2, 3\)"),
    ("state_other_heads", lambda kw: kw.update(initial_state=tuple(t.reshape(2, 4, 2) for t in kw["initial_state"])),
     ValueError, r"state c must have shape .*\(2, 2, 4\), got \(2, 4, 2\)"),
    ("state_h_shape", lambda kw: kw.update(initial_state=(*kw["initial_state"][:3], kw["initial_state"][3][:1])),
     ValueError, r"state h must have shape"),
    ("state_three_tensors", lambda kw: kw.update(initial_state=kw["initial_state"][:3]), TypeError, r"state"),
    ("forget_gate_name", lambda kw: kw.update(forget_gate="relu"), ValueError, r"forget_gate"),
    ("mask_float", lambda kw: kw.update(mask=torch.ones(2, 5)), TypeError, r"mask must be a torch.bool"),
    ("mask_shape", lambda kw: kw.update(mask=torch.ones(5, 2, dtype=torch.bool)), ValueError,
     r"mask must have shape \(B, S\) = \(2, 5\), got \(5, 2\)"),
]


@pytest.mark.parametrize("fn", [slstm_sequence, slstm_reference], ids=["sequence", "reference"])
@pytest.mark.parametrize("mutate,exc,match", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_rejected(mutate, exc, match, fn):
    gates, R = make_slstm_inputs(2, 5, 2, 4)
    kw = dict(gates=gates, R=R, initial_state=_state(), forget_gate="sigmoid", mask=None)
    fn(**kw)  # the unmutated call works
    mutate(kw)
    with pytest.raises(exc, match=match):
        fn(**kw)


def test_step_bad_input_always_checked():
    """slstm_step always validates its inputs (the unchecked core is private, for layers that validated once)."""
    gates, R = make_slstm_inputs(2, 1, 2, 4)
    slstm_step(gates[:, 0], R, _state())
    with pytest.raises(ValueError, match=r"gates must have shape"):
        slstm_step(gates, R)  # sequence-shaped gates into the step
    with pytest.raises(ValueError, match=r"\bR must have shape"):
        slstm_step(gates[:, 0], R[..., :-1])
    with pytest.raises(ValueError, match=r"state n must have shape"):
        s = _state()
        slstm_step(gates[:, 0], R, (s[0], s[1][:, :1], s[2], s[3]))
    with pytest.raises(ValueError, match=r"forget_gate"):
        slstm_step(gates[:, 0], R, forget_gate="hard")
    with pytest.raises(ValueError, match=r"mask must have shape \(B,\)"):
        slstm_step(gates[:, 0], R, mask=torch.ones(2, 1, dtype=torch.bool))

"""Every fast mLSTM form against `mlstm_reference` (ops/mlstm/reference.py), the definition: float64 values and
gradients at awkward lengths and chunk sizes; float32 at gate pre-activations anywhere in [-inf, +inf] against the
float64 reference; padding masks (each row of a padded batch equals its sequence run alone); the documented meaning
of infinite gates (docs/mlstm.md); batch 0; NaN in, NaN out.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from xlstmkit.ops.mlstm import (
    MLSTMState,
    mlstm_chunkwise,
    mlstm_parallel,
    mlstm_recurrent,
    mlstm_reference,
    mlstm_step,
)

from conftest import assert_close, make_mlstm_inputs, mlstm_step_loop, naive_mlstm

pytestmark = pytest.mark.usefixtures("single_thread")

F64, F32 = torch.float64, torch.float32
INF = math.inf
FORMS = {
    "parallel": mlstm_parallel,
    "chunkwise16": functools.partial(mlstm_chunkwise, chunk_size=16),
    "chunkwise64": mlstm_chunkwise,
    "chunkwise7": functools.partial(mlstm_chunkwise, chunk_size=7),
    "recurrent": mlstm_recurrent,
    "step": mlstm_step_loop,
}
S_VALUES = [1, 7, 63, 64, 65, 130]


def leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


def run(fn, x, state0=None, *, seed=7, loss_mask=None, **kw):
    """fn(*x) with return_state; backpropagate fixed random cotangents of h and of the final C, n. Returns
    (h, state, grads of x and of the initial C, n when given)."""
    h, st = fn(*x, initial_state=state0, return_state=True, **kw)
    g = torch.Generator().manual_seed(seed)
    gh, gC, gn = (torch.randn(t.shape, generator=g, dtype=F64).to(t.dtype) for t in (h, st.C, st.n))
    if loss_mask is not None:
        gh = gh * loss_mask[:, None, :, None]
    loss = (h * gh).sum() + (st.C * gC).sum() + (st.n * gn).sum()
    wrt = list(x) + ([] if state0 is None else [state0.C, state0.n])
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    return h.detach(), MLSTMState(*(t.detach() for t in st)), grads


def grad_state(st: MLSTMState) -> MLSTMState:
    """The state with C and n as fresh leaves that require a gradient (m has none)."""
    return MLSTMState(*leaves(st.C, st.n), st.m)


def prefix_state(B, NH, DQK, DV, *, seed, positive=False):
    """A consistent state: the reference's final state after a random 9-step prefix (strong input gates, so m is
    far from 0); with `positive`, from positive keys (n^T q > 0 for positive queries)."""
    x = make_mlstm_inputs(B, NH, 9, DQK, DV, seed=seed, i_mean=2.0, i_std=3.0)
    k = x.k.abs() if positive else x.k
    return mlstm_reference(x.q, k, x.v, x.i, x.f, return_state=True)[1]


def random_state(B, NH, DQK, DV, *, seed, dtype=F64, m_scale=3.0):
    g = torch.Generator().manual_seed(seed)
    C = torch.randn(B, NH, DQK, DV, generator=g, dtype=F64)
    n = torch.randn(B, NH, DQK, generator=g, dtype=F64)
    m = torch.randn(B, NH, generator=g, dtype=F64) * m_scale
    return MLSTMState(*(t.to(dtype) for t in (C, n, m)))


# ----------------------------------------------------------------------------------------------------------------------
# 1. float64: every form equals the reference, values and gradients


@pytest.mark.parametrize("init", [False, True], ids=["no_state", "state"])
@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("S", S_VALUES, ids=lambda s: f"S{s}")
def test_every_form_equals_reference_float64(S, forget_gate, init):
    x = make_mlstm_inputs(2, 2, S, 5, 6, seed=S, f_mean=2.0 if forget_gate == "sigmoid" else -0.2,
                          f_std=1.0 if forget_gate == "sigmoid" else 0.3, i_std=2.0)
    s0 = grad_state(random_state(2, 2, 5, 6, seed=S + 1)) if init else None
    ref = run(mlstm_reference, leaves(*x), s0, forget_gate=forget_gate)
    for name, fn in FORMS.items():
        got = run(fn, leaves(*x), s0, forget_gate=forget_gate)
        assert_close(f"{name} h", ref[0], got[0], 1e-9, 1e-11)
        for a, b, what in zip(ref[1], got[1], "Cnm"):
            assert_close(f"{name} final {what}", a, b, 1e-9, 1e-11)
        for a, b, what in zip(ref[2], got[2], ("q", "k", "v", "i", "f", "C0", "n0")):
            assert_close(f"{name} grad {what}", a, b, 1e-9, 1e-10)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_reference_equals_the_unstabilised_paper_equations(forget_gate):
    """The reference is the paper's recurrence (eqs. 19-27 with the lower bound 1): in float64 with eps = 0 and an
    initial state in the paper's coordinates, the stabiliser changes nothing."""
    x = make_mlstm_inputs(2, 2, 24, 4, 5, seed=91, i_mean=-1.0, i_std=2.0,
                          f_mean=1.5 if forget_gate == "sigmoid" else -0.1, f_std=0.5)
    s0 = random_state(2, 2, 4, 5, seed=3, m_scale=1.0)
    scale = torch.exp(s0.m)
    h_ref, C_ref, n_ref = naive_mlstm(*x, forget_gate, s0.C * scale[..., None, None], s0.n * scale[..., None])
    h, st = mlstm_reference(*x, initial_state=s0, return_state=True, eps=0.0, forget_gate=forget_gate)
    assert_close("h", h_ref, h, 1e-10, 1e-12)
    assert_close("C", C_ref, st.C * torch.exp(st.m)[..., None, None], 1e-10, 1e-12)
    assert_close("n", n_ref, st.n * torch.exp(st.m)[..., None], 1e-10, 1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# 2. float32 at extreme gate values against the float64 reference

EXTREMES = [-INF, -1e8, -1e4, -100.0, -89.0, 0.0, 89.0, 100.0, 1e4, INF]


def row_errors(ref, got, tiny=1e-30):
    """Per batch row: max |got - ref| / max |ref| over the row (finite parts; the non-finite pattern must match).
    Rows whose every value is below `tiny` count as 0 (float32 holds such numbers as subnormals, to a few bits)."""
    ref, got = ref.double(), got.double()
    assert torch.equal(torch.isfinite(ref), torch.isfinite(got)), "non-finite values differ from the reference"
    fin = torch.isfinite(ref)
    err = torch.where(fin, (ref - got).abs(), 0.0).flatten(1).amax(1)
    scale = torch.where(fin, ref.abs(), 0.0).flatten(1).amax(1)
    return err / scale.clamp_min(tiny)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("S", S_VALUES, ids=lambda s: f"S{s}")
def test_extreme_gates_float32_equal_float64_reference(S, forget_gate):
    """One gate pre-activation per row at a value of EXTREMES (forget or input gate), at the first, last or a middle
    position of a chunk (16 and 64), the others ordinary; with and without an initial state. float32 forms equal
    the float64 reference to 1e-5 relative per row (values) and to 1e-5 of the largest gradient (gradients; the q
    gradient of a lone dominant write is O(eps) and ill-conditioned in any float32 evaluation). Queries and keys
    are positive so that the normaliser n^T q has no cancellation of its own: what is tested is the gate
    arithmetic. With the exp forget gate, f~ >= 89 makes the stabiliser ~100, where float32 resolves 1e-5 only
    (for any form): 1e-4 there, and f~ = +inf (undefined, NaN) is tested elsewhere."""
    positions = sorted({0, S // 2, S - 1, 15 % S, 16 % S, 63 % S, min(64, S - 1)})
    for which in ("f", "i"):
        values = [v for v in EXTREMES if not (forget_gate == "exp" and which == "f" and v > 100)]
        rows = [(v, p) for v in values for p in positions]
        B = len(rows)
        x = make_mlstm_inputs(B, 2, S, 4, 3, seed=S + (which == "i"), f_mean=2.0 if forget_gate == "sigmoid" else -0.3,
                              f_std=1.0 if forget_gate == "sigmoid" else 0.3)
        q, k, v, i, f = (t.clone() for t in x)
        q, k = q.abs(), k.abs()
        target = f if which == "f" else i
        for r, (val, p) in enumerate(rows):
            target[r, :, p] = val
        rtol = 1e-4 if forget_gate == "exp" and which == "f" else 1e-5
        for init in (False, True):
            s64 = grad_state(prefix_state(B, 2, 4, 3, seed=S, positive=True)) if init else None
            ref = run(mlstm_reference, leaves(q, k, v, i, f), s64, forget_gate=forget_gate)
            s32 = None if s64 is None else grad_state(MLSTMState(*(t.float() for t in s64)))
            for name, fn in FORMS.items():
                if name in ("chunkwise7", "step"):
                    continue
                got = run(fn, leaves(*(t.float() for t in (q, k, v, i, f))), s32, forget_gate=forget_gate)
                errs = row_errors(ref[0], got[0])
                bad = [(rows[r], float(e)) for r, e in enumerate(errs) if not e <= rtol]
                assert not bad, f"{name} {which} init={init} h: (value, position), error: {bad[:5]}"
                gscale = max(float(g.abs().max()) for g in ref[2])
                for what, a, b in zip(("q", "k", "v", "i", "f", "C0", "n0"), ref[2], got[2]):
                    assert torch.isfinite(b).all(), f"{name} {which} init={init}: grad {what} not finite"
                    err = float((a - b.double()).abs().max()) / gscale
                    assert err <= rtol, f"{name} {which} init={init}: grad {what} error {err:.2e}"
            # the one-token step (under no_grad: the native step where it applies) on the same rows
            with torch.no_grad():
                h_step = mlstm_step_loop(*(t.float() for t in (q, k, v, i, f)), initial_state=s32,
                                         forget_gate=forget_gate)
            errs = row_errors(ref[0], h_step)
            assert (errs <= rtol).all(), f"step {which} init={init}: {[rows[r] for r in (errs > rtol).nonzero()]}"


def test_step_native_path_at_finite_extremes():
    """Rows with finite extreme gates only, so that the inference step can run natively (ops/native), still equal
    the float64 reference."""
    S = 20
    finite = [v for v in EXTREMES if math.isfinite(v)]
    B = 2 * len(finite)
    x = make_mlstm_inputs(B, 2, S, 4, 3, seed=5, dtype=F64)
    q, k, v, i, f = (t.clone() for t in x)
    q, k = q.abs(), k.abs()
    for r, val in enumerate(finite):
        f[r, :, 7] = val
        i[len(finite) + r, :, 7] = val
    ref = mlstm_reference(q, k, v, i, f)
    with torch.no_grad():
        got = mlstm_step_loop(*(t.float() for t in (q, k, v, i, f)))
    assert (row_errors(ref, got) <= 1e-5).all()


# ----------------------------------------------------------------------------------------------------------------------
# 3. the meaning of infinite gates and of the empty state (docs/mlstm.md, "Infinities")


@pytest.mark.parametrize("form", [*FORMS, "reference"])
def test_minus_inf_forget_gate_is_a_hard_reset(form):
    """f~ = -inf at step p: from p on, everything is as if the sequence started at p from the empty state
    (C, n, m) = (0, 0, -inf), values and gradients; no gradient reaches anything before p (exactly 0)."""
    fn = mlstm_reference if form == "reference" else FORMS[form]
    S, p = 40, 17
    x = make_mlstm_inputs(1, 2, S, 4, 3, seed=11)
    f = x.f.clone()
    f[..., p] = -INF
    xs = leaves(x.q, x.k, x.v, x.i, f)
    h, st = fn(*xs, initial_state=random_state(1, 2, 4, 3, seed=1), return_state=True)
    empty = MLSTMState(torch.zeros(1, 2, 4, 3, dtype=F64), torch.zeros(1, 2, 4, dtype=F64),
                       torch.full((1, 2), -INF, dtype=F64))
    tail = leaves(*(t[:, :, p:] for t in (x.q, x.k, x.v, x.i, f)))
    h_tail, st_tail = fn(*tail, initial_state=empty, return_state=True)
    assert_close("h after the reset", h_tail, h[:, :, p:], 1e-10, 1e-12)
    for what, a, b in zip("Cnm", st_tail, st):
        assert_close(f"final {what}", a, b, 1e-10, 1e-12)
    h[:, :, p:].sum().backward()
    for what, t in zip("qkvi", xs):
        assert torch.equal(t.grad[:, :, :p], torch.zeros_like(t.grad[:, :, :p])), f"grad {what} before the reset"
    # the forget gates' gradient is a difference of sums in the quadratic forms: 0 to rounding there
    df = xs[4].grad
    assert float(df[:, :, :p].abs().max()) <= 1e-13 * float(df.abs().max())


@pytest.mark.parametrize("form", [*FORMS, "reference"])
def test_infinite_input_gates(form):
    """i~ = +inf writes k v^T with weight 1 and erases the rest (the state becomes k v^T, k with m = +inf); later
    finite writes are then negligible (weight 0) and another +inf write adds with weight 1; i~ = -inf writes nothing
    into the empty state (0, 0, -inf), which reads as h = 0 without a NaN; gradients stay finite."""
    fn = mlstm_reference if form == "reference" else FORMS[form]
    S, DQK = 6, 4
    x = make_mlstm_inputs(1, 1, S, DQK, 3, seed=12)
    i = torch.tensor([[[-INF, -INF, INF, 0.5, INF, -1.0]]], dtype=F64)
    f = torch.full((1, 1, S), 3.0, dtype=F64)
    xs = leaves(x.q, x.k, x.v, i, f)
    empty = MLSTMState(torch.zeros(1, 1, DQK, 3, dtype=F64), torch.zeros(1, 1, DQK, dtype=F64),
                       torch.full((1, 1), -INF, dtype=F64))
    h, st = fn(*xs, initial_state=empty, return_state=True)
    assert torch.equal(h[:, :, :2], torch.zeros_like(h[:, :, :2]))  # an empty state reads as 0
    k = x.k * DQK**-0.5
    kv = lambda t: k[0, 0, t, :, None] * x.v[0, 0, t, None, :]  # noqa: E731
    C2, n2 = kv(2), k[0, 0, 2]
    C4, n4 = kv(2) + kv(4), k[0, 0, 2] + k[0, 0, 4]
    for t, C, n in ((2, C2, n2), (3, C2, n2), (4, C4, n4), (5, C4, n4)):
        qt = x.q[0, 0, t]
        assert_close(f"h at {t}", (C.T @ qt) / ((n @ qt).abs() + 1e-6), h[0, 0, t], 1e-12, 1e-14)
    assert_close("final C", C4[None, None], st.C, 1e-12, 1e-14)
    assert_close("final n", n4[None, None], st.n, 1e-12, 1e-14)
    assert st.m.item() == INF
    h.sum().backward()
    for what, t in zip("qkvif", xs):
        assert torch.isfinite(t.grad).all(), f"grad {what}"
    assert torch.equal(xs[3].grad[0, 0, [0, 1, 2, 4]], torch.zeros(4, dtype=F64))  # -inf and +inf: locally constant


@pytest.mark.parametrize("form", [*FORMS, "reference"])
def test_infinite_state_carries_on(form):
    """A state with m = +inf (from an infinite input gate) given to the next call acts as the frozen memory it is:
    pieces with a carried state equal the whole, also through the infinities."""
    fn = mlstm_reference if form == "reference" else FORMS[form]
    x = make_mlstm_inputs(1, 2, 30, 4, 3, seed=13)
    i = x.i.clone()
    i[0, 0, 5], i[0, 1, 20] = INF, -INF
    f = x.f.clone()
    f[0, 1, 8] = -INF
    h, st = fn(x.q, x.k, x.v, i, f, return_state=True)
    h1, st1 = fn(*(t[:, :, :11] for t in (x.q, x.k, x.v, i, f)), return_state=True)
    h2, st2 = fn(*(t[:, :, 11:] for t in (x.q, x.k, x.v, i, f)), initial_state=st1, return_state=True)
    assert st1.m[0, 0].item() == INF
    assert_close("h", h, torch.cat([h1, h2], dim=2), 1e-10, 1e-12)
    for what, a, b in zip("Cnm", st, st2):
        assert torch.equal(torch.isinf(a), torch.isinf(b))
        fin = torch.isfinite(a)
        assert_close(f"final {what}", a[fin], b[fin], 1e-10, 1e-12)


@pytest.mark.parametrize("form", [*FORMS, "reference"])
def test_infinite_exp_forget_gate_is_undefined(form):
    """With the exp forget gate, f~ = +inf (an infinite forget gate) is undefined: h is NaN from that step on."""
    fn = mlstm_reference if form == "reference" else FORMS[form]
    x = make_mlstm_inputs(1, 1, 10, 4, 3, seed=14, f_mean=-0.3, f_std=0.2)
    f = x.f.clone()
    f[..., 4] = INF
    h = fn(x.q, x.k, x.v, x.i, f, forget_gate="exp")
    assert torch.isfinite(h[:, :, :4]).all() and torch.isnan(h[:, :, 4:]).all()


@pytest.mark.parametrize("form", [*FORMS, "reference"])
@pytest.mark.parametrize("which", ["q", "k", "v", "i", "f", "C", "n", "m"])
def test_nan_in_nan_out(form, which):
    """A NaN in any input makes h NaN at its step and every later step, never a number (float32, the native step
    included). (Steps before it in the same chunk may also turn NaN; they are not tested.)"""
    fn = mlstm_reference if form == "reference" else FORMS[form]
    S, p = 20, 9
    x = [t.float().clone() for t in make_mlstm_inputs(1, 2, S, 4, 3, seed=15)]
    st = MLSTMState(*(t.float().clone() for t in random_state(1, 2, 4, 3, seed=2)))
    if which in "qkvif":
        x["qkvif".index(which)][0, 1, p] = math.nan
    else:
        getattr(st, which)[0, 1] = math.nan
        p = 0
    with torch.no_grad():
        h, st_out = fn(*x, initial_state=st, return_state=True)
    after = h[0, 1, p:p + 1] if which == "q" else h[0, 1, p:]  # a query is read at its own step only
    assert torch.isnan(after).all(), f"NaN in {which} at step {p} gave a number"
    if which != "q":
        assert any(torch.isnan(t[0, 1]).any() for t in st_out), f"NaN in {which}: the final state has no NaN"


# ----------------------------------------------------------------------------------------------------------------------
# 4. padding masks: each row of a padded batch equals its sequence run alone


def mask_patterns(S):
    """Rows: no padding, left padding, right padding, holes, a whole 16-chunk of pads, a single real step."""
    g = torch.Generator().manual_seed(S)
    m = torch.ones(6, S, dtype=torch.bool)
    m[1, : S // 3] = False
    m[2, S - S // 4:] = False
    m[3] = torch.rand(S, generator=g) > 0.4
    m[3, 0] = True
    m[4, 16:32] = False
    m[4, 40:] = False
    m[5] = False
    m[5, S // 2] = True
    return m


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("init", [False, True], ids=["no_state", "state"])
@pytest.mark.parametrize("form", [*FORMS, "reference"])
def test_padded_rows_equal_sequences_run_alone(form, init, forget_gate):
    """Pads anywhere (left, right, holes, a whole chunk), filled with garbage (NaN, inf, 1e30): each row's h at its
    real steps, its final state and all gradients equal those of its real steps run alone (float64, through the
    reference); every gradient at a pad is exactly 0."""
    fn = mlstm_reference if form == "reference" else FORMS[form]
    S, B = 50, 6
    mask = mask_patterns(S)
    x = [t.clone() for t in make_mlstm_inputs(B, 2, S, 4, 3, seed=16, f_mean=2.0 if forget_gate == "sigmoid"
                                               else -0.3, f_std=1.0 if forget_gate == "sigmoid" else 0.3)]
    pads = (~mask)[:, None, :]  # (B, 1, S)
    for t, junk in zip(x, (math.nan, INF, -1e30, math.nan, math.nan)):
        t.masked_fill_(pads[..., None] if t.dim() == 4 else pads, junk)
    s0 = grad_state(random_state(B, 2, 4, 3, seed=4)) if init else None
    xs = leaves(*x)
    h, st, grads = run(fn, xs, s0, loss_mask=mask.to(F64), mask=mask, forget_gate=forget_gate)
    for r in range(B):
        real = mask[r]
        alone = leaves(*(t[r:r + 1, :, real] for t in x))
        s_r = None if s0 is None else grad_state(MLSTMState(*(t[r:r + 1] for t in s0)))
        h_r, st_r, g_r = run(mlstm_reference, alone, s_r, seed=100 + r, forget_gate=forget_gate)
        assert_close(f"row {r} h", h_r, h[r:r + 1, :, real], 1e-9, 1e-11)
        for what, a, b in zip("Cnm", st_r, st):
            assert_close(f"row {r} final {what}", a, b[r:r + 1], 1e-9, 1e-11)
    # gradients: the padded batch's loss restricted to one row's real steps equals the row run alone
    for what, g in zip("qkvif", grads):
        at_pads = g[(~mask)[:, None].expand(B, 2, S)]
        assert torch.equal(at_pads, torch.zeros_like(at_pads)), f"grad {what} at pads is not exactly 0"
    r = 3
    real = mask[r]
    sel = torch.zeros(B, dtype=torch.bool)
    sel[r] = True

    def one_row(*a, initial_state=None, return_state=False, **kw):
        hh, ss = fn(*a, initial_state=initial_state, return_state=True, mask=mask, forget_gate=forget_gate)
        return hh[sel][:, :, real], MLSTMState(*(t[sel] for t in ss))

    xs = leaves(*x)
    _, _, g_pad = run(one_row, xs, None if s0 is None else grad_state(s0), seed=5)
    alone = leaves(*(t[r:r + 1, :, real] for t in x))
    s_r = None if s0 is None else grad_state(MLSTMState(*(t[r:r + 1] for t in s0)))
    _, _, g_alone = run(mlstm_reference, alone, s_r, seed=5, forget_gate=forget_gate)
    for what, a, b in zip("qkvif", g_alone, g_pad):
        assert_close(f"row {r} grad {what}", a, b[r:r + 1, :, real], 1e-9, 1e-11)
    if s0 is not None:
        for what, a, b in zip("Cn", g_alone[5:], g_pad[5:]):
            assert_close(f"row {r} grad initial {what}", a, b[r:r + 1], 1e-9, 1e-11)


def test_masked_step_leaves_state_bit_for_bit():
    """A masked step returns the state it was given, exactly (bit for bit), whatever the state (an infinite m
    included), and h = 0 at that step."""
    B = 4
    x = make_mlstm_inputs(B, 2, 1, 4, 3, seed=17, dtype=F32)
    st = MLSTMState(*(t.float() for t in random_state(B, 2, 4, 3, seed=6)))
    st.m[1, 0], st.m[2, 1] = INF, -INF
    mask = torch.zeros(B, dtype=torch.bool)
    h, new = mlstm_step(*(t[:, :, 0] for t in x), st, mask=mask)
    assert torch.equal(h, torch.zeros_like(h))
    for a, b in zip(st, new):
        assert torch.equal(a, b)
    for name, fn in FORMS.items():
        h, new = fn(*x, initial_state=st, return_state=True, mask=mask[:, None])
        for what, a, b in zip("Cnm", st, new):
            assert torch.equal(a, b), f"{name} {what}"


# ----------------------------------------------------------------------------------------------------------------------
# 5. batch 0


@pytest.mark.parametrize("form", [*FORMS, "reference"])
def test_batch_zero_gives_empty_outputs(form):
    fn = mlstm_reference if form == "reference" else FORMS[form]
    x = leaves(*make_mlstm_inputs(0, 2, 9, 4, 3))
    s0 = MLSTMState(*leaves(torch.zeros(0, 2, 4, 3, dtype=F64), torch.zeros(0, 2, 4, dtype=F64)),
                    torch.zeros(0, 2, dtype=F64))
    h, st = fn(*x, initial_state=s0, return_state=True, mask=torch.ones(0, 9, dtype=torch.bool))
    assert h.shape == (0, 2, 9, 3)
    assert [tuple(t.shape) for t in st] == [(0, 2, 4, 3), (0, 2, 4), (0, 2)]
    (h.sum() + st.C.sum()).backward()
    assert all(t.grad is not None and t.grad.shape == t.shape for t in x)

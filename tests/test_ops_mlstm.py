"""Tests of the mLSTM ops (src/xlstmkit/ops/mlstm/): the parallel, chunkwise and recurrent forms and the single
step compute the same function (outputs, final states and gradients), for any S and chunk size, with and without a
carried state; they match a naive unstabilised reference; they stay finite at extreme gate values; bad input is
rejected with a message naming the argument.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xlstmkit.ops.mlstm import (
    MLSTMState,
    mlstm,
    mlstm_chunkwise,
    mlstm_parallel,
    mlstm_recurrent,
    mlstm_step,
    zero_state,
)

from conftest import assert_close, assert_finite, make_mlstm_inputs, naive_mlstm

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
F32 = torch.float32
# float64 agreement between forms: pure rounding differences, values and grads are O(1)
TOL64 = dict(rtol=1e-9, atol=1e-11)
GRAD_NAMES = ("q", "k", "v", "i", "f")


def form_fn(form: str, chunk_size: int = 16):
    """The op for a form name; 'chunkwise' gets the given chunk size."""
    if form == "parallel":
        return mlstm_parallel
    if form == "chunkwise":
        return functools.partial(mlstm_chunkwise, chunk_size=chunk_size)
    if form == "recurrent":
        return mlstm_recurrent
    raise AssertionError(form)


def prefix_state(B, NH, DQK, DV, *, seed=1000, dtype=F64, S_prefix=9, requires_grad=True) -> MLSTMState:
    """A realistic initial state: the final state of the op on a random prefix (strong input gates, so m is far from
    0 and the stabilised coordinates matter). C and n are fresh leaves; m is a plain tensor (it has no gradient)."""
    x = make_mlstm_inputs(B, NH, S_prefix, DQK, DV, seed=seed, dtype=dtype, i_mean=2.0, i_std=3.0)
    _, st0 = mlstm_recurrent(*x, return_state=True)
    assert st0.m.abs().max() > 1.0  # the prefix really moved the stabiliser
    C = st0.C.detach().clone().requires_grad_(requires_grad)
    n = st0.n.detach().clone().requires_grad_(requires_grad)
    return MLSTMState(C, n, st0.m.detach().clone())


def run_with_grads(fn, x, state0, *, seed=7, **kw):
    """Run fn with return_state=True and backpropagate fixed random cotangents of h and of the final C and n.

    Returns (h, final state, {name: grad}) with grads of q, k, v, i, f and of the initial C, n when given."""
    h, st_ = fn(*x, initial_state=state0, return_state=True, **kw)
    g = torch.Generator().manual_seed(seed)
    gh = torch.randn(h.shape, generator=g, dtype=F64).to(h.dtype)
    gC = torch.randn(st_.C.shape, generator=g, dtype=F64).to(st_.C.dtype)
    gn = torch.randn(st_.n.shape, generator=g, dtype=F64).to(st_.n.dtype)
    loss = (h * gh).sum() + (st_.C * gC).sum() + (st_.n * gn).sum()
    names = list(GRAD_NAMES)
    leaves = list(x)
    if state0 is not None:
        names += ["C0", "n0"]
        leaves += [state0.C, state0.n]
    grads = torch.autograd.grad(loss, leaves)
    return h.detach(), MLSTMState(*(t.detach() for t in st_)), dict(zip(names, grads))


def compare_runs(tag, ref, got, *, rtol, atol, grad_rtol=None, grad_atol=None):
    """Compare two run_with_grads results: h, final (C, n, m), and all gradients."""
    h_r, s_r, g_r = ref
    h_g, s_g, g_g = got
    assert_close(f"{tag} h", h_r, h_g, rtol, atol)
    for name in ("C", "n", "m"):
        assert_close(f"{tag} final {name}", getattr(s_r, name), getattr(s_g, name), rtol, atol)
    assert g_r.keys() == g_g.keys()
    for name in g_r:
        assert_close(f"{tag} grad {name}", g_r[name], g_g[name], grad_rtol or rtol, grad_atol or atol)


def leaf_inputs(S, *, B=2, NH=2, DQK=8, DV=12, seed=0, dtype=F64, **kw):
    return make_mlstm_inputs(B, NH, S, DQK, DV, seed=seed, dtype=dtype, requires_grad=True, **kw)


S_VALUES = [1, 7, 63, 64, 65, 130]
INIT = pytest.mark.parametrize("init", [False, True], ids=["zero_state", "prefix_state"])


# ----------------------------------------------------------------------------------------------------------------------
# 1. the forms agree: outputs, final states, gradients (incl. of the initial C and n)


@INIT
@pytest.mark.parametrize("S", S_VALUES, ids=[f"S{s}" for s in S_VALUES])
def test_recurrent_matches_parallel_float64(S, init):
    x = leaf_inputs(S, seed=S)
    s0 = prefix_state(2, 2, 8, 12) if init else None
    ref = run_with_grads(mlstm_parallel, x, s0)
    got = run_with_grads(mlstm_recurrent, x, s0)
    compare_runs("recurrent vs parallel", ref, got, **TOL64)


@INIT
@pytest.mark.parametrize("L", [16, 64, 7], ids=lambda L: f"L{L}")
@pytest.mark.parametrize("S", S_VALUES, ids=[f"S{s}" for s in S_VALUES])
def test_chunkwise_matches_parallel_float64(S, L, init):
    x = leaf_inputs(S, seed=S + 1)
    s0 = prefix_state(2, 2, 8, 12) if init else None
    ref = run_with_grads(mlstm_parallel, x, s0)
    got = run_with_grads(form_fn("chunkwise", L), x, s0)
    compare_runs(f"chunkwise(L={L}) vs parallel", ref, got, **TOL64)


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
def test_forms_float32_match_float64(form):
    """Each form in float32 stays within float32 rounding of the float64 result (S=65, chunk 16: partial chunk)."""
    S = 65
    x64 = leaf_inputs(S, seed=3)
    s64 = prefix_state(2, 2, 8, 12)
    ref = run_with_grads(mlstm_parallel, x64, s64)
    x32 = tuple(t.detach().float().requires_grad_() for t in x64)
    s32 = MLSTMState(*(t.detach().float().requires_grad_(t.requires_grad) for t in s64))
    got = run_with_grads(form_fn(form, 16), x32, s32)
    assert got[0].dtype == F32 and got[1].C.dtype == F32
    compare_runs(f"{form} float32 vs float64", ref, got, rtol=1e-4, atol=1e-5, grad_rtol=1e-3, grad_atol=1e-4)


@pytest.mark.parametrize("S", [7, 65], ids=lambda s: f"S{s}")
def test_exp_forget_gate_forms_agree(S):
    # exp forget gate: log f = f~, so keep f~ mostly negative (gates below 1) but allow some above 1
    x = leaf_inputs(S, seed=11, f_mean=-0.3, f_std=0.5)
    s0 = prefix_state(2, 2, 8, 12)
    ref = run_with_grads(mlstm_parallel, x, s0, forget_gate="exp")
    for form, L in (("chunkwise", 16), ("chunkwise", 7), ("recurrent", 0)):
        got = run_with_grads(form_fn(form, L), x, s0, forget_gate="exp")
        compare_runs(f"{form}(L={L}) exp gate vs parallel", ref, got, **TOL64)
    # and the option really changes the function
    h_sig = mlstm_parallel(*x, initial_state=s0)
    assert (h_sig.detach() - ref[0]).abs().max() > 1e-3


def test_default_initial_state_is_zero_state():
    x = make_mlstm_inputs(S=20, seed=5)
    for form in ("parallel", "chunkwise", "recurrent"):
        fn = form_fn(form, 8)
        assert_close(f"{form} zero_state", fn(*x), fn(*x, initial_state=zero_state(2, 2, 8, 12, dtype=F64)), 0, 0)


# ----------------------------------------------------------------------------------------------------------------------
# 2. pieces with carried state equal the whole; the single step equals the forms


@pytest.mark.parametrize("split", [1, 7, 16, 19], ids=lambda s: f"split{s}")
@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
def test_pieces_equal_whole(form, split):
    S = 20
    fn = form_fn(form, 8)
    x = leaf_inputs(S, seed=21)
    s0 = prefix_state(2, 2, 8, 12)
    whole = run_with_grads(fn, x, s0)

    def two_pieces(q, k, v, i, f, *, initial_state, return_state):
        h1, st1 = fn(q[:, :, :split], k[:, :, :split], v[:, :, :split], i[..., :split], f[..., :split],
                     initial_state=initial_state, return_state=True)
        h2, st2 = fn(q[:, :, split:], k[:, :, split:], v[:, :, split:], i[..., split:], f[..., split:],
                     initial_state=st1, return_state=True)
        return torch.cat([h1, h2], dim=2), st2

    # gradients flow through the carried state into the first piece
    pieces = run_with_grads(two_pieces, x, s0)
    compare_runs(f"{form} pieces at {split} vs whole", whole, pieces, **TOL64)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_step_token_by_token_equals_forms(forget_gate):
    S = 19
    x = make_mlstm_inputs(S=S, seed=31, f_mean=2.0 if forget_gate == "sigmoid" else -0.2, f_std=0.5)
    s0 = prefix_state(2, 2, 8, 12, requires_grad=False)
    state = s0
    hs = []
    for t in range(S):
        h_t, state = mlstm_step(*(a[:, :, t] for a in x), state, forget_gate=forget_gate)
        assert h_t.shape == (2, 2, 12)
        hs.append(h_t)
    h_step = torch.stack(hs, dim=2)
    for form in ("parallel", "chunkwise", "recurrent"):
        h, st_ = form_fn(form, 8)(*x, initial_state=s0, return_state=True, forget_gate=forget_gate)
        assert_close(f"step vs {form} h", h, h_step, **TOL64)
        for name in ("C", "n", "m"):
            assert_close(f"step vs {form} final {name}", getattr(st_, name), getattr(state, name), **TOL64)


# ----------------------------------------------------------------------------------------------------------------------
# 3. gradcheck (float64, tiny)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
def test_gradcheck(form, forget_gate):
    # chunk size 3 on S=8: two full chunks and a partial one
    fn = form_fn(form, 3)
    x = leaf_inputs(8, B=1, NH=2, DQK=3, DV=4, seed=41, f_mean=2.0 if forget_gate == "sigmoid" else -0.2)
    s0 = prefix_state(1, 2, 3, 4)
    m0 = s0.m  # the stabiliser has no gradient by design: a constant here
    # eps=0: with eps > 0 the function depends on m through the eps term of the denominator (relative size
    # eps * exp(m), ~1e-3 here with the prefix state's m), and that dependence is, by design, not differentiated

    def func(q, k, v, i, f, C0, n0):
        h, st_ = fn(q, k, v, i, f, initial_state=(C0, n0, m0), return_state=True, forget_gate=forget_gate, eps=0.0)
        # the final state in the paper's coordinates: the stabilised C, n are scaled by exp(-m) with an m that moves
        # with the inputs but carries no gradient by design, so only C exp(m), n exp(m) are differentiable functions
        scale = torch.exp(st_.m)
        return h, st_.C * scale[..., None, None], st_.n * scale[..., None]

    assert torch.autograd.gradcheck(func, (*x, s0.C, s0.n), eps=1e-6, atol=1e-6, rtol=1e-4)


# ----------------------------------------------------------------------------------------------------------------------
# 4. extreme gate values


def extreme_inputs(S, i_val, f_val, dtype=F32, seed=51):
    x = make_mlstm_inputs(1, 2, S, 8, 8, seed=seed, dtype=dtype)
    i = torch.full_like(x.i, float(i_val))
    f = torch.full_like(x.f, float(f_val))
    # perturb a little so positions differ, and keep one ordinary stretch in the middle
    i = i + 0.1 * x.i
    f = f + 0.1 * x.f
    i[..., S // 3 : S // 3 + 3] = x.i[..., S // 3 : S // 3 + 3]
    return tuple(t.clone().requires_grad_() for t in (x.q, x.k, x.v, i, f))


@pytest.mark.parametrize("init", [False, True], ids=["zero_state", "prefix_state"])
@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("f_val", [-50, 50], ids=lambda v: f"f{v:+d}")
@pytest.mark.parametrize("i_val", [-100, 100], ids=lambda v: f"i{v:+d}")
def test_extreme_gates_finite_and_forms_agree(i_val, f_val, forget_gate, init):
    """float32 at gate pre-activations of +-100 (input) and +-50 (forget): outputs and gradients finite in every
    form, and still equal to the float64 parallel result."""
    S = 21
    x = extreme_inputs(S, i_val, f_val)
    s0 = prefix_state(1, 2, 8, 8, dtype=F32) if init else None
    x64 = tuple(t.detach().double().requires_grad_() for t in x)
    s64 = None if s0 is None else MLSTMState(*(t.detach().double().requires_grad_(t.requires_grad) for t in s0))
    ref = run_with_grads(mlstm_parallel, x64, s64, forget_gate=forget_gate)
    for form in ("parallel", "chunkwise", "recurrent"):
        h, st_, grads = run_with_grads(form_fn(form, 8), x, s0, forget_gate=forget_gate)
        assert_close(f"{form} h", ref[0], h, rtol=1e-4, atol=1e-5)
        for name in ("C", "n", "m"):
            assert_finite(f"{form} final {name}", getattr(st_, name))
        for name, g in grads.items():
            assert_finite(f"{form} grad {name}", g)
            # absolute tolerance: some gradients are ~1e-21 (d/df~ at f~=-50) or ~1e-3 (d/dq when one key
            # dominates), below float32 resolution relative to the others (O(1-10)); measured max abs error 1e-4
            assert_close(f"{form} grad {name}", ref[2][name], g, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("f_val", [-50, 50], ids=lambda v: f"f{v:+d}")
@pytest.mark.parametrize("i_val", [-100, 100], ids=lambda v: f"i{v:+d}")
def test_extreme_gates_default_chunk_size(i_val, f_val, forget_gate):
    """The same extremes over full 64-chunks (where the log forget sum within a chunk reaches +-3200) and a partial
    one: chunkwise float32 with the default chunk size equals the float64 parallel result, gradients finite."""
    x = extreme_inputs(150, i_val, f_val)
    x64 = tuple(t.detach().double().requires_grad_() for t in x)
    ref = run_with_grads(mlstm_parallel, x64, None, forget_gate=forget_gate)
    h, st_, grads = run_with_grads(mlstm_chunkwise, x, None, forget_gate=forget_gate)
    # (the within-chunk log weights are segment sums, not differences of a cumulative sum that reaches -3200 at
    # f~ = -50: as accurate as the parallel form's)
    assert_close("chunkwise(L=64) h", ref[0], h, rtol=1e-4, atol=1e-5)
    for name, g in grads.items():
        assert_finite(f"chunkwise(L=64) grad {name}", g)


def test_random_extreme_gates_finite():
    """Every position independently at one of the extremes, in float32, all forms."""
    S = 40
    g = torch.Generator().manual_seed(61)
    x = make_mlstm_inputs(2, 2, S, 8, 8, seed=61, dtype=F32)
    i = (torch.randint(0, 2, x.i.shape, generator=g) * 200 - 100).float()
    f = (torch.randint(0, 2, x.f.shape, generator=g) * 100 - 50).float()
    x = tuple(t.clone().requires_grad_() for t in (x.q, x.k, x.v, i, f))
    for forget_gate in ("sigmoid", "exp"):
        for form in ("parallel", "chunkwise", "recurrent"):
            h, st_, grads = run_with_grads(form_fn(form, 16), x, None, forget_gate=forget_gate)
            assert_finite(f"{form}/{forget_gate} h", h)
            for name, gr in grads.items():
                assert_finite(f"{form}/{forget_gate} grad {name}", gr)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_long_sequence_4096(forget_gate):
    """S=4096 in float32: chunkwise and parallel finite (outputs and gradients) and equal; the cumulative log forget
    sum reaches thousands, so this catches a cumsum-difference formulation that loses precision."""
    S = 4096
    x = make_mlstm_inputs(1, 1, S, 8, 8, seed=71, dtype=F32, f_mean=3.0 if forget_gate == "sigmoid" else -0.5)
    x = tuple(t.requires_grad_() for t in x)
    ref = run_with_grads(mlstm_parallel, x, None, forget_gate=forget_gate)
    got = run_with_grads(form_fn("chunkwise", 64), x, None, forget_gate=forget_gate)
    for name, t in [("h", got[0])] + [(f"grad {k}", g) for k, g in got[2].items()]:
        assert_finite(f"chunkwise {name}", t)
    compare_runs("chunkwise vs parallel S=4096", ref, got, rtol=1e-3, atol=1e-4, grad_rtol=1e-2, grad_atol=1e-3)


def test_long_sequence_4096_recurrent():
    """The step-by-step form over 4096 steps (about 2 s): finite, and equal to the chunkwise form."""
    S = 4096
    x = tuple(t.requires_grad_() for t in make_mlstm_inputs(1, 1, S, 8, 8, seed=71, dtype=F32, f_mean=3.0))
    ref = run_with_grads(form_fn("chunkwise", 64), x, None)
    got = run_with_grads(mlstm_recurrent, x, None)
    compare_runs("recurrent vs chunkwise S=4096", ref, got, rtol=1e-3, atol=1e-4, grad_rtol=1e-2, grad_atol=1e-3)


# ----------------------------------------------------------------------------------------------------------------------
# 5. bfloat16


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
def test_bfloat16_inputs(form):
    fn = form_fn(form, 16)
    x16 = tuple(t.to(torch.bfloat16).requires_grad_() for t in make_mlstm_inputs(S=37, seed=81, dtype=F32))
    s0 = prefix_state(2, 2, 8, 12, dtype=F32, requires_grad=False)
    h16, st16 = fn(*x16, initial_state=s0, return_state=True)
    assert h16.dtype == torch.bfloat16
    assert all(t.dtype == F32 for t in st16), [t.dtype for t in st16]
    x32 = tuple(t.detach().float() for t in x16)  # the same (bf16-representable) values in float32
    h32, st32 = fn(*x32, initial_state=s0, return_state=True)
    assert_close(f"{form} bf16 h", h32, h16, rtol=1e-2, atol=1e-2)
    for name in ("C", "n", "m"):
        assert_close(f"{form} bf16 final {name}", getattr(st32, name), getattr(st16, name), rtol=1e-3, atol=1e-4)
    h16.float().square().sum().backward()
    for name, t in zip(GRAD_NAMES, x16):
        assert t.grad is not None and t.grad.dtype == torch.bfloat16, name
        assert_finite(f"{form} bf16 grad {name}", t.grad)


# ----------------------------------------------------------------------------------------------------------------------
# 6. a naive, unstabilised float64 reference


@pytest.mark.parametrize("init", [False, True], ids=["zero_state", "prefix_state"])
@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_matches_naive_reference(forget_gate, init):
    S = 24
    # moderate gates; input gates spread so that |n^T q| falls on both sides of the lower bound 1
    x = make_mlstm_inputs(2, 2, S, 4, 5, seed=91, i_mean=-1.0, i_std=2.0,
                          f_mean=1.5 if forget_gate == "sigmoid" else -0.1, f_std=0.5)
    s0 = prefix_state(2, 2, 4, 5, requires_grad=False) if init else None
    if init:
        scale = torch.exp(s0.m)
        h_ref, C_ref, n_ref = naive_mlstm(*x, forget_gate, s0.C * scale[..., None, None], s0.n * scale[..., None])
    else:
        h_ref, C_ref, n_ref = naive_mlstm(*x, forget_gate)
    # the test data does exercise both branches of max(|n^T q|, 1)
    for form in ("parallel", "chunkwise", "recurrent"):
        h, st_ = form_fn(form, 5)(*x, initial_state=s0, return_state=True, eps=0.0, forget_gate=forget_gate)
        assert_close(f"{form} vs naive h", h_ref, h, rtol=1e-9, atol=1e-12)
        scale = torch.exp(st_.m)
        assert_close(f"{form} vs naive C", C_ref, st_.C * scale[..., None, None], rtol=1e-9, atol=1e-12)
        assert_close(f"{form} vs naive n", n_ref, st_.n * scale[..., None], rtol=1e-9, atol=1e-12)


def test_naive_reference_data_hits_both_denominator_branches():
    """Guard for the test above: its data must make |n^T q| both smaller and larger than 1."""
    x = make_mlstm_inputs(2, 2, 24, 4, 5, seed=91, i_mean=-1.0, i_std=2.0, f_mean=1.5, f_std=0.5)
    k = x.k * 4**-0.5
    n = torch.zeros(2, 2, 4, dtype=F64)
    qn = []
    for t in range(24):
        n = torch.sigmoid(x.f[:, :, t])[..., None] * n + torch.exp(x.i[:, :, t])[..., None] * k[:, :, t]
        qn.append((n * x.q[:, :, t]).sum(-1).abs())
    qn = torch.stack(qn)
    assert (qn < 1).any() and (qn > 1).any()


# ----------------------------------------------------------------------------------------------------------------------
# 7. bad input


def _bad_cases():
    """(id, function mutating a dict of keyword arguments, expected exception, message regex)."""

    def set_(key, fn):
        def mut(kw):
            kw[key] = fn(kw[key]) if callable(fn) else fn

        return mut

    return [
        ("q_rank3", set_("q", lambda t: t[:, :, 0]), ValueError, r"\bq must have shape"),
        ("q_rank5", set_("q", lambda t: t[None]), ValueError, r"\bq must have shape"),
        ("k_dim_mismatch", set_("k", lambda t: t[..., :-1]), ValueError, r"\bk must have the shape of q"),
        ("v_length_mismatch", set_("v", lambda t: t[:, :, :-1]), ValueError, r"\bv must have shape"),
        ("v_rank3", set_("v", lambda t: t[:, :, 0]), ValueError, r"\bv must have shape"),
        ("i_length_mismatch", set_("i", lambda t: t[..., :-1]), ValueError, r"\bi must have shape"),
        ("i_with_feature_dim", set_("i", lambda t: t[..., None]), ValueError, r"\bi must have shape"),
        ("f_batch_mismatch", set_("f", lambda t: t[:1]), ValueError, r"\bf must have shape"),
        ("q_int", set_("q", lambda t: t.long()), TypeError, r"\bq must be a floating-point"),
        ("f_int", set_("f", lambda t: t.to(torch.int32)), TypeError, r"\bf must be a floating-point"),
        ("v_not_tensor", set_("v", lambda t: t.tolist()), TypeError, r"\bv must be a torch.Tensor"),
        ("S0", lambda kw: kw.update({n: kw[n][:, :, :0] for n in "qkvif"}), ValueError, r"S >= 1"),
        ("init_C_shape", set_("initial_state", lambda s: (s[0][..., :-1], s[1], s[2])), ValueError,
         r"initial_state C must have shape"),
        ("init_n_shape", set_("initial_state", lambda s: (s[0], s[1][:1], s[2])), ValueError,
         r"initial_state n must have shape"),
        ("init_m_shape", set_("initial_state", lambda s: (s[0], s[1], s[2][..., None])), ValueError,
         r"initial_state m must have shape"),
        ("init_two_tensors", set_("initial_state", lambda s: s[:2]), TypeError, r"initial_state"),
        ("init_tensor", set_("initial_state", lambda s: s[0]), TypeError, r"initial_state"),
        ("forget_gate_name", set_("forget_gate", "tanh"), ValueError, r"forget_gate"),
        ("head_dim_0", lambda kw: kw.update(q=kw["q"][..., :0], k=kw["k"][..., :0]), ValueError,
         r"head dims must be >= 1"),
        ("value_dim_0", lambda kw: kw.update(v=kw["v"][..., :0]), ValueError, r"head dims must be >= 1"),
        ("eps_negative", set_("eps", -1e-6), ValueError, r"eps must be finite and >= 0"),
        ("eps_nan", set_("eps", float("nan")), ValueError, r"eps must be finite and >= 0"),
        ("eps_inf", set_("eps", float("inf")), ValueError, r"eps must be finite and >= 0"),
        ("eps_tensor", set_("eps", torch.tensor(1e-6)), TypeError, r"eps must be a real number"),
        ("mask_float", set_("mask", lambda m: m.float()), TypeError, r"mask must have dtype torch.bool"),
        ("mask_shape", set_("mask", lambda m: m[:, :-1]), ValueError, r"mask must have shape \(B, S\)"),
        ("mask_list", set_("mask", lambda m: m.tolist()), TypeError, r"mask must be a bool torch.Tensor"),
        ("init_C_int", set_("initial_state", lambda s: (s[0].long(), s[1], s[2])), TypeError,
         r"initial_state C must be a floating-point"),
        ("init_n_list", set_("initial_state", lambda s: (s[0], s[1].tolist(), s[2])), TypeError,
         r"initial_state n must be a torch.Tensor"),
    ]


BAD = _bad_cases()


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
@pytest.mark.parametrize("mutate,exc,match", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_rejected(form, mutate, exc, match):
    x = make_mlstm_inputs(2, 2, 6, 4, 5, seed=0)
    kw = dict(x._asdict(), initial_state=tuple(zero_state(2, 2, 4, 5, dtype=F64)), forget_gate="sigmoid",
              mask=torch.ones(2, 6, dtype=torch.bool))
    form_fn(form, 4)(**kw)  # the unmutated call works
    mutate(kw)
    with pytest.raises(exc, match=match) as info:
        form_fn(form, 4)(**kw)
    assert "\n" not in str(info.value)  # one line


@pytest.mark.parametrize("chunk_size", [0, -4, 2.5, None], ids=["0", "neg", "float", "None"])
def test_bad_chunk_size(chunk_size):
    x = make_mlstm_inputs(1, 1, 6, 4, 4)
    with pytest.raises((ValueError, TypeError), match="chunk_size"):
        mlstm_chunkwise(*x, chunk_size=chunk_size)


def test_step_bad_input():
    x = make_mlstm_inputs(1, 2, 1, 4, 5)
    q, k, v, i, f = (t[:, :, 0] for t in x)
    mlstm_step(q, k, v, i, f)
    with pytest.raises(ValueError, match=r"\bq must have shape"):
        mlstm_step(x.q, k, v, i, f)  # sequence-shaped q into the step
    with pytest.raises(ValueError, match=r"\bi must have shape"):
        mlstm_step(q, k, v, x.i, f)
    with pytest.raises(ValueError, match=r"initial_state C must have shape"):
        mlstm_step(q, k, v, i, f, (torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4), torch.zeros(1, 2)))


def test_step_bad_input_names_the_problem():
    x = make_mlstm_inputs(2, 2, 1, 4, 5)
    q, k, v, i, f = (t[:, :, 0] for t in x)
    cases = [
        (dict(eps=-1.0), ValueError, r"eps must be finite and >= 0"),
        (dict(mask=torch.ones(2)), TypeError, r"mask must have dtype torch.bool"),
        (dict(mask=torch.ones(3, dtype=torch.bool)), ValueError, r"mask must have shape \(B,\)"),
        (dict(state=zero_state(2, 3, 4, 5)), ValueError,
         r"initial_state C must have shape \(2, 2, 4, 5\).*got \(2, 3, 4, 5\)"),
        (dict(state=(torch.zeros(2, 2, 4, 5), torch.zeros(2, 2, 3), torch.zeros(2, 2))), ValueError,
         r"initial_state n must have shape \(2, 2, 4\).*got \(2, 2, 3\)"),
        (dict(state=torch.zeros(2, 2, 4, 5)), TypeError, r"initial_state must be a tuple \(C, n, m\)"),
    ]
    for kw, exc, match in cases:
        with torch.no_grad(), pytest.raises(exc, match=match):
            mlstm_step(q, k, v, i, f, **kw)


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent", "step"])
def test_state_given_as_a_list_works_like_a_tuple(form):
    x = make_mlstm_inputs(2, 2, 6, 4, 5, seed=3)
    s0 = prefix_state(2, 2, 4, 5, requires_grad=False)
    if form == "step":
        with torch.no_grad():
            a = mlstm_step(*(t[:, :, 0] for t in x), tuple(s0))
            b = mlstm_step(*(t[:, :, 0] for t in x), list(s0))
    else:
        a = form_fn(form, 4)(*x, initial_state=tuple(s0), return_state=True)
        b = form_fn(form, 4)(*x, initial_state=list(s0), return_state=True)
    assert_close("h", a[0], b[0], 0, 0)
    for what, u, w in zip("Cnm", a[1], b[1]):
        assert_close(f"final {what}", u, w, 0, 0)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("use_native", [True, False], ids=["native", "torch"])
def test_unchecked_step_equals_checked_step(use_native, dtype):
    """The private unchecked step (the layers' decode path) computes what mlstm_step computes, token by token, through
    ordinary and infinite gates (its m may hold +-inf as +-BIG, the same state)."""
    from xlstmkit.ops import native
    from xlstmkit.ops.mlstm import _mlstm_step_unchecked
    from xlstmkit.ops.mlstm.common import to_infinite

    x = make_mlstm_inputs(2, 3, 6, 8, 8, seed=4, dtype=dtype)
    i = x.i.clone()
    i[0, 1, 2], i[1, 0, 3] = float("inf"), float("-inf")
    f = x.f.clone()
    f[1, 2, 1] = float("-inf")
    st_a = st_b = zero_state(2, 3, 8, 8, dtype=dtype)
    with torch.no_grad(), native.use_native(use_native):
        for t in range(6):
            args = (x.q[:, :, t], x.k[:, :, t], x.v[:, :, t], i[:, :, t], f[:, :, t])
            h_a, st_a = mlstm_step(*args, st_a)
            h_b, st_b = _mlstm_step_unchecked(*args, st_b)
            # (a row whose m is +BIG may take the native step where +inf took the PyTorch one: rounding apart)
            tol = (1e-5, 1e-6) if dtype == F32 else (1e-12, 1e-13)
            assert_close(f"h at {t}", h_a, h_b, *tol)
            for what, a, b in zip("Cnm", st_a, (st_b.C, st_b.n, to_infinite(st_b.m))):
                fin = torch.isfinite(a)
                assert torch.equal(fin, torch.isfinite(b)) and torch.equal(a[~fin], b[~fin]), f"{what} at {t}"
                assert_close(f"{what} at {t}", a[fin], b[fin], *tol)
    assert st_a.m[0, 1].item() == float("inf")


STEP_WITH_WRONG_STATE = """
import torch
from xlstmkit.ops import native
from xlstmkit.ops.mlstm import mlstm_step, _mlstm_step_unchecked, zero_state
torch.manual_seed(0)
i, f = torch.randn(1, 2), torch.randn(1, 2)
with torch.no_grad():
    for D, state in ((8, zero_state(1, 4, 64, 64)), (8, zero_state(1, 2, 8, 256)), (8, zero_state(3, 2, 8, 8)),
                     (4096, zero_state(1, 2, 1, 1))):  # the last one read 64 MB past the state: SIGSEGV
        q, k, v = torch.randn(1, 2, D), torch.randn(1, 2, D), torch.randn(1, 2, D)
        for fn in (mlstm_step, _mlstm_step_unchecked):
            if fn is _mlstm_step_unchecked and native.library() is None:
                continue  # without the native step the unchecked path makes no promise
            try:
                fn(q, k, v, i, f, state)
                print("NO ERROR")
            except ValueError as e:
                print("ValueError:", e)
"""


def test_step_with_a_state_of_another_shape_is_a_valueerror_not_a_crash():
    """A state built for another head count, head dim or batch used to reach the native step unchecked and read
    past its buffers (SIGSEGV). Run in a subprocess so that a crash fails this test instead of killing pytest."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(["src", os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", STEP_WITH_WRONG_STATE], capture_output=True, text=True, timeout=300,
                         env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, f"the process died ({out.returncode}): {out.stderr[-2000:]}"
    lines = out.stdout.strip().splitlines()
    assert lines and all(line.startswith("ValueError:") for line in lines), out.stdout
    assert "must have shape (1, 2, 8, 8)" in out.stdout and "got (1, 4, 64, 64)" in out.stdout
    assert "got (1, 2, 8, 256)" in out.stdout and "got (3, 2, 8, 8)" in out.stdout
    assert "must have shape (1, 2, 4096, 4096)" in out.stdout and "got (1, 2, 1, 1)" in out.stdout


def test_dispatcher():
    x = make_mlstm_inputs(1, 2, 10, 4, 5)
    for form in ("parallel", "chunkwise", "recurrent"):
        assert_close(f"mlstm(form={form})", form_fn(form, 3)(*x), mlstm(*x, form=form, chunk_size=3), 0, 0)
    with pytest.raises(ValueError, match="form"):
        mlstm(*x, form="quadratic")


# ----------------------------------------------------------------------------------------------------------------------
# 8. property: random (S, chunk size, split) keep chunkwise == parallel and pieces == whole


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_property_chunkwise_and_pieces(data):
    S = data.draw(st.integers(1, 90), label="S")
    L = data.draw(st.integers(1, 40), label="chunk_size")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    x = make_mlstm_inputs(1, 2, S, 4, 3, seed=seed)
    h_par, st_par = mlstm_parallel(*x, return_state=True)
    h_chk, st_chk = mlstm_chunkwise(*x, chunk_size=L, return_state=True)
    assert_close("chunkwise h", h_par, h_chk, **TOL64)
    for name in ("C", "n", "m"):
        assert_close(f"chunkwise final {name}", getattr(st_par, name), getattr(st_chk, name), **TOL64)
    if S >= 2:
        split = data.draw(st.integers(1, S - 1), label="split")
        h1, st1 = mlstm_chunkwise(*(t[:, :, :split] for t in x), chunk_size=L, return_state=True)
        h2, st2 = mlstm_chunkwise(*(t[:, :, split:] for t in x), chunk_size=L, initial_state=st1, return_state=True)
        assert_close("pieces h", h_par, torch.cat([h1, h2], dim=2), **TOL64)
        for name in ("C", "n", "m"):
            assert_close(f"pieces final {name}", getattr(st_par, name), getattr(st2, name), **TOL64)

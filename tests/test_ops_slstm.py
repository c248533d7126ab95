"""Tests of the sLSTM ops (src/xlstmkit/ops/slstm.py): slstm_sequence matches a naive unstabilised reference of the
paper's eqs. 8-14 with block-diagonal R; its hand-written backward matches autograd through slstm_step and finite
differences; pieces with carried state equal the whole; extreme gates stay finite; bf16 in, float32 state out; bad
input is rejected with a message naming the argument.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xlstmkit.ops.slstm import SLSTMState, slstm_sequence, slstm_step, slstm_zero_state

from conftest import assert_close, assert_finite, make_slstm_inputs

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
F32 = torch.float32
TOL64 = dict(rtol=1e-9, atol=1e-11)
GATES = ["sigmoid", "exp"]


def f_mean_for(forget_gate: str) -> float:
    """Forget pre-activation mean giving forget gates mostly around 0.75-0.9 for either gate function."""
    return 2.0 if forget_gate == "sigmoid" else -0.2


def prefix_state(B, NH, DH, *, seed=1000, dtype=F64, S_prefix=7, forget_gate="sigmoid", requires_grad=True):
    """A realistic initial state: the final state of the op on a random prefix, with strong input gates so that m
    is far from 0. c, n, h are fresh leaves; m is a plain tensor (it carries no gradient)."""
    gates, R = make_slstm_inputs(B, S_prefix, NH, DH, seed=seed, dtype=dtype, f_mean=f_mean_for(forget_gate))
    gates[:, :, :, 0] = gates[:, :, :, 0] * 3 + 2
    _, s = slstm_sequence(gates, R, return_state=True, forget_gate=forget_gate)
    assert s.m.abs().max() > 1.0
    c, n, h = (t.detach().clone().requires_grad_(requires_grad) for t in (s.c, s.n, s.h))
    return SLSTMState(c, n, s.m.detach().clone(), h)


def seq_with_grads(fn, gates, R, state0, *, seed=7, **kw):
    """Run fn(gates, R, initial_state=..., return_state=True) and backpropagate fixed random cotangents of h and of
    the final c, n, h. Returns (h, final state, {name: grad}) for gates, R and, when given, the initial c, n, h."""
    h, s = fn(gates, R, initial_state=state0, return_state=True, **kw)
    g = torch.Generator().manual_seed(seed)
    cot = [torch.randn(t.shape, generator=g, dtype=F64).to(t.dtype) for t in (h, s.c, s.n, s.h)]
    loss = sum((t * ct).sum() for t, ct in zip((h, s.c, s.n, s.h), cot))
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


def by_steps(gates, R, *, initial_state=None, return_state=True, forget_gate="sigmoid"):
    """slstm_sequence rebuilt from slstm_step (plain autograd through the step's arithmetic)."""
    state = initial_state
    hs = []
    for t in range(gates.shape[1]):
        h_t, state = slstm_step(gates[:, t], R, state, forget_gate=forget_gate)
        assert h_t.shape == (gates.shape[0], gates.shape[2], gates.shape[4])
        hs.append(h_t)
    return torch.stack(hs, dim=1), state


def leaves(B=2, S=20, NH=2, DH=8, *, seed=0, dtype=F64, forget_gate="sigmoid", **kw):
    return make_slstm_inputs(B, S, NH, DH, seed=seed, dtype=dtype, f_mean=f_mean_for(forget_gate),
                             requires_grad=True, **kw)


# ----------------------------------------------------------------------------------------------------------------------
# a naive, unstabilised float64 reference (paper eqs. 8-14, block-diagonal R)


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
def test_matches_naive_reference(forget_gate, init):
    B, S, NH, DH = 2, 15, 3, 4
    gates, R = make_slstm_inputs(B, S, NH, DH, seed=11, f_mean=f_mean_for(forget_gate), r_std=0.5)
    s0 = prefix_state(B, NH, DH, forget_gate=forget_gate, requires_grad=False) if init else None
    if init:
        scale = torch.exp(s0.m)
        h_ref, c_ref, n_ref, hl_ref = naive_slstm(gates, R, forget_gate, s0.c * scale, s0.n * scale, s0.h)
    else:
        h_ref, c_ref, n_ref, hl_ref = naive_slstm(gates, R, forget_gate)
    for name, fn in (("sequence", slstm_sequence), ("steps", by_steps)):
        h, s = fn(gates, R, initial_state=s0, return_state=True, forget_gate=forget_gate)
        assert h.shape == (B, S, NH, DH)
        assert_close(f"{name} vs naive h", h_ref, h, rtol=1e-10, atol=1e-12)
        scale = torch.exp(s.m)
        assert_close(f"{name} vs naive c", c_ref, s.c * scale, rtol=1e-10, atol=1e-12)
        assert_close(f"{name} vs naive n", n_ref, s.n * scale, rtol=1e-10, atol=1e-12)
        assert_close(f"{name} vs naive last h", hl_ref, s.h, rtol=1e-10, atol=1e-12)


def test_recurrent_weights_mix_within_a_head_only():
    """Guard for the reference test: a non-zero R changes the output, and a change to one head's R block changes
    only that head's outputs."""
    gates, R = make_slstm_inputs(2, 10, 3, 4, seed=12, r_std=0.5)
    h = slstm_sequence(gates, R)
    assert (h - slstm_sequence(gates, torch.zeros_like(R))).abs().max() > 1e-2
    R2 = R.clone()
    R2[1] += 0.5
    diff = (slstm_sequence(gates, R2) - h).abs().amax(dim=(0, 1, 3))  # per head
    assert diff[1] > 1e-3 and diff[0] == 0 and diff[2] == 0


# ----------------------------------------------------------------------------------------------------------------------
# the hand-written backward: against autograd through the step, and against finite differences


@pytest.mark.parametrize("init", [False, True], ids=["zero_state", "prefix_state"])
@pytest.mark.parametrize("forget_gate", GATES)
def test_sequence_matches_steps_with_grads(forget_gate, init):
    gates, R = leaves(S=23, seed=21, forget_gate=forget_gate)
    s0 = prefix_state(2, 2, 8, forget_gate=forget_gate) if init else None
    ref = seq_with_grads(by_steps, gates, R, s0, forget_gate=forget_gate)
    got = seq_with_grads(slstm_sequence, gates, R, s0, forget_gate=forget_gate)
    compare_runs("sequence vs steps", ref, got, **TOL64)


@pytest.mark.parametrize("init", [False, True], ids=["zero_state", "prefix_state"])
@pytest.mark.parametrize("forget_gate", GATES)
def test_gradcheck(forget_gate, init):
    gates, R = leaves(B=2, S=6, NH=2, DH=3, seed=31, forget_gate=forget_gate)
    s0 = prefix_state(2, 2, 3, forget_gate=forget_gate) if init else None
    m_ref = 0.0 if s0 is None else s0.m.max().item()

    def func(gates, R, *state):
        # m is the stabiliser: no gradient by design, a constant here
        initial = None if not state else (state[0], state[1], s0.m, state[2])
        h, s = slstm_sequence(gates, R, initial_state=initial, return_state=True, forget_gate=forget_gate)
        # the final c, n in the paper's coordinates (differentiable, unlike the stabilised ones), divided by a
        # constant exp(m_ref) so that finite differences of these values, up to e^14 here, stay accurate
        scale = torch.exp(s.m - m_ref)
        return h, s.c * scale, s.n * scale, s.h

    inputs = (gates, R) if s0 is None else (gates, R, s0.c, s0.n, s0.h)
    assert torch.autograd.gradcheck(func, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# state passing


@pytest.mark.parametrize("split", [1, 9, 19], ids=lambda s: f"split{s}")
def test_pieces_equal_whole(split):
    gates, R = leaves(S=20, seed=41)
    s0 = prefix_state(2, 2, 8)
    whole = seq_with_grads(slstm_sequence, gates, R, s0)

    def two_pieces(gates, R, *, initial_state, return_state):
        h1, s1 = slstm_sequence(gates[:, :split], R, initial_state=initial_state, return_state=True)
        h2, s2 = slstm_sequence(gates[:, split:], R, initial_state=s1, return_state=True)
        return torch.cat([h1, h2], dim=1), s2

    compare_runs(f"pieces at {split} vs whole", whole, seq_with_grads(two_pieces, gates, R, s0), **TOL64)


def test_default_initial_state_is_zero_state():
    gates, R = make_slstm_inputs(2, 9, 2, 4, seed=42)
    h0 = slstm_sequence(gates, R)
    assert_close("zero state", h0, slstm_sequence(gates, R, initial_state=slstm_zero_state(2, 2, 4, dtype=F64)), 0, 0)
    h_step, _ = slstm_step(gates[:, 0], R)
    # the sequence may run the native loop (vectorised exp/tanh): equal to rounding, not bitwise
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
# extreme gate values, long sequence, bfloat16


@pytest.mark.parametrize("init", [False, True], ids=["zero_state", "prefix_state"])
@pytest.mark.parametrize("forget_gate", GATES)
@pytest.mark.parametrize("f_val", [-50, 50], ids=lambda v: f"f{v:+d}")
@pytest.mark.parametrize("i_val", [-100, 100], ids=lambda v: f"i{v:+d}")
def test_extreme_gates_finite(i_val, f_val, forget_gate, init):
    """float32 at input pre-activations +-100 and forget +-50: outputs and gradients (gates, R, initial state)
    finite, and equal to the float64 ones."""
    B, S, NH, DH = 2, 17, 2, 4
    gates, R = make_slstm_inputs(B, S, NH, DH, seed=51, dtype=F32, r_std=0.5)
    gates[:, :, :, 0] = i_val + 0.1 * gates[:, :, :, 0]
    gates[:, :, :, 1] = f_val + 0.1 * gates[:, :, :, 1]
    gates[:, 5:8, :, 0] = 0.0  # an ordinary stretch in the middle
    gates.requires_grad_()
    R.requires_grad_()
    s0 = prefix_state(B, NH, DH, dtype=F32, forget_gate=forget_gate) if init else None
    h, s, grads = seq_with_grads(slstm_sequence, gates, R, s0, forget_gate=forget_gate)
    assert_finite("h", h)
    for name in SLSTMState._fields:
        assert_finite(f"final {name}", getattr(s, name))
    for name, g in grads.items():
        assert_finite(f"grad {name}", g)
    s64 = None if s0 is None else SLSTMState(*(t.detach().double().requires_grad_(t.requires_grad) for t in s0))
    g64, R64 = gates.detach().double().requires_grad_(), R.detach().double().requires_grad_()
    h64, _, grads64 = seq_with_grads(slstm_sequence, g64, R64, s64, forget_gate=forget_gate)
    assert_close("h vs float64", h64, h, rtol=1e-4, atol=1e-5)
    for name, g in grads.items():
        assert_close(f"grad {name} vs float64", grads64[name], g, rtol=1e-3, atol=1e-4)


def test_random_extreme_gates_finite():
    """Every gate pre-activation (i, f, z, o) independently extreme at every position, both forget gates."""
    g = torch.Generator().manual_seed(61)
    B, S, NH, DH = 2, 30, 2, 4
    signs = torch.randint(0, 2, (B, S, NH, 4, DH), generator=g).float() * 2 - 1
    scale = torch.tensor([100.0, 50.0, 100.0, 100.0]).view(4, 1)
    gates = (signs * scale).requires_grad_()
    R = (torch.randn(NH, DH, 4 * DH, generator=g) * 5).requires_grad_()
    for forget_gate in GATES:
        h, s, grads = seq_with_grads(slstm_sequence, gates, R, None, forget_gate=forget_gate)
        assert_finite(f"{forget_gate} h", h)
        for name, gr in grads.items():
            assert_finite(f"{forget_gate} grad {name}", gr)


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
     ValueError, r"state c must have shape"),
    ("state_h_shape", lambda kw: kw.update(initial_state=(*kw["initial_state"][:3], kw["initial_state"][3][:1])),
     ValueError, r"state h must have shape"),
    ("state_three_tensors", lambda kw: kw.update(initial_state=kw["initial_state"][:3]), TypeError, r"state"),
    ("forget_gate_name", lambda kw: kw.update(forget_gate="relu"), ValueError, r"forget_gate"),
]


@pytest.mark.parametrize("mutate,exc,match", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_rejected(mutate, exc, match):
    gates, R = make_slstm_inputs(2, 5, 2, 4)
    kw = dict(gates=gates, R=R, initial_state=_state(), forget_gate="sigmoid")
    slstm_sequence(**kw)  # the unmutated call works
    mutate(kw)
    with pytest.raises(exc, match=match):
        slstm_sequence(**kw)


def test_step_bad_input():
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

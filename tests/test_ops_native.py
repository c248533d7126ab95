"""The native library (src/xlstmkit/ops/native, docs/native.md) against the PyTorch ops it replaces and the reference.

Where a C compiler is present the library must build (a failed build fails these tests, it does not skip them).
Every native-vs-PyTorch comparison runs forward AND backward inside each path's `use_native` context (a test that
left the context before backward would compare the native backward with itself), and one test checks that it does.
The extreme-value grid (each gate pre-activation, and all four together, at -inf ... +inf, float32 and float64),
NaN propagation, the one-token steps of both cells, the declaration-driven argument checks (a state of another head
count is a ValueError, in a subprocess), and that loading leaves the process's floating-point mode alone. The cache
and its faults are in tests/test_ops_native_cache.py.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from xlstmkit.ops import mlstm_step, native
from xlstmkit.ops.native import loader
from xlstmkit.ops.slstm import SLSTMState, _slstm_step_unchecked, slstm_reference, slstm_sequence, slstm_step

from conftest import assert_close, make_slstm_inputs

F64, F32 = torch.float64, torch.float32
pytestmark = [pytest.mark.skipif(loader.find_compiler() is None, reason="no C compiler: the native code is optional"),
              pytest.mark.usefixtures("single_thread")]


@pytest.fixture(scope="module")
def lib():
    """The library; an error (not a skip) if it cannot be built although a compiler is present."""
    with native.use_native(True):
        library = native.library()
    assert library is not None, f"native build failed with a compiler present: {native.status()['failure']}"
    return library


def test_library_builds_where_a_compiler_is_present(lib):
    assert native.status()["loaded"] and lib.record["flags"]
    assert "-ffast-math" not in lib.record["flags"]


def run(path, gates, R, state0=None, *, forget_gate="sigmoid", mask=None, fn=slstm_sequence, seed=5):
    """Values and gradients (gates, R, c0, n0, h0) of a fixed random loss on h and the final c, n, h, with the
    forward AND the backward inside the chosen path's context ('native', 'torch')."""
    with native.use_native(path == "native"):
        h, s = fn(gates, R, initial_state=state0, return_state=True, forget_gate=forget_gate, mask=mask)
        g = torch.Generator().manual_seed(seed)
        outs = (h, s.c, s.n, s.h)
        loss = sum((t * torch.randn(t.shape, generator=g, dtype=F64).to(t.dtype)).sum() for t in outs)
        leaves = [gates, R] + ([] if state0 is None else [state0.c, state0.n, state0.h])
        grads = torch.autograd.grad(loss, leaves)
    return [t.detach() for t in (h, *s)], list(grads)


def random_state(B, NH, DH, dtype, seed=3):
    g = torch.Generator().manual_seed(seed)
    c, h = (torch.randn(B, NH, DH, generator=g, dtype=dtype) for _ in range(2))
    n = torch.rand(B, NH, DH, generator=g, dtype=dtype) + 0.5
    m = torch.randn(B, NH, DH, generator=g, dtype=dtype) * 3
    return SLSTMState(*(t.requires_grad_() for t in (c, n)), m, h.requires_grad_())


def test_comparisons_run_each_backward_in_its_own_path(lib, monkeypatch):
    """The helper above really compares two implementations: with 'native' both loops call C, with 'torch' none."""
    calls = []
    real_call = native.call
    monkeypatch.setattr(native, "call", lambda lib_, name, *a: (calls.append(name), real_call(lib_, name, *a)))
    gates, R = make_slstm_inputs(2, 5, 2, 4, requires_grad=True)
    run("native", gates, R)
    assert calls == ["slstm_forward", "slstm_backward"]
    calls.clear()
    run("torch", gates, R)
    assert calls == []


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_native_float32_equals_torch_loop(lib, forget_gate, masked):
    """float32, realistic sizes: the C loops and the PyTorch loops agree to float32 rounding, values and gradients."""
    B, S, NH, DH = 3, 65, 2, 16
    gates, R = make_slstm_inputs(B, S, NH, DH, seed=S, dtype=F32, f_mean=2.0 if forget_gate == "sigmoid" else -0.2,
                                 r_std=0.3, requires_grad=True)
    state0 = random_state(B, NH, DH, F32)
    mask = (torch.rand(B, S, generator=torch.Generator().manual_seed(0)) > 0.2) if masked else None
    vals_ref, grads_ref = run("torch", gates, R, state0, forget_gate=forget_gate, mask=mask)
    vals, grads = run("native", gates, R, state0, forget_gate=forget_gate, mask=mask)
    for name, a, b in zip(["h", "c", "n", "m", "h_last"], vals_ref, vals):
        assert_close(name, a, b, 1e-5, 1e-6)
    for name, a, b in zip(["gates", "R", "c0", "n0", "h0"], grads_ref, grads):
        # sums over S * B terms (dR above all) cancel: absolute tolerance relative to the largest entry
        assert_close(f"grad {name}", a, b, 1e-4, 1e-5 * float(a.abs().max()))


@pytest.mark.parametrize("DH", [1, 5, 64])
def test_native_float32_against_float64(lib, DH):
    """float32 through the native loop (vectorised exp/tanh) stays within float32 rounding of float64."""
    gates, R = make_slstm_inputs(2, 50, 2, DH, seed=DH, r_std=0.3)
    h64 = slstm_reference(gates, R)
    with native.use_native(True):
        h32 = slstm_sequence(gates.float(), R.float())
    assert h32.dtype == F32
    assert_close(f"DH={DH} float32 vs float64", h64, h32, 2e-4, 2e-5)


# ----------------------------------------------------------------------------------------------------------------------
# extreme gate values: every path obeys the semantics of the reference (docs/slstm.md)

GRID = [-math.inf, -1e8, -1e4, -100.0, -89.0, 0.0, 89.0, 100.0, 1e4, math.inf]


@pytest.mark.parametrize("gate", [0, 1, 2, 3, "all"], ids=["i", "f", "z", "o", "ifzo"])
@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("with_state", [False, True], ids=["empty_state", "state_in"])
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
def test_extreme_gates_all_paths_agree(lib, dtype, with_state, forget_gate, gate):
    """One row per grid value, set on the chosen gate (or on all four) for steps 0-2 (from the initial state,
    empty or not), ordinary values after: native, PyTorch loop and reference give finite outputs and gradients,
    and the same ones."""
    B, S, NH, DH = len(GRID), 6, 2, 3
    gates, R = make_slstm_inputs(B, S, NH, DH, seed=7, r_std=0.5)
    value = torch.tensor(GRID, dtype=F64).view(B, 1, 1, 1)
    if gate == "all":
        gates[:, :3] = value.unsqueeze(-1).expand(B, 3, NH, 4, DH)
    else:
        gates[:, :3, :, gate] = value.expand(B, 3, NH, DH)
    gates, R = gates.to(dtype).requires_grad_(), R.to(dtype).requires_grad_()
    state0 = random_state(B, NH, DH, dtype) if with_state else None
    ref = run("torch", gates, R, state0, forget_gate=forget_gate, fn=slstm_reference)
    tol = (1e-9, 1e-12) if dtype == F64 else (1e-4, 1e-6)
    for path in ("native", "torch"):
        got = run(path, gates, R, state0, forget_gate=forget_gate)
        for name, a, b in zip(["h", "c", "n", "m", "h_last", "d_gates", "d_R", "d_c0", "d_n0", "d_h0"],
                              ref[0] + ref[1], got[0] + got[1]):
            assert torch.isfinite(a).all(), f"reference {name} not finite"
            assert_close(f"{path} {name}", a, b, *tol)


@pytest.mark.parametrize("gate", range(4), ids="ifzo")
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
def test_nan_propagates_alike(lib, dtype, gate):
    """A NaN pre-activation at step 2 of row 0, head 0: NaN outputs from there on in that head (h feeds back
    through R, which mixes within a head only), in every path alike; the rest stays finite and equal."""
    gates, R = make_slstm_inputs(2, 6, 2, 3, seed=8, dtype=dtype, r_std=0.5)
    gates[0, 2, 0, gate, 1] = math.nan
    outs = {}
    for path in ("native", "torch"):
        with native.use_native(path == "native"):
            outs[path] = slstm_sequence(gates, R)
    outs["reference"] = slstm_reference(gates, R)
    for name, h in outs.items():
        assert torch.isnan(h[0, 2, 0, 1]) and torch.isnan(h[0, 3:, 0]).all(), name
        assert torch.isfinite(h[0, :2]).all() and torch.isfinite(h[0, :, 1]).all() and torch.isfinite(h[1]).all()
        assert torch.equal(torch.isnan(h), torch.isnan(outs["reference"])), name
        assert_close(f"{name} clean row", outs["reference"][1], h[1], 1e-5, 1e-6)
        assert_close(f"{name} clean head", outs["reference"][0, :, 1], h[0, :, 1], 1e-5, 1e-6)


def test_output_gate_far_below_zero_gives_zero_not_nan(lib):
    """Issue 10, item 2: in float32 an output-gate pre-activation at or below about -89 gave NaN outputs and
    gradients with the native library (-ffast-math's 1 / (1 + inf)); PyTorch gives 0."""
    gates, R = make_slstm_inputs(1, 8, 2, 4, seed=9, dtype=F32, r_std=0.3)
    gates[:, :, :, 3] = torch.tensor([-89.0, -90.0, -100.0, -200.0, -1e4, -88.0, -89.0, -1e30]).view(1, 8, 1, 1)
    gates.requires_grad_()
    R.requires_grad_()
    vals, grads = run("native", gates, R)
    vals_ref, grads_ref = run("torch", gates, R)
    assert vals[0].abs().max() < 1e-30
    for a, b in zip(vals_ref + grads_ref, vals + grads):
        assert_close("o = -89 and below", a, b, 1e-5, 1e-30)


# ----------------------------------------------------------------------------------------------------------------------
# the one-token steps


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("B", [1, 3])
def test_native_step_equals_torch_step(lib, B, forget_gate):
    """The inference step (no_grad) runs natively; it equals the PyTorch step, state by state, with padding."""
    NH, DH, S = 2, 16, 5
    gates, R = make_slstm_inputs(B, S, NH, DH, seed=B, dtype=F32)
    mask = torch.rand(B, S, generator=torch.Generator().manual_seed(B)) > 0.3
    st_ref = st = SLSTMState(*(torch.zeros(B, NH, DH) for _ in range(4)))
    calls = []
    with torch.no_grad():
        for t in range(S):
            with native.use_native(False):
                h_ref, st_ref = slstm_step(gates[:, t], R, st_ref, forget_gate=forget_gate, mask=mask[:, t])
            with native.use_native(True):
                h, st = _slstm_step_unchecked(gates[:, t], R, st, forget_gate, mask[:, t])
                calls.append(native.usable_for_inference(gates, R) is not None)
            assert_close(f"step {t} h", h_ref, h, 1e-5, 1e-6)
            for name, a, b in zip("cnmh", st_ref, st):
                assert_close(f"step {t} {name}", a, b, 1e-5, 1e-6)
    assert all(calls)


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_native_mlstm_step_equals_torch_step(lib, B, forget_gate, dtype):
    """The C mLSTM inference step (called directly) equals the PyTorch `mlstm_step` over several tokens, from an
    empty state and through gate pre-activations of +-30 (the stabiliser moves) and a strong forget; the previous
    state is left untouched."""
    NH, DQK, DV, S = 2, 8, 12, 6
    g = torch.Generator().manual_seed(B)
    q, k = (torch.randn(B, S, NH, DQK, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(B, S, NH, DV, generator=g, dtype=dtype)
    i = torch.randn(B, S, NH, generator=g, dtype=dtype) * torch.tensor([1, 30, 1, -30, 1, 1], dtype=dtype)[:, None]
    f = torch.randn(B, S, NH, generator=g, dtype=dtype) + torch.tensor([2, 2, -20, 2, 5, 0], dtype=dtype)[:, None]
    st_ref = st = (torch.zeros(B, NH, DQK, DV, dtype=dtype), torch.zeros(B, NH, DQK, dtype=dtype),
                   torch.zeros(B, NH, dtype=dtype))
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == F32 else dict(rtol=1e-12, atol=1e-13)
    with torch.no_grad():
        for t in range(S):
            args = tuple(x[:, t].contiguous() for x in (q, k, v, i, f))
            with native.use_native(False):
                h_ref, st_ref = mlstm_step(*args, st_ref, forget_gate=forget_gate)
            new = (torch.empty(B, NH, DQK, DV, dtype=dtype), torch.empty(B, NH, DQK, dtype=dtype),
                   torch.empty(B, NH, dtype=dtype))
            h = torch.empty(B, NH, DV, dtype=dtype)
            before = [s.clone() for s in st]
            native.call(lib, "mlstm_step", dtype, (B * NH, DQK, DV, forget_gate == "exp", 1e-6),
                        (*args, *st, *new, h))
            assert all(torch.equal(a, b) for a, b in zip(before, st))
            st = new
            torch.testing.assert_close(h, h_ref, **tol)
            for a, b in zip(st, st_ref):
                torch.testing.assert_close(a, b, **tol)


def test_step_keeps_autograd_when_a_gradient_is_needed(lib):
    """The unchecked core stays differentiable whenever an input, or only the state, needs a gradient."""
    gates, R = make_slstm_inputs(1, 1, 2, 4, seed=0, dtype=F32, requires_grad=True)
    st = SLSTMState(*(torch.zeros(1, 2, 4) for _ in range(4)))
    with native.use_native(True):
        h, _ = _slstm_step_unchecked(gates[:, 0], R, st)
        h.sum().backward()
        assert gates.grad is not None and gates.grad.abs().sum() > 0
        c0 = torch.full((1, 2, 4), 0.5, requires_grad=True)
        h, _ = _slstm_step_unchecked(gates[:, 0].detach(), R.detach(),
                                     (c0, torch.ones(1, 2, 4), torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
        h.sum().backward()
    assert c0.grad is not None and c0.grad.abs().sum() > 0


def test_native_off_switch(lib):
    with native.use_native(False):
        assert native.library() is None
    with native.use_native(True):
        assert native.library() is lib


# ----------------------------------------------------------------------------------------------------------------------
# one declaration: the header drives ctypes and the argument checks


def test_interface_comes_from_the_header(lib):
    """Every function declared in xlstmkit.h is exported for float32 and float64, with argtypes from its argument
    list; the library reports the header's interface version; the mLSTM step keeps its argument order."""
    itf = loader.read_interface()
    assert lib.cdll.xlstmkit_native_abi() == itf.abi
    assert set(itf.functions) == {"slstm_forward", "slstm_backward", "slstm_step", "mlstm_step", "linear",
                                  "lm_decode", "large_block", "choose_tokens", "stream_sum"}
    for fn in itf.functions.values():
        for suffix in ("f32", "f64"):
            c_fn, decl = lib.functions[(fn.name, suffix)]
            assert c_fn.argtypes == fn.argtypes() and len(c_fn.argtypes) == len(fn.scalars) + len(fn.arrays)
    mlstm = itf.functions["mlstm_step"]
    assert [n for n, _ in mlstm.scalars] == ["BH", "DQK", "DV", "exp_forget", "eps"]
    assert [a.name for a in mlstm.arrays] == ["q", "k", "v", "i", "f", "C0", "n0", "m0", "C1", "n1", "m1", "h"]


def _step_args(B=2, NH=2, DH=4, dtype=F32):
    gates = torch.randn(B, NH, 4, DH, dtype=dtype)
    R = torch.randn(NH, DH, 4 * DH, dtype=dtype)
    st = [torch.zeros(B, NH, DH, dtype=dtype) for _ in range(8)]
    return (NH, B, DH, 0), [gates, R, None, *st, torch.empty(B, NH, 4 * DH, dtype=dtype)]


CALL_FAULTS = [
    ("one tensor too few", lambda ints, ts: (ints, ts[:-1]), r"expected 12 tensors \(gates, R, mask, c0, "),
    ("one scalar too few", lambda ints, ts: (ints[:-1], ts), r"expected 4 scalars \(NH, B, DH, exp_forget\)"),
    ("negative size", lambda ints, ts: ((-2, *ints[1:]), ts), r"out of range"),
    ("wrong dtype", lambda ints, ts: (ints, [ts[0].double(), *ts[1:]]), r"gates must have dtype torch.float32"),
    ("state of other heads", lambda ints, ts: (ints, [*ts[:3], torch.zeros(2, 4, 2), *ts[4:]]),
     r"c0 must have shape \(2, 2, 4\) \(B, NH, DH\), got \(2, 4, 2\)"),
    ("short buffer", lambda ints, ts: (ints, [*ts[:7], torch.zeros(2, 2, 3), *ts[8:]]), r"c1 must have shape"),
    ("not contiguous", lambda ints, ts: (ints, [ts[0].transpose(0, 1).contiguous().transpose(0, 1), *ts[1:]]),
     r"gates must be contiguous"),
    ("not on the CPU", lambda ints, ts: (ints, [ts[0].to("meta"), *ts[1:]]), r"gates must be on the CPU"),
    ("required pointer missing", lambda ints, ts: (ints, [None, *ts[1:]]), r"gates is required"),
    ("mask of another dtype", lambda ints, ts: (ints, [*ts[:2], torch.ones(2), *ts[3:]]), r"mask must have dtype"),
]


@pytest.mark.parametrize("mutate,match", [c[1:] for c in CALL_FAULTS], ids=[c[0] for c in CALL_FAULTS])
def test_call_checks_every_argument_against_the_declaration(lib, mutate, match):
    ints, tensors = _step_args()
    native.call(lib, "slstm_step", F32, ints, tuple(tensors))  # the unmutated call works
    ints, tensors = mutate(ints, tensors)
    with pytest.raises(ValueError, match=match):
        native.call(lib, "slstm_step", F32, ints, tuple(tensors))


SUBPROCESS_CHECKS = """
import torch
from xlstmkit.ops import native
from xlstmkit.ops.slstm import _slstm_step_unchecked, slstm_step, slstm_sequence
B, NH, DH = 2, 4, 8
gates, R = torch.randn(B, NH, 4, DH), torch.randn(NH, DH, 4 * DH) * 0.1
other = tuple(torch.zeros(B, 2, 16) for _ in range(4))  # a 2-head model's state: same size, other shape
with torch.no_grad(), native.use_native(True):
    assert native.library() is not None
    for fn in (lambda: _slstm_step_unchecked(gates, R, other),
               lambda: slstm_step(gates, R, other),
               lambda: slstm_sequence(gates[:, None].expand(B, 5, NH, 4, DH), R, initial_state=other),
               lambda: native.call(native.library(), "mlstm_step", torch.float32, (B * NH, 8, 8, 0, 1e-6),
                                   (*(torch.zeros(B, NH, 8) for _ in range(3)), torch.zeros(B, NH),
                                    torch.zeros(B, NH), torch.zeros(B, 2, 16, 8), torch.zeros(B, NH, 8),
                                    torch.zeros(B, NH), torch.zeros(B, NH, 8, 8), torch.zeros(B, NH, 8),
                                    torch.zeros(B, NH), torch.zeros(B, NH, 8)))):
        try:
            fn()
            print("NO ERROR")
        except ValueError as exc:
            print(exc)
x = torch.tensor([1e-40], dtype=torch.float32)
print("denormal kept:", bool((x * 0.5) != 0))
"""


@pytest.fixture(scope="module")
def subprocess_run(lib):
    """One fresh process (anything that could crash runs outside the test process) for the two tests below."""
    proc = subprocess.run([sys.executable, "-c", SUBPROCESS_CHECKS], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()


def test_wrong_shape_state_is_a_value_error_not_a_crash(subprocess_run):
    """A state from a model with another head count (same number of elements), passed to the native step (the
    unchecked core, which validates only through the native call), to the checked step and to the sequence, and an
    mLSTM state of other sizes to the C mLSTM step: a ValueError naming the expected and given shape each time,
    in a process that then exits normally."""
    lines = subprocess_run[:4]
    assert "NO ERROR" not in lines, lines
    assert "c0 must have shape (2, 4, 8)" in lines[0] and "got (2, 2, 16)" in lines[0]
    assert "state c must have shape" in lines[1] and "(2, 4, 8), got (2, 2, 16)" in lines[1]
    assert "state c must have shape" in lines[2]
    assert "C0 must have shape (8, 8, 8)" in lines[3] and "got (2, 2, 16, 8)" in lines[3]


def test_loading_keeps_denormals(subprocess_run):
    """Loading the library must not switch the process to flush-to-zero (which would change every other
    computation in it)."""
    assert subprocess_run[4] == "denormal kept: True"

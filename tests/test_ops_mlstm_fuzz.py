"""Property-based fuzzing of the mLSTM ops (hypothesis): random shapes (batch 0 and 1 included, head dims 1..9,
S 1..140), dtypes (float32, float64, bfloat16), forms and chunk sizes, gate values from a set with +-inf and huge
values, masks, initial states from other configurations and forms, and occasional bad arguments. Every call either
equals the float64 `mlstm_reference` on the same inputs (within a tolerance for the dtype; the same NaN pattern;
gradients too in float64) or raises a one-line ValueError/TypeError, never another exception, and never a NaN from
finite input.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xlstmkit.ops.mlstm import (
    MLSTMState,
    mlstm_chunkwise,
    mlstm_parallel,
    mlstm_recurrent,
    mlstm_reference,
    zero_state,
)

from conftest import mlstm_step_loop

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
EXTREMES = [-math.inf, -1e8, -1e4, -100.0, -89.0, 0.0, 89.0, 100.0, 1e4, math.inf]
TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 2e-2}  # per row, relative to the row's largest


def form_fn(form: str, chunk_size: int):
    return {"parallel": mlstm_parallel, "chunkwise": functools.partial(mlstm_chunkwise, chunk_size=chunk_size),
            "recurrent": mlstm_recurrent, "step": mlstm_step_loop}[form]


def close_per_row(ref, got, rtol):
    """Same non-finite pattern (NaN where the reference has NaN), and per batch row max|got - ref| <= rtol *
    max|ref| over the row (rows of values below 1e-30 count as 0: float32 subnormals)."""
    ref, got = ref.detach().double(), got.detach().double()
    assert torch.equal(torch.isnan(ref), torch.isnan(got)), "NaN pattern differs from the reference"
    fin = torch.isfinite(ref)
    assert torch.equal(fin, torch.isfinite(got)), "infinities differ from the reference"
    if ref.numel() == 0:
        return
    err = torch.where(fin, (ref - got).abs(), 0.0).flatten(1).amax(1)
    scale = torch.where(fin, ref.abs(), 0.0).flatten(1).amax(1).clamp_min(1e-30)
    worst = float((err / scale).max())
    assert worst <= rtol, f"relative error {worst:.2e} > {rtol:g}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_forms_equal_reference_or_refuse_in_one_line(data):
    draw = data.draw
    B = draw(st.sampled_from([0, 1, 2]), label="B")
    NH = draw(st.integers(1, 2), label="NH")
    DQK, DV = draw(st.integers(1, 9), label="DQK"), draw(st.integers(1, 9), label="DV")
    S = draw(st.integers(1, 140), label="S")
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16]), label="dtype")
    forget_gate = draw(st.sampled_from(["sigmoid", "exp"]), label="forget_gate")
    form = draw(st.sampled_from(["parallel", "chunkwise", "recurrent", "step"]), label="form")
    chunk_size = draw(st.integers(1, 80), label="chunk_size")
    eps = draw(st.sampled_from([1e-6, 1e-3]), label="eps")
    seed = draw(st.integers(0, 2**16), label="seed")

    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=F64)

    # positive queries and keys: the normaliser n^T q has no cancellation of its own (a lone dominant write makes h
    # ~ sign(q^T k), ill-conditioned in any float32 evaluation where q^T k ~ 0); what is fuzzed is everything else
    q, k, v = rnd(B, NH, S, DQK).abs(), rnd(B, NH, S, DQK).abs(), rnd(B, NH, S, DV)
    i = rnd(B, NH, S)
    f = rnd(B, NH, S) + 2.0 if forget_gate == "sigmoid" else 0.3 * rnd(B, NH, S) - 0.3
    # one step at an extreme value (forget or input gate), and hard resets anywhere
    which = draw(st.sampled_from(["none", "i", "f"]), label="extreme gate")
    if which != "none":
        values = [x for x in EXTREMES if not (forget_gate == "exp" and which == "f" and x > 100)]
        (i if which == "i" else f)[..., draw(st.integers(0, S - 1), label="at")] = draw(st.sampled_from(values))
    for p in draw(st.lists(st.integers(0, S - 1), max_size=3), label="resets"):
        f[..., p] = -math.inf
    mask = None
    if draw(st.booleans(), label="masked"):
        mask = torch.rand(B, S, generator=g) > draw(st.sampled_from([0.1, 0.5, 0.9]))
    x = [t.to(dtype) for t in (q, k, v, i, f)]

    # the initial state: none, one from another form and dtype (right shape), a list, or a mismatched one
    kind = draw(st.sampled_from(["none", "other_form", "list", "mismatch"]), label="initial state")
    state, expect_error = None, None
    if kind in ("other_form", "list"):
        P = draw(st.integers(1, 20), label="prefix")
        pre = [rnd(B, NH, P, DQK), rnd(B, NH, P, DQK), rnd(B, NH, P, DV), 2 * rnd(B, NH, P), rnd(B, NH, P) + 2]
        pre_dtype = draw(st.sampled_from([torch.float32, torch.float64]), label="state dtype")
        pre_form = draw(st.sampled_from(["parallel", "chunkwise", "recurrent", "step"]), label="state form")
        _, state = form_fn(pre_form, 7)(*(t.to(pre_dtype) for t in pre), return_state=True)
        state = list(state) if kind == "list" else state
    elif kind == "mismatch":
        dims = [B, NH, DQK, DV]
        dims[draw(st.integers(0, 3), label="wrong dim")] += draw(st.integers(1, 3))
        state, expect_error = zero_state(*dims), (ValueError, "initial_state [Cnm] must have shape")

    # an occasional bad argument
    kwargs = dict(eps=eps, forget_gate=forget_gate, mask=mask)
    bad = draw(st.sampled_from(["none"] * 6 + ["eps", "mask_dtype", "mask_shape", "chunk", "head_dim"]), label="bad")
    if expect_error is not None:
        pass
    elif bad == "eps":
        kwargs["eps"] = draw(st.sampled_from([-1e-6, math.inf, math.nan]))
        expect_error = (ValueError, "eps must be finite and >= 0")
    elif bad == "mask_dtype":
        kwargs["mask"] = torch.ones(B, S)
        expect_error = (TypeError, "mask must have dtype torch.bool")
    elif bad == "mask_shape":
        kwargs["mask"] = torch.ones(B + 1, S, dtype=torch.bool)
        expect_error = (ValueError, "mask must have shape")
    elif bad == "chunk" and form == "chunkwise":
        chunk_size, expect_error = 0, (ValueError, "chunk_size must be a positive int")
    elif bad == "head_dim":
        x[0], x[1] = x[0][..., :0], x[1][..., :0]
        expect_error = (ValueError, "head dims must be >= 1")

    fn = form_fn(form, chunk_size)
    grad = dtype == F64 and form != "step"
    xs = [t.detach().clone().requires_grad_(grad) for t in x]
    if expect_error is not None:
        exc, match = expect_error
        with pytest.raises(exc, match=match) as info:
            fn(*xs, initial_state=state, return_state=True, **kwargs)
        assert "\n" not in str(info.value)
        return
    h, st_out = fn(*xs, initial_state=state, return_state=True, **kwargs)  # anything else raised fails the test

    assert h.shape == (B, NH, S, DV) and h.dtype == dtype
    sdt = F64 if dtype == F64 else torch.float32
    assert [tuple(t.shape) for t in st_out] == [(B, NH, DQK, DV), (B, NH, DQK), (B, NH)]
    assert all(t.dtype == sdt for t in st_out)
    inputs_finite = all(bool(torch.isfinite(t).all()) for t in x) and (
        state is None or all(bool(torch.isfinite(t).all()) for t in state))
    if inputs_finite:
        assert not torch.isnan(h).any(), "NaN from finite input"
    # the reference in float64 on exactly the same (dtype-rounded) inputs
    xr = [t.detach().double().requires_grad_(grad) for t in x]
    sr = None if state is None else MLSTMState(*(t.double() for t in state))
    h_ref, st_ref = mlstm_reference(*xr, initial_state=sr, return_state=True, **kwargs)
    close_per_row(h_ref, h, TOL[dtype])
    close_per_row(st_ref.m, st_out.m, TOL[dtype] if dtype != torch.bfloat16 else 1e-4)
    if grad and B > 0:
        gh = torch.randn(h.shape, generator=g, dtype=F64)
        keep = torch.isfinite(h_ref) & torch.isfinite(h)
        grads = torch.autograd.grad((torch.where(keep, h, 0.0) * gh).sum(), xs)
        grads_ref = torch.autograd.grad((torch.where(keep, h_ref, 0.0) * gh).sum(), xr)
        for a, b in zip(grads_ref, grads):
            fin = torch.isfinite(a)
            assert torch.equal(fin, torch.isfinite(b)), "non-finite gradients differ from the reference"
            scale = max(float(a[fin].abs().max()) if fin.any() else 0.0, 1e-30)
            assert float((a - b)[fin].abs().max() if fin.any() else 0.0) <= 1e-7 * scale

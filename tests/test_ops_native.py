"""The native recurrences (src/xlstmkit/ops/native) against the PyTorch ops they replace. The sLSTM time loop: the
same values, states and gradients at awkward lengths, with states in and out, both forget gates, extreme gate
values, float64 gradcheck of the fallback (tests/test_ops_slstm.py gradchecks the default, native path). The
one-token steps of the sLSTM and the mLSTM. The fallback (a missing compiler gives one warning and the same
numbers), and that loading the library leaves the process's floating-point mode alone.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from xlstmkit.ops import mlstm_step, native
from xlstmkit.ops.mlstm import MLSTMState
from xlstmkit.ops.slstm import SLSTMState, slstm_sequence, slstm_step

from conftest import assert_close, make_slstm_inputs

F64, F32 = torch.float64, torch.float32
pytestmark = pytest.mark.skipif(native.library() is None, reason="the native library could not be built here")


def run(use: bool, gates, R, state0, forget_gate, seed=5):
    """h, final state and gradients (gates, R, c0, n0, h0) of a fixed random loss, with the native loop on or off."""
    with native.use_native(use):
        h, s = slstm_sequence(gates, R, initial_state=state0, return_state=True, forget_gate=forget_gate)
    g = torch.Generator().manual_seed(seed)
    outs = (h, s.c, s.n, s.h)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=F64).to(t.dtype)).sum() for t in outs)
    leaves = [gates, R] + ([] if state0 is None else [state0.c, state0.n, state0.h])
    return [t.detach() for t in (h, *s)], torch.autograd.grad(loss, leaves)


def random_state(B, NH, DH, dtype, seed=3):
    g = torch.Generator().manual_seed(seed)
    c, h = (torch.randn(B, NH, DH, generator=g, dtype=dtype) for _ in range(2))
    n = torch.rand(B, NH, DH, generator=g, dtype=dtype) + 0.5
    m = torch.randn(B, NH, DH, generator=g, dtype=dtype) * 3
    return SLSTMState(*(t.requires_grad_() for t in (c, n)), m, h.requires_grad_())


@pytest.mark.parametrize("S", [1, 7, 63, 64, 65, 130])
@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "state_in"])
def test_native_matches_torch_loop(S, forget_gate, with_state):
    B, NH, DH = 2, 3, 8
    gates, R = make_slstm_inputs(B, S, NH, DH, seed=S, f_mean=2.0 if forget_gate == "sigmoid" else -0.2,
                                 r_std=0.4, requires_grad=True)
    state0 = random_state(B, NH, DH, F64) if with_state else None
    vals_ref, grads_ref = run(False, gates, R, state0, forget_gate)
    vals, grads = run(True, gates, R, state0, forget_gate)
    for name, a, b in zip(["h", "c", "n", "m", "h_last"], vals_ref, vals):
        assert_close(f"S={S} {name}", a, b, 1e-12, 1e-13)
    for name, a, b in zip(["gates", "R", "c0", "n0", "h0"], grads_ref, grads):
        assert_close(f"S={S} grad {name}", a, b, 1e-10, 1e-12)


@pytest.mark.parametrize("DH", [1, 5, 64])
def test_native_float32_against_float64(DH):
    """float32 through the native loop (vectorised exp/tanh) stays within float32 rounding of float64."""
    gates, R = make_slstm_inputs(2, 50, 2, DH, seed=DH, r_std=0.3)
    with native.use_native(False):
        h64 = slstm_sequence(gates, R)
    with native.use_native(True):
        h32 = slstm_sequence(gates.float(), R.float())
    assert h32.dtype == F32
    assert_close(f"DH={DH} float32 vs float64", h64, h32, 2e-4, 2e-5)


@pytest.mark.parametrize("scale", [30.0, 100.0])
def test_native_extreme_gates(scale):
    """Gate pre-activations of +-30 and +-100: finite, and equal to the PyTorch loop."""
    gates, R = make_slstm_inputs(1, 65, 2, 4, seed=9, dtype=F32)
    sign = torch.where(torch.rand(gates.shape, generator=torch.Generator().manual_seed(1)) > 0.5, 1.0, -1.0)
    gates = (gates.sign() * scale * sign + gates).requires_grad_()
    R = R.requires_grad_()
    vals_ref, grads_ref = run(False, gates, R, None, "sigmoid")
    vals, grads = run(True, gates, R, None, "sigmoid")
    for a, b in zip(vals_ref + list(grads_ref), vals + list(grads)):
        assert torch.isfinite(b).all()
        assert_close("extreme", a, b, 1e-4, 1e-5)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_torch_loop_gradcheck(forget_gate):
    """tests/test_ops_slstm.py gradchecks the default (native) path; this one gradchecks the fallback."""
    gates, R = make_slstm_inputs(2, 6, 2, 3, seed=31, f_mean=2.0 if forget_gate == "sigmoid" else -0.2,
                                 requires_grad=True)
    state0 = random_state(2, 2, 3, F64)

    def fn(g, r, c0, n0, h0):
        h, s = slstm_sequence(g, r, initial_state=(c0, n0, state0.m, h0), return_state=True,
                              forget_gate=forget_gate)
        scale = torch.exp(s.m)  # c, n in the paper's coordinates: the stabilised ones are not differentiable
        return h, s.c * scale, s.n * scale, s.h

    with native.use_native(False):
        assert torch.autograd.gradcheck(fn, (gates, R, state0.c, state0.n, state0.h), eps=1e-6, atol=1e-7,
                                        rtol=1e-5)


@pytest.mark.parametrize("B", [1, 3])
def test_native_step_matches_torch_step(B):
    """The inference step (check=False under no_grad) runs natively; it equals the PyTorch step, state by state."""
    NH, DH = 2, 16
    gates, R = make_slstm_inputs(B, 5, NH, DH, seed=B, dtype=F32)
    st_ref = st = SLSTMState(*(torch.zeros(B, NH, DH) for _ in range(4)))
    with torch.no_grad():
        for t in range(5):
            with native.use_native(False):
                h_ref, st_ref = slstm_step(gates[:, t], R, st_ref, check=False)
            with native.use_native(True):
                h, st = slstm_step(gates[:, t], R, st, check=False)
            assert_close(f"step {t} h", h_ref, h, 1e-5, 1e-6)
            for name, a, b in zip("cnmh", st_ref, st):
                assert_close(f"step {t} {name}", a, b, 1e-5, 1e-6)


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_native_mlstm_step_matches_torch_step(B, forget_gate, dtype):
    """The mLSTM inference step (check=False under no_grad) in C equals the PyTorch step over several tokens, from
    an empty state and through gate pre-activations of +-30 (the stabiliser moves) and a strong forget."""
    NH, DQK, DV = 2, 8, 12
    g = torch.Generator().manual_seed(B)
    S = 6
    q, k = (torch.randn(B, S, NH, DQK, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(B, S, NH, DV, generator=g, dtype=dtype)
    i = torch.randn(B, S, NH, generator=g, dtype=dtype) * torch.tensor([1, 30, 1, -30, 1, 1], dtype=dtype)[:, None]
    f = torch.randn(B, S, NH, generator=g, dtype=dtype) + torch.tensor([2, 2, -20, 2, 5, 0], dtype=dtype)[:, None]
    zeros = MLSTMState(torch.zeros(B, NH, DQK, DV, dtype=dtype), torch.zeros(B, NH, DQK, dtype=dtype),
                       torch.zeros(B, NH, dtype=dtype))
    st_ref = st = zeros
    # float32: both paths are ~7e-5 from float64 here (a near-cancelling q^T n), so they differ by that much
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == F32 else dict(rtol=1e-12, atol=1e-13)
    with torch.no_grad():
        for t in range(S):
            args = (q[:, t], k[:, t], v[:, t], i[:, t], f[:, t])
            with native.use_native(False):
                h_ref, st_ref = mlstm_step(*args, st_ref, forget_gate=forget_gate, check=False)
            with native.use_native(True):
                h, st_new = mlstm_step(*args, st, forget_gate=forget_gate, check=False)
            assert all(a.data_ptr() != b.data_ptr() for a, b in zip(st, st_new))  # the old state is not reused
            st = st_new
            torch.testing.assert_close(h, h_ref, **tol)
            for a, b in zip(st, st_ref):
                torch.testing.assert_close(a, b, **tol)
    assert torch.equal(zeros.C, torch.zeros_like(zeros.C))  # inputs untouched


def test_steps_keep_autograd_when_grad_is_needed():
    """The unchecked steps stay differentiable whenever an input or only the state needs a gradient."""
    gates, R = make_slstm_inputs(1, 1, 2, 4, seed=0, dtype=F32, requires_grad=True)
    st = SLSTMState(*(torch.zeros(1, 2, 4) for _ in range(4)))
    h, _ = slstm_step(gates[:, 0], R, st, check=False)
    h.sum().backward()
    assert gates.grad is not None and gates.grad.abs().sum() > 0
    c0 = torch.full((1, 2, 4), 0.5, requires_grad=True)
    h, _ = slstm_step(gates[:, 0].detach(), R.detach(), (c0, torch.ones(1, 2, 4), torch.zeros(1, 2, 4),
                                                          torch.zeros(1, 2, 4)), check=False)
    h.sum().backward()
    assert c0.grad is not None and c0.grad.abs().sum() > 0
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4, generator=g) for _ in range(3))
    C0 = torch.randn(1, 2, 4, 4, generator=g, requires_grad=True)
    h, _ = mlstm_step(q, k, v, torch.zeros(1, 2), torch.full((1, 2), 3.0),
                      (C0, torch.ones(1, 2, 4), torch.zeros(1, 2)), check=False)
    h.sum().backward()
    assert C0.grad is not None and C0.grad.abs().sum() > 0


def test_native_off_switch():
    with native.use_native(False):
        assert native.library() is None
    assert native.library() is not None


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_no_compiler_falls_back_with_one_warning(tmp_path):
    """No compiler: one RuntimeWarning line naming the problem and the switch, and the same outputs."""
    code = (
        "import warnings, torch\n"
        "warnings.simplefilter('always')\n"
        "from xlstmkit.ops import slstm_sequence, native\n"
        "g = torch.randn(1, 9, 2, 4, 4); R = torch.randn(2, 4, 16) * 0.3\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    a = slstm_sequence(g, R); b = slstm_sequence(g, R)\n"
        "with native.use_native(False):\n"
        "    ref = slstm_sequence(g, R)\n"
        "print(len(w), torch.equal(a, ref), native.library() is None)\n"
        "print(w[0].message if w else '')\n"
    )
    proc = _python(code, CC=str(tmp_path / "no-such-cc"), PATH=str(tmp_path), XLSTMKIT_CACHE=str(tmp_path / "c"))
    assert proc.returncode == 0, proc.stderr
    count, equal, none = proc.stdout.splitlines()[0].split()
    assert (count, equal, none) == ("1", "True", "True")
    message = proc.stdout.splitlines()[1]
    assert "no C compiler" in message and "XLSTMKIT_NATIVE=0" in message


def test_env_switch_and_fresh_build(tmp_path):
    """XLSTMKIT_NATIVE=0 turns it off silently; a fresh cache folder gets a build, which a second process reuses."""
    code = "from xlstmkit.ops import native; print(native.library() is not None)"
    assert _python(code, XLSTMKIT_NATIVE="0", XLSTMKIT_CACHE=str(tmp_path)).stdout.strip() == "False"
    assert list(tmp_path.iterdir()) == []
    assert _python(code, XLSTMKIT_CACHE=str(tmp_path)).stdout.strip() == "True"
    built = sorted(p.name for p in tmp_path.iterdir())
    assert len(built) == 1 and built[0].startswith("recurrences-")
    assert _python(code, XLSTMKIT_CACHE=str(tmp_path)).stdout.strip() == "True"
    assert sorted(p.name for p in tmp_path.iterdir()) == built


def test_unwritable_cache_falls_back_to_a_private_temporary_folder(tmp_path):
    """A cache folder that cannot be created (a file stands in its way) still gives a working native library."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    code = "from xlstmkit.ops import native; print(native.library() is not None)"
    (tmp_path / "tmp").mkdir()
    proc = _python(code, XLSTMKIT_CACHE=str(blocker / "cache"), TMPDIR=str(tmp_path / "tmp"))
    assert proc.stdout.strip() == "True", proc.stderr
    assert any(p.name.startswith("recurrences-") for p in (tmp_path / "tmp").rglob("*"))


def test_folders_other_users_can_write_are_not_trusted(tmp_path):
    """Compiled code is loaded only from folders no one else can write to: a group/world-writable cache is skipped
    for the private temporary folder, and if that one is not private either, the PyTorch loop is used, with the
    reason in the one-line warning."""
    shared = tmp_path / "shared-cache"
    shared.mkdir()
    shared.chmod(0o777)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = ("import warnings\nwarnings.simplefilter('always')\nfrom xlstmkit.ops import native\n"
            "print(native.library() is not None)")
    proc = _python(code, XLSTMKIT_CACHE=str(shared), TMPDIR=str(tmp))
    assert proc.stdout.strip() == "True", proc.stderr
    assert list(shared.iterdir()) == []
    private = next(tmp.iterdir())
    assert private.stat().st_mode & 0o077 == 0  # created private
    for p in private.iterdir():
        p.unlink()
    private.chmod(0o777)
    proc = _python(code, XLSTMKIT_CACHE=str(shared), TMPDIR=str(tmp))
    assert proc.stdout.strip() == "False"
    assert "can be written by other users" in proc.stderr
    assert list(private.iterdir()) == []


def test_loading_keeps_denormals():
    """The library is compiled with -ffast-math but not linked with it: the process must not switch to
    flush-to-zero (which would change every other computation in it)."""
    code = ("import torch\nfrom xlstmkit.ops import native\nassert native.library() is not None\n"
            "x = torch.tensor([1e-40], dtype=torch.float32)\nprint(bool((x * 0.5) != 0))")
    assert _python(code).stdout.strip() == "True"

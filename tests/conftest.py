"""Shared test helpers: seeded random inputs for the ops and a closeness check that reports its errors.

The helpers are plain functions, importable as `from conftest import ...` from a test module in this folder (pytest's
default "prepend" import mode puts tests/ on sys.path; this needs tests/ to stay without an __init__.py). They are also
offered as session-scoped fixtures of the same name (mlstm_inputs, slstm_inputs, assert_close, assert_finite);
session scope keeps them usable inside hypothesis tests.
"""

from __future__ import annotations

import socket
import sys
import urllib.request
from typing import NamedTuple

import pytest
import torch
from torch import Tensor


class MLSTMInputs(NamedTuple):
    q: Tensor  # (B, NH, S, DQK)
    k: Tensor  # (B, NH, S, DQK)
    v: Tensor  # (B, NH, S, DV)
    i: Tensor  # (B, NH, S) input-gate pre-activations
    f: Tensor  # (B, NH, S) forget-gate pre-activations


def make_mlstm_inputs(
    B: int = 2,
    NH: int = 2,
    S: int = 16,
    DQK: int = 8,
    DV: int = 12,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    i_mean: float = 0.0,
    i_std: float = 1.0,
    f_mean: float = 2.0,
    f_std: float = 1.0,
    requires_grad: bool = False,
) -> MLSTMInputs:
    """Seeded random mLSTM inputs. The default gate statistics (input ~ N(0, 1), forget ~ N(2, 1), i.e. sigmoid
    forget gates mostly around 0.9) make both the memory of the past and new inputs matter."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, mean: float = 0.0, std: float = 1.0) -> Tensor:
        t = (torch.randn(*shape, generator=g, dtype=torch.float64) * std + mean).to(dtype)
        return t.requires_grad_(requires_grad)

    return MLSTMInputs(
        r(B, NH, S, DQK),
        r(B, NH, S, DQK),
        r(B, NH, S, DV),
        r(B, NH, S, mean=i_mean, std=i_std),
        r(B, NH, S, mean=f_mean, std=f_std),
    )


def naive_mlstm(q, k, v, i, f, forget_gate="sigmoid", C0=None, n0=None):
    """The paper's mLSTM equations (19-27) literally, in float64: no stabiliser, no eps, the lower bound 1 of the
    normaliser. C0, n0 in the paper's (unstabilised) coordinates. Returns h, C, n."""
    B, NH, S, DQK = q.shape
    DV = v.shape[-1]
    k = k * DQK**-0.5
    C = torch.zeros(B, NH, DQK, DV, dtype=torch.float64) if C0 is None else C0
    n = torch.zeros(B, NH, DQK, dtype=torch.float64) if n0 is None else n0
    hs = []
    for t in range(S):
        fg = torch.sigmoid(f[:, :, t]) if forget_gate == "sigmoid" else torch.exp(f[:, :, t])
        ig = torch.exp(i[:, :, t])
        kt, vt, qt = k[:, :, t], v[:, :, t], q[:, :, t]
        C = fg[..., None, None] * C + ig[..., None, None] * torch.einsum("bhk,bhv->bhkv", kt, vt)
        n = fg[..., None] * n + ig[..., None] * kt
        num = torch.einsum("bhkv,bhk->bhv", C, qt)
        den = torch.einsum("bhk,bhk->bh", n, qt).abs().clamp_min(1.0)
        hs.append(num / den[..., None])
    return torch.stack(hs, dim=2), C, n


def mlstm_step_loop(q, k, v, i, f, *, initial_state=None, return_state=False, mask=None, **kwargs):
    """`mlstm_step` token by token, with the calling convention of the sequence forms (a form for the tests)."""
    from xlstmkit.ops.mlstm import mlstm_step

    state, hs = initial_state, []
    for t in range(q.shape[2]):
        h, state = mlstm_step(q[:, :, t], k[:, :, t], v[:, :, t], i[:, :, t], f[:, :, t], state,
                              mask=None if mask is None else mask[:, t], **kwargs)
        hs.append(h)
    h = torch.stack(hs, dim=2)
    return (h, state) if return_state else h


def make_slstm_inputs(
    B: int = 2,
    S: int = 16,
    NH: int = 2,
    DH: int = 8,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    r_std: float = 0.3,
    f_mean: float = 2.0,
    requires_grad: bool = False,
) -> tuple[Tensor, Tensor]:
    """Seeded random sLSTM gate pre-activations (B, S, NH, 4, DH), order i, f, z, o, and recurrent weights R
    (NH, DH, 4 * DH). The forget pre-activations are shifted by f_mean so the state matters."""
    g = torch.Generator().manual_seed(seed)
    gates = torch.randn(B, S, NH, 4, DH, generator=g, dtype=torch.float64)
    gates[:, :, :, 1] += f_mean
    R = torch.randn(NH, DH, 4 * DH, generator=g, dtype=torch.float64) * r_std
    gates, R = gates.to(dtype), R.to(dtype)
    return gates.requires_grad_(requires_grad), R.requires_grad_(requires_grad)


def max_errors(ref: Tensor, got: Tensor) -> tuple[float, float]:
    """(max absolute error, max relative error) of got against ref, computed in float64."""
    r, g = ref.detach().double(), got.detach().double()
    abs_err = (r - g).abs()
    rel_err = abs_err / r.abs().clamp_min(torch.finfo(torch.float64).tiny)
    return abs_err.max().item(), rel_err.max().item()


def assert_close(name: str, ref: Tensor | None, got: Tensor | None, rtol: float, atol: float) -> None:
    """Assert |got - ref| <= atol + rtol |ref| element-wise, with a message naming the quantity and giving the max
    absolute and relative errors. Also requires equal shapes and finite values (NaN never passes)."""
    assert ref is not None, f"{name}: reference is None (no gradient?)"
    assert got is not None, f"{name}: value is None (no gradient?)"
    assert tuple(ref.shape) == tuple(got.shape), f"{name}: shape {tuple(got.shape)} != reference {tuple(ref.shape)}"
    r, g = ref.detach().double(), got.detach().double()
    assert torch.isfinite(r).all(), f"{name}: reference has non-finite values"
    assert torch.isfinite(g).all(), f"{name}: value has non-finite values"
    ok = (r - g).abs() <= atol + rtol * r.abs()
    if not bool(ok.all()):
        abs_err, rel_err = max_errors(r, g)
        bad = int((~ok).sum())
        raise AssertionError(
            f"{name}: {bad}/{ok.numel()} elements out of tolerance (rtol={rtol:g}, atol={atol:g}); "
            f"max abs err {abs_err:.3e}, max rel err {rel_err:.3e}, max |ref| {r.abs().max().item():.3e}"
        )


def assert_finite(name: str, t: Tensor | None) -> None:
    """Assert a tensor exists and has only finite values."""
    assert t is not None, f"{name}: is None (no gradient?)"
    bad = int((~torch.isfinite(t.detach())).sum())
    assert bad == 0, f"{name}: {bad}/{t.numel()} non-finite values"


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tests with one intra-op thread, restoring the previous count afterwards.

    The ops tests use tiny tensors, where a second thread buys nothing, and on a shared 2-core machine a busy
    OpenMP thread pool made them several times slower. Use with `pytestmark = pytest.mark.usefixtures("single_thread")`.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", name="mlstm_inputs")
def _mlstm_inputs_fixture():
    return make_mlstm_inputs


@pytest.fixture(scope="session", name="slstm_inputs")
def _slstm_inputs_fixture():
    return make_slstm_inputs


@pytest.fixture(scope="session", name="assert_close")
def _assert_close_fixture():
    return assert_close


@pytest.fixture(scope="session", name="assert_finite")
def _assert_finite_fixture():
    return assert_finite


@torch.no_grad()
def perturb_xlstm_large_(model: torch.nn.Module) -> None:
    """Move an xLSTM-7B-layout model (ours or transformers', same parameter names) far from its initialisation, so
    every gate, norm and projection shapes the output. Draws from torch's global generator: seed it before."""
    for name, p in model.named_parameters():
        if name.endswith("fgate_preact.bias"):
            p.uniform_(-2.0, 6.0)
        elif name.endswith("igate_preact.bias"):
            p.uniform_(-6.0, 2.0)
        elif p.dim() == 1:
            p.add_(0.2 * torch.randn_like(p))
        else:
            p.normal_(0.0, 1.5 / p.shape[1] ** 0.5)  # larger than init, so gates and FFN shape the output


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or a URL fails loudly: data that must ship offline is loaded under it."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    loaders = sys.modules.get("aeon.datasets._data_loaders")  # aeon binds urlopen by name at import
    if loaders is not None:
        monkeypatch.setattr(loaders, "urlopen", refuse, raising=False)

"""The fast paths compute what the general paths compute: the per-token `decode_step` (and the block `step` methods
under it) against the general forward, generation with it, the optional compiled step and its fallback, and the
chunkwise op under bf16 autocast. (The ops' unchecked step cores are tested against the checked steps in the ops
tests.)"""

from __future__ import annotations

import warnings

import pytest
import torch

from xlstmkit import xLSTMConfig, xLSTMLM
from xlstmkit.generation import _COMPILED_STEPS
from xlstmkit.ops import mlstm_chunkwise

V = 37


def perturbed_model(pattern: str = "xLSTM[1:1]", **overrides) -> xLSTMLM:
    """A small float32 model with its zero-initialised parameters perturbed, so every path is exercised."""
    torch.manual_seed(0)
    cfg = xLSTMConfig(vocab_size=V, embedding_dim=32, num_blocks=3, block_pattern=pattern, chunk_size=8, **overrides)
    model = xLSTMLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def leaves(state):
    return torch.utils._pytree.tree_leaves(state)


@pytest.mark.parametrize("overrides", [{}, {"slstm_conv_kernel": 0}, {"forget_gate": "exp"}],
                         ids=["default", "no-sLSTM-conv", "exp-forget"])
def test_decode_step_matches_general_forward(overrides):
    """Ten tokens fed one at a time through decode_step give the logits and states of the general forward (the
    chunkwise form on one-token pieces), from an empty state and from a prefilled one."""
    model = perturbed_model(**overrides)
    ids = torch.randint(0, V, (2, 14), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, fast_state = model(ids[:, :4], return_state=True)
        ref_state = fast_state
        for t in range(4, 14):
            fast, fast_state = model.decode_step(ids[:, t], fast_state)
            ref, ref_state = model(ids[:, t:t + 1], state=ref_state, return_state=True, mlstm_form="chunkwise")
            torch.testing.assert_close(fast, ref[:, 0], rtol=1e-5, atol=1e-5)
        for a, b in zip(leaves(fast_state), leaves(ref_state)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        first, _ = model.decode_step(ids[:, 0], None)
        torch.testing.assert_close(first, model(ids[:, :1], mlstm_form="chunkwise")[:, 0], rtol=1e-5, atol=1e-5)


def assert_decode_matches_forward(model, token_ids, state, reference=None) -> None:
    """decode_step on one token (B, 1) from `state` gives the logits of the general (chunkwise) forward of
    `reference` (default: the model itself)."""
    fast, _ = model.decode_step(token_ids[:, 0], state)
    ref = (reference or model)(token_ids, state=state, mlstm_form="chunkwise")[:, 0]
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


def test_decode_step_sees_weight_updates():
    """Fused weights cached for decoding are rebuilt after the parameters change in place (an optimizer step) or
    are reloaded (load_state_dict): decode_step keeps matching the general forward."""
    model = perturbed_model()
    ids = torch.randint(0, V, (2, 3), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, state = model(ids[:, :2], return_state=True)
        model.decode_step(ids[:, 2], state)  # builds the caches
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # in place, as an optimizer step
        assert_decode_matches_forward(model, ids[:, 2:3], state)
        other = perturbed_model()
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.load_state_dict(other.state_dict())
        assert_decode_matches_forward(model, ids[:, 2:3], state, reference=other)


def test_clear_decode_cache_after_edits_through_data():
    """Edits through `.data` are invisible to version counters: clear_decode_cache() makes decode_step see them."""
    model = perturbed_model()
    ids = torch.randint(0, V, (1, 3), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        _, state = model(ids[:, :2], return_state=True)
        model.decode_step(ids[:, 2], state)  # builds the caches
        for p in model.parameters():
            p.data.mul_(1.5)
        model.clear_decode_cache()
        assert_decode_matches_forward(model, ids[:, 2:3], state)


def test_decode_step_gradients_match_general_forward():
    """decode_step is differentiable and gives the general path's parameter gradients."""
    model = perturbed_model()
    ids = torch.randint(0, V, (2, 5), generator=torch.Generator().manual_seed(2))
    grads = []
    for fast in (True, False):
        model.zero_grad()
        state, total = None, 0.0
        for t in range(5):
            if fast:
                logits, state = model.decode_step(ids[:, t], state)
            else:
                out, state = model(ids[:, t:t + 1], state=state, return_state=True, mlstm_form="chunkwise")
                logits = out[:, 0]
            total = total + logits.square().mean()
        total.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_generate_with_fast_step_equals_manual_general_loop():
    """Greedy generate (which validates once and then calls decode_step) picks the tokens a loop over the general
    forward picks; stop tokens pad finished rows."""
    model = perturbed_model()
    prompt = torch.randint(0, V, (2, 6), generator=torch.Generator().manual_seed(3))
    out = model.generate(prompt, 12)
    logits, state = model(prompt, return_state=True)
    toks = [prompt]
    with torch.no_grad():
        for _ in range(12):
            tok = logits[:, -1].argmax(-1, keepdim=True)
            toks.append(tok)
            logits, state = model(tok, state=state, return_state=True, mlstm_form="chunkwise")
    assert torch.equal(out, torch.cat(toks, dim=1))
    stop = int(out[0, 8])
    stopped = model.generate(prompt, 12, stop_tokens=[stop])
    row0 = stopped[0, 6:]
    first = int((row0 == stop).nonzero()[0])
    assert (row0[first:] == stop).all()


def test_compile_failure_falls_back_with_one_warning(monkeypatch):
    """If torch.compile fails, generate(compile=True) warns once (one line) and gives the uncompiled tokens."""
    model = perturbed_model()
    prompt = torch.randint(0, V, (1, 4), generator=torch.Generator().manual_seed(5))
    expected = model.generate(prompt, 6)

    def broken_compile(*args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no C++ compiler found\nsecond line of details")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    _COMPILED_STEPS.pop(model, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = model.generate(prompt, 6, compile=True)
        again = model.generate(prompt, 6, compile=True)
    assert torch.equal(got, expected) and torch.equal(again, expected)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1 and "\n" not in msgs[0] and "no C++ compiler found" in msgs[0]


@pytest.mark.slow
def test_compiled_generation_equals_eager():
    """generate(compile=True) (torch.compile of decode_step; tens of seconds) picks the eager tokens."""
    model = perturbed_model()
    prompt = torch.randint(0, V, (1, 4), generator=torch.Generator().manual_seed(6))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would hide a broken compiled path
        got = model.generate(prompt, 8, compile=True)
    assert torch.equal(got, model.generate(prompt, 8))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach()).norm() / b.detach().norm())


@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16])
def test_chunkwise_under_bf16_autocast_keeps_float32_state_and_matches(in_dtype):
    """Under CPU bf16 autocast the chunkwise op takes its matmul operands in bf16 and keeps states and gate
    arithmetic in float32: float32 states, finite float32 gradients, within bf16 rounding of the float32 result
    (relative error norms; the random gates make some denominators small, which amplifies rounding in the
    gradients)."""
    g = torch.Generator().manual_seed(8)
    B, NH, S, D = 1, 2, 40, 16
    q, k, v = (torch.randn(B, NH, S, D, generator=g, requires_grad=True) for _ in range(3))
    i = torch.randn(B, NH, S, generator=g, requires_grad=True)
    f = (torch.randn(B, NH, S, generator=g) + 3).requires_grad_()
    ref, ref_state = mlstm_chunkwise(q, k, v, i, f, chunk_size=16, return_state=True)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v, i, f))
    xs = [t.to(in_dtype) for t in (q, k, v, i, f)]  # bf16 inputs: what the model's autocast linears hand over
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, state = mlstm_chunkwise(*xs, chunk_size=16, return_state=True)
    assert h.dtype == in_dtype and all(t.dtype == torch.float32 for t in state)
    grads = torch.autograd.grad(h.float().square().sum(), (q, k, v, i, f))
    assert rel_err(h, ref) < 2e-2
    for a, b in zip(state, ref_state):
        assert rel_err(a, b) < 2e-2
    for a, b in zip(grads, ref_grads):
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        assert rel_err(a, b) < 2e-1


def test_chunkwise_low_precision_matmul_path_is_exact_with_float32_operands():
    """The autocast branch of the chunkwise Function (operand casts, out-of-place accumulations) computes exactly
    the plain branch's function when its matmul dtype is float32 itself: outputs, states and all gradients."""
    from xlstmkit.ops.mlstm import _Chunkwise

    g = torch.Generator().manual_seed(9)
    N, NC, L, D = 3, 4, 8, 8
    q, k, v = (torch.randn(N, NC, L, D, generator=g, requires_grad=True) for _ in range(3))
    logf = (-torch.rand(N, NC, L, generator=g)).requires_grad_()
    i = torch.randn(N, NC, L, generator=g, requires_grad=True)
    C0 = torch.randn(N, D, D, generator=g, requires_grad=True)
    n0 = torch.randn(N, D, generator=g, requires_grad=True)
    m0 = torch.randn(N, generator=g)
    runs = []
    for mm in (None, torch.float32):
        h, C, n, _ = _Chunkwise.apply(q, k, v, logf, i, C0, n0, m0, 1e-6, mm)
        loss = h.square().sum() + (C * C.detach()).sum() + n.sum()
        runs.append((h, C, n, *torch.autograd.grad(loss, (q, k, v, logf, i, C0, n0))))
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

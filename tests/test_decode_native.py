"""The native decoders (models/native_decode.py, ops/native/lm_decode.h, large_decode.h; docs/inference.md) compute
what the PyTorch decode steps compute: the whole-xLSTMLM step against the PyTorch step and the float64 sequence
forward over 1,000 tokens, for xLSTM[7:1], [1:1] and [0:1] stacks; generation; batches; bfloat16 and int8 weights;
the state-reuse contract; the weight cache; hostile input (in a subprocess: this is native code); the xLSTMLarge
block step."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import perturb_xlstm_large_

from xlstmkit import xLSTMConfig, xLSTMLM
from xlstmkit.models.native_decode import NativeState, native_decode_enabled, use_native_decode
from xlstmkit.models.xlstm_large import xLSTMLarge, xLSTMLargeConfig
from xlstmkit.ops import native
from xlstmkit.quantize import Int8Linear, quantize_, quantize_rows

pytestmark = [pytest.mark.usefixtures("single_thread"),
              pytest.mark.skipif(native.library() is None, reason="no native library (no C compiler)")]

V = 50
SRC = str(Path(__file__).resolve().parents[1] / "src")
PATTERNS = {"7:1": ("xLSTM[7:1]", 8), "1:1": ("xLSTM[1:1]", 2), "0:1": ("xLSTM[0:1]", 2)}


def lm(pattern: str = "1:1", seed: int = 0, **overrides) -> xLSTMLM:
    """A small float32 LM with its parameters moved off their initialisation (so every gate and norm matters)."""
    name, blocks = PATTERNS[pattern]
    torch.manual_seed(seed)
    model = xLSTMLM(xLSTMConfig(**{"vocab_size": V, "embedding_dim": 32, "num_blocks": blocks, "block_pattern": name,
                                   **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@torch.no_grad()
def step_logits(model, ids: torch.Tensor, native_on: bool, state=None) -> tuple[torch.Tensor, object]:
    """Logits (B, T, V) of feeding ids (B, T) through decode_step one token at a time, on the chosen path."""
    out = []
    with use_native_decode(native_on):
        for t in range(ids.shape[1]):
            logits, state = model.decode_step(ids[:, t], state)
            out.append(logits)
    return torch.stack(out, 1), state


def assert_close_to_scale(got: torch.Tensor, ref: torch.Tensor, rel: float) -> None:
    """max |got - ref| <= rel * max |ref|: agreement relative to the size of the numbers (logits of these
    perturbed models reach tens, where float32's rounding of one path against the other is a few 1e-5)."""
    err, scale = (got.double() - ref.double()).abs().max().item(), ref.double().abs().max().item()
    assert err <= rel * scale, f"max abs difference {err:.3e} > {rel:g} x max |ref| {scale:.3e}"


def ids_for(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------------------------
# the LM step: values


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_native_float64_step_equals_the_float64_forward_over_1000_tokens(pattern):
    """In float64 the native step is the forward's function to rounding over 1,000 tokens (2 rows); in float32 it
    is as close to that float64 truth as PyTorch's own float32 forward is."""
    model = lm(pattern)
    ids = ids_for(2, 1000)
    with torch.no_grad():
        ref64 = copy.deepcopy(model).double()(ids)
        f32_forward = model(ids)
    got64, state64 = step_logits(copy.deepcopy(model).double(), ids, True)
    got32, state32 = step_logits(model, ids, True)
    assert isinstance(state64, NativeState) and isinstance(state32, NativeState)  # the native path ran
    torch.testing.assert_close(got64, ref64, rtol=1e-10, atol=1e-10)
    err32, err_forward = (got32.double() - ref64).abs().max(), (f32_forward.double() - ref64).abs().max()
    assert err32 <= 2 * err_forward + 1e-6, (err32, err_forward)


@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_step_equals_the_pytorch_step(pattern, dtype):
    """Native and PyTorch decode steps: logits within 1e-5 (float32; 1e-12 in float64) over 40 tokens from a
    prefilled state, 3 rows, and the same final state."""
    model = lm(pattern).to(dtype)
    ids = ids_for(3, 48)
    with torch.no_grad():
        _, prefill = model(ids[:, :8], return_state=True)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    nat, nat_state = step_logits(model, ids[:, 8:], True, prefill)
    ref, ref_state = step_logits(model, ids[:, 8:], False, prefill)
    assert isinstance(nat_state, NativeState) and not isinstance(ref_state, NativeState)
    torch.testing.assert_close(nat, ref, rtol=tol, atol=tol)
    torch.testing.assert_close(tuple(nat_state), tuple(ref_state), rtol=tol, atol=tol)


@pytest.mark.slow
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_native_and_pytorch_steps_agree_to_1e5_over_1000_steps(pattern):
    """The issue's criterion, float32, 1,000 steps: within 1e-5 of the logits' scale (elementwise the two float32
    paths differ by up to 2e-5 on logits of 3.5, as much as PyTorch's own float32 forms differ from each other),
    and as close to the float64 truth as the PyTorch step is."""
    model = lm(pattern)
    ids = ids_for(1, 1000, seed=5)
    nat, _ = step_logits(model, ids, True)
    ref, _ = step_logits(model, ids, False)
    assert_close_to_scale(nat, ref, 1e-5)
    truth, _ = step_logits(copy.deepcopy(model).double(), ids, True)
    assert (nat.double() - truth).abs().max() <= 2 * (ref.double() - truth).abs().max() + 1e-6


@pytest.mark.parametrize("overrides", [dict(forget_gate="exp"), dict(slstm_conv_kernel=0), dict(bias=True),
                                       dict(tie_weights=True), dict(add_post_blocks_norm=False),
                                       dict(qkv_proj_blocksize=16, bias=True), dict(qkv_proj_blocksize=32, bias=True),
                                       dict(embedding_dim=36)],
                         ids=["exp-forget", "no-slstm-conv", "bias", "tied", "no-post-norm",
                              "qkv-blocks-16-transposed", "qkv-blocks-32-headwise", "slstm-head-dim-9"])
def test_native_step_equals_the_pytorch_step_for_config_variants(overrides):
    model = lm("1:1", seed=3, **overrides)
    ids = ids_for(2, 12)
    nat, _ = step_logits(model, ids, True)
    ref, _ = step_logits(model, ids, False)
    torch.testing.assert_close(nat, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pattern", ["7:1", "0:1"])
def test_greedy_and_sampled_generation_pick_the_same_ids_on_both_paths(pattern):
    model = lm(pattern, seed=2)
    prompt = ids_for(3, 5, seed=4)
    with use_native_decode(True):
        greedy_nat = model.generate(prompt, 30)
        sampled_nat = model.generate(prompt, 30, temperature=1.0, seed=7)
    with use_native_decode(False):
        greedy_ref = model.generate(prompt, 30)
        sampled_ref = model.generate(prompt, 30, temperature=1.0, seed=7)
    assert torch.equal(greedy_nat, greedy_ref)
    assert torch.equal(sampled_nat, sampled_ref)


def test_batch_rows_are_independent_and_equal_single_row_decoding():
    """Batch rows 1..5 each decode as if alone (the AVX-512 tiles take 4 rows at a time: 5 covers a partial tile)."""
    model = lm("7:1", seed=6)
    ids = ids_for(5, 10, seed=8)
    together, _ = step_logits(model, ids, True)
    for b in range(5):
        alone, _ = step_logits(model, ids[b:b + 1], True)
        torch.testing.assert_close(together[b:b + 1], alone, rtol=1e-6, atol=1e-6)


def test_two_threads_give_the_one_thread_numbers():
    """Rows of a product are split over threads, each row's sum stays on one thread: identical results."""
    torch.manual_seed(0)
    model = xLSTMLM(xLSTMConfig(vocab_size=4096, embedding_dim=128, num_blocks=2, block_pattern="xLSTM[1:1]")).eval()
    ids = torch.randint(0, 4096, (2, 4))
    one, _ = step_logits(model, ids, True)
    torch.set_num_threads(2)  # (the single_thread fixture restores the count after the module)
    try:
        two, _ = step_logits(model, ids, True)
    finally:
        torch.set_num_threads(1)
    assert torch.equal(one, two)


# ---------------------------------------------------------------------------------------------------------------------
# lower-precision weights


@pytest.mark.parametrize("fmt", ["float32", "bf16", "int8"])
def test_the_matrix_vector_kernel_equals_float64_at_awkward_widths_and_batches(fmt):
    """`linear` (the kernel every native product uses) against float64 on the same stored weights: widths around
    the kernel's 16- and 32-element steps, row counts around its 4-row tiles, batches 1-5, with scale and bias."""
    lib = native.library()
    g = torch.Generator().manual_seed(0)
    for I in (1, 7, 16, 31, 32, 33, 63, 64, 65, 130):
        for O in (1, 3, 4, 5, 9):
            for B in (1, 2, 5):
                w = torch.randn(O, I, generator=g)
                x, bias = torch.randn(B, I, generator=g), torch.randn(O, generator=g)
                scale = None
                if fmt == "bf16":
                    stored = w.to(torch.bfloat16)
                    wf, wb = stored.double(), 2
                elif fmt == "int8":
                    stored, scale = quantize_rows(w)
                    wf, wb = stored.double() * scale.double()[:, None], 1
                else:
                    stored, wf, wb = w, w.double(), 4
                y = torch.empty(B, O)
                status = torch.zeros(1, dtype=torch.int32)
                native.call(lib, "linear", torch.float32, (B, O, I, wb, 1),
                            (x, stored.contiguous().view(-1).view(torch.uint8), scale, bias, y, status))
                ref = x.double() @ wf.t() + bias.double()
                assert status.item() == 0
                torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5 * (1 + I ** 0.5), msg=f"{I} {O} {B}")


def test_bf16_weights_compute_the_function_of_the_rounded_weights_in_float32():
    """A bfloat16 model decodes natively with float32 state and arithmetic: the logits of a float32 model holding
    the same (rounded) weights within 1e-5, and within 5% of the logit range of the unrounded model."""
    model = lm("7:1", seed=9)
    ids = ids_for(2, 24)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    rounded = copy.deepcopy(bf16).float()
    got, state = step_logits(bf16, ids, True)
    assert got.dtype == torch.float32 and all(t.dtype == torch.float32 for t in torch.utils._pytree.tree_leaves(state))
    torch.testing.assert_close(got, step_logits(rounded, ids, True)[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, step_logits(rounded, ids, False)[0], rtol=1e-5, atol=1e-5)
    full = step_logits(model, ids, False)[0]
    assert (got - full).abs().max() < 0.05 * (full.max() - full.min())


def test_a_bf16_slstm_stack_keeps_its_head_wise_and_recurrent_weights_in_bf16_and_computes_the_same():
    """In a bfloat16 model the sLSTM's head-wise gate weights and recurrent matrix (half of an sLSTM block's bytes)
    are packed as bfloat16 (the plan says so, the blob is smaller) and decode to the logits of the float32 model that
    holds the same rounded weights (whose pack keeps them in float32)."""
    from xlstmkit.models import native_decode as nd

    bf16 = copy.deepcopy(lm("0:1", seed=12)).to(torch.bfloat16)
    rounded = copy.deepcopy(bf16).float()
    pack16, pack32 = nd.lm_pack(bf16, torch.float32), nd.lm_pack(rounded, torch.float32)
    formats = [int(pack16.plan[nd.LM_HEADER + k * nd.LM_BLOCK + nd.S_HW_FMT]) for k in range(int(pack16.plan[1]))]
    assert formats == [nd.FMT_BF16] * 2
    assert [int(pack32.plan[nd.LM_HEADER + k * nd.LM_BLOCK + nd.S_HW_FMT]) for k in range(2)] == [nd.FMT_SAME] * 2
    assert pack16.blob.numel() < pack32.blob.numel()
    ids = ids_for(3, 40)
    got = step_logits(bf16, ids, True)[0]
    torch.testing.assert_close(got, step_logits(rounded, ids, True)[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, step_logits(rounded, ids, False)[0], rtol=1e-5, atol=1e-5)


def test_int8_rows_round_trip_within_half_a_step():
    w = torch.randn(37, 65) * torch.logspace(-3, 2, 37)[:, None]
    w[5] = 0.0
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    assert torch.equal(q[5], torch.zeros(65, dtype=torch.int8)) and scale[5] == 1.0
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 * (1 + 1e-6)).all()
    assert torch.equal(q.abs().amax(1)[torch.arange(37) != 5], torch.full((36,), 127, dtype=torch.int8))
    with pytest.raises(ValueError, match="inf or NaN"):
        quantize_rows(torch.tensor([[1.0, float("inf")]]))


def test_int8_model_decodes_natively_as_its_pytorch_form_and_survives_a_state_dict_round_trip():
    model = lm("7:1", seed=10)
    ids = ids_for(2, 24)
    full = step_logits(model, ids, False)[0]
    q = quantize_(copy.deepcopy(model), "int8", min_weights=1)
    assert any(isinstance(m, Int8Linear) for m in q.modules())
    got, _ = step_logits(q, ids, True)
    torch.testing.assert_close(got, step_logits(q, ids, False)[0], rtol=1e-5, atol=1e-5)
    assert (got - full).abs().max() < 0.05 * (full.max() - full.min())
    fresh = quantize_(lm("7:1", seed=11), "int8", min_weights=1)
    fresh.load_state_dict(q.state_dict())
    assert torch.equal(step_logits(fresh, ids, True)[0], got)


# ---------------------------------------------------------------------------------------------------------------------
# states and the weight cache


def test_input_state_is_untouched_by_default_and_overwritten_with_reuse_state():
    model = lm("1:1", seed=12)
    ids = ids_for(2, 6)
    with torch.no_grad():
        _, plain = model(ids[:, :3], return_state=True)  # a state from the forward (plain tensors)
        plain_before = [t.clone() for t in torch.utils._pytree.tree_leaves(plain)]
        logits1, s1 = model.decode_step(ids[:, 3], plain)
        assert all(torch.equal(a, b) for a, b in zip(plain_before, torch.utils._pytree.tree_leaves(plain)))
        s1_before = [t.clone() for t in torch.utils._pytree.tree_leaves(s1)]
        logits2, s2 = model.decode_step(ids[:, 4], s1)  # a NativeState, not reused: untouched
        assert all(torch.equal(a, b) for a, b in zip(s1_before, torch.utils._pytree.tree_leaves(s1)))
        logits2r, s2r = model.decode_step(ids[:, 4], s1, reuse_state=True)  # reused: written in place
    assert s2r is s1 and torch.equal(logits2r, logits2)
    assert all(torch.equal(a, b) for a, b in zip(torch.utils._pytree.tree_leaves(s2),
                                                 torch.utils._pytree.tree_leaves(s1)))
    assert not all(torch.equal(a, b) for a, b in zip(s1_before, torch.utils._pytree.tree_leaves(s1)))


def test_a_copied_native_state_is_a_plain_tuple_that_continues_correctly():
    model = lm("1:1", seed=13)
    ids = ids_for(2, 5)
    with torch.no_grad():
        _, s = step_logits(model, ids[:, :3], True)
        c = copy.deepcopy(s)
        assert type(c) is tuple
        a, _ = model.decode_step(ids[:, 3], s, reuse_state=True)
        b, _ = model.decode_step(ids[:, 3], c, reuse_state=True)
    assert torch.equal(a, b)


def test_the_pack_is_rebuilt_after_an_optimizer_step_load_state_dict_and_dtype_change():
    model = lm("7:1", seed=14)
    ids = ids_for(2, 4)
    before = step_logits(model, ids, True)[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(ids).square().mean().backward()
    opt.step()
    after_step = step_logits(model, ids, True)[0]
    assert not torch.allclose(after_step, before)
    torch.testing.assert_close(after_step, step_logits(model, ids, False)[0], rtol=1e-5, atol=1e-5)
    model.load_state_dict(lm("7:1", seed=15).state_dict())
    torch.testing.assert_close(step_logits(model, ids, True)[0], step_logits(lm("7:1", seed=15), ids, False)[0],
                               rtol=1e-5, atol=1e-5)
    model.double()
    torch.testing.assert_close(step_logits(model, ids, True)[0], step_logits(model, ids, False)[0],
                               rtol=1e-12, atol=1e-12)


def test_the_pytorch_path_runs_with_autograd_in_training_with_dropout_and_when_switched_off(monkeypatch):
    model = lm("1:1", seed=16)
    tok = torch.tensor([1, 2])
    logits, state = model.decode_step(tok)  # grad mode, parameters require grad: the differentiable step
    assert logits.requires_grad and not isinstance(state, NativeState)
    with torch.no_grad():
        assert isinstance(model.decode_step(tok)[1], NativeState)
        dropout = lm("1:1", seed=16, dropout=0.1).train()
        assert not isinstance(dropout.decode_step(tok)[1], NativeState)
        monkeypatch.setenv("XLSTMKIT_NATIVE_DECODE", "0")
        assert not native_decode_enabled() and not isinstance(model.decode_step(tok)[1], NativeState)
        with use_native_decode(True):
            assert isinstance(model.decode_step(tok)[1], NativeState)


# ---------------------------------------------------------------------------------------------------------------------
# hostile input, in a subprocess (native code: a crash must not take the test run with it)

HOSTILE = textwrap.dedent("""
    import json, torch
    from xlstmkit import xLSTMConfig, xLSTMLM
    from xlstmkit.models import native_decode as nd
    def mk(pattern, E=32):
        torch.manual_seed(0)
        return xLSTMLM(xLSTMConfig(vocab_size=50, embedding_dim=E, num_blocks=4, block_pattern=pattern)).eval()
    a, b, c = mk("xLSTM[7:1]"), mk("xLSTM[1:1]"), mk("xLSTM[7:1]", E=64)
    tok = torch.tensor([1, 2])
    out = {}
    def run(name, fn):
        try:
            fn()
            out[name] = "no error"
        except Exception as exc:
            out[name] = f"{type(exc).__name__}: {exc}"
    with torch.no_grad():
        _, sa = a.decode_step(tok)
        _, sb = b.decode_step(tok)
        _, sc = c.decode_step(tok)
        keep = [t.clone() for t in torch.utils._pytree.tree_leaves(sa)]
        run("other kinds", lambda: a.decode_step(tok, sb))
        run("other width", lambda: a.decode_step(tok, sc, reuse_state=True))
        run("other batch", lambda: a.decode_step(torch.tensor([1, 2, 3]), sa, reuse_state=True))
        run("token = vocab", lambda: a.decode_step(torch.tensor([1, 50]), sa, reuse_state=True))
        run("token < 0", lambda: a.decode_step(torch.tensor([-1, 0]), sa))
        run("token 2**40", lambda: a.decode_step(torch.tensor([2**40, 0]), sa))
        out["state kept"] = all(torch.equal(x, y) for x, y in zip(keep, torch.utils._pytree.tree_leaves(sa)))
        pack = nd.lm_pack(a, torch.float32)
        pack.plan[nd.LM_HEADER + nd.M_I] = 10**6  # a damaged plan: checked in C before anything is read
        run("damaged plan", lambda: a.decode_step(tok, sa))
        pb = nd.lm_pack(b, torch.float32)
        first_slstm = next(k for k in range(int(pb.plan[1])) if int(pb.plan[nd.LM_HEADER + k * nd.LM_BLOCK]) == 1)
        pb.plan[nd.LM_HEADER + first_slstm * nd.LM_BLOCK + nd.S_HW_FMT] = 7  # no such weight format
        run("damaged format", lambda: b.decode_step(tok, sb))
    print(json.dumps(out))
""")


def test_hostile_states_tokens_and_plans_are_one_line_errors_not_crashes():
    proc = subprocess.run([sys.executable, "-c", HOSTILE], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["other kinds"].startswith("ValueError: state of block 1 (mLSTM)")
    assert out["other width"].startswith("ValueError: state of block 0") and "expected" in out["other width"]
    assert out["other batch"].startswith("ValueError:") and "batch size" in out["other batch"]
    assert out["token = vocab"].startswith("IndexError:") and "token id 50 in batch row 1" in out["token = vocab"]
    assert out["token < 0"].startswith("IndexError:") and "row 0" in out["token < 0"]
    assert out["token 2**40"].startswith("IndexError:")
    assert out["state kept"] is True  # a refused step wrote nothing, even with reuse_state
    assert out["damaged plan"].startswith("ValueError:") and "plan" in out["damaged plan"]
    assert out["damaged format"].startswith("ValueError:") and "plan" in out["damaged format"]
    assert all("\n" not in v for v in out.values() if isinstance(v, str))


# ---------------------------------------------------------------------------------------------------------------------
# xLSTMLarge: one native call per block


def large(seed: int = 0, **changes) -> xLSTMLarge:
    base = dict(vocab_size=61, embedding_dim=64, num_heads=2, num_blocks=2, chunk_size=16, ffn_proj_factor=2.667,
                ffn_round_up_to_multiple_of=16)
    base.update(changes)
    torch.manual_seed(seed)
    model = xLSTMLarge(xLSTMLargeConfig(**base))
    perturb_xlstm_large_(model)
    return model.eval()


@pytest.mark.parametrize("changes", [dict(), dict(use_bias=True), dict(gate_soft_cap=None, output_logit_soft_cap=None),
                                     dict(add_out_norm=False, num_heads=4)],
                         ids=["default", "bias", "no-caps", "no-out-norm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_native_block_step_equals_the_pytorch_step(changes, dtype):
    model = large(seed=1, norm_reduction_force_float32=False, **changes).to(dtype)
    ids = torch.randint(0, 61, (3, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, prefill = model(ids[:, :6], return_state=True)
    before = [t.clone() for t in torch.utils._pytree.tree_leaves(prefill)]
    nat, nat_state = step_logits(model, ids[:, 6:], True, prefill)
    assert all(torch.equal(a, b) for a, b in zip(before, torch.utils._pytree.tree_leaves(prefill)))
    with native.use_native(False):  # the plain PyTorch step (no native code anywhere)
        ref, ref_state = step_logits(model, ids[:, 6:], True, prefill)
    # logits leave in float32 on both paths: in float64 they agree to float32 rounding, the states to float64's
    assert_close_to_scale(nat, ref, 1e-5 if dtype == torch.float32 else 2.5e-7)
    for a, b in zip(torch.utils._pytree.tree_leaves(nat_state), torch.utils._pytree.tree_leaves(ref_state)):
        assert a.dtype == b.dtype == dtype
        assert_close_to_scale(a, b, 1e-5 if dtype == torch.float32 else 1e-11)


def test_large_native_step_is_taken_and_writes_in_place_with_reuse_state():
    model = large(seed=3)
    tok = torch.tensor([3, 4])
    calls = []
    real_call = native.call
    with torch.no_grad():
        _, s = model.decode_step(tok)
        try:
            native.call = lambda lib, name, *a: (calls.append(name), real_call(lib, name, *a))[1]
            logits, s2 = model.decode_step(tok, s, reuse_state=True)
        finally:
            native.call = real_call
    assert calls == ["large_block", "large_block", "linear"]
    assert all(x is y for x, y in zip(torch.utils._pytree.tree_leaves(s2), torch.utils._pytree.tree_leaves(s)))


@pytest.mark.parametrize("weights", ["bf16", "int8"])
def test_large_low_precision_weights_decode_natively_as_their_pytorch_form(weights):
    model = large(seed=4)
    ids = torch.randint(0, 61, (2, 10), generator=torch.Generator().manual_seed(5))
    full, _ = step_logits(model, ids, False)
    low = quantize_(copy.deepcopy(model), weights, min_weights=1)
    ref_model = copy.deepcopy(low).float() if weights == "bf16" else low
    got, state = step_logits(low, ids, True)
    assert all(t.dtype == torch.float32 for t in torch.utils._pytree.tree_leaves(state))
    with native.use_native(False):
        ref, _ = step_logits(ref_model, ids, True)
    assert_close_to_scale(got, ref, 1e-5)
    assert (got - full).abs().max() < 0.05 * (full.max() - full.min())


# ---------------------------------------------------------------------------------------------------------------------
# the CLI


def test_generate_cli_converts_the_weights_it_is_asked_for(tmp_path, capsys, monkeypatch):
    import xlstmkit.quantize as quantize
    from xlstmkit.cli import main

    data = tmp_path / "notes.txt"
    data.write_text("".join(f"# note {i}\nprint('hello {i % 5}')\n" for i in range(100)), encoding="utf-8")
    run = tmp_path / "run"
    tiny = ["--set", "embedding_dim=16", "--set", "num_blocks=2", "--set", "slstm_at=[1]", "--set",
            "mlstm_num_heads=2", "--set", "slstm_num_heads=2", "--set", "chunk_size=8", "--set", "round_up_to=8",
            "--set", "eval_tokens=64", "--set", "final_eval_tokens=64", "--set", "sample_tokens=4",
            "--batch-size", "2", "--seq-len", "16"]
    assert main(["train", "--preset", "tiny", "--data", str(data), "--out", str(run), "--max-steps", "1",
                 "--no-progress", *tiny]) == 0
    seen = []
    real = quantize.quantize_

    def recording(model, dtype, **kw):
        out = real(model, dtype, min_weights=1)  # every layer of the tiny model, so int8 really runs
        seen.append((dtype, sum(isinstance(m, Int8Linear) for m in out.modules()),
                     {p.dtype for p in out.parameters()}))
        return out

    monkeypatch.setattr(quantize, "quantize_", recording)
    for weights in ("bf16", "int8"):
        capsys.readouterr()
        assert main(["generate", "--run", str(run), "--prompt", "print(", "--max-new-tokens", "8",
                     "--temperature", "0", "--weights", weights]) == 0
        assert capsys.readouterr().out.startswith("print(")
    assert seen[0][0] == "bf16" and seen[0][2] == {torch.bfloat16}
    assert seen[1][0] == "int8" and seen[1][1] > 0
    with pytest.raises(SystemExit) as exit_info:  # argparse's own refusal: status 2, one line
        main(["generate", "--run", str(run), "--prompt", "x", "--weights", "fp8"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--weights" in err and "Traceback" not in err

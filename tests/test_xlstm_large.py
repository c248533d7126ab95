"""xLSTMLarge (the xLSTM-7B architecture): config arithmetic, the three forms, state, training at any length, bf16.

Agreement with transformers' implementation is tested in tests/test_interop_hf.py.
"""

import copy
import math

import pytest
import torch
from conftest import perturb_xlstm_large_

from xlstmkit.models.native_decode import use_native_decode
from xlstmkit.models.xlstm_large import xLSTMLarge, xLSTMLargeConfig
from xlstmkit.ops.mlstm import MLSTMState

torch.set_num_threads(1)

LENGTHS = (1, 63, 64, 65, 130)


def tiny(**changes) -> xLSTMLargeConfig:
    base = dict(vocab_size=61, embedding_dim=32, num_heads=2, num_blocks=2, chunk_size=16, ffn_proj_factor=2.667,
                ffn_round_up_to_multiple_of=16)
    base.update(changes)
    return xLSTMLargeConfig(**base)


def randomised(config: xLSTMLargeConfig, seed: int = 0) -> xLSTMLarge:
    """A model whose gates and norms are far from their init, so every part of the block shapes the output."""
    torch.manual_seed(seed)
    model = xLSTMLarge(config)
    perturb_xlstm_large_(model)
    return model


# ---------------------------------------------------------------------------------------------------------------------
# config


def test_7b_sizes_and_parameter_count():
    c = xLSTMLargeConfig()
    assert (c.qk_dim, c.v_dim, c.qk_head_dim, c.v_head_dim, c.ffn_dim) == (2048, 4096, 256, 512, 10944)
    with torch.device("meta"):
        model = xLSTMLarge(c)
    assert model.num_parameters() == 6_865_424_896  # xLSTM 7B paper, Table 4
    assert len(model.state_dict()) == 483  # transformers' xLSTMForCausalLM on the meta device


def test_sizes_not_multiple_of_64_use_the_layer_arithmetic():
    c = xLSTMLargeConfig(embedding_dim=96, num_heads=2, num_blocks=1, vocab_size=10)
    assert (c.qk_dim, c.v_dim, c.qk_head_dim, c.v_head_dim) == (48, 96, 24, 48)
    assert c.ffn_dim == 256  # 96 * 2.667 = 256.03 -> rounded up as transformers does


@pytest.mark.parametrize("bad", [dict(embedding_dim=0), dict(num_heads=-1), dict(vocab_size=2.5),
                                 dict(qk_dim_factor=0.0), dict(gate_soft_cap=-1.0), dict(mlstm_form="loop"),
                                 dict(embedding_dim=30, num_heads=4), dict(chunk_size=0), dict(norm_eps=float("inf"))])
def test_config_rejects_bad_values(bad):
    with pytest.raises((ValueError, TypeError)):
        tiny(**bad)


def test_config_roundtrip_and_replace():
    c = tiny()
    assert xLSTMLargeConfig.from_dict(c.to_dict()) == c
    assert c.replace(num_blocks=3).num_blocks == 3
    with pytest.raises(ValueError, match="unknown"):
        xLSTMLargeConfig.from_dict({**c.to_dict(), "hidden_sizes": 3})
    with pytest.raises(ValueError):
        c.replace(num_heads=0)


def test_init_follows_the_7b_recipe():
    c = tiny(num_heads=4)
    model = xLSTMLarge(c)
    layer = model.blocks[0].mlstm_layer
    assert torch.all(layer.igate_preact.weight == 0) and torch.all(layer.igate_preact.bias == -10)
    assert torch.all(layer.fgate_preact.weight == 0)
    assert torch.allclose(layer.fgate_preact.bias, torch.linspace(3, 6, 4))
    # small init on q, wang init (smaller for 2 blocks at this width) on out_proj
    assert abs(layer.q.weight.std().item() - math.sqrt(2 / (5 * 32))) < 0.05
    assert abs(layer.out_proj.weight.std().item() - 2 / (2 * math.sqrt(32))) < 0.05
    assert torch.all(model.out_norm.weight == 1)


# ---------------------------------------------------------------------------------------------------------------------
# forward


def test_forms_agree_and_logits_are_capped():
    model = randomised(tiny())
    ids = torch.randint(0, 61, (2, 130))
    with torch.no_grad():
        ref = model(ids, mlstm_form="parallel")
        for form in ("chunkwise", "recurrent"):
            out = model(ids, mlstm_form=form)
            assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4), form
    assert ref.dtype == torch.float32 and ref.shape == (2, 130, 61)
    assert ref.abs().max() < 30.0


def test_soft_cap_bounds_logits():
    model = randomised(tiny(output_logit_soft_cap=2.0))
    with torch.no_grad():
        model.lm_head.weight.mul_(100)
        out = model(torch.randint(0, 61, (1, 5)))
    assert out.abs().max() <= 2.0 and out.abs().max() > 1.9


@pytest.mark.parametrize("split", [1, 16, 17, 40])
def test_state_continuation_equals_whole_sequence(split):
    model = randomised(tiny())
    ids = torch.randint(0, 61, (2, 50))
    with torch.no_grad():
        whole, st_whole = model(ids, return_state=True)
        a, st = model(ids[:, :split], return_state=True)
        b, st = model(ids[:, split:], state=st, return_state=True, mlstm_form="recurrent")
    assert torch.allclose(torch.cat([a, b], 1), whole, atol=1e-4, rtol=1e-4)
    for s1, s2 in zip(st, st_whole):
        assert isinstance(s1, MLSTMState)
        for x, y in zip(s1, s2):
            assert torch.allclose(x, y, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("S", LENGTHS)
def test_training_loss_and_gradients_finite_at_every_length(S):
    model = randomised(tiny(chunk_size=64), seed=S).train()
    ids = torch.randint(0, 61, (2, S + 1))
    logits = model(ids[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 61), ids[:, 1:].reshape(-1))
    loss.backward()
    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # the recurrent part is trained too, not only the FFN path
    if S > 1:  # with one token the forget gate acts on the zero initial state only
        assert grads["blocks.0.mlstm_layer.fgate_preact.bias"].abs().sum() > 0
    assert grads["blocks.0.mlstm_layer.q.weight"].abs().sum() > 0


def test_gradients_agree_across_forms():
    model = randomised(tiny(), seed=3)
    ids = torch.randint(0, 61, (1, 40))
    grads = []
    for form in ("parallel", "chunkwise", "recurrent"):
        model.zero_grad()
        model(ids, mlstm_form=form).logsumexp(-1).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    for g in grads[1:]:
        assert torch.allclose(g, grads[0], atol=1e-4, rtol=1e-3)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = randomised(tiny(), seed=4).train()
    ids = torch.randint(0, 61, (2, 70))
    calls = []
    model.blocks[0].mlstm_layer.register_forward_hook(lambda *_: calls.append(1))
    grads, counts = [], []
    for flag in (False, True):
        model.gradient_checkpointing = flag
        model.zero_grad()
        calls.clear()
        model(ids).logsumexp(-1).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        counts.append(len(calls))
    assert counts == [1, 2]  # the checkpointed block ran again in the backward pass
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_bf16_weights_keep_float32_state():
    torch.manual_seed(0)
    model16 = xLSTMLarge(tiny())
    with torch.no_grad():
        for block in model16.blocks:  # let the memory take part
            block.mlstm_layer.igate_preact.bias.uniform_(-3.0, 1.0)
    model16 = model16.to(torch.bfloat16)
    model32 = copy.deepcopy(model16).float()  # the same (bf16-representable) weights in float32
    ids = torch.randint(0, 61, (2, 70))
    with torch.no_grad():
        ref = model32(ids)
        logits, state = model16(ids, return_state=True)
        step, state2 = model16(ids[:, :1], state=state, return_state=True, mlstm_form="recurrent")
    assert logits.dtype == torch.float32
    for st in (*state, *state2):
        assert st.C.dtype == st.n.dtype == st.m.dtype == torch.float32
    assert (logits - ref).abs().max() < 0.05 * ref.abs().max()  # bf16 activations, same function


def test_greedy_generate_matches_repeated_forward():
    model = randomised(tiny(), seed=5)
    prompt = torch.randint(0, 61, (2, 9))
    out = model.generate(prompt, 6)
    ids = prompt
    with torch.no_grad():
        for _ in range(6):
            ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ids)


def test_bad_input_is_rejected_with_clear_errors():
    model = xLSTMLarge(tiny())
    with pytest.raises(TypeError, match="input_ids"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="mlstm_form"):
        model(torch.zeros(1, 3, dtype=torch.long), mlstm_form="scan")
    with pytest.raises(ValueError, match="state"):
        model(torch.zeros(1, 3, dtype=torch.long), state=model.zero_state(1)[:1])
    with pytest.raises(TypeError, match="config"):
        xLSTMLarge({"embedding_dim": 32})


def test_zero_state_is_the_default():
    model = randomised(tiny())
    ids = torch.randint(0, 61, (2, 20))
    with torch.no_grad():
        assert torch.allclose(model(ids), model(ids, state=model.zero_state(2)), atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# decode_step: the fused single-token path used by generate


def fused_cache_built(model) -> bool:
    """Whether the fused decode step's cached weights exist (decode.py keeps them on the model and its blocks)."""
    return any(k.startswith("_derived_decode") for m in model.modules() for k in m.__dict__)


def _decode_reference(model, ids, split):
    """Logits and state of feeding ids[:, split:] one token at a time through `forward` (recurrent form)."""
    with torch.no_grad():
        _, state = model(ids[:, :split], return_state=True)
        out = []
        for t in range(split, ids.shape[1]):
            logits, state = model(ids[:, t:t + 1], state=state, return_state=True, mlstm_form="recurrent")
            out.append(logits[:, 0])
    return torch.stack(out, 1), state


@pytest.mark.parametrize("changes", [dict(), dict(use_bias=True), dict(gate_soft_cap=None, output_logit_soft_cap=None),
                                     dict(add_out_norm=False, num_heads=4)])
def test_fused_decode_step_agrees_with_the_sequence_forward_in_float64(changes):
    # norms in float64 too (the default reduces them in float32), so that the comparison is at float64 precision
    model = randomised(tiny(norm_reduction_force_float32=False, **changes), seed=6).double()
    if changes.get("use_bias"):
        with torch.no_grad():  # norms with a bias: folded into the fused projections
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.add_(0.3 * torch.randn_like(p))
    ids = torch.randint(0, 61, (3, 14))
    ref, ref_state = _decode_reference(model, ids, 5)
    with torch.no_grad(), use_native_decode(False):  # the PyTorch fused step (the native one: test_decode_native)
        _, state = model(ids[:, :5], return_state=True)
        before = [t.clone() for st in state for t in st]
        out = []
        first = state
        for t in range(5, 14):
            logits, state = model.decode_step(ids[:, t], state)
            out.append(logits)
    assert fused_cache_built(model)  # the fused path ran, not the plain step
    assert all(torch.equal(a, b) for a, b in zip(before, (t for st in first for t in st)))  # input state untouched
    got = torch.stack(out, 1)
    assert got.dtype == torch.float32
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)
    for s1, s2 in zip(state, ref_state):
        for x, y in zip(s1, s2):
            assert x.dtype == torch.float64 and torch.allclose(x, y, atol=1e-10, rtol=1e-9)


def test_decode_step_from_no_state_and_its_state_continues_the_forward():
    model = randomised(tiny(), seed=7).double()
    ids = torch.randint(0, 61, (2, 6))
    with torch.no_grad():
        logits, state = model.decode_step(ids[:, 0])
        ref, ref_state = model(ids[:, :1], return_state=True)
        assert torch.allclose(logits, ref[:, 0], atol=1e-6)
        for _ in range(2):
            logits, state = model.decode_step(ids[:, 1], state)
        # the (view) state the fused path returns is a valid state for forward
        a = model(ids[:, 2:], state=state)
        _, st = model(ids[:, :1], return_state=True)
        _, st = model(torch.stack([ids[:, 1], ids[:, 1]], 1), state=st, return_state=True)
        b = model(ids[:, 2:], state=st)
    assert torch.allclose(a, b, atol=1e-6)


def test_fused_decode_weights_follow_optimizer_steps():
    """The cached fused weights must not go stale: after each optimiser step decode_step sees the new weights."""
    model = randomised(tiny(), seed=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ids = torch.randint(0, 61, (2, 8))
    for _ in range(2):
        model.train()
        model(ids).logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad()
        model.eval()
        ref, _ = _decode_reference(model, ids, 7)
        with torch.no_grad():
            _, state = model(ids[:, :7], return_state=True)
            logits, _ = model.decode_step(ids[:, 7], state)
        assert torch.allclose(logits, ref[:, 0], atol=1e-4, rtol=1e-4)


def test_fused_decode_weights_follow_load_state_dict_and_replaced_parameters():
    model, other = randomised(tiny(), seed=9), randomised(tiny(), seed=10)
    ids = torch.randint(0, 61, (2, 4))

    def step(m):
        with torch.no_grad():
            return m.decode_step(ids[:, 3], m(ids[:, :3], return_state=True)[1])[0]

    step(model)  # builds the cache
    model.load_state_dict(other.state_dict())
    assert torch.allclose(step(model), step(other), atol=1e-5)
    model.blocks[0].ffn.proj_up.weight = torch.nn.Parameter(model.blocks[0].ffn.proj_up.weight * 2)
    assert torch.allclose(step(model), _decode_reference(model, ids, 3)[0][:, 0], atol=1e-5)
    with torch.no_grad():  # `.data` changes are invisible to torch: clear_decode_cache is the documented remedy
        model.lm_head.weight.data.mul_(3)
    model.clear_decode_cache()
    assert torch.allclose(step(model), _decode_reference(model, ids, 3)[0][:, 0], atol=1e-5)


def test_decode_step_keeps_autograd_through_the_fallback():
    model = randomised(tiny(), seed=11)
    logits, state = model.decode_step(torch.tensor([1, 2]))
    logits.sum().backward()
    assert model.blocks[0].mlstm_layer.q.weight.grad is not None


def test_decode_step_without_the_fused_copy_for_large_models_and_bf16():
    model = randomised(tiny(), seed=12)
    ids = torch.randint(0, 61, (2, 5))
    ref = _decode_reference(model, ids, 4)[0][:, 0]
    with torch.no_grad(), use_native_decode(False):
        state = model(ids[:, :4], return_state=True)[1]
        assert torch.allclose(model.decode_step(ids[:, 4], state)[0], ref, atol=1e-5)
        model.decode_cache_max_bytes = 0  # too big to hold twice: decode through forward, and free the copy
        assert torch.allclose(model.decode_step(ids[:, 4], state)[0], ref, atol=1e-5)
        assert not fused_cache_built(model)
        model16 = model.to(torch.bfloat16)
        model16.decode_cache_max_bytes = 2 << 30
        logits, _ = model16.decode_step(ids[:, 4], model16(ids[:, :4], return_state=True)[1])
    assert not fused_cache_built(model16) and logits.dtype == torch.float32
    assert (logits - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize("changes", [dict(), dict(use_bias=True)])
def test_in_place_inference_path_equals_the_autograd_path(changes):
    """Without autograd the layers work in place on their temporaries: same numbers as with a graph recorded."""
    model = randomised(tiny(**changes), seed=13)
    ids = torch.randint(0, 61, (2, 40))
    with torch.no_grad():
        fast, fast_state = model(ids, return_state=True)
    slow, slow_state = model(ids, return_state=True)
    assert slow.requires_grad and torch.equal(fast, slow.detach())
    for a, b in zip(fast_state, slow_state):
        assert all(torch.equal(x, y.detach()) for x, y in zip(a, b))


def test_fused_decode_weights_follow_conversions_that_replace_every_parameter():
    model = randomised(tiny(), seed=14)
    ids = torch.randint(0, 61, (2, 4))
    with torch.no_grad():
        model.decode_step(ids[:, 0])  # builds the float32 cache
    previous = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)  # .double() makes new Parameter objects
    try:
        model = model.double()
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(previous)
    with torch.no_grad():
        logits, state = model.decode_step(ids[:, 3], model(ids[:, :3], return_state=True)[1])
    assert state[0].C.dtype == torch.float64
    assert torch.allclose(logits, _decode_reference(model, ids, 3)[0][:, 0], atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# the plain model against the fused paths; states from another model


@pytest.mark.parametrize("changes", [dict(), dict(use_bias=True)])
def test_fused_and_plain_models_compute_the_same_function(changes):
    """config.fused picks the one-matmul projections and the fused decode step; fused=False runs the plain lines of
    model.py: same logits and gradients, and plain steps equal fused steps (float64)."""
    fused = randomised(tiny(norm_reduction_force_float32=False, **changes), seed=15).double()
    plain = xLSTMLarge(fused.config.replace(fused=False)).double()
    plain.load_state_dict(fused.state_dict())
    ids = torch.randint(0, 61, (2, 20))
    runs = []
    for model in (plain, fused):
        logits, state = model(ids, return_state=True)
        grads = torch.autograd.grad(logits.logsumexp(-1).mean(), list(model.parameters()))
        with torch.no_grad(), use_native_decode(False):
            steps, st = [], state
            for t in range(3):
                out, st = model.decode_step(ids[:, t], st)
                steps.append(out)
        runs.append((logits, state, grads, steps, st))
    assert fused_cache_built(fused) and not fused_cache_built(plain)
    for a, b in zip(torch.utils._pytree.tree_leaves(runs[0]), torch.utils._pytree.tree_leaves(runs[1])):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-6)  # logits leave in float32


@pytest.fixture
def large_ops_must_not_run(monkeypatch):
    import xlstmkit.models.xlstm_large.model as large_model

    def op_ran(*args, **kwargs):
        raise AssertionError("an op ran on a state that should have been refused")

    for name in ("mlstm", "mlstm_step", "fused_decode_step"):
        monkeypatch.setattr(large_model, name, op_ran)


@pytest.mark.parametrize("other", [dict(num_heads=4), dict(qk_dim_factor=0.25), dict(v_dim_factor=0.5),
                                   dict(num_blocks=3)], ids=["heads", "qk-dim", "v-dim", "blocks"])
def test_state_of_another_configuration_is_a_value_error_naming_the_block(other, large_ops_must_not_run):
    model = xLSTMLarge(tiny())
    state = xLSTMLarge(tiny(**other)).zero_state(2)
    ids = torch.randint(0, 61, (2, 3))
    pattern = r"state (of block \d \(mLSTM\): \w+ has shape .* expected|must be a tuple with one entry per block)"
    with pytest.raises(ValueError, match=pattern):
        model(ids, state=state)
    with pytest.raises(ValueError, match=pattern), torch.no_grad():
        model.decode_step(ids[:, 0], state)
    with pytest.raises(ValueError, match=pattern):
        model.generate(ids, 2, state=state)
    with pytest.raises(ValueError, match=r"block 0 \(mLSTM\): C has shape \(3, "):
        model(ids, state=model.zero_state(3))


def test_state_given_as_lists_works_like_tuples():
    model = randomised(tiny(), seed=16)
    ids = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        _, state = model(ids[:, :5], return_state=True)
        as_lists = [list(s) for s in state]
        torch.testing.assert_close(model(ids[:, 5:], state=as_lists), model(ids[:, 5:], state=state), rtol=0, atol=0)
        torch.testing.assert_close(model.decode_step(ids[:, 5], as_lists)[0], model.decode_step(ids[:, 5], state)[0],
                                   rtol=0, atol=0)


def test_old_class_names_still_import_with_a_deprecation_warning():
    import xlstmkit
    import xlstmkit.models.xlstm_large as large

    with pytest.warns(DeprecationWarning, match="xLSTMLargeMLSTMLayer"):
        assert large.mLSTMLayer is large.xLSTMLargeMLSTMLayer
    assert xlstmkit.xLSTMLarge is xLSTMLarge and xlstmkit.xLSTMLargeConfig is xLSTMLargeConfig

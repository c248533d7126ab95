"""The paper's model end to end: state in and out, every form, generation, initialisation, bad input."""

from __future__ import annotations

import pytest
import torch

from xlstmkit import xLSTMConfig, xLSTMLM
from xlstmkit.config import parse_block_pattern

PATTERNS = ["xLSTM[1:0]", "xLSTM[0:1]", "xLSTM[1:1]", "xLSTM[3:1]"]


def perturbed_model(pattern: str, dtype=torch.float64, **overrides) -> xLSTMLM:
    """A small model whose zero-initialised parameters (recurrent R, gate weights) are perturbed, so every path
    through the network is exercised."""
    torch.manual_seed(0)
    cfg = xLSTMConfig(vocab_size=37, embedding_dim=32, num_blocks=4 if pattern == "xLSTM[3:1]" else 2,
                      block_pattern=pattern, chunk_size=8, **overrides)
    model = xLSTMLM(cfg).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def run_in_pieces(model, ids, cuts, form=None):
    outs, state = [], None
    bounds = [0, *cuts, ids.shape[1]]
    for a, b in zip(bounds[:-1], bounds[1:]):
        out, state = model(ids[:, a:b], state=state, return_state=True, mlstm_form=form)
        outs.append(out)
    return torch.cat(outs, dim=1), state


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("S", [1, 7, 20])
def test_whole_equals_pieces_equals_steps_in_every_form(pattern, S):
    model = perturbed_model(pattern)
    ids = torch.randint(0, 37, (2, S), generator=torch.Generator().manual_seed(S))
    whole, whole_state = model(ids, return_state=True)
    for form in ("chunkwise", "parallel", "recurrent"):
        torch.testing.assert_close(model(ids, mlstm_form=form), whole, rtol=1e-10, atol=1e-10)
    cuts = sorted({c for c in (1, S // 2, S - 1) if 0 < c < S})
    pieces, _ = run_in_pieces(model, ids, cuts)
    torch.testing.assert_close(pieces, whole, rtol=1e-10, atol=1e-10)
    steps, step_state = run_in_pieces(model, ids, list(range(1, S)), form="recurrent")
    torch.testing.assert_close(steps, whole, rtol=1e-10, atol=1e-10)
    # the final states agree too (so a third call would continue identically)
    for a, b in zip(torch.utils._pytree.tree_leaves(whole_state), torch.utils._pytree.tree_leaves(step_state)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_long_sequence_float32_chunkwise_matches_steps():
    model = perturbed_model("xLSTM[1:1]", dtype=torch.float32)
    ids = torch.randint(0, 37, (1, 130), generator=torch.Generator().manual_seed(1))
    whole = model(ids)
    steps, _ = run_in_pieces(model, ids, list(range(1, 130)), form="recurrent")
    torch.testing.assert_close(steps, whole, rtol=1e-4, atol=1e-4)


def test_gradients_flow_to_every_parameter():
    model = perturbed_model("xLSTM[1:1]", dtype=torch.float32).train()
    ids = torch.randint(0, 37, (2, 19))
    logits = model(ids)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 37), ids[:, 1:].reshape(-1))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    assert sum(float(p.grad.abs().sum()) for p in model.parameters()) > 0


def test_bf16_model_keeps_float32_state():
    model = perturbed_model("xLSTM[1:1]", dtype=torch.bfloat16)
    logits, state = model(torch.randint(0, 37, (2, 9)), return_state=True)
    assert logits.dtype == torch.bfloat16
    for leaf in torch.utils._pytree.tree_leaves(state):
        assert leaf.dtype == torch.float32


# --- generation -------------------------------------------------------------------------------------------------------


def test_generation_reproducible_under_seed_and_varies_across_seeds():
    model = perturbed_model("xLSTM[1:1]", dtype=torch.float32)
    prompt = torch.randint(0, 37, (3, 5), generator=torch.Generator().manual_seed(0))
    kw = dict(temperature=1.5, top_k=20, top_p=0.95)
    a = model.generate(prompt, 30, seed=7, **kw)
    b = model.generate(prompt, 30, seed=7, **kw)
    c = model.generate(prompt, 30, seed=8, **kw)
    assert a.shape == (3, 35) and torch.equal(a[:, :5], prompt)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_greedy_generation_equals_argmax_of_full_forward():
    model = perturbed_model("xLSTM[3:1]", dtype=torch.float64)
    prompt = torch.randint(0, 37, (2, 6))
    out = model.generate(prompt, 12)
    # re-run the whole generated sequence in one forward: each generated token is the argmax at its position
    logits = model(out[:, :-1])
    torch.testing.assert_close(logits[:, 5:].argmax(-1), out[:, 6:], rtol=0, atol=0)
    assert torch.equal(model.generate(prompt, 12, temperature=1.0, top_k=1, seed=3), out)


def test_stream_callback_and_generate_agree():
    model = perturbed_model("xLSTM[1:1]", dtype=torch.float32)
    prompt = torch.randint(0, 37, (2, 4))
    streamed = torch.stack(list(model.stream(prompt, 10, temperature=1.0, seed=1)), dim=1)
    seen = []
    out = model.generate(prompt, 10, temperature=1.0, seed=1, callback=seen.append)
    assert torch.equal(out[:, 4:], streamed)
    assert torch.equal(torch.stack(seen, dim=1), streamed)


def test_stop_tokens_end_rows_and_pad():
    model = perturbed_model("xLSTM[1:0]", dtype=torch.float32)
    prompt = torch.randint(0, 37, (4, 3), generator=torch.Generator().manual_seed(5))
    free = model.generate(prompt, 20, temperature=1.0, seed=2)
    stop = int(free[0, 3 + 4])  # a token row 0 produces at its 5th step
    out = model.generate(prompt, 20, temperature=1.0, seed=2, stop_tokens=[stop], pad_token=36 if stop != 36 else 35)
    pad = 36 if stop != 36 else 35
    for row in range(4):
        gen = out[row, 3:]
        hits = (gen == stop).nonzero()
        if len(hits):
            first = int(hits[0])
            assert (gen[first + 1:] == pad).all(), "tokens after the stop token must be padding"
            assert torch.equal(gen[: first + 1], free[row, 3: 3 + first + 1])
    assert (out[0, 3:] == stop).any()
    assert out.shape[1] <= 23


def test_generation_state_size_is_independent_of_generated_length():
    model = perturbed_model("xLSTM[1:1]", dtype=torch.float32)
    prompt = torch.randint(0, 37, (1, 4))

    def state_numel(n_tokens):
        ids = model.generate(prompt, n_tokens)
        _, state = model(ids, return_state=True)
        return sum(t.numel() * t.element_size() for t in torch.utils._pytree.tree_leaves(state))

    assert state_numel(5) == state_numel(200)
    # and the stream holds only the state: its per-step state has the same size as an empty one
    empty = sum(t.numel() for t in torch.utils._pytree.tree_leaves(model.zero_state(1)))
    _, st = model(prompt, return_state=True)
    assert sum(t.numel() for t in torch.utils._pytree.tree_leaves(st)) == empty


# --- config and initialisation -----------------------------------------------------------------------------------------


def test_block_patterns():
    assert parse_block_pattern("xLSTM[1:1]", 2) == (1,)
    assert parse_block_pattern("xLSTM[1:0]", 4) == ()
    assert parse_block_pattern("xLSTM[0:1]", 3) == (0, 1, 2)
    assert len(parse_block_pattern("xLSTM[7:1]", 48)) == 6
    assert xLSTMConfig(num_blocks=4, slstm_at=[3, 1]).block_types == ("m", "s", "m", "s")
    assert xLSTMConfig(num_blocks=3, slstm_at="all").block_types == ("s", "s", "s")
    cfg = xLSTMConfig(num_blocks=8, block_pattern="xLSTM[7:1]")
    assert cfg.block_types.count("s") == 1
    assert xLSTMConfig.from_dict(cfg.to_dict()) == cfg


def test_paper_initialisation():
    torch.manual_seed(0)
    cfg = xLSTMConfig(vocab_size=10, embedding_dim=64, num_blocks=3, slstm_at=[1, 2], mlstm_num_heads=8)
    model = xLSTMLM(cfg).requires_grad_(False)
    m_layer = model.stack.blocks[0].layer
    torch.testing.assert_close(m_layer.fgate.bias, torch.linspace(3.0, 6.0, cfg.mlstm_num_heads))
    assert (m_layer.fgate.weight == 0).all() and (m_layer.igate.weight == 0).all()
    assert 0.03 < float(m_layer.igate.bias.std()) < 0.3, "input-gate bias ~ N(0, 0.1)"
    for idx in (1, 2):
        s_layer = model.stack.blocks[idx].layer
        assert (s_layer.recurrent == 0).all()
        fb = s_layer.bias.view(cfg.slstm_num_heads, 4, cfg.slstm_head_dim)[:, 1]
        assert torch.allclose(fb[:, 0], torch.full((cfg.slstm_num_heads,), 5.0))
        assert torch.allclose(fb[:, -1], torch.full((cfg.slstm_num_heads,), -7.0))
        assert (fb[:, 1:] <= fb[:, :-1]).all(), "the power-law forget bias decreases along the head dimension"
    mid1 = model.stack.blocks[1].layer.bias.view(cfg.slstm_num_heads, 4, -1)[0, 1, 8]
    mid2 = model.stack.blocks[2].layer.bias.view(cfg.slstm_num_heads, 4, -1)[0, 1, 8]
    assert mid1 != mid2, "the forget bias profile depends on the block index"
    E = cfg.embedding_dim
    assert abs(float(model.embedding.weight.std()) - (2 / (5 * E)) ** 0.5) < 0.02
    assert abs(float(m_layer.proj_down.weight.std()) - 2 / 3 / E**0.5) < 0.02


def test_tied_weights_share_one_tensor():
    model = xLSTMLM(xLSTMConfig(vocab_size=11, embedding_dim=32, num_blocks=1, tie_weights=True))
    assert model.head.weight is model.embedding.weight


# --- bad input --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(embedding_dim=30, mlstm_num_heads=7), "mlstm_num_heads"),
        (dict(embedding_dim=30, num_blocks=2, slstm_at=[1], slstm_num_heads=4), "slstm_num_heads"),
        (dict(block_pattern="xLSTM[7-1]"), "block_pattern"),
        (dict(block_pattern="Mamba[1:1]"), "block_pattern"),
        (dict(num_blocks=2, slstm_at=[2]), "slstm_at"),
        (dict(num_blocks=2, slstm_at=[0], block_pattern="xLSTM[1:1]"), "block_pattern"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(mlstm_form="quadratic"), "mlstm_form"),
        (dict(forget_gate="relu"), "forget_gate"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_bad_config_names_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        xLSTMConfig(**kwargs)


def test_bad_input_ids_name_the_problem():
    model = xLSTMLM(xLSTMConfig(vocab_size=11, embedding_dim=32, num_blocks=1))
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.rand(2, 5))
    with pytest.raises(ValueError, match=r"shape \(batch, seq_len\)"):
        model(torch.randint(0, 11, (5,)))
    with pytest.raises(ValueError, match="token id 11, outside the vocabulary"):
        model(torch.tensor([[1, 2, 11]]))
    with pytest.raises(ValueError, match="token id -1"):
        model(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match="mlstm_form"):
        model(torch.tensor([[1, 2]]), mlstm_form="fast")
    with pytest.raises(ValueError, match="one entry per block"):
        model(torch.tensor([[1, 2]]), state=())
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(torch.tensor([[1, 2]]), -1)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(torch.tensor([[1, 2]]), 3, temperature=1.0, top_p=1.5)
    with pytest.raises(TypeError, match="xLSTMConfig"):
        xLSTMLM({"vocab_size": 3})


# --- fused and plain layers ---------------------------------------------------------------------------------------


def test_fused_and_plain_models_compute_the_same_logits_gradients_and_steps():
    """cfg.fused picks the layers' fused variants; fused=False runs their plain equations: same weights, same logits,
    gradients, states and decode steps (float64)."""
    fused = perturbed_model("xLSTM[1:1]")
    plain = xLSTMLM(fused.config.replace(fused=False)).double()
    plain.load_state_dict(fused.state_dict())
    ids = torch.randint(0, 37, (2, 11), generator=torch.Generator().manual_seed(6))
    runs = []
    for model in (plain, fused):
        logits, state = model(ids, return_state=True)
        grads = torch.autograd.grad(logits.square().mean(), list(model.parameters()))
        with torch.no_grad():
            step_logits, step_state = model.decode_step(ids[:, 0], state)
        runs.append((logits, state, grads, step_logits, step_state))
    for a, b in zip(torch.utils._pytree.tree_leaves(runs[0]), torch.utils._pytree.tree_leaves(runs[1])):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# --- states from another model are refused before any op runs ---------------------------------------------------------

BASE = dict(vocab_size=37, embedding_dim=32, num_blocks=2, slstm_at=[1], mlstm_num_heads=2, slstm_num_heads=2)
OTHER_CONFIGS = {
    "mLSTM head count": dict(mlstm_num_heads=4),
    "mLSTM head dim": dict(mlstm_proj_factor=4.0),
    "mLSTM conv kernel": dict(mlstm_conv_kernel=2),
    "sLSTM head count": dict(slstm_num_heads=4),
    "sLSTM conv kernel": dict(slstm_conv_kernel=0),
    "number of blocks": dict(num_blocks=3),
    "kinds of blocks": dict(slstm_at=[0]),
}


@pytest.fixture
def ops_must_not_run(monkeypatch):
    """Replace every op the blocks call by one that fails the test: a refused state must be refused before."""
    import xlstmkit.nn.mlstm_block as mb
    import xlstmkit.nn.slstm_block as sb

    def op_ran(*args, **kwargs):
        raise AssertionError("an op ran on a state that should have been refused")

    for module, name in ((mb, "mlstm"), (mb, "mlstm_step"), (sb, "slstm_sequence"), (sb, "slstm_step")):
        monkeypatch.setattr(module, name, op_ran)


@pytest.mark.parametrize("what", list(OTHER_CONFIGS))
def test_state_of_another_configuration_is_a_value_error_naming_the_block(what, ops_must_not_run):
    model = xLSTMLM(xLSTMConfig(**BASE))
    other = xLSTMLM(xLSTMConfig(**{**BASE, **OTHER_CONFIGS[what]}))
    state = other.zero_state(2)
    ids = torch.randint(0, 37, (2, 3))
    pattern = r"state (of block \d \([ms]LSTM\)|must be a tuple with one entry per block)"
    with pytest.raises(ValueError, match=pattern) as forward_err:
        model(ids, state=state)
    if "block" in str(forward_err.value) and "shape" in str(forward_err.value):
        assert "expected" in str(forward_err.value)
    with pytest.raises(ValueError, match=pattern):
        model.decode_step(ids[:, 0], state)
    with pytest.raises(ValueError, match=pattern):
        model.generate(ids, 3, state=state)


def test_state_of_another_batch_size_names_block_and_both_shapes(ops_must_not_run):
    model = xLSTMLM(xLSTMConfig(**BASE))
    state = model.zero_state(3)
    with pytest.raises(ValueError, match=r"block 0 \(mLSTM\): conv has shape \(3, 3, 64\), expected \(2, 3, 64\)"):
        model(torch.randint(0, 37, (2, 4)), state=state)
    with pytest.raises(ValueError, match=r"block 0 \(mLSTM\)"):
        model.decode_step(torch.tensor([1, 2]), state)
    with pytest.raises(TypeError, match=r"block 1 \(sLSTM\): cell.h must be a tensor"):
        model(torch.randint(0, 37, (3, 4)), state=(state[0], (state[1].conv, (*state[1].cell[:3], None))))


def test_state_given_as_nested_lists_works_like_tuples():
    model = perturbed_model("xLSTM[1:1]")
    ids = torch.randint(0, 37, (2, 8), generator=torch.Generator().manual_seed(8))
    _, state = model(ids[:, :5], return_state=True)
    as_lists = [[s.conv, list(s.cell)] for s in state]
    a = model(ids[:, 5:], state=state)
    b = model(ids[:, 5:], state=as_lists)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(model.decode_step(ids[:, 5], as_lists)[0], model.decode_step(ids[:, 5], state)[0],
                               rtol=0, atol=0)


def test_decode_step_checks_the_token_shape_and_dtype():
    model = xLSTMLM(xLSTMConfig(vocab_size=11, embedding_dim=32, num_blocks=1))
    with pytest.raises(ValueError, match=r"tokens must have shape \(batch,\)"):
        model.decode_step(torch.tensor([[1, 2]]))
    with pytest.raises(TypeError, match="integer tensor of token ids"):
        model.decode_step(torch.tensor([1.0]))

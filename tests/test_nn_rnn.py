"""The nn.LSTM-style modules (xlstmkit.nn.sLSTM / mLSTM / xLSTM): nn.LSTM's shapes for every layout (seq first,
batch first, unbatched, bidirectional, PackedSequence), a state that continues a sequence exactly, dropout between
layers only, the bidirectional module's refusal of a state, and one-line errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from xlstmkit.nn import mLSTM, sLSTM, xLSTM

from conftest import assert_close


def close(name, ref, got, tol=1e-10):
    assert_close(name, ref, got, tol, tol)


def perturbed(m: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = m.double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return m.eval()


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_output_shapes_match_nn_lstm(batch_first, bidirectional):
    torch.manual_seed(0)
    x = torch.randn(5, 3, 6) if not batch_first else torch.randn(3, 5, 6)
    ref, _ = nn.LSTM(6, 8, num_layers=2, batch_first=batch_first, bidirectional=bidirectional)(x)
    for rnn in (xLSTM(6, 8, 2, "ms", batch_first=batch_first, bidirectional=bidirectional),
                sLSTM(6, 8, 2, num_layers=2, batch_first=batch_first, bidirectional=bidirectional),
                mLSTM(6, 8, 2, num_layers=2, batch_first=batch_first, bidirectional=bidirectional)):
        out, state = rnn(x)
        assert out.shape == ref.shape
        assert (state is None) == bidirectional
    out, _ = xLSTM(6, 8, 2, "m")(torch.randn(5, 6))  # unbatched (seq, features), as nn.LSTM takes it
    assert out.shape == (5, 8)


@pytest.mark.parametrize("layers", ["s", "m", "msm"])
def test_state_continues_a_sequence_exactly(layers):
    rnn = perturbed(xLSTM(4, 8, 2, layers, chunk_size=2))
    x = torch.randn(9, 2, 4, dtype=torch.float64)
    whole, state = rnn(x)
    a, s = rnn(x[:4])
    b, s = rnn(x[4:7], s)
    c, s = rnn(x[7:], s)
    close("output", whole, torch.cat([a, b, c]))
    for t1, t2 in zip(torch.utils._pytree.tree_leaves(state), torch.utils._pytree.tree_leaves(s)):
        close("state", t1, t2)
    # the state of zero_state is what None means
    close("zero state", whole, rnn(x, rnn.zero_state(2))[0])


def test_bidirectional_output_is_forward_then_backward_reading():
    """A one-layer bidirectional module: the first half reads left to right, the second half right to left (its
    output at step 0 has seen the whole sequence)."""
    rnn = perturbed(xLSTM(3, 8, 2, "m", batch_first=True, bidirectional=True))
    x = torch.randn(1, 6, 3, dtype=torch.float64)
    out, _ = rnn(x)
    y = x.clone()
    y[0, 5] += 1.0  # change the last step only
    out2, _ = rnn(y)
    assert torch.equal(out[0, :5, :8], out2[0, :5, :8])  # the forward reading is causal
    assert not torch.allclose(out[0, 0, 8:], out2[0, 0, 8:])  # the backward reading saw the change at step 0
    fwd, bwd = rnn.last
    h = rnn.input_proj(x)
    close("forward half", rnn.post_norm(fwd(h, None, "chunkwise")[0]), out[..., :8])
    close("backward half", rnn.post_norm_reverse(bwd(h.flip(1), None, "chunkwise")[0].flip(1)), out[..., 8:])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_sequence_rows_equal_each_sequence_alone(bidirectional):
    rnn = perturbed(xLSTM(3, 8, 2, "ms", batch_first=True, bidirectional=bidirectional, chunk_size=2))
    x = torch.randn(3, 7, 3, dtype=torch.float64)
    lengths = torch.tensor([4, 7, 1])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, state = rnn(packed)
    assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
    padded, got_lengths = pad_packed_sequence(out, batch_first=True)
    assert got_lengths.tolist() == lengths.tolist()
    for b in range(3):
        alone, s = rnn(x[b:b + 1, :lengths[b]])
        close(f"row {b}", alone[0], padded[b, :lengths[b]])
        if not bidirectional:  # each row's state is taken after its last real step
            for t1, t2 in zip(torch.utils._pytree.tree_leaves(s), torch.utils._pytree.tree_leaves(state)):
                close(f"row {b} state", t1[0], t2[b])


def test_dropout_acts_between_layers_in_training_only():
    torch.manual_seed(0)
    x = torch.randn(6, 2, 4)
    one = xLSTM(4, 8, 2, "m", dropout=0.5).train()
    assert torch.equal(one(x)[0], one(x)[0])  # one layer: nothing between layers to drop
    two = xLSTM(4, 8, 2, "mm", dropout=0.5).train()
    assert not torch.equal(two(x)[0], two(x)[0])
    two.eval()
    assert torch.equal(two(x)[0], two(x)[0])


def test_gradients_reach_every_parameter():
    rnn = xLSTM(4, 8, 2, "sm", bidirectional=True, bias=True)
    out, _ = rnn(torch.randn(5, 2, 4))
    out.square().sum().backward()
    missing = [n for n, p in rnn.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("build,call,msg", [
    (lambda: xLSTM(4, 8, 2, "mx"), None, "string of 's'"),
    (lambda: xLSTM(4, 8, 3, "s"), None, "slstm_num_heads \\(3\\) must divide embedding_dim"),
    (lambda: sLSTM(4, 8, 2, num_layers=0), None, "num_layers must be a positive integer"),
    (lambda: xLSTM(4, 8, 2, "m", dropout=1.0), None, "dropout"),
    (lambda: xLSTM(4, 8, 2, "m"), lambda m: m(torch.randn(5, 2, 3)), "expected input_size=4"),
    (lambda: xLSTM(4, 8, 2, "m"), lambda m: m(torch.randn(5, 0, 4)), "empty input"),
    (lambda: xLSTM(4, 8, 2, "m", bidirectional=True), lambda m: m(torch.randn(5, 2, 4), ()), "takes no state"),
    (lambda: xLSTM(4, 8, 2, "m"), lambda m: m(torch.randn(5, 2, 4), ()), "one entry per block"),
])
def test_bad_arguments_are_one_line_errors(build, call, msg):
    with pytest.raises(ValueError, match=msg) as err:
        m = build()
        call(m)
    assert "\n" not in str(err.value)

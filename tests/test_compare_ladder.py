"""The classic LSTM block of the ablation ladder (nn/lstm_block.py): the cell's equations, state carried across
calls, padding that changes no state, the one-token step, and its place in a block stack beside xLSTM blocks."""

from __future__ import annotations

import pytest
import torch

from xlstmkit import xLSTMConfig, xLSTMLM
from xlstmkit.nn.lstm_block import LSTMBlock


def _model(**kw) -> xLSTMLM:
    torch.manual_seed(0)
    return xLSTMLM(xLSTMConfig(vocab_size=40, embedding_dim=16, num_blocks=2, **kw)).double()


def test_the_cell_is_the_classic_lstm_with_nn_lstm_weights():
    torch.manual_seed(1)
    block = LSTMBlock(xLSTMConfig(embedding_dim=8, num_blocks=1, lstm_at="all"), 0).double()
    x = torch.randn(3, 8, dtype=torch.float64)
    h0, c0 = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    W, R = block.lstm.weight_ih_l0, block.lstm.weight_hh_l0
    b = block.lstm.bias_ih_l0 + block.lstm.bias_hh_l0
    i, f, z, o = (x @ W.T + h0 @ R.T + b).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c0 + torch.sigmoid(i) * torch.tanh(z)
    h = torch.sigmoid(o) * torch.tanh(c)
    h1, c1 = block._cell(x, h0, c0)
    torch.testing.assert_close(h1, h)
    torch.testing.assert_close(c1, c)
    with torch.no_grad():   # and nn.LSTM's fused kernel computes the same step
        _, (hn, cn) = block.lstm(x[:, None], (h0[None], c0[None]))
    torch.testing.assert_close(hn[0], h)
    torch.testing.assert_close(cn[0], c)


@pytest.mark.parametrize("kw", [dict(lstm_at="all"), dict(lstm_at="all", lstm_ffn=True),
                                dict(lstm_at=[0], slstm_at=[1])])
@pytest.mark.parametrize("S", [1, 7, 65])
def test_pieces_mask_and_step_compute_what_the_whole_sequence_does(kw, S):
    model = _model(**kw)
    x = torch.randint(0, 40, (2, S))
    whole, _ = model(x, return_state=True)
    cut = S // 2
    if cut:
        a, state = model(x[:, :cut], return_state=True)
        b = model(x[:, cut:], state=state)
        torch.testing.assert_close(torch.cat([a, b], 1), whole)
    state, steps = None, []
    for t in range(S):
        logits, state = model.decode_step(x[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), whole)
    # left padding of row 0 leaves its state untouched: its real tokens compute what they do alone
    pad = 3
    padded = torch.cat([torch.zeros(2, pad, dtype=torch.long), x], 1)
    mask = torch.ones(2, S + pad, dtype=torch.bool)
    mask[0, :pad] = False
    masked = model(padded, attention_mask=mask)
    torch.testing.assert_close(masked[0, pad:], whole[0])


def test_block_types_and_config_checks():
    cfg = xLSTMConfig(num_blocks=4, lstm_at=[0, 1], slstm_at=[3])
    assert cfg.block_types == ("l", "l", "m", "s") and cfg.mlstm_positions == (2,)
    assert xLSTMConfig(num_blocks=3, lstm_at="all").block_types == ("l", "l", "l")
    with pytest.raises(ValueError, match="both LSTM"):
        xLSTMConfig(num_blocks=2, lstm_at=[1], slstm_at=[1])
    with pytest.raises(ValueError, match="outside"):
        xLSTMConfig(num_blocks=2, lstm_at=[2])
    with pytest.raises(ValueError, match="lstm_at must be"):
        xLSTMConfig(num_blocks=2, lstm_at="some")
    model = _model(lstm_at="all")
    with pytest.raises(ValueError, match=r"block 0 \(LSTM\)"):
        model(torch.zeros(1, 3, dtype=torch.long), state=(((torch.zeros(1, 5), torch.zeros(1, 16))),) * 2)


def test_ladder_models_learn_under_bf16_autocast():
    model = _model(lstm_at="all", lstm_ffn=True).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.arange(40).repeat(2, 2)[:, :33]   # a sequence it can learn: next = current + 1
    losses = []
    for _ in range(30):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]

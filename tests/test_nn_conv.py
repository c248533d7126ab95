"""CausalConv1d (src/xlstmkit/nn/conv.py), computed as shifted multiply-adds, against F.conv1d on a left-padded
input: outputs and gradients at awkward lengths and kernel sizes, with and without bias; pieces with the carried
state equal the whole; the one-token step equals the sequence form."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xlstmkit.nn.conv import CausalConv1d

from conftest import assert_close


def reference(conv: CausalConv1d, x: torch.Tensor) -> torch.Tensor:
    """y (B, S, D) by F.conv1d with K-1 zeros of left padding (the textbook causal depthwise convolution)."""
    xp = F.pad(x.transpose(1, 2), (conv.kernel_size - 1, 0))
    return F.conv1d(xp, conv.weight, conv.bias, groups=conv.dim).transpose(1, 2)


@pytest.mark.parametrize("S", [1, 2, 7, 64, 65])
@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_conv1d_with_grads(S, K, bias):
    torch.manual_seed(S * 10 + K)
    conv = CausalConv1d(6, K, bias=bias).double()
    x = torch.randn(3, S, 6, dtype=torch.float64, requires_grad=True)
    y, state = conv(x)
    y_ref = reference(conv, x)
    assert_close("y", y_ref, y, 1e-12, 1e-13)
    params = [x, conv.weight] + ([conv.bias] if bias else [])
    cot = torch.randn_like(y)
    g = torch.autograd.grad((y * cot).sum(), params)
    g_ref = torch.autograd.grad((y_ref * cot).sum(), params)
    for name, a, b in zip(["x", "weight", "bias"], g_ref, g):
        assert_close(f"grad {name}", a, b, 1e-12, 1e-13)
    assert state.shape == (3, K - 1, 6)


@pytest.mark.parametrize("split", [1, 3, 9])
def test_pieces_with_state_equal_whole(split):
    torch.manual_seed(split)
    conv = CausalConv1d(5, 4).double()
    x = torch.randn(2, 12, 5, dtype=torch.float64)
    whole, s_whole = conv(x)
    y1, s1 = conv(x[:, :split])
    y2, s2 = conv(x[:, split:], s1)
    assert_close("pieces", whole, torch.cat([y1, y2], 1), 1e-13, 1e-14)
    assert_close("state", s_whole, s2, 0, 0)
    # the one-token step carries the same state
    state, outs = conv.zero_state(2, torch.float64), []
    for t in range(12):
        y_t, state = conv.step(x[:, t], state)
        outs.append(y_t)
    assert_close("steps", whole, torch.stack(outs, 1), 1e-13, 1e-14)


# --- attention masks: the convolution skips padded steps -----------------------------------------------------------

MASKS = {  # (B=3, S=7): left padding, right padding with a hole, a row of one real step; and a row of only pads
    "left-right-holes": [[0, 0, 1, 1, 1, 1, 1], [1, 1, 0, 1, 1, 0, 0], [0, 0, 0, 1, 0, 0, 0]],
    "all-pads-row": [[1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 1, 0, 1]],
}


@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("with_state", [False, True])
def test_masked_rows_equal_their_real_steps_alone_with_grads(K, mask_name, with_state):
    """Each row of a padded batch gives, at its real steps, the outputs of its real inputs run alone (the window
    holds the row's previous real inputs, the incoming state counting as real inputs before the sequence), the new
    state is its last K-1 real inputs, pads give 0; gradients of a loss on the real steps match too."""
    torch.manual_seed(K)
    conv = CausalConv1d(5, K).double()
    mask = torch.tensor(MASKS[mask_name], dtype=torch.bool)
    B, S = mask.shape
    x = torch.randn(B, S, 5, dtype=torch.float64, requires_grad=True)
    state = torch.randn(B, K - 1, 5, dtype=torch.float64, requires_grad=True) if with_state else None
    y, new_state = conv(x, state, mask)
    cot = torch.randn_like(y)
    params = [x, conv.weight, conv.bias] + ([state] if with_state else [])
    grads = torch.autograd.grad((y * cot * mask[..., None]).sum() + new_state.square().sum(), params)
    assert (y[~mask] == 0).all()
    ref_grads = [torch.zeros_like(p) for p in params]
    for b in range(B):
        real = mask[b].nonzero().squeeze(1)
        xb = x[b:b + 1, real]
        sb = None if state is None else state[b:b + 1]
        if len(real):
            yb, sb_new = conv(xb, sb)
        else:  # no real step: the state passes through
            yb, sb_new = xb, conv.zero_state(1, torch.float64) if sb is None else sb
        assert_close(f"row {b} y", yb[0], y[b, real], 1e-12, 1e-13)
        assert_close(f"row {b} state", sb_new[0], new_state[b], 0, 0)
        loss_b = (yb * cot[b:b + 1, real]).sum() + sb_new.square().sum()
        gb = torch.autograd.grad(loss_b, params, allow_unused=True)
        for acc, g in zip(ref_grads, gb):
            if g is not None:
                acc += g
    for name, a, b_ in zip(["x", "weight", "bias", "state"], ref_grads, grads):
        assert_close(f"grad {name}", a, b_, 1e-12, 1e-13)


def test_masked_step_keeps_the_state_of_padded_rows():
    torch.manual_seed(0)
    conv = CausalConv1d(3, 4).double()
    state = torch.randn(2, 3, 3, dtype=torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64)
    y, new = conv.step(x, state, torch.tensor([True, False]))
    y_ref, new_ref = conv.step(x[:1], state[:1])
    assert_close("real row y", y_ref[0], y[0], 0, 0)
    assert_close("real row state", new_ref[0], new[0], 0, 0)
    assert (y[1] == 0).all() and torch.equal(new[1], state[1])
    # and a masked sequence step equals the masked forward on a length-1 sequence
    y_seq, new_seq = conv(x[:, None], state, torch.tensor([[True], [False]]))
    assert_close("step vs forward", y_seq[:, 0], y, 1e-14, 1e-15)
    assert_close("step vs forward state", new_seq, new, 0, 0)

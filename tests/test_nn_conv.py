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

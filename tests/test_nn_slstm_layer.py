"""The paper's sLSTM layer and block: the one-token `step` (plain and fused) against the sequence forward, values and
gradients, with and without the convolution, and the plain step for dtypes the fused one does not take."""

from __future__ import annotations

import pytest
import torch

from xlstmkit import xLSTMConfig
from xlstmkit.nn.slstm_block import SLSTMBlock, SLSTMLayer


def perturbed_layer(dtype=torch.float64, **overrides) -> SLSTMLayer:
    """A layer whose zero-initialised recurrent weights and biases are perturbed so every term contributes."""
    torch.manual_seed(0)
    base = dict(vocab_size=11, embedding_dim=16, num_blocks=1, slstm_at="all", slstm_num_heads=2)
    layer = SLSTMLayer(xLSTMConfig(**{**base, **overrides}), 0).to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return layer


def leaves(state):
    return torch.utils._pytree.tree_leaves(state)


def run_steps(layer, x, state):
    ys = []
    for t in range(x.shape[1]):
        y, state = layer.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


@pytest.mark.parametrize("kernel", [4, 0], ids=["conv", "no-conv"])
def test_plain_and_fused_steps_equal_the_sequence_forward(kernel):
    """Tokens fed one at a time through the plain step and through the fused step (cached block matrix of the four
    gate projections) give the outputs and final state of one forward call from the same incoming state."""
    layer = perturbed_layer(slstm_conv_kernel=kernel)
    x = torch.randn(3, 9, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, start = layer(torch.randn(3, 4, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
        y_seq, st_seq = layer(x, start)
        for fused in (False, True):
            layer.fused = fused
            y, st = run_steps(layer, x, start)
            torch.testing.assert_close(y, y_seq, msg=lambda m, fused=fused: f"fused={fused}: {m}")
            for a, b in zip(leaves(st), leaves(st_seq)):
                torch.testing.assert_close(a, b)
    assert "_derived_gates" in layer.__dict__  # the fused step ran


def test_step_under_autograd_gives_the_forward_gradients():
    """With gradients needed the step takes the plain gate projections (the fused block matrix is cached without a
    graph): parameter gradients equal the sequence forward's."""
    layer = perturbed_layer()
    x = torch.randn(2, 6, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    params = list(layer.parameters())
    y, _ = run_steps(layer, x, layer.zero_state(2))
    g_step = torch.autograd.grad(y.square().sum(), params)
    y_seq, _ = layer(x)
    g_seq = torch.autograd.grad(y_seq.square().sum(), params)
    for (name, _), a, b in zip(layer.named_parameters(), g_step, g_seq):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")


def test_block_step_equals_block_forward():
    torch.manual_seed(4)
    cfg = xLSTMConfig(vocab_size=11, embedding_dim=16, num_blocks=1, slstm_at="all", slstm_num_heads=2)
    block = SLSTMBlock(cfg, 0).double()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.2 * torch.randn_like(p))
        x = torch.randn(2, 7, 16, dtype=torch.float64)
        y_seq, st_seq = block(x)
        y, st = run_steps(block, x, torch.utils._pytree.tree_map(lambda t: t.double(), block.zero_state(2)))
    torch.testing.assert_close(y, y_seq)
    for a, b in zip(leaves(st), leaves(st_seq)):
        torch.testing.assert_close(a, b)


def test_plain_step_runs_bf16_weights_with_float32_states():
    layer = perturbed_layer(dtype=torch.float32)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref, _ = layer(x)
        y, st = run_steps(layer.to(torch.bfloat16), x.bfloat16(), layer.zero_state(2))
    assert all(t.dtype == torch.float32 for t in leaves(st))
    assert (y.float() - ref).norm() / ref.norm() < 0.05

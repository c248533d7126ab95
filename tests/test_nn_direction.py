"""Direction helpers (xlstmkit.nn.direction): the per-row reversal of the real steps, and the `alternate` (Reversed)
and `both` (Bidirectional) wrappers against hand-reversed references, values and gradients, over padded batches of
every kind (right padding runs without the ops' mask; holes and left padding need it)."""

from __future__ import annotations

import pytest
import torch

from xlstmkit import xLSTMConfig
from xlstmkit.config import FORMS
from xlstmkit.nn import MLSTMBlock, SLSTMBlock
from xlstmkit.nn.direction import (Bidirectional, DirectionalStack, Reversal, Reversed, blocks_mask, is_right_padded,
                                   reverse_real)

from conftest import assert_close

def close(ref: torch.Tensor, got: torch.Tensor, atol: float, rtol: float) -> None:
    assert_close("value", ref, got, rtol, atol)


# right padding (lengths 6, 4, 1), a hole, left padding
RIGHT = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
HOLES = torch.tensor([[0, 1, 1, 0, 1, 0], [0, 0, 1, 1, 1, 1], [1, 1, 0, 1, 1, 1]], dtype=torch.bool)


def hand_reverse(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The reference: per row, the values at the real positions written back in reverse order, pads untouched."""
    out = x.clone()
    for b in range(x.shape[0]):
        pos = mask[b].nonzero().flatten()
        out[b, pos] = x[b, pos.flip(0)]
    return out


@pytest.mark.parametrize("seed", range(5))
def test_reversal_matches_hand_reference_keeps_pads_and_is_an_involution(seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(4, 9, generator=g) < 0.6
    x = torch.randn(4, 9, 3, generator=g)
    r = Reversal(mask)
    assert torch.equal(r(x), hand_reverse(x, mask))
    assert torch.equal(r(r(x)), x)
    assert torch.equal(r(mask), mask)  # pads stay where they are


def test_reversal_of_right_padded_rows_starts_at_the_last_real_step():
    x = torch.arange(18.0).view(3, 6, 1)
    y = reverse_real(x, RIGHT)
    assert y[1, :, 0].tolist() == [9.0, 8.0, 7.0, 6.0, 10.0, 11.0]  # real 6..9 reversed, pads in place
    assert y[2, :, 0].tolist() == x[2, :, 0].tolist()  # one real step: nothing moves
    assert torch.equal(y[0], x[0].flip(0))
    assert torch.equal(reverse_real(x), x.flip(1))  # no mask: a plain flip


def test_blocks_mask_drops_only_masks_the_blocks_cannot_see():
    assert blocks_mask(None) is None
    assert blocks_mask(torch.ones(2, 5, dtype=torch.bool)) is None
    assert blocks_mask(RIGHT) is None and is_right_padded(RIGHT)
    assert blocks_mask(RIGHT, need_final_state=True) is RIGHT
    assert blocks_mask(HOLES) is HOLES and not is_right_padded(HOLES)


def _cfg(**kw) -> xLSTMConfig:
    base = dict(embedding_dim=8, num_blocks=2, block_pattern="xLSTM[1:1]", mlstm_num_heads=2, slstm_num_heads=2,
                chunk_size=2)
    return xLSTMConfig(**{**base, **kw})


def _perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """float64 and every weight moved off its init (zero recurrent matrices, unit norms, an [I I] merge would hide
    mistakes)."""
    torch.manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return module


def _block(kind: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = _cfg()
    return _perturbed(SLSTMBlock(cfg, 1) if kind == "s" else MLSTMBlock(cfg, 0), seed)


def _run(block, x):
    return block(x, None, "chunkwise")[0] if isinstance(block, MLSTMBlock) else block(x)[0]


def _grads(module, x, out):
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return torch.autograd.grad((out * w).sum(), [x, *module.parameters()], allow_unused=True)


@pytest.mark.parametrize("kind", ["m", "s"])
def test_reversed_block_equals_block_on_the_flipped_sequence(kind):
    block = _block(kind, 1)
    x = torch.randn(2, 7, 8, dtype=torch.float64, requires_grad=True)
    got = Reversed(block)(x)
    ref = _run(block, x.flip(1)).flip(1)
    close(ref, got, atol=1e-12, rtol=1e-12)
    for a, b in zip(_grads(block, x, ref), _grads(block, x, got)):
        close(a, b, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("merge", ["sum", "concat"])
@pytest.mark.parametrize("kind", ["m", "s"])
def test_bidirectional_block_merges_the_two_hand_computed_updates(kind, merge):
    f, b = _block(kind, 2), _block(kind, 3)
    bi = Bidirectional(f, b, merge, dim=8).double()
    if merge == "concat":
        with torch.no_grad():
            bi.proj.weight.add_(0.3 * torch.randn_like(bi.proj.weight))
    x = torch.randn(2, 7, 8, dtype=torch.float64, requires_grad=True)
    d_f = _run(f, x) - x
    d_b = _run(b, x.flip(1)).flip(1) - x
    ref = x + d_f + d_b if merge == "sum" else x + torch.cat([d_f, d_b], -1) @ bi.proj.weight.t()
    got = bi(x)
    close(ref, got, atol=1e-12, rtol=1e-12)
    for a, c in zip(_grads(bi, x, ref), _grads(bi, x, got)):
        close(a, c, atol=1e-12, rtol=1e-12)


def test_concat_merge_starts_as_the_sum():
    f, b = _block("m", 4), _block("m", 5)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    close(Bidirectional(f, b, "sum")(x), Bidirectional(f, b, "concat", dim=8).double()(x), atol=1e-12,
                 rtol=1e-12)


def _stack(direction: str, merge: str = "sum") -> DirectionalStack:
    torch.manual_seed(7)
    return _perturbed(DirectionalStack(_cfg(num_blocks=3, block_pattern=None, slstm_at=[1]), direction, merge), 7)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("direction,merge", [("alternate", "sum"), ("both", "sum"), ("both", "concat")])
@pytest.mark.parametrize("padding", ["right", "holes"])
def test_each_padded_row_equals_its_real_steps_alone_values_and_gradients(direction, merge, padding, form):
    """Right padding runs with mask=None inside the blocks (exact because the blocks are causal and R keeps a right-
    padded row right padded); holes and left padding go through the ops' mask. Every mLSTM computation form, the
    padded batch in that form against each row alone in the default one."""
    stack = _stack(direction, merge)
    mask = RIGHT if padding == "right" else HOLES
    x = torch.randn(3, 6, 8, dtype=torch.float64, requires_grad=True)
    out = stack(x, blocks_mask(mask), form, reversal=Reversal(mask))
    w = torch.randn_like(out)
    gx, *gp = torch.autograd.grad((out * w * mask.unsqueeze(-1)).sum(), [x, *stack.parameters()])
    gp_alone = [torch.zeros_like(p) for p in stack.parameters()]
    for b in range(3):
        pos = mask[b].nonzero().flatten()
        xb = x[b:b + 1, pos].detach().requires_grad_(True)
        ob = stack(xb)
        close(ob[0], out[b, pos], atol=1e-10, rtol=1e-10)
        gxb, *gpb = torch.autograd.grad((ob * w[b:b + 1, pos]).sum(), [xb, *stack.parameters()])
        close(gxb[0], gx[b, pos], atol=1e-10, rtol=1e-10)
        assert torch.all(gx[b, ~mask[b]] == 0)  # nothing flows into a pad
        gp_alone = [a + g for a, g in zip(gp_alone, gpb)]
    for a, g in zip(gp_alone, gp):
        close(a, g, atol=1e-9, rtol=1e-9)


def test_directional_stack_refuses_causal_and_unknown_merge():
    with pytest.raises(ValueError, match="xLSTMBlockStack"):
        DirectionalStack(_cfg(), "causal")
    with pytest.raises(ValueError, match="merge must be one of"):
        DirectionalStack(_cfg(), "both", "mean")
    with pytest.raises(ValueError, match="needs the model width"):
        Bidirectional(_block("m", 0), _block("m", 1), "concat")

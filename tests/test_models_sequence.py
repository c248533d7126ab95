"""The sequence backbone and its heads (xlstmkit.models.sequence): shapes, masks and lengths in every direction and
with patching (each row of a padded batch equals that sequence alone, values and gradients; a row of length 1),
pads that cannot leak (NaN in a pad), the `alternate` mode against a hand-reversed reference, state in pieces for the
causal mode and its refusal elsewhere, and one-line errors on bad input."""

from __future__ import annotations

import pytest
import torch

from xlstmkit import xLSTMConfig
from xlstmkit.models import SequenceBackbone, SequenceClassifier, SequenceConfig, SequenceRegressor, SequenceTagger
from xlstmkit.models.sequence import pool

from conftest import assert_close

C = 3
BLOCKS = dict(embedding_dim=8, num_blocks=2, block_pattern="xLSTM[1:1]", mlstm_num_heads=2, slstm_num_heads=2,
              chunk_size=2)


def close(name: str, ref: torch.Tensor, got: torch.Tensor, tol: float = 1e-10) -> None:
    assert_close(name, ref, got, tol, tol)


def config(direction: str = "both", patch_size: int = 1, merge: str = "sum", **blocks) -> SequenceConfig:
    return SequenceConfig(input_size=C, blocks=xLSTMConfig(**{**BLOCKS, **blocks}), direction=direction,
                          merge=merge, patch_size=patch_size)


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """float64, every weight moved off its init (zero recurrent matrices and unit norms would hide mistakes)."""
    torch.manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def classifier(direction="both", patch_size=1, pooling="mean", merge="sum", seed=0) -> SequenceClassifier:
    torch.manual_seed(seed)
    return perturbed(SequenceClassifier(config(direction, patch_size, merge), 4, pooling=pooling), seed)


LENGTHS = torch.tensor([7, 5, 1])  # full, right padded, a row of length 1
HOLES = torch.tensor([[0, 1, 1, 0, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 1, 0, 0, 0]], dtype=torch.bool)


def _check_rows_alone(model, x, mask, out, per_step: bool):
    """Each row's output (and the gradients of a weighted sum of it) equal those of its real steps alone."""
    w = torch.randn_like(out)
    if per_step:
        w = w * mask.unsqueeze(-1)  # outputs at pads carry no meaning
    gx, *gp = torch.autograd.grad((out * w).sum(), [x, *model.parameters()])
    gp_alone = [torch.zeros_like(p) for p in model.parameters()]
    for b in range(x.shape[0]):
        pos = mask[b].nonzero().flatten()
        xb = x[b:b + 1, pos].detach().requires_grad_(True)
        ob = model(xb)
        wb = w[b:b + 1, pos] if per_step else w[b:b + 1]
        close(f"row {b} output", ob[0], out[b, pos] if per_step else out[b])
        gxb, *gpb = torch.autograd.grad((ob * wb).sum(), [xb, *model.parameters()])
        close(f"row {b} input gradient", gxb[0], gx[b, pos])
        assert torch.all(gx[b, ~mask[b]] == 0), "a gradient reached a pad"
        gp_alone = [a + g for a, g in zip(gp_alone, gpb)]
    for i, (a, g) in enumerate(zip(gp_alone, gp)):
        close(f"parameter {i} gradient", a, g, 1e-9)


@pytest.mark.parametrize("patch_size", [1, 3])
@pytest.mark.parametrize("direction,merge,pooling", [("causal", "sum", "last"), ("alternate", "sum", "first_last"),
                                                     ("both", "sum", "mean"), ("both", "concat", "first_last")])
def test_right_padded_rows_equal_each_sequence_alone(direction, merge, pooling, patch_size):
    """Right padding given as lengths: the blocks run without a mask (exact for causal blocks over right-padded rows,
    in both reading directions); patches that straddle the end of a row included (P = 3, lengths 7 and 5)."""
    model = classifier(direction, patch_size, pooling, merge)
    x = torch.randn(3, 7, C, dtype=torch.float64, requires_grad=True)
    mask = torch.arange(7) < LENGTHS.unsqueeze(1)
    out = model(x, lengths=LENGTHS)
    assert out.shape == (3, 4)
    close("mask vs lengths", model(x, mask), out)
    _check_rows_alone(model, x, mask, out, per_step=False)


@pytest.mark.parametrize("direction", ["causal", "alternate", "both"])
def test_masks_with_holes_and_left_padding_equal_each_sequence_alone(direction):
    """Any mask: the real steps of a row are that row's sequence (the ops hold the state at padded steps)."""
    model = classifier(direction, 1, "first_last")
    x = torch.randn(3, 7, C, dtype=torch.float64, requires_grad=True)
    _check_rows_alone(model, x, HOLES, model(x, HOLES), per_step=False)


@pytest.mark.parametrize("direction,patch_size", [("both", 1), ("alternate", 2), ("causal", 3)])
def test_tagger_gives_one_prediction_per_step_equal_to_the_row_alone(direction, patch_size):
    torch.manual_seed(1)
    model = perturbed(SequenceTagger(config(direction, patch_size), num_tags=5), 1)
    x = torch.randn(3, 7, C, dtype=torch.float64, requires_grad=True)
    mask = torch.arange(7) < LENGTHS.unsqueeze(1)
    out = model(x, mask)
    assert out.shape == (3, 7, 5)
    _check_rows_alone(model, x, mask, out, per_step=True)


def test_regressor_and_backbone_shapes_with_patching():
    torch.manual_seed(0)
    reg = SequenceRegressor(config("both", 4), num_outputs=2)
    x = torch.randn(2, 10, C)
    assert reg(x).shape == (2, 2)
    bb = reg.backbone
    assert bb(x).shape == (2, 3, 8)  # ceil(10 / 4) tokens
    assert bb.token_mask(torch.arange(10) < torch.tensor([[10], [5]])).tolist() == [[True] * 3, [True, True, False]]
    assert reg.features(x).shape == (2, 8)
    assert SequenceClassifier(config(), 3, pooling="first_last").features(x).shape == (2, 16)


def test_alternate_mode_equals_a_hand_reversed_reference():
    """alternate = block 0 forwards, block 1 over the flipped sequence and flipped back, then the final norm."""
    torch.manual_seed(0)
    bb = perturbed(SequenceBackbone(config("alternate")), 3)
    x = torch.randn(2, 6, C, dtype=torch.float64)
    h = bb.input_proj(x)
    b0, b1 = bb.stack.blocks[0], bb.stack.blocks[1].block
    h = b0(h, None, "chunkwise")[0]
    h = b1(h.flip(1), None)[0].flip(1)  # block 1 is the sLSTM block of xLSTM[1:1]
    close("alternate", bb.stack.post_norm(h), bb(x))


def test_backward_reading_starts_at_the_last_real_step_not_at_the_pads():
    """Changing what the pads hold (NaN included) changes nothing, in every direction."""
    for direction in ("causal", "alternate", "both"):
        model = classifier(direction, 2, "first_last")
        x = torch.randn(3, 7, C, dtype=torch.float64)
        mask = torch.arange(7) < LENGTHS.unsqueeze(1)
        y = x.clone()
        y[~mask] = float("nan")
        close(direction, model(x, mask), model(y, mask))


@pytest.mark.parametrize("patch_size", [1, 2])
def test_causal_state_in_pieces_equals_the_whole_sequence(patch_size):
    torch.manual_seed(0)
    bb = perturbed(SequenceBackbone(config("causal", patch_size)), 2)
    x = torch.randn(2, 8, C, dtype=torch.float64)
    whole, state = bb(x, return_state=True)
    a, s = bb(x[:, :4], return_state=True)
    b, s2 = bb(x[:, 4:], state=s, return_state=True)
    close("pieces", whole, torch.cat([a, b], 1))
    for t1, t2 in zip(torch.utils._pytree.tree_leaves(state), torch.utils._pytree.tree_leaves(s2)):
        close("state", t1, t2)


def test_state_is_refused_outside_the_causal_mode_and_across_a_split_patch():
    for direction in ("alternate", "both"):
        bb = SequenceBackbone(config(direction))
        with pytest.raises(ValueError, match="needs direction='causal'"):
            bb(torch.randn(1, 4, C), return_state=True)
        with pytest.raises(ValueError, match="needs direction='causal'"):
            bb.zero_state(1)
    with pytest.raises(ValueError, match="multiple of patch_size=2"):
        SequenceBackbone(config("causal", 2))(torch.randn(1, 5, C), return_state=True)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(x=torch.randn(0, 5, C)), "empty batch"),
    (dict(x=torch.randn(2, 0, C)), "0 steps"),
    (dict(x=torch.randn(2, 5, C + 1)), "input_size=3"),
    (dict(x=torch.randn(5, C)), "float tensor \\(batch, steps, channels\\)"),
    (dict(x=torch.randn(2, 5, C), mask=torch.ones(2, 4, dtype=torch.bool)), "mask must have the shape"),
    (dict(x=torch.randn(2, 5, C), mask=torch.full((2, 5), 2)), "0/1"),
    (dict(x=torch.randn(2, 5, C), lengths=torch.tensor([5, 6])), "lengths must lie in"),
    (dict(x=torch.randn(2, 5, C), lengths=torch.tensor([5, 0])), "rows \\[1\\] have no real step"),
    (dict(x=torch.randn(2, 5, C), lengths=[5, 3], mask=torch.ones(2, 5, dtype=torch.bool)), "not both"),
])
def test_bad_input_is_a_one_line_error(kwargs, msg):
    model = SequenceClassifier(config(), 2)
    with pytest.raises(ValueError, match=msg) as err:
        model(**kwargs)
    assert "\n" not in str(err.value)


def test_config_checks_and_round_trip():
    cfg = config("alternate", 3, "concat")
    assert SequenceConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="direction must be one of"):
        config("sideways")
    with pytest.raises(ValueError, match="patch_size"):
        config(patch_size=0)
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequenceClassifier(config(), 2, pooling="max")


def test_pooling_reads_the_right_tokens():
    h = torch.arange(12.0).view(1, 6, 2).repeat(2, 1, 1)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 1, 0, 1, 1, 0]], dtype=torch.bool)
    assert pool(h, mask, "last").tolist() == [[6.0, 7.0], [8.0, 9.0]]
    assert pool(h, mask, "first_last").tolist() == [[0.0, 1.0, 6.0, 7.0], [2.0, 3.0, 8.0, 9.0]]
    assert torch.allclose(pool(h, mask, "mean"), torch.tensor([[3.0, 4.0], [16 / 3, 19 / 3]]))

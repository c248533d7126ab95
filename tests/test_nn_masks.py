"""Padded and variable-length batches (attention_mask) through every block of both models: a padded position leaves
every state exactly as it was, so each row of a padded batch computes what that row's real tokens compute alone (in
every mLSTM form and in the sLSTM, with and without an incoming state, values and gradients), including a row of one
real token and a row of pads only. The convolution's own masking is tested in test_nn_conv.py; generation with
padded prompts in test_generation.py."""

from __future__ import annotations

import pytest
import torch

from xlstmkit import xLSTMConfig, xLSTMLM
from xlstmkit.models.xlstm_large import xLSTMLarge, xLSTMLargeConfig

from conftest import assert_close, perturb_xlstm_large_

V = 23
# (B=4, S=7): left padding, right padding with a hole, one real token, only pads
MASK = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 0, 1, 1, 0, 0], [0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]])


def paper_lm() -> xLSTMLM:
    """mLSTM and sLSTM blocks, both with convolutions; chunk size 2 so that the chunkwise form crosses chunks."""
    torch.manual_seed(0)
    cfg = xLSTMConfig(vocab_size=V, embedding_dim=16, num_blocks=2, block_pattern="xLSTM[1:1]", mlstm_num_heads=2,
                      slstm_num_heads=2, chunk_size=2)
    model = xLSTMLM(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def large_lm() -> xLSTMLarge:
    torch.manual_seed(1)
    cfg = xLSTMLargeConfig(vocab_size=V, embedding_dim=16, num_heads=2, num_blocks=2, chunk_size=2,
                           ffn_round_up_to_multiple_of=16, norm_reduction_force_float32=False)
    model = xLSTMLarge(cfg)
    perturb_xlstm_large_(model)
    return model.double()


MODELS = {"xLSTMLM": paper_lm, "xLSTMLarge": large_lm}


def row(state, b: int):
    """Row b of a (nested) state, keeping the batch axis."""
    return torch.utils._pytree.tree_map(lambda t: t[b:b + 1], state)


def loss_of(logits: torch.Tensor, state, weights: torch.Tensor) -> torch.Tensor:
    """A loss on the given logits and on every state tensor (so the state's gradients are compared too)."""
    return (logits * weights).sum() + sum(t.sum() * 0.1 for t in torch.utils._pytree.tree_leaves(state))


@pytest.mark.parametrize("form", ["chunkwise", "parallel", "recurrent"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "given-state"])
@pytest.mark.parametrize("name", list(MODELS))
def test_each_padded_row_equals_its_tokens_alone_values_and_gradients(name, form, with_state):
    model = MODELS[name]()
    B, S = MASK.shape
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, V, (B, S), generator=g)
    state = None
    if with_state:
        with torch.no_grad():
            _, state = model(torch.randint(0, V, (B, 5), generator=g), return_state=True)
    weights = torch.randn(B, S, V, generator=g, dtype=torch.float64)
    params = list(model.parameters())

    logits, new_state = model(ids, state=state, return_state=True, mlstm_form=form, attention_mask=MASK)
    real = MASK.bool()
    grads = torch.autograd.grad(loss_of(logits * real[..., None], new_state, weights), params)

    ref_grads = [torch.zeros_like(p) for p in params]
    for b in range(B):
        cols = real[b].nonzero().squeeze(1)
        incoming = model.zero_state(1) if state is None else row(state, b)
        incoming = torch.utils._pytree.tree_map(lambda t: t.double(), incoming)
        if len(cols) == 0:  # a row of pads only: its state passes through unchanged
            for a, e in zip(torch.utils._pytree.tree_leaves(row(new_state, b)),
                            torch.utils._pytree.tree_leaves(incoming)):
                assert torch.equal(a.detach(), e.detach()), "a row of pads only changed its state"
            continue
        lb, sb = model(ids[b:b + 1, cols], state=incoming, return_state=True, mlstm_form=form)
        assert_close(f"row {b} logits", lb[0], logits[b, cols], 1e-9, 1e-10)
        for i, (a, e) in enumerate(zip(torch.utils._pytree.tree_leaves(row(new_state, b)),
                                       torch.utils._pytree.tree_leaves(sb))):
            assert_close(f"row {b} state leaf {i}", e, a, 1e-9, 1e-10)
        gb = torch.autograd.grad(loss_of(lb, sb, weights[b:b + 1, cols]), params, allow_unused=True)
        for acc, gr in zip(ref_grads, gb):
            if gr is not None:
                acc += gr
    # the pads-only row's state still enters the batch loss: its gradient is the one of the incoming state
    for (pname, _), a, e in zip(model.named_parameters(), ref_grads, grads):
        assert_close(f"grad {pname}", a, e, 1e-8, 1e-10)


@pytest.mark.parametrize("name", list(MODELS))
def test_all_ones_mask_is_the_unmasked_forward(name):
    model = MODELS[name]()
    ids = torch.randint(0, V, (2, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for ones in (torch.ones(2, 6, dtype=torch.long), torch.ones(2, 6, dtype=torch.bool)):
            assert torch.equal(model(ids, attention_mask=ones), model(ids))


@pytest.mark.parametrize("name", list(MODELS))
def test_bad_attention_masks_are_rejected(name):
    model = MODELS[name]()
    ids = torch.randint(0, V, (2, 6))
    with pytest.raises(ValueError, match="shape of input_ids"):
        model(ids, attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="only 0"):
        model(ids, attention_mask=torch.full((2, 6), 2))
    with pytest.raises(TypeError, match="attention_mask"):
        model(ids, attention_mask=[[1] * 6] * 2)

"""Direction modes for stacks of residual xLSTM blocks: causal, `alternate` (Vision-LSTM) and `both`, over padded
batches (docs/sequence.md).

An xLSTM block reads its sequence left to right. Two ways to let every position see the whole sequence:

- `alternate`: every second block reads the sequence backwards (Vision-LSTM's pairs of a top-left-to-bottom-right and
  a bottom-right-to-top-left block). `Reversed(block)` reverses the rows, runs the block, and reverses the result back.
- `both`: each block runs both ways with its own weights, and the two residual updates are merged
  (`Bidirectional(forward_block, backward_block, merge)`):

      d_f = F(x) - x,   d_b = R(B(R(x))) - x            (F, B the two residual blocks, R the reversal below)
      sum:     y = x + d_f + d_b
      concat:  y = x + W [d_f ; d_b],   W (E x 2E) starts as [I  I] (the sum), then learns its own mix

Padding. A batch row is its real steps (mask True) and padding (mask False). Reversing a padded row with `flip` would
start the backward pass at the pads; `Reversal` reverses only the real positions and keeps every pad where it is:

      mask      1 1 1 1 0 0        the real values a b c d, pads _
      row       a b c d _ _
      R(row)    d c b a _ _        a right-padded row stays right padded
      mask      0 1 1 0 1 0        (any mask: the real slots are refilled in reverse order)
      row       _ a b _ c _
      R(row)    _ c b _ a _

R is an involution (R(R(x)) = x), so the same index maps into and out of the reversed order. Because a right-padded
row stays right padded under R, and an xLSTM block is causal, a block's outputs at the real steps of a right-padded
row do not depend on its pads at all: such batches need no mask inside the blocks (the ops then run their plain, faster
path) unless the state after each row's last real step is wanted. `blocks_mask` makes that choice; other masks (left
padding, holes) go to the blocks, whose ops hold the state at padded steps (docs/blocks.md, "Attention masks").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import xLSTMConfig
from .mlstm_block import MLSTMBlock
from .norms import LayerNorm
from .slstm_block import SLSTMBlock

DIRECTIONS = ("causal", "alternate", "both")
MERGES = ("sum", "concat")


# -- masks and the per-row reversal ---------------------------------------------------------------------------------

def is_right_padded(mask: Tensor) -> bool:
    """Whether every row of the (B, S) bool mask is its real steps followed by padding (a prefix of Trues)."""
    lengths = mask.sum(1, keepdim=True)
    return bool(torch.equal(mask, torch.arange(mask.shape[1], device=mask.device) < lengths))


def blocks_mask(mask: Tensor | None, need_final_state: bool = False) -> Tensor | None:
    """The mask the blocks need: None for no mask, for a mask of all True, and for a right-padded mask when the
    state after each row's last real step is not needed (causal blocks never look ahead at the pads; see the module
    docstring); the mask itself otherwise."""
    if mask is None or bool(mask.all()):
        return None
    if not need_final_state and is_right_padded(mask):
        return None
    return mask


class Reversal:
    """The per-row reversal R of the real positions of a (B, S) mask, pads kept in place (the module docstring).

    `index` (B, S) long: R(x)[b, t] = x[b, index[b, t]]. Computed once per batch and applied to every block:
    the real positions of each row in time order (a stable sort puts them first), then position t of rank r (its
    number among the row's real steps) takes the real position of rank n_b - 1 - r; a pad takes itself. Without a
    mask, R is `flip` along the sequence axis."""

    def __init__(self, mask: Tensor | None, seq_len: int | None = None) -> None:
        self.mask = mask
        if mask is None:
            self.index = None
            return
        B, S = mask.shape
        pos = torch.arange(S, device=mask.device).expand(B, S)
        order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)  # real positions first, in time order
        rank = mask.long().cumsum(1) - 1  # (B, S): rank of each real position
        n = mask.sum(1, keepdim=True)  # (B, 1) real steps per row
        partner = order.gather(1, (n - 1 - rank).clamp(0, S - 1))
        self.index = torch.where(mask, partner, pos)

    def __call__(self, x: Tensor) -> Tensor:
        """x (B, S, ...) -> R(x), the same shape."""
        if self.index is None:
            return x.flip(1)
        idx = self.index.view(*self.index.shape, *([1] * (x.dim() - 2))).expand_as(x)
        return x.gather(1, idx)


def reverse_real(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """x (B, S, ...) with each row's real steps (mask (B, S) True) in reverse order, pads in place (`Reversal`)."""
    return Reversal(mask)(x)


# -- the wrappers -----------------------------------------------------------------------------------------------------

def _run(block: nn.Module, x: Tensor, mask: Tensor | None, form: str) -> Tensor:
    """A residual xLSTM block on x without a state: the mLSTM blocks take the computation form, sLSTM blocks have one."""
    if isinstance(block, MLSTMBlock):
        return block(x, None, form, mask)[0]
    return block(x, None, mask)[0]


class Reversed(nn.Module):
    """`block` reading each row backwards: y = R(block(R(x))). forward(x, mask=None, form=..., reversal=None):
    `reversal` (a `Reversal` of the batch's mask; built from `mask` when not given) reverses the rows, `mask` is
    what the block's ops receive (see `blocks_mask`)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor, mask: Tensor | None = None, form: str = "chunkwise",
                reversal: Reversal | None = None) -> Tensor:
        r = Reversal(mask) if reversal is None else reversal
        return r(_run(self.block, r(x), mask, form))  # R keeps pads in place: R(mask) = mask


class Bidirectional(nn.Module):
    """A forward and a backward copy of a residual block (separate weights) whose residual updates are merged by
    `merge`: "sum" (y = x + d_f + d_b) or "concat" (y = x + W [d_f; d_b], W starting as [I I]); see the module
    docstring. forward(x, mask=None, form=..., reversal=None) as in `Reversed`."""

    def __init__(self, forward_block: nn.Module, backward_block: nn.Module, merge: str = "sum",
                 dim: int | None = None) -> None:
        super().__init__()
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
        self.fwd, self.bwd, self.merge = forward_block, backward_block, merge
        if merge == "concat":
            if dim is None:
                raise ValueError("merge='concat' needs the model width: Bidirectional(..., dim=E)")
            self.proj = nn.Linear(2 * dim, dim, bias=False)
            with torch.no_grad():
                self.proj.weight.copy_(torch.cat([torch.eye(dim), torch.eye(dim)], dim=1))

    def forward(self, x: Tensor, mask: Tensor | None = None, form: str = "chunkwise",
                reversal: Reversal | None = None) -> Tensor:
        r = Reversal(mask) if reversal is None else reversal
        d_f = _run(self.fwd, x, mask, form) - x
        d_b = r(_run(self.bwd, r(x), mask, form)) - x  # R keeps pads in place: R(mask) = mask
        if self.merge == "sum":
            return x + d_f + d_b
        return x + self.proj(torch.cat([d_f, d_b], dim=-1))


def make_block(cfg: xLSTMConfig, idx: int) -> nn.Module:
    """Block `idx` of the pattern in `cfg`: an `SLSTMBlock` or an `MLSTMBlock`."""
    return SLSTMBlock(cfg, idx) if cfg.block_types[idx] == "s" else MLSTMBlock(cfg, idx)


class DirectionalStack(nn.Module):
    """The blocks of `cfg` (its pattern of mLSTM and sLSTM blocks, sizes and init) in direction `alternate` (odd
    blocks `Reversed`) or `both` (every block `Bidirectional` with a second copy), then the stack's final LayerNorm
    (when `cfg.add_post_blocks_norm`). x (B, S, E) -> (B, S, E); no state (a state in or out has no meaning when a
    block reads the sequence backwards). The causal mode is `xLSTMBlockStack` itself."""

    def __init__(self, cfg: xLSTMConfig, direction: str = "both", merge: str = "sum") -> None:
        super().__init__()
        if direction not in ("alternate", "both"):
            raise ValueError(f"DirectionalStack takes direction 'alternate' or 'both' (causal is xLSTMBlockStack), "
                             f"got {direction!r}")
        self.cfg, self.direction, self.merge = cfg, direction, merge
        blocks: list[nn.Module] = []
        for idx in range(cfg.num_blocks):
            if direction == "both":
                blocks.append(Bidirectional(make_block(cfg, idx), make_block(cfg, idx), merge, cfg.embedding_dim))
            else:
                blocks.append(Reversed(make_block(cfg, idx)) if idx % 2 else make_block(cfg, idx))
        self.blocks = nn.ModuleList(blocks)
        self.post_norm = LayerNorm(cfg.embedding_dim, eps=cfg.norm_eps, bias=cfg.bias) if cfg.add_post_blocks_norm \
            else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor | None = None, form: str = "chunkwise",
                reversal: Reversal | None = None) -> Tensor:
        """mask (B, S) bool is what the blocks' ops receive; `reversal` the batch's `Reversal` (from `mask` if not
        given). A caller with a right-padded batch passes the reversal of its mask and mask=None (`blocks_mask`)."""
        r = Reversal(mask) if reversal is None else reversal
        for block in self.blocks:
            if isinstance(block, (Reversed, Bidirectional)):
                x = block(x, mask, form, r)
            else:
                x = _run(block, x, mask, form)
        return self.post_norm(x)


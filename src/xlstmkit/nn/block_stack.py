"""A stack of residual mLSTM and sLSTM blocks, with a final LayerNorm, that threads one state per block."""

from __future__ import annotations

from typing import Union

from torch import Tensor, nn

from ..config import FORMS, xLSTMConfig
from .mlstm_block import MLSTMBlock, MLSTMBlockState
from .norms import LayerNorm
from .slstm_block import SLSTMBlock, SLSTMBlockState

BlockState = Union[MLSTMBlockState, SLSTMBlockState]


class xLSTMBlockStack(nn.Module):
    """x (B, S, E) -> (B, S, E). The state is a tuple with one entry per block (None: start from zeros)."""

    def __init__(self, cfg: xLSTMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(
            SLSTMBlock(cfg, idx) if kind == "s" else MLSTMBlock(cfg, idx) for idx, kind in enumerate(cfg.block_types)
        )
        self.post_norm = LayerNorm(cfg.embedding_dim, eps=cfg.norm_eps, bias=cfg.bias) if cfg.add_post_blocks_norm \
            else nn.Identity()

    def zero_state(self, batch_size: int, device=None) -> tuple[BlockState, ...]:
        return tuple(block.zero_state(batch_size, device) for block in self.blocks)

    def _check_state(self, state) -> None:
        if state is not None and (not isinstance(state, (tuple, list)) or len(state) != len(self.blocks)):
            raise ValueError(f"state must be a tuple with one entry per block ({len(self.blocks)}), as returned by "
                             f"return_state=True; got {type(state).__name__} of length "
                             f"{len(state) if isinstance(state, (tuple, list)) else 'n/a'}")

    def forward(self, x: Tensor, state: tuple[BlockState, ...] | None = None, form: str = "chunkwise"
                ) -> tuple[Tensor, tuple[BlockState, ...]]:
        if form not in FORMS:
            raise ValueError(f"mlstm_form must be one of {FORMS}, got {form!r}")
        self._check_state(state)
        new_states = []
        for idx, block in enumerate(self.blocks):
            x, s = block(x, None if state is None else state[idx], form)
            new_states.append(s)
        return self.post_norm(x), tuple(new_states)

    def step(self, x: Tensor, state: tuple[BlockState, ...] | None = None) -> tuple[Tensor, tuple[BlockState, ...]]:
        """One token, x (B, E) -> (B, E), new state: each block's `step` (generation's hot path, float32)."""
        if state is None:
            state = self.zero_state(x.shape[0], x.device)
        new_states = []
        for block, s in zip(self.blocks, state):
            x, s = block.step(x, block.zero_state(x.shape[0], x.device) if s is None else s)
            new_states.append(s)
        return self.post_norm(x), tuple(new_states)

"""A stack of residual mLSTM and sLSTM blocks, with a final LayerNorm, that threads one state per block."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

from torch import Tensor, nn

from ..config import FORMS, xLSTMConfig
from .lstm_block import LSTMBlock, LSTMBlockState
from .mlstm_block import MLSTMBlock, MLSTMBlockState
from .norms import LayerNorm
from .slstm_block import SLSTMBlock, SLSTMBlockState

BlockState = Union[MLSTMBlockState, SLSTMBlockState, LSTMBlockState]
_BLOCKS = {"m": (MLSTMBlock, "mLSTM"), "s": (SLSTMBlock, "sLSTM"), "l": (LSTMBlock, "LSTM")}


def check_state(state: object, expected: Sequence[tuple], names: Sequence[str]) -> tuple:
    """A state given by the caller, checked against the shapes this model's blocks expect and rebuilt as the named
    tuples (so a state given as nested lists works like the tuples `return_state=True` gives).

    `expected[b]` is block b's `state_shapes(batch)` (a named tuple of shapes, possibly nested) and `names[b]` its name
    in messages; an entry None stands for that block's zero state. Shape comparisons only (cheap: once per call); a
    ValueError names the block, the entry, the expected and the given shape before any op runs."""
    if (isinstance(state, tuple) and len(state) == len(expected)
            and all(s is None or _matches(s, shapes) for s, shapes in zip(state, expected))):
        return state  # the state as this model returns it (the common case, e.g. every generation step)
    if not isinstance(state, (tuple, list)) or len(state) != len(expected):
        length = len(state) if isinstance(state, (tuple, list)) else "n/a"
        raise ValueError(f"state must be a tuple with one entry per block ({len(expected)}), as returned by "
                         f"return_state=True (or None to start from zeros); got {type(state).__name__} of length "
                         f"{length}")
    for s, shapes, name in zip(state, expected, names):
        if s is not None:
            _check_structure(s, shapes, name, "")
    return tuple(None if s is None else _check_shapes(s, shapes, name, "")
                 for s, shapes, name in zip(state, expected, names))


def _is_leaf(shapes: tuple) -> bool:
    return bool(shapes) and isinstance(shapes[0], int)


def _matches(given: object, shapes: tuple) -> bool:
    """Whether `given` is exactly the named tuples of tensors of the expected shapes (a fast yes; no message)."""
    if type(given) is not type(shapes):
        return False
    for g, s in zip(given, shapes):
        if _is_leaf(s):
            if not isinstance(g, Tensor) or g.shape != s:
                return False
        elif not _matches(g, s):
            return False
    return True


def _check_structure(given: object, shapes: tuple, block: str, where: str) -> None:
    """The nesting first (a state of another block kind has other tuple lengths), so the message says so."""
    if _is_leaf(shapes):
        if not isinstance(given, Tensor):
            raise TypeError(f"state of {block}: {where} must be a tensor of shape {shapes}, got {type(given).__name__}")
        return
    fields = shapes._fields  # a named tuple of shapes
    if not isinstance(given, (tuple, list)) or len(given) != len(fields):
        length = len(given) if isinstance(given, (tuple, list)) else "n/a"
        raise ValueError(f"state of {block}: {where or 'the entry'} must be a tuple ({', '.join(fields)}) as this "
                         f"model returns it, got {type(given).__name__} of length {length}; was the state made by a "
                         f"model with other block kinds?")
    for g, s, f in zip(given, shapes, fields):
        _check_structure(g, s, block, f"{where}.{f}" if where else f)


def _check_shapes(given, shapes: tuple, block: str, where: str):
    """Every tensor's shape against the expected one; the state rebuilt as the named tuples."""
    if _is_leaf(shapes):
        if tuple(given.shape) != shapes:
            raise ValueError(f"state of {block}: {where} has shape {tuple(given.shape)}, expected {shapes} for this "
                             f"model and batch size; pass a state this model returned (return_state=True) for the "
                             f"same batch, or None")
        return given
    return type(shapes)(*(_check_shapes(g, s, block, f"{where}.{f}" if where else f)
                          for g, s, f in zip(given, shapes, shapes._fields)))


def expected_state_shapes(model: nn.Module, batch_size: int) -> list:
    """[block.state_shapes(batch_size) for block in model.blocks], cached on the model per batch size (the shapes
    depend only on the frozen config)."""
    cache = model.__dict__.setdefault("_state_shapes", {})
    shapes = cache.get(batch_size)
    if shapes is None:
        shapes = cache[batch_size] = [b.state_shapes(batch_size) for b in model.blocks]
    return shapes


class xLSTMBlockStack(nn.Module):
    """x (B, S, E) -> (B, S, E). The state is a tuple with one entry per block (None: start from zeros).

    forward(x, state=None, form="chunkwise", mask=None) runs the sequence path (mLSTM blocks in `form`; sLSTM blocks
    have one form), step(x, state) one token; both validate a given state against the blocks first."""

    def __init__(self, cfg: xLSTMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(_BLOCKS[kind][0](cfg, idx) for idx, kind in enumerate(cfg.block_types))
        self.post_norm = LayerNorm(cfg.embedding_dim, eps=cfg.norm_eps, bias=cfg.bias) if cfg.add_post_blocks_norm \
            else nn.Identity()
        self._block_names = tuple(f"block {i} ({_BLOCKS[k][1]})" for i, k in enumerate(cfg.block_types))

    def zero_state(self, batch_size: int, device=None) -> tuple[BlockState, ...]:
        return tuple(block.zero_state(batch_size, device) for block in self.blocks)

    def check_state(self, state: object, batch_size: int) -> tuple[BlockState, ...]:
        """`state` validated against this stack for `batch_size` rows (see `check_state`); the named-tuple form."""
        return check_state(state, expected_state_shapes(self, batch_size), self._block_names)

    def forward(self, x: Tensor, state: Sequence[BlockState] | None = None, form: str = "chunkwise",
                mask: Tensor | None = None) -> tuple[Tensor, tuple[BlockState, ...]]:
        """x (B, S, E) -> (B, S, E), the state after the last step. mask (B, S) bool, True at real steps: padded
        steps change no block's state (docs/blocks.md)."""
        if form not in FORMS:
            raise ValueError(f"mlstm_form must be one of {FORMS}, got {form!r}")
        if state is not None:
            state = self.check_state(state, x.shape[0])
        new_states = []
        for idx, block in enumerate(self.blocks):
            s = None if state is None else state[idx]
            if isinstance(block, MLSTMBlock):
                x, s = block(x, s, form, mask)
            else:
                x, s = block(x, s, mask)
            new_states.append(s)
        return self.post_norm(x), tuple(new_states)

    def step(self, x: Tensor, state: Sequence[BlockState] | None = None) -> tuple[Tensor, tuple[BlockState, ...]]:
        """One token, x (B, E) -> (B, E), new state: each block's `step`."""
        B = x.shape[0]
        state = self.zero_state(B, x.device) if state is None else self.check_state(state, B)
        new_states = []
        for block, s in zip(self.blocks, state):
            x, s = block.step(x, block.zero_state(B, x.device) if s is None else s)
            new_states.append(s)
        return self.post_norm(x), tuple(new_states)

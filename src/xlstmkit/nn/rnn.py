"""`sLSTM`, `mLSTM` and `xLSTM`: drop-in recurrent modules with `nn.LSTM`'s conventions, built on the paper's blocks
(docs/sequence.md, "Replacing an nn.LSTM").

    rnn = xlstmkit.nn.xLSTM(input_size=12, hidden_size=64, num_heads=4, layers="msm", batch_first=True,
                            dropout=0.1, bidirectional=True)
    output, state = rnn(x)                 # x (B, S, 12) -> output (B, S, 2 * 64); also a PackedSequence
    rnn = xlstmkit.nn.sLSTM(12, 64, num_heads=4, num_layers=2)            # every layer an sLSTM block
    output, state = rnn(x[:100]); more, state = rnn(x[100:], state)      # continues exactly (unidirectional)

The signatures are those a widely read PyTorch walk-through of xLSTM teaches (`sLSTM(input_size, hidden_size,
num_heads, num_layers=1, batch_first=False, proj_factor=4/3)`, `mLSTM(..., proj_factor=2)`, `xLSTM(input_size,
hidden_size, num_heads, layers, batch_first=False, proj_factor_slstm=4/3, proj_factor_mlstm=2)`, `forward(x,
state=None) -> (output, state)`), with what it left to do (bias, dropout, bidirectional) and nn.LSTM's conventions:

- input (S, B, input_size), or (B, S, input_size) with `batch_first`, or unbatched (S, input_size), or a
  `PackedSequence` (then the output is one too, and each row's state is taken after its last real step);
- output (S, B, D * hidden_size), D = 2 when `bidirectional`, else 1 (batch first with `batch_first`);
- `dropout` on the output of every layer but the last, in training mode, as nn.LSTM does;
- `state`: a tuple with one block state per layer (what `output, state = rnn(x)` returns); with it a sequence fed in
  pieces gives exactly what it gives fed whole. It always has a batch axis (size 1 for unbatched input). A
  bidirectional module returns None for the state and refuses one: its backward direction starts at the end of the
  sequence, so no state can continue it.

Inside, one layer is one residual xLSTM block of width `hidden_size` (an sLSTM block with a gated feed-forward of
factor `proj_factor_slstm`, or an mLSTM block with up-projection factor `proj_factor_mlstm`), the input is projected
to `hidden_size` first when the sizes differ (nn.Linear), and the last layer's output goes through a LayerNorm. A
bidirectional layer runs a forward and a backward block (own weights); the layers below the last merge the two
residual updates by a projection of their concatenation (`Bidirectional(merge="concat")`), the last layer returns
both streams, normalised, side by side (nn.LSTM's layout: forward first). Unlike the walk-through, the output has
`hidden_size` features per direction, as nn.LSTM's does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..config import xLSTMConfig
from .block_stack import check_state
from .direction import Bidirectional, Reversal, _run, blocks_mask, make_block
from .mlstm_block import MLSTMBlock
from .norms import LayerNorm


class xLSTM(nn.Module):
    """A stack of sLSTM and mLSTM blocks, `layers` a string of "s" and "m" (one letter per layer, e.g. "msm"); see
    the module docstring for the conventions. forward(x, state=None) -> (output, state).

    `num_heads` heads in every block (they must divide `hidden_size`; the mLSTM inner width is rounded up to a
    multiple of lcm(4, num_heads) so that both its heads and its 4 x 4 q/k/v blocks fit). `bias` adds biases to the
    projections (the gates always have them); `conv_kernel_size` is the causal convolution of both block kinds;
    `chunk_size` the mLSTM's chunkwise form."""

    def __init__(self, input_size: int, hidden_size: int, num_heads: int, layers: str, batch_first: bool = False,
                 proj_factor_slstm: float = 4 / 3, proj_factor_mlstm: float = 2.0, *, bias: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, conv_kernel_size: int = 4,
                 chunk_size: int = 64) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(layers, str) or not layers or set(layers) - {"s", "m"}:
            raise ValueError(f"layers must be a non-empty string of 's' (sLSTM) and 'm' (mLSTM), one per layer, "
                             f"got {layers!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        for name, value in (("batch_first", batch_first), ("bidirectional", bidirectional), ("bias", bias)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False, got {value!r}")
        self.input_size, self.hidden_size, self.num_heads, self.layers = input_size, hidden_size, num_heads, layers
        self.num_layers, self.batch_first, self.bidirectional = len(layers), batch_first, bidirectional
        self.dropout = float(dropout)
        self.config = xLSTMConfig(
            embedding_dim=hidden_size, num_blocks=len(layers), slstm_at=[i for i, c in enumerate(layers) if c == "s"],
            mlstm_num_heads=num_heads, slstm_num_heads=num_heads, mlstm_proj_factor=proj_factor_mlstm,
            ffn_proj_factor=proj_factor_slstm, round_up_to=math.lcm(4, num_heads), mlstm_conv_kernel=conv_kernel_size,
            slstm_conv_kernel=conv_kernel_size, chunk_size=chunk_size, bias=bias)
        cfg = self.config
        self.input_proj = nn.Linear(input_size, hidden_size, bias=bias) if input_size != hidden_size else nn.Identity()
        L = len(layers)
        if bidirectional:
            self.blocks = nn.ModuleList(
                Bidirectional(make_block(cfg, i), make_block(cfg, i), "concat", hidden_size) for i in range(L - 1))
            self.last = nn.ModuleList([make_block(cfg, L - 1), make_block(cfg, L - 1)])  # forward, backward
            self.post_norm_reverse = LayerNorm(hidden_size, eps=cfg.norm_eps, bias=bias)
        else:
            self.blocks = nn.ModuleList(make_block(cfg, i) for i in range(L))
        self.post_norm = LayerNorm(hidden_size, eps=cfg.norm_eps, bias=bias)
        self.drop = nn.Dropout(self.dropout)
        self._names = tuple(f"layer {i} ({'sLSTM' if c == 's' else 'mLSTM'})" for i, c in enumerate(layers))

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_heads={self.num_heads}, layers={self.layers!r}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}, bidirectional={self.bidirectional}")

    def zero_state(self, batch_size: int, device=None) -> tuple:
        """The state `state=None` stands for (unidirectional modules)."""
        if self.bidirectional:
            raise ValueError("a bidirectional module has no state (its backward direction starts at the sequence end)")
        return tuple(block.zero_state(batch_size, device) for block in self.blocks)

    def forward(self, x: Tensor | PackedSequence, state: tuple | None = None) -> tuple[Tensor | PackedSequence,
                                                                                         tuple | None]:
        packed = isinstance(x, PackedSequence)
        if packed:
            seq, lengths = pad_packed_sequence(x, batch_first=True)  # (B, S, input) in the original row order
            mask = torch.arange(seq.shape[1]) < lengths.unsqueeze(1)
            mask = mask.to(seq.device)
        else:
            if not isinstance(x, Tensor) or x.dim() not in (2, 3):
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"input must be (seq, batch, features), (batch, seq, features) with batch_first, "
                                 f"(seq, features) or a PackedSequence; got {got}")
            unbatched = x.dim() == 2
            seq = x.unsqueeze(0) if unbatched else (x if self.batch_first else x.transpose(0, 1))
            mask = None
        B, S, C = seq.shape
        if C != self.input_size:
            raise ValueError(f"input has {C} features, expected input_size={self.input_size}")
        if B == 0 or S == 0:
            raise ValueError(f"empty input (batch {B}, length {S}): pass at least one step of one sequence")
        if state is not None and self.bidirectional:
            raise ValueError("a bidirectional module takes no state: its backward direction starts at the sequence "
                             "end, so no state continues it; run it on the whole sequence")
        out, new_state = (self._bidirectional(seq, mask) if self.bidirectional else self._forward(seq, mask, state))
        if packed:
            return self._pack_like(out, x), new_state
        if unbatched:
            return out.squeeze(0), new_state
        return (out if self.batch_first else out.transpose(0, 1)), new_state

    def _forward(self, seq: Tensor, mask: Tensor | None, state) -> tuple[Tensor, tuple]:
        B = seq.shape[0]
        if state is not None:
            state = check_state(state, [b.state_shapes(B) for b in self.blocks], self._names)
        ops_mask = blocks_mask(mask, need_final_state=True)
        h = self.input_proj(seq)
        new_states = []
        for i, block in enumerate(self.blocks):
            s = None if state is None else state[i]
            if isinstance(block, MLSTMBlock):
                h, s = block(h, s, self.config.mlstm_form, ops_mask)
            else:
                h, s = block(h, s, ops_mask)
            new_states.append(s)
            if i < len(self.blocks) - 1:
                h = self.drop(h)
        return self.post_norm(h), tuple(new_states)

    def _bidirectional(self, seq: Tensor, mask: Tensor | None) -> tuple[Tensor, None]:
        ops_mask = blocks_mask(mask)
        r = Reversal(None if mask is None or bool(mask.all()) else mask)
        form = self.config.mlstm_form
        h = self.input_proj(seq)
        for block in self.blocks:
            h = self.drop(block(h, ops_mask, form, r))
        fwd, bwd = self.last
        y_f = _run(fwd, h, ops_mask, form)
        y_b = r(_run(bwd, r(h), ops_mask, form))
        return torch.cat([self.post_norm(y_f), self.post_norm_reverse(y_b)], dim=-1), None

    @staticmethod
    def _pack_like(out: Tensor, like: PackedSequence) -> PackedSequence:
        """out (B, S, D), rows in the original order -> a PackedSequence with `like`'s batch sizes and row order."""
        B = out.shape[0]
        if like.sorted_indices is not None:
            out = out.index_select(0, like.sorted_indices.to(out.device))
        # the length of sorted row r: the steps at which more than r rows are still running
        lengths = (like.batch_sizes.unsqueeze(0) > torch.arange(B).unsqueeze(1)).sum(1)
        data = pack_padded_sequence(out, lengths, batch_first=True, enforce_sorted=True).data
        return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


class sLSTM(xLSTM):
    """`num_layers` sLSTM blocks (`proj_factor`: their gated feed-forward's width factor, 4/3); the other arguments
    and the conventions as in `xLSTM`."""

    def __init__(self, input_size: int, hidden_size: int, num_heads: int, num_layers: int = 1,
                 batch_first: bool = False, proj_factor: float = 4 / 3, **kwargs) -> None:
        _check_layers(num_layers)
        super().__init__(input_size, hidden_size, num_heads, "s" * num_layers, batch_first,
                         proj_factor_slstm=proj_factor, **kwargs)


class mLSTM(xLSTM):
    """`num_layers` mLSTM blocks (`proj_factor`: their up-projection factor, 2); the other arguments and the
    conventions as in `xLSTM`."""

    def __init__(self, input_size: int, hidden_size: int, num_heads: int, num_layers: int = 1,
                 batch_first: bool = False, proj_factor: float = 2.0, **kwargs) -> None:
        _check_layers(num_layers)
        super().__init__(input_size, hidden_size, num_heads, "m" * num_layers, batch_first,
                         proj_factor_mlstm=proj_factor, **kwargs)


def _check_layers(num_layers: int) -> None:
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")

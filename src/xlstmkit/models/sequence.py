"""xLSTM for any sequence of vectors: a backbone over (B, S, C) inputs and its heads (docs/sequence.md).

    cfg = SequenceConfig(input_size=6, blocks=xLSTMConfig(embedding_dim=64, num_blocks=4), direction="both")
    model = SequenceClassifier(cfg, num_classes=4, pooling="mean")
    logits = model(x, mask)                      # x (B, S, 6), mask (B, S) bool (True = real step) or lengths=
    y = SequenceRegressor(cfg, num_outputs=1)(x, lengths=lengths)   # (B, 1)
    tags = SequenceTagger(cfg, num_tags=5)(x, mask)                 # (B, S, 5): one prediction per step

The backbone:

    x (B, S, C)  -> pads set to 0 -> patches of P steps, [x_t, mask_t] per step when P > 1  (B, T, P (C [+1]))
                 -> Linear -> (B, T, E) tokens, T = ceil(S / P)
                 -> the blocks of `blocks` (an xLSTMConfig: the pattern of mLSTM and sLSTM blocks, their sizes,
                    heads, projection factors, convolutions, init), read in `direction`:
                      causal     every block left to right (xLSTMBlockStack; state in and out, streaming)
                      alternate  every second block reads each row backwards (Vision-LSTM)
                      both       every block reads both ways with its own weights; updates merged by sum or concat
                 -> final LayerNorm -> (B, T, E)

Masks: a token is real when any of its P steps is; each row's real tokens are reversed in place for the backward
reads (xlstmkit.nn.direction), so a right-padded row's backward pass starts at its last real step, and every row of a
padded batch computes what that row alone computes. The fields of `blocks` that only a language model uses
(`vocab_size`, `tie_weights`, `embedding_dropout`) are ignored here.

The heads pool the real tokens (`mean` over them, the `last` one, or `first_last`: the first and the last one
concatenated, Vision-LSTM's bilateral pooling, the natural read-out of a bidirectional stack) and map the pooled
vector to class logits (`SequenceClassifier`) or regression outputs (`SequenceRegressor`); `SequenceTagger` maps
every token to P per-step predictions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..config import FrozenConfig, check_choice, check_int, check_positive_int, xLSTMConfig
from ..nn.block_stack import xLSTMBlockStack
from ..nn.direction import DIRECTIONS, MERGES, DirectionalStack, Reversal, blocks_mask

POOLINGS = ("mean", "last", "first_last")


def _default_blocks() -> xLSTMConfig:
    return xLSTMConfig(embedding_dim=64, num_blocks=4)


@dataclass(frozen=True)
class SequenceConfig(FrozenConfig):
    """The sequence backbone: `input_size` channels per step, `patch_size` steps per token, the blocks of `blocks`
    (an `xLSTMConfig`; its block fields, sizes and init are used as they are, derived sizes computed there once), read
    in `direction` ("causal", "alternate", "both"), with `merge` ("sum" or "concat") for "both"."""

    input_size: int = 1
    blocks: xLSTMConfig = field(default_factory=_default_blocks)
    direction: str = "both"
    merge: str = "sum"
    patch_size: int = 1

    def __post_init__(self) -> None:
        check_positive_int(self, "input_size")
        check_int(self, "patch_size", 1, " (1 = one token per step)")
        check_choice(self, "direction", DIRECTIONS)
        check_choice(self, "merge", MERGES)
        if isinstance(self.blocks, dict):
            object.__setattr__(self, "blocks", xLSTMConfig.from_dict(self.blocks))
        if not isinstance(self.blocks, xLSTMConfig):
            raise ValueError(f"blocks must be an xLSTMConfig (or its dict), got {type(self.blocks).__name__}")

    @property
    def embedding_dim(self) -> int:
        return self.blocks.embedding_dim

    @property
    def token_features(self) -> int:
        """Inputs of the token projection: P steps of C values, plus each step's mask bit when P > 1 (so that a zero
        value and a pad differ inside a patch)."""
        P = self.patch_size
        return P * (self.input_size + (1 if P > 1 else 0))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SequenceConfig":
        d = dict(d)
        if isinstance(d.get("blocks"), dict):
            d["blocks"] = xLSTMConfig.from_dict(d["blocks"])
        return super().from_dict(d)


def _check_inputs(x: Tensor, mask: Tensor | None, lengths: Tensor | None, input_size: int) -> Tensor | None:
    """Validate x (B, S, C) and the padding given as a mask or lengths; the mask as bool (B, S), or None."""
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        got = f"a tensor of shape {tuple(x.shape)} ({x.dtype})" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a float tensor (batch, steps, channels), got {got}")
    B, S, C = x.shape
    if B == 0:
        raise ValueError("empty batch: x has 0 rows; pass at least one sequence")
    if S == 0:
        raise ValueError("x has 0 steps; every sequence needs at least one step")
    if C != input_size:
        raise ValueError(f"x has {C} channels but the model was built for input_size={input_size}")
    if mask is not None and lengths is not None:
        raise ValueError("give mask or lengths, not both")
    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=x.device)
        if lengths.shape != (B,) or lengths.is_floating_point() or lengths.dtype == torch.bool:
            raise ValueError(f"lengths must be integers of shape ({B},), got {tuple(lengths.shape)} {lengths.dtype}")
        if bool(((lengths < 0) | (lengths > S)).any()):
            raise ValueError(f"lengths must lie in [0, {S}] (the padded length), got {lengths.tolist()}")
        return torch.arange(S, device=x.device) < lengths.unsqueeze(1)
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.shape != (B, S):
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask must have the shape of x without channels, ({B}, {S}), got {got}")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError("mask must be bool (True = real step) or 0/1 integers")
        mask = mask.bool()
    return mask


class SequenceBackbone(nn.Module):
    """(B, S, C) -> (B, T, E) tokens, T = ceil(S / patch_size); the module docstring shows the path.

    forward(x, mask=None, lengths=None, state=None, return_state=False): `mask` (B, S) bool (True = real step, any
    pattern) or `lengths` (B,) for right padding. A state in or out exists only for direction "causal": feeding a
    sequence in pieces (each a multiple of patch_size steps) with the returned state gives what feeding it whole gives.
    `token_mask(mask)` gives the (B, T) mask of the tokens."""

    def __init__(self, config: SequenceConfig) -> None:
        super().__init__()
        if not isinstance(config, SequenceConfig):
            raise TypeError(f"config must be a SequenceConfig, got {type(config).__name__}")
        self.config = config
        self.input_proj = nn.Linear(config.token_features, config.embedding_dim)
        if config.direction == "causal":
            self.stack: nn.Module = xLSTMBlockStack(config.blocks)
        else:
            self.stack = DirectionalStack(config.blocks, config.direction, config.merge)

    def zero_state(self, batch_size: int, device=None):
        self._need_causal("a state")
        return self.stack.zero_state(batch_size, device)

    def _need_causal(self, what: str) -> None:
        if self.config.direction != "causal":
            raise ValueError(f"{what} needs direction='causal': a block that reads the sequence backwards has no state "
                             f"that continues it (this backbone is {self.config.direction!r})")

    def token_mask(self, mask: Tensor | None) -> Tensor | None:
        """(B, S) step mask -> (B, T) token mask: a token is real when any of its steps is."""
        if mask is None:
            return None
        P = self.config.patch_size
        if P == 1:
            return mask
        B, S = mask.shape
        T = math.ceil(S / P)
        return nn.functional.pad(mask, (0, T * P - S)).view(B, T, P).any(-1)

    def tokens(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, S, C), mask (B, S) or None -> token inputs (B, T, E): pads set to 0 (so whatever a pad holds, NaN
        included, cannot reach a real token), steps grouped into patches of P, projected."""
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), x, x.new_zeros(()))
        P = self.config.patch_size
        if P > 1:
            B, S, _ = x.shape
            T = math.ceil(S / P)
            real = (torch.ones(B, S, dtype=torch.bool, device=x.device) if mask is None else mask).to(x.dtype)
            x = nn.functional.pad(torch.cat([x, real.unsqueeze(-1)], dim=-1), (0, 0, 0, T * P - S))
            x = x.reshape(B, T, self.config.token_features)
        return self.input_proj(x)

    def forward(self, x: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None, state=None,
                return_state: bool = False):
        mask = _check_inputs(x, mask, lengths, self.config.input_size)
        if state is not None or return_state:
            self._need_causal("a state in or out")
            if x.shape[1] % self.config.patch_size:
                raise ValueError(f"with a state, feed pieces of a multiple of patch_size={self.config.patch_size} "
                                 f"steps (got {x.shape[1]}), so that no patch is split between calls")
        h = self.tokens(x, mask)
        tmask = self.token_mask(mask)
        form = self.config.blocks.mlstm_form
        if self.config.direction == "causal":
            h, new_state = self.stack(h, state, form, blocks_mask(tmask, need_final_state=return_state))
            return (h, new_state) if return_state else h
        ops_mask = blocks_mask(tmask)
        reversal = Reversal(None if ops_mask is None and (tmask is None or bool(tmask.all())) else tmask)
        return self.stack(h, ops_mask, form, reversal)


def pool(h: Tensor, mask: Tensor | None, how: str) -> Tensor:
    """h (B, T, E) -> (B, E) (`mean` of the real tokens, the `last` real token) or (B, 2 E) (`first_last`: the first
    and the last real token concatenated). Every row needs a real token."""
    B, T, _ = h.shape
    if mask is None:
        if how == "mean":
            return h.mean(1)
        return h[:, -1] if how == "last" else torch.cat([h[:, 0], h[:, -1]], dim=-1)
    if not bool(mask.any(1).all()):
        empty = (~mask.any(1)).nonzero().flatten().tolist()
        raise ValueError(f"rows {empty} have no real step (mask all False): each sequence needs at least one step")
    if how == "mean":
        m = mask.to(h.dtype).unsqueeze(-1)
        return (h * m).sum(1) / m.sum(1)
    pos = torch.arange(T, device=h.device)
    rows = torch.arange(B, device=h.device)
    last = h[rows, torch.where(mask, pos, -1).amax(1)]
    if how == "last":
        return last
    return torch.cat([h[rows, torch.where(mask, pos, T).amin(1)], last], dim=-1)


class _PooledModel(nn.Module):
    """Backbone, pooling of the real tokens, dropout, a linear map: (B, S, C) -> (B, num_outputs)."""

    def __init__(self, config: SequenceConfig, num_outputs: int, pooling: str, dropout: float) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
            raise ValueError(f"the number of outputs must be a positive integer, got {num_outputs!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.config, self.pooling = config, pooling
        self.backbone = SequenceBackbone(config)
        self.dropout = nn.Dropout(dropout)
        width = config.embedding_dim * (2 if pooling == "first_last" else 1)
        self.head = nn.Linear(width, num_outputs)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def features(self, x: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None) -> Tensor:
        """The pooled representation (B, E) or (B, 2 E) (embeddings for other classifiers)."""
        mask = _check_inputs(x, mask, lengths, self.config.input_size)
        return pool(self.backbone(x, mask), self.backbone.token_mask(mask), self.pooling)

    def forward(self, x: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None) -> Tensor:
        return self.head(self.dropout(self.features(x, mask, lengths)))


class SequenceClassifier(_PooledModel):
    """(B, S, C) -> class logits (B, num_classes) from the pooled real tokens (`pooling`: mean, last, first_last).
    forward(x, mask=None, lengths=None)."""

    def __init__(self, config: SequenceConfig, num_classes: int, pooling: str = "mean", dropout: float = 0.0):
        super().__init__(config, num_classes, pooling, dropout)
        self.num_classes = num_classes


class SequenceRegressor(_PooledModel):
    """(B, S, C) -> (B, num_outputs) real values from the pooled real tokens. forward(x, mask=None, lengths=None)."""

    def __init__(self, config: SequenceConfig, num_outputs: int = 1, pooling: str = "mean", dropout: float = 0.0):
        super().__init__(config, num_outputs, pooling, dropout)
        self.num_outputs = num_outputs


class SequenceTagger(nn.Module):
    """(B, S, C) -> (B, S, num_tags): a prediction for every step (each token maps to its P steps' predictions).
    Outputs at padded steps carry no meaning. forward(x, mask=None, lengths=None)."""

    def __init__(self, config: SequenceConfig, num_tags: int) -> None:
        super().__init__()
        if isinstance(num_tags, bool) or not isinstance(num_tags, int) or num_tags < 1:
            raise ValueError(f"num_tags must be a positive integer, got {num_tags!r}")
        self.config, self.num_tags = config, num_tags
        self.backbone = SequenceBackbone(config)
        self.head = nn.Linear(config.embedding_dim, config.patch_size * num_tags)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None) -> Tensor:
        mask = _check_inputs(x, mask, lengths, self.config.input_size)
        B, S, _ = x.shape
        y = self.head(self.backbone(x, mask))  # (B, T, P * num_tags)
        return y.reshape(B, -1, self.num_tags)[:, :S]


__all__ = ["POOLINGS", "SequenceBackbone", "SequenceClassifier", "SequenceConfig", "SequenceRegressor",
           "SequenceTagger", "pool"]

"""`xLSTMConfig`: the paper's xLSTM language model (Beck et al. 2024), validated once, at construction.

Every derived size (inner dimension, head dimensions, feed-forward width, the positions of sLSTM blocks) is a
property computed here and nowhere else. The config is frozen: use `cfg.replace(...)` for a changed copy.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

_PATTERN = re.compile(r"^\s*xLSTM\s*\[\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")
FORMS = ("chunkwise", "parallel", "recurrent")
SLSTM_BIAS_INITS = ("powerlaw_blockdependent", "small_init", "standard", "zeros")


def round_up(x: float, multiple: int) -> int:
    """Smallest multiple of `multiple` that is >= x (the official up-projection rounding rule)."""
    return int(math.ceil(x / multiple) * multiple)


def parse_block_pattern(pattern: str, num_blocks: int, *, at_least_one: bool = False) -> tuple[int, ...]:
    """Positions of the sLSTM blocks for the paper's ratio notation "xLSTM[a:b]" (a mLSTM : b sLSTM blocks).

    The number of sLSTM blocks is round(num_blocks * b / (a + b)), placed at evenly spaced positions (the centre of
    each of the equal segments), so that "xLSTM[1:1]" with 2 blocks is mLSTM then sLSTM, as in the paper's configs,
    "xLSTM[1:0]" has none and "xLSTM[0:1]" is all sLSTM. A shallow stack can round a ratio's sLSTM blocks away
    ("xLSTM[7:1]" at 4 blocks has none); `at_least_one=True` keeps one (in the middle) whenever b > 0. It is off by
    default because configs are saved as the pattern: changing the rule would change the model a saved run rebuilds.
    """
    match = _PATTERN.match(pattern) if isinstance(pattern, str) else None
    if match is None:
        raise ValueError(f"block_pattern must look like 'xLSTM[a:b]' (e.g. 'xLSTM[7:1]'), got {pattern!r}")
    a, b = int(match.group(1)), int(match.group(2))
    if a + b == 0:
        raise ValueError(f"block_pattern {pattern!r} has no blocks: a and b cannot both be 0")
    n_s = int(round(num_blocks * b / (a + b)))
    if at_least_one and b > 0:
        n_s = max(n_s, 1)
    return tuple(int((j + 0.5) * num_blocks / n_s) for j in range(n_s))


def check_positive_int(cfg: object, name: str) -> None:
    """ValueError unless the field is an int >= 1 (bool is not an int here)."""
    check_int(cfg, name, 1)


def check_int(cfg: object, name: str, minimum: int, why: str = "") -> None:
    """ValueError unless the field is an int >= minimum; `why` explains the bound."""
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        bound = "a positive integer" if minimum == 1 and not why else f"an integer >= {minimum}{why}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def check_positive_float(cfg: object, name: str, optional: bool = False) -> None:
    """ValueError unless the field is a finite number > 0 (or None when optional): NaN, inf, 0 and negative values
    would turn into NaN or inf activations (an eps that is not positive divides by zero)."""
    value = getattr(cfg, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        none = " or None" if optional else ""
        raise ValueError(f"{name} must be a finite number > 0{none}, got {value!r}")


def check_bool(cfg: object, name: str) -> None:
    """ValueError unless the field is True or False (a string such as "false" would read as true)."""
    value = getattr(cfg, name)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def check_choice(cfg: object, name: str, choices: tuple) -> None:
    """ValueError unless the field is one of `choices`."""
    value = getattr(cfg, name)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_dropout(cfg: object, name: str) -> None:
    """ValueError unless the field is a probability in [0, 1) (1 would drop everything)."""
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


class FrozenConfig:
    """Serialisation for the frozen, validated config dataclasses (model and training configs alike)."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (derived sizes are properties and are not included)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Inverse of `to_dict`; an unknown key is an error that lists the known ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; known fields: {sorted(names)}")
        return cls(**d)

    def replace(self, **changes: Any):
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class xLSTMConfig(FrozenConfig):
    """The xLSTM language model of the NeurIPS paper: mLSTM blocks (pre up-projection) and sLSTM blocks (post
    up-projection with a gated GeLU feed-forward), residual, pre-LayerNorm.

    The block pattern is given either as `slstm_at` (0-based block indices, or "all") or as `block_pattern` in the
    paper's notation "xLSTM[a:b]"; neither means all mLSTM (docs/blocks.md). `fused` picks the layers' fused fast
    paths (folded gate maps, fused norm and skip, the stacked one-token step) over their plain equations; both compute
    the same function and share the parameters.
    """

    vocab_size: int = 256
    embedding_dim: int = 128
    num_blocks: int = 4
    block_pattern: str | None = None
    slstm_at: tuple[int, ...] | str | None = None
    # mLSTM blocks
    mlstm_num_heads: int = 4
    mlstm_proj_factor: float = 2.0
    qkv_proj_blocksize: int = 4
    mlstm_conv_kernel: int = 4
    mlstm_form: str = "chunkwise"
    chunk_size: int = 64
    mlstm_eps: float = 1e-6
    # sLSTM blocks
    slstm_num_heads: int = 4
    slstm_conv_kernel: int = 4
    slstm_bias_init: str = "powerlaw_blockdependent"
    ffn_proj_factor: float = 1.3
    # classic LSTM blocks (`nn/lstm_block.py`; the rungs of the paper's ablation ladder): positions (or "all"), and
    # whether each is followed by the gated feed-forward of the sLSTM block ("up-projection backbone")
    lstm_at: tuple[int, ...] | str | None = None
    lstm_ffn: bool = False
    # both
    forget_gate: str = "sigmoid"
    round_up_to: int = 64
    norm_eps: float = 1e-5
    bias: bool = False
    dropout: float = 0.0
    embedding_dropout: bool = False
    add_post_blocks_norm: bool = True
    tie_weights: bool = False
    # computation, not architecture: the fused fast paths (True) or the plain equations (False), same function
    fused: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embedding_dim", "num_blocks", "mlstm_num_heads", "slstm_num_heads",
                     "qkv_proj_blocksize", "chunk_size", "round_up_to"):
            check_positive_int(self, name)
        check_int(self, "mlstm_conv_kernel", 1, " (the mLSTM block's q and k come from its convolution)")
        check_int(self, "slstm_conv_kernel", 0, " (0 disables the sLSTM convolution)")
        for name in ("mlstm_proj_factor", "ffn_proj_factor", "mlstm_eps", "norm_eps"):
            check_positive_float(self, name)
        check_dropout(self, "dropout")
        for name in ("bias", "embedding_dropout", "add_post_blocks_norm", "tie_weights", "fused", "lstm_ffn"):
            check_bool(self, name)
        check_choice(self, "forget_gate", ("sigmoid", "exp"))
        check_choice(self, "mlstm_form", FORMS)
        check_choice(self, "slstm_bias_init", SLSTM_BIAS_INITS)
        # normalise slstm_at (list from JSON/YAML -> tuple) and check it against block_pattern
        if self.slstm_at is not None and self.slstm_at != "all":
            if not isinstance(self.slstm_at, (list, tuple)) or not all(
                    isinstance(p, int) and not isinstance(p, bool) for p in self.slstm_at):
                raise ValueError(f"slstm_at must be a list of block indices or 'all', got {self.slstm_at!r}")
            object.__setattr__(self, "slstm_at", tuple(sorted(set(self.slstm_at))))
            bad = [p for p in self.slstm_at if not 0 <= p < self.num_blocks]
            if bad:
                raise ValueError(f"slstm_at holds indices {bad} outside the {self.num_blocks} blocks (0-based)")
        if self.lstm_at is not None:
            if self.lstm_at == "all":
                lstm = tuple(range(self.num_blocks))
            elif isinstance(self.lstm_at, (list, tuple)) and all(
                    isinstance(p, int) and not isinstance(p, bool) for p in self.lstm_at):
                lstm = tuple(sorted(set(self.lstm_at)))
            else:
                raise ValueError(f"lstm_at must be a list of block indices or 'all', got {self.lstm_at!r}")
            bad = [p for p in lstm if not 0 <= p < self.num_blocks]
            if bad:
                raise ValueError(f"lstm_at holds indices {bad} outside the {self.num_blocks} blocks (0-based)")
            both = sorted(set(lstm) & set(self._explicit_positions() if self.slstm_at is not None else
                                          parse_block_pattern(self.block_pattern, self.num_blocks)
                                          if self.block_pattern is not None else ()))
            if both:
                raise ValueError(f"blocks {both} are given as both LSTM (lstm_at) and sLSTM blocks: give each block "
                                 f"one kind")
            if self.lstm_at != "all":
                object.__setattr__(self, "lstm_at", lstm)
        if self.block_pattern is not None:
            from_pattern = parse_block_pattern(self.block_pattern, self.num_blocks)
            if self.slstm_at is not None and self._explicit_positions() != from_pattern:
                raise ValueError(
                    f"block_pattern {self.block_pattern!r} gives sLSTM blocks at {list(from_pattern)} but slstm_at "
                    f"is {self.slstm_at!r}: give only one of them"
                )
        # sizes must divide into heads and blocks
        E = self.embedding_dim
        inner = self.mlstm_inner_dim
        if self.mlstm_positions:
            if inner % self.mlstm_num_heads:
                raise ValueError(f"mlstm_num_heads ({self.mlstm_num_heads}) must divide the mLSTM inner dimension "
                                 f"{inner} (= embedding_dim * mlstm_proj_factor rounded up to {self.round_up_to})")
            if inner % self.qkv_proj_blocksize:
                raise ValueError(f"qkv_proj_blocksize ({self.qkv_proj_blocksize}) must divide the mLSTM inner "
                                 f"dimension {inner} (= embedding_dim * mlstm_proj_factor rounded up to "
                                 f"{self.round_up_to})")
        if self.slstm_positions and E % self.slstm_num_heads:
            raise ValueError(f"slstm_num_heads ({self.slstm_num_heads}) must divide embedding_dim ({E})")

    # -- derived sizes: one place ----------------------------------------------------------------------------------
    def _explicit_positions(self) -> tuple[int, ...]:
        if self.slstm_at == "all":
            return tuple(range(self.num_blocks))
        return tuple(self.slstm_at or ())

    @property
    def slstm_positions(self) -> tuple[int, ...]:
        """0-based indices of the sLSTM blocks."""
        if self.slstm_at is not None:
            return self._explicit_positions()
        if self.block_pattern is not None:
            return parse_block_pattern(self.block_pattern, self.num_blocks)
        return ()

    @property
    def lstm_positions(self) -> tuple[int, ...]:
        """0-based indices of the classic LSTM blocks (none unless `lstm_at` says so)."""
        if self.lstm_at == "all":
            return tuple(range(self.num_blocks))
        return tuple(self.lstm_at or ())

    @property
    def mlstm_positions(self) -> tuple[int, ...]:
        s = set(self.slstm_positions) | set(self.lstm_positions)
        return tuple(p for p in range(self.num_blocks) if p not in s)

    @property
    def block_types(self) -> tuple[str, ...]:
        """"m" (mLSTM), "s" (sLSTM) or "l" (classic LSTM) per block, e.g. ("m", "m", "s", "m")."""
        s, lstm = set(self.slstm_positions), set(self.lstm_positions)
        return tuple("s" if p in s else "l" if p in lstm else "m" for p in range(self.num_blocks))

    @property
    def mlstm_inner_dim(self) -> int:
        return round_up(self.mlstm_proj_factor * self.embedding_dim, self.round_up_to)

    @property
    def mlstm_head_dim(self) -> int:
        return self.mlstm_inner_dim // self.mlstm_num_heads

    @property
    def slstm_head_dim(self) -> int:
        return self.embedding_dim // self.slstm_num_heads

    @property
    def ffn_dim(self) -> int:
        return round_up(self.ffn_proj_factor * self.embedding_dim, self.round_up_to)

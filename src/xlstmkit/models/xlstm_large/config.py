"""`xLSTMLargeConfig`: sizes and numerics of the xLSTM-7B architecture, validated once, at construction."""

from __future__ import annotations

from dataclasses import dataclass

from ...config import (FORMS, FrozenConfig, check_bool, check_choice, check_positive_float, check_positive_int)


def round_up_like_transformers(x: float, multiple_of: int) -> int:
    """transformers' / xlstm's rounding rule for the FFN width: int(((x + m - 1) // m) * m), on a float x.

    For integer x this is the usual round-up to a multiple. For a non-integer x just above a multiple (e.g. 64.5 with
    m = 64) it gives the multiple below, unlike ceil; the checkpoints are shaped by this exact rule, so we use it.
    """
    return int(((x + multiple_of - 1) // multiple_of) * multiple_of)


@dataclass(frozen=True)
class xLSTMLargeConfig(FrozenConfig):
    """Sizes and numerics of an xLSTM-Large model; defaults are xLSTM-7B. Field names follow transformers'
    `xLSTMConfig` (`embedding_dim` = its `hidden_size`, `num_blocks` = its `num_hidden_layers`).

    Validated once, at construction; frozen (use `replace`). Derived sizes are properties: `qk_dim`, `v_dim`,
    `qk_head_dim`, `v_head_dim`, `ffn_dim`. `fused` (computation, not architecture) picks the fused fast paths (one
    matmul for a layer's six projections, the fused decode step of decode.py) over the plain equations.
    """

    vocab_size: int = 50304
    embedding_dim: int = 4096
    num_heads: int = 8
    num_blocks: int = 32
    use_bias: bool = False
    norm_eps: float = 1e-6
    norm_reduction_force_float32: bool = True
    add_out_norm: bool = True
    qk_dim_factor: float = 0.5
    v_dim_factor: float = 1.0
    gate_soft_cap: float | None = 15.0
    output_logit_soft_cap: float | None = 30.0
    ffn_proj_factor: float = 2.667
    ffn_round_up_to_multiple_of: int = 64
    chunk_size: int = 64
    eps: float = 1e-6
    mlstm_form: str = "chunkwise"
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2
    fused: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embedding_dim", "num_heads", "num_blocks", "ffn_round_up_to_multiple_of",
                     "chunk_size"):
            check_positive_int(self, name)
        for name in ("qk_dim_factor", "v_dim_factor", "ffn_proj_factor", "norm_eps", "eps"):
            check_positive_float(self, name)
        for name in ("gate_soft_cap", "output_logit_soft_cap"):
            check_positive_float(self, name, optional=True)  # None: no cap; inf would give inf * tanh(0) = NaN
        for name in ("use_bias", "norm_reduction_force_float32", "add_out_norm", "fused"):
            check_bool(self, name)
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 0 <= value < self.vocab_size):
                raise ValueError(f"{name} must be a token id in [0, vocab_size={self.vocab_size}) or None, "
                                 f"got {value!r}")
        check_choice(self, "mlstm_form", FORMS)
        for what, dim in (("qk_dim = int(embedding_dim * qk_dim_factor)", self.qk_dim),
                          ("v_dim = int(embedding_dim * v_dim_factor)", self.v_dim)):
            if dim < self.num_heads or dim % self.num_heads:
                raise ValueError(f"{what} = {dim} must be a positive multiple of num_heads = {self.num_heads}")
        if self.ffn_dim < 1:
            raise ValueError(f"ffn_dim = embedding_dim * ffn_proj_factor rounded to ffn_round_up_to_multiple_of is "
                             f"{self.ffn_dim}; raise ffn_proj_factor so that embedding_dim * ffn_proj_factor >= 1")

    # -- derived sizes (the single place they are computed) -------------------------------------------------------
    @property
    def qk_dim(self) -> int:
        """Total query/key width: int(E * qk_dim_factor), as in transformers' layer (not its rounded-up cache)."""
        return int(self.embedding_dim * self.qk_dim_factor)

    @property
    def v_dim(self) -> int:
        """Total value / output-gate width: int(E * v_dim_factor)."""
        return int(self.embedding_dim * self.v_dim_factor)

    @property
    def qk_head_dim(self) -> int:
        return self.qk_dim // self.num_heads

    @property
    def v_head_dim(self) -> int:
        return self.v_dim // self.num_heads

    @property
    def ffn_dim(self) -> int:
        """SwiGLU up-projection width: E * ffn_proj_factor rounded up to `ffn_round_up_to_multiple_of`."""
        return round_up_like_transformers(self.embedding_dim * self.ffn_proj_factor, self.ffn_round_up_to_multiple_of)

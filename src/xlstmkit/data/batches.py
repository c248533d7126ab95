"""Training batches: random contiguous windows of a token stream, as a pure function of (seed, step).

The windows of optimiser step `s` depend only on the seed and `s`, so the data position of a run is its step counter:
resuming at step `s` gives exactly the batches an uninterrupted run would have seen. For several processes (DDP)
every rank draws the same global batch and keeps its own rows, so each rank trains on its own shard of every batch
and the union over ranks is the batch a single process would use: results do not depend on the number of processes
or on gradient accumulation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_STEP_MULTIPLIER = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads (seed, step) over the generator's seed space


def step_seed(seed: int, step: int) -> int:
    """A 63-bit generator seed for the batch of optimiser step `step` of a run seeded with `seed`."""
    return (seed * 1_000_003 + (step + 1) * _STEP_MULTIPLIER) % (2**63 - 1)


@dataclass(frozen=True)
class WindowSampler:
    """Random windows (B, T + 1) of a 1-D token stream; inputs are window[:, :-1], targets window[:, 1:].

    `batch_size` is the global number of windows per optimiser step; a rank's micro-batch `micro` (of `grad_accum`)
    is rows [(micro * world_size + rank) * b, ... + b) with b = batch_size / (grad_accum * world_size).
    """

    tokens: torch.Tensor  # (N,) int64
    batch_size: int
    seq_len: int
    seed: int
    grad_accum: int = 1
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.tokens.dim() != 1:
            raise ValueError(f"tokens must be a 1-D tensor, got shape {tuple(self.tokens.shape)}")
        if self.tokens.numel() < self.seq_len + 2:
            raise ValueError(f"the training text has {self.tokens.numel()} tokens, fewer than seq_len + 2 = "
                             f"{self.seq_len + 2}: use more data or a shorter --seq-len")
        parts = self.grad_accum * self.world_size
        if self.batch_size % parts:
            raise ValueError(f"batch_size ({self.batch_size}) must be divisible by grad_accum ({self.grad_accum}) x "
                             f"number of processes ({self.world_size})")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world_size {self.world_size}")

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // (self.grad_accum * self.world_size)

    def global_starts(self, step: int) -> torch.Tensor:
        """(batch_size,) start offsets of the windows of optimiser step `step` (the same on every rank)."""
        g = torch.Generator().manual_seed(step_seed(self.seed, step))
        high = self.tokens.numel() - (self.seq_len + 1) + 1
        return torch.randint(0, high, (self.batch_size,), generator=g)

    def micro_batch(self, step: int, micro: int) -> torch.Tensor:
        """(b, T + 1) int64 windows for this rank's micro-batch `micro` of optimiser step `step`."""
        if not 0 <= micro < self.grad_accum:
            raise ValueError(f"micro must be in [0, {self.grad_accum}), got {micro}")
        b = self.micro_batch_size
        first = (micro * self.world_size + self.rank) * b
        starts = self.global_starts(step)[first:first + b]
        offsets = torch.arange(self.seq_len + 1)
        return self.tokens[starts[:, None] + offsets[None, :]]


def eval_windows(tokens: torch.Tensor, seq_len: int, max_tokens: int | None = None) -> torch.Tensor:
    """(W, seq_len + 1) non-overlapping windows over a token stream for evaluation, spread evenly over the whole
    stream when `max_tokens` caps how many tokens are scored (deterministic; no randomness)."""
    n_windows = (tokens.numel() - 1) // seq_len
    if n_windows < 1:
        raise ValueError(f"the validation text has {tokens.numel()} tokens, fewer than seq_len + 1 = {seq_len + 1}")
    if max_tokens is not None:
        keep = max(1, min(n_windows, max_tokens // seq_len))
        idx = torch.linspace(0, n_windows - 1, keep).round().long().unique()
    else:
        idx = torch.arange(n_windows)
    starts = idx * seq_len
    return tokens[starts[:, None] + torch.arange(seq_len + 1)[None, :]]

"""Training batches: random contiguous windows of a token stream, as a pure function of (seed, step).

Document-aware packing (`doc_starts` given: the token offsets where the documents of the stream begin): a window
never runs from the end of one document into the next one, unless that document is shorter than a window (then
the window starts at the document's start and packs the following ones after it). Each document is still drawn in
proportion to its length, as in the plain sampler: a uniform token position p picks document d, and p is mapped
linearly onto d's valid window starts [s_d, e_d - T - 1]. Without it, a window starting near a file's end trains the
model to continue one file with the unrelated next one, and a recurrent model carries that mixed state along.

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
    doc_starts: torch.Tensor | None = None  # (D,) int64 ascending token offsets of the documents; None = plain

    def __post_init__(self) -> None:
        if self.tokens.dim() != 1:
            raise ValueError(f"tokens must be a 1-D tensor, got shape {tuple(self.tokens.shape)}")
        if self.doc_starts is not None:
            starts = torch.as_tensor(self.doc_starts, dtype=torch.int64)
            if (starts.dim() != 1 or starts.numel() == 0 or int(starts[0]) != 0
                    or bool((starts[1:] <= starts[:-1]).any()) or int(starts[-1]) >= self.tokens.numel()):
                raise ValueError("doc_starts must be a 1-D ascending tensor of document offsets starting at 0 and "
                                 "inside the token stream")
            object.__setattr__(self, "doc_starts", starts)
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
        if self.doc_starts is None:
            return torch.randint(0, high, (self.batch_size,), generator=g)
        n = self.tokens.numel()
        p = torch.randint(0, n, (self.batch_size,), generator=g)                  # a token position, uniform
        d = torch.searchsorted(self.doc_starts, p, right=True) - 1                  # its document
        begin = self.doc_starts[d]
        end = torch.cat([self.doc_starts[1:], torch.tensor([n])])[d]               # exclusive
        last = torch.clamp(end - (self.seq_len + 1), min=begin)                     # last start inside the document
        start = begin + (p - begin) * (last - begin + 1) // (end - begin)           # p mapped onto [begin, last]
        return torch.clamp(start, max=high - 1)                                    # the stream's end

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


def eval_streams(tokens: torch.Tensor, n_streams: int, max_tokens: int | None = None) -> torch.Tensor:
    """(R, L + 1) contiguous pieces of a token stream for evaluation with the state carried along each piece.

    The stream is cut into `n_streams` equal parts (fewer when it is too short: at least 2 tokens each); piece r is
    the start of part r, `L` tokens long (all of the part, or `max_tokens / R` of it, rounded up, when that is less),
    so a capped evaluation still covers the whole text evenly and each piece is one unbroken stretch of it."""
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be a 1-D tensor, got shape {tuple(tokens.shape)}")
    if n_streams < 1:
        raise ValueError(f"n_streams must be >= 1, got {n_streams}")
    usable = tokens.numel() - 1
    if usable < 1:
        raise ValueError(f"the validation text has {tokens.numel()} tokens: at least 2 are needed")
    n_streams = min(n_streams, usable)
    part = usable // n_streams
    length = part if max_tokens is None else max(1, min(part, -(-max_tokens // n_streams)))
    starts = torch.arange(n_streams) * part
    return tokens[starts[:, None] + torch.arange(length + 1)[None, :]]

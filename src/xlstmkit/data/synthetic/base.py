"""The common shape of a synthetic task: one seeded sequence generator, batched with padding and an answer mask.

Every task turns a task length and a `numpy.random.Generator` into one token sequence plus a boolean mask over that
sequence marking the task-relevant answer tokens. `SyntheticTask.batch` then builds next-token training pairs:
`input_ids = seq[:-1]`, `targets = seq[1:]`, `mask = answer_mask[1:]`, right-padded with `PAD` (id 0, never scored).
Right padding is harmless for the causal models used here: a padded position comes after every scored position, so it
cannot influence any scored logit. Whatever draws the random numbers is passed in, so the same seed gives the same
batch (and the same stream of batches) on every machine.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

PAD = 0


@dataclass(frozen=True)
class TaskBatch:
    """A padded batch of task instances, ready for next-token training and scoring."""

    input_ids: torch.Tensor  # (B, S) long, PAD after each sequence's end
    targets: torch.Tensor  # (B, S) long, the next token; PAD where nothing follows
    mask: torch.Tensor  # (B, S) bool, True exactly where targets[b, s] is a task-relevant answer token
    lengths: torch.Tensor  # (B,) long, the task length of each sample (the x-axis of length generalisation)

    def to(self, device: torch.device | str) -> "TaskBatch":
        return TaskBatch(*(t.to(device) for t in (self.input_ids, self.targets, self.mask, self.lengths)))


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A numpy Generator from a Generator (used as is), an int seed, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")


def collate(seqs: Sequence[tuple[np.ndarray, np.ndarray]], lengths: Sequence[int]) -> TaskBatch:
    """Right-padded next-token batch from (tokens (T,), answer mask (T,)) pairs and their task lengths."""
    width = max(len(tokens) for tokens, _ in seqs) - 1
    bsz = len(seqs)
    input_ids = np.full((bsz, width), PAD, dtype=np.int64)
    targets = np.full((bsz, width), PAD, dtype=np.int64)
    mask = np.zeros((bsz, width), dtype=bool)
    for b, (tokens, answer) in enumerate(seqs):
        n = len(tokens) - 1
        input_ids[b, :n] = tokens[:-1]
        targets[b, :n] = tokens[1:]
        mask[b, :n] = answer[1:]
    return TaskBatch(
        torch.from_numpy(input_ids),
        torch.from_numpy(targets),
        torch.from_numpy(mask),
        torch.tensor([int(n) for n in lengths], dtype=torch.long),
    )


class SyntheticTask(abc.ABC):
    """A task: a vocabulary, a chance level `s_rand` and a seeded generator of (sequence, answer mask).

    Subclasses set `name`, `vocab_size`, `s_rand`, `default_train_lengths` (inclusive range) and
    `default_test_lengths`, and implement `sequence`.
    """

    name: str = ""
    description: str = ""
    vocab_size: int = 0
    s_rand: float = 0.0  # accuracy of a uniform random guess over the answer classes
    default_train_lengths: tuple[int, int] = (1, 40)
    default_test_lengths: tuple[int, ...] = tuple(range(40, 257))
    min_length: int = 1

    @abc.abstractmethod
    def sequence(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One instance of task length `length`: tokens (T,) int64 and answer mask (T,) bool (mask[0] is False)."""

    def check_length(self, length: int) -> int:
        if not isinstance(length, (int, np.integer)) or isinstance(length, bool):
            raise TypeError(f"length must be an int, got {type(length).__name__}")
        if length < self.min_length:
            raise ValueError(f"length must be >= {self.min_length} for task {self.name!r}, got {length}")
        return int(length)

    def batch(self, lengths: Sequence[int], rng: np.random.Generator | int | None = None) -> TaskBatch:
        """One padded batch with one instance per entry of `lengths` (in that order)."""
        gen = as_generator(rng)
        if len(lengths) == 0:
            raise ValueError("lengths must name at least one task length")
        seqs = [self.sequence(self.check_length(n), gen) for n in lengths]
        return collate(seqs, lengths)

    def sample_batch(
        self, batch_size: int, length_range: tuple[int, int], rng: np.random.Generator | int | None = None
    ) -> TaskBatch:
        """A training batch: each sample's length drawn uniformly from the inclusive `length_range`."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        lo, hi = length_range
        if not lo <= hi:
            raise ValueError(f"length_range must be (lo, hi) with lo <= hi, got {length_range}")
        gen = as_generator(rng)
        lengths = gen.integers(lo, hi + 1, size=batch_size)
        return self.batch([int(n) for n in lengths], gen)

"""Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology"; xLSTM paper section 4.2 / App. B.1.2).

One instance of context length T with K key-value pairs (token names: keys k, values v, noise r):

    k_1 v_1 k_2 v_2 ... k_K v_K | ... r r k_j v_j r r k_i v_i r ...      (T tokens, plus the final target)

The first 2K tokens store the pairs. The remaining T - 2K tokens hold one query per key, each a key followed by its
value, at slot positions (even offsets in the query part) drawn without replacement with probability proportional to
(slot + 1) ** (power_a - 1): a power law that puts most queries soon after the pairs and some far away. Every other
position holds a uniformly random token (`random_non_queries`) or PAD. The model must predict the value after each
queried key, so the answer mask marks exactly the K value tokens of the query part.

Keys come from ids [1, V/2) and values from [V/2, V), so a key is never a value; id 0 is PAD. s_rand = 1 / (number of
value tokens), the chance of guessing a value. The task "length" is the context length T.
"""

from __future__ import annotations

import numpy as np

from .base import PAD, SyntheticTask


class MQAR(SyntheticTask):
    """Multi-query associative recall with `num_kv_pairs` pairs in a vocabulary of `vocab_size` tokens."""

    name = "mqar"
    level = "recall"

    def __init__(
        self,
        vocab_size: int = 8192,
        num_kv_pairs: int = 4,
        context_length: int = 64,
        power_a: float = 0.01,
        random_non_queries: bool = True,
    ) -> None:
        if num_kv_pairs < 1:
            raise ValueError(f"num_kv_pairs must be >= 1, got {num_kv_pairs}")
        if vocab_size < 2 * num_kv_pairs + 2:
            raise ValueError(f"vocab_size must be >= 2 * num_kv_pairs + 2 = {2 * num_kv_pairs + 2}, got {vocab_size}")
        if not 0.0 < power_a <= 1.0:
            raise ValueError(f"power_a must be in (0, 1], got {power_a}")
        self.vocab_size = int(vocab_size)
        self.num_kv_pairs = int(num_kv_pairs)
        self.power_a = float(power_a)
        self.random_non_queries = bool(random_non_queries)
        self.first_value = self.vocab_size // 2
        self.s_rand = 1.0 / (self.vocab_size - self.first_value)
        self.min_length = 4 * self.num_kv_pairs
        self.check_length(context_length)
        self.context_length = int(context_length)
        self.default_train_lengths = (self.context_length, self.context_length)
        self.default_test_lengths = (self.context_length,)

    def sequence(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        k = self.num_kv_pairs
        keys = rng.choice(np.arange(1, self.first_value), size=k, replace=False)
        values = rng.choice(np.arange(self.first_value, self.vocab_size), size=k, replace=False)
        tokens = np.full(length + 1, PAD, dtype=np.int64)  # T inputs and the target after the last one
        tokens[0 : 2 * k : 2] = keys
        tokens[1 : 2 * k : 2] = values
        n_slots = (length + 1 - 2 * k) // 2  # a slot is (key, value) at even offsets of the query part
        weights = np.arange(1, n_slots + 1, dtype=np.float64) ** (self.power_a - 1.0)
        slots = rng.choice(n_slots, size=k, replace=False, p=weights / weights.sum())
        order = rng.permutation(k)  # which key is asked in which chosen slot
        query_pos = 2 * k + 2 * slots
        answer = np.zeros(length + 1, dtype=bool)
        if self.random_non_queries:
            noise = rng.integers(1, self.vocab_size, size=length + 1 - 2 * k)
            tokens[2 * k :] = noise
        tokens[query_pos] = keys[order]
        tokens[query_pos + 1] = values[order]
        answer[query_pos + 1] = True
        return tokens, answer

    def solve_queries(self, tokens: np.ndarray) -> dict[int, int]:
        """The key -> value table stored in the first 2K tokens of an instance."""
        k = self.num_kv_pairs
        return {int(tokens[2 * i]): int(tokens[2 * i + 1]) for i in range(k)}

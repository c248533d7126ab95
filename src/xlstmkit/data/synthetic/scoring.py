"""Scaled accuracy of the xLSTM paper (section 4.1): (acc - s_rand) / (1 - s_rand), 0 = chance, 1 = perfect.

The paper measures accuracy "only on task-relevant tokens". Here the unit is one answer token: a token counts as
correct when the model's argmax at the position before it equals it (teacher forcing for multi-token answers). For the
single-token tasks (parity, majority, modular arithmetic, ...) this is the same as per-sequence accuracy. Per test
length we pool all answer tokens of that length; the overall number is the mean over test lengths of the per-length
scaled accuracy, so every length weighs the same (as Delétang et al. average over lengths) and long answers do not
drown short ones. Because the scaling is affine, that equals the scaled mean of the per-length accuracies.
"""

from __future__ import annotations

from collections import defaultdict

import torch


def scaled_accuracy(accuracy: float, s_rand: float) -> float:
    """(accuracy - s_rand) / (1 - s_rand): 0 for a random guess, 1 for a perfect predictor, negative below chance."""
    if not 0.0 <= s_rand < 1.0:
        raise ValueError(f"s_rand must be in [0, 1), got {s_rand}")
    return (float(accuracy) - s_rand) / (1.0 - s_rand)


def answer_token_hits(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: (number of answer tokens predicted correctly, number of answer tokens), both (B,) long.

    logits (B, S, V); targets (B, S) long; mask (B, S) bool marks the task-relevant answer positions.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2] or mask.shape != targets.shape:
        raise ValueError(
            f"expected logits (B, S, V) with targets and mask (B, S); got {tuple(logits.shape)}, "
            f"{tuple(targets.shape)}, {tuple(mask.shape)}"
        )
    hit = (logits.argmax(dim=-1) == targets) & mask  # (B, S)
    return hit.sum(dim=1), mask.sum(dim=1)


class LengthScores:
    """Accumulates answer-token hits per task length and reports accuracy and scaled accuracy."""

    def __init__(self, s_rand: float) -> None:
        scaled_accuracy(0.0, s_rand)  # validates s_rand
        self.s_rand = s_rand
        self.correct: dict[int, int] = defaultdict(int)
        self.total: dict[int, int] = defaultdict(int)

    def add(self, lengths: torch.Tensor, correct: torch.Tensor, total: torch.Tensor) -> None:
        """lengths, correct, total: (B,) per sample."""
        for n, c, t in zip(lengths.tolist(), correct.tolist(), total.tolist()):
            self.correct[n] += c
            self.total[n] += t

    def per_length(self) -> dict[int, dict[str, float]]:
        out = {}
        for n in sorted(self.total):
            if self.total[n] == 0:
                continue
            acc = self.correct[n] / self.total[n]
            out[n] = {"accuracy": acc, "scaled_accuracy": scaled_accuracy(acc, self.s_rand), "tokens": self.total[n]}
        return out

    def summary(self) -> dict:
        """{'accuracy', 'scaled_accuracy' (means over lengths), 'per_length': {L: {...}}}."""
        per = self.per_length()
        if not per:
            raise ValueError("no answer tokens were scored")
        acc = sum(v["accuracy"] for v in per.values()) / len(per)
        return {"accuracy": acc, "scaled_accuracy": scaled_accuracy(acc, self.s_rand), "per_length": per}

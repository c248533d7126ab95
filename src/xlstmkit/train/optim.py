"""AdamW with weight-decay groups, and the learning-rate schedule: linear warm-up, then cosine decay to a fraction
of the peak (the paper: to 10 %), flat after the decay ends.

No weight decay on norms, biases and embeddings: a parameter is decayed iff it is a matrix (dim >= 2) whose name
contains neither "norm" nor "embedding".
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


def decays(name: str, param: torch.Tensor) -> bool:
    """Whether a parameter gets weight decay."""
    lowered = name.lower()
    return param.dim() >= 2 and "norm" not in lowered and "embedding" not in lowered


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed matrices and everything else (norms, biases, embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if decays(name, p) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the two decay groups with the run's betas and epsilon (fused when on CUDA)."""
    fused = any(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             eps=cfg.adam_eps, **({"fused": True} if fused else {}))


def lr_factor(step: int, warmup_steps: int, decay_steps: int, min_ratio: float) -> float:
    """The multiplier of the peak learning rate at optimiser step `step` (0-based).

    Linear warm-up from 1/warmup to 1 over `warmup_steps`, then cosine from 1 to `min_ratio` at `decay_steps`, then
    `min_ratio`.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_ratio
    span = max(1, decay_steps - warmup_steps)
    progress = (step - warmup_steps) / span
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following `lr_factor`; its state (step count) is plain numbers, saved as JSON."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg.warmup_steps, cfg.decay_steps, cfg.min_lr_ratio))

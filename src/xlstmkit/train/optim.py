"""AdamW with weight-decay groups, and the learning-rate schedule: linear warm-up, then cosine decay to a fraction
of the peak (the paper: to 10 %), flat after the decay ends. One home for both the language-model trainer and the
synthetic-task trainer: each describes its settings as an `OptimSpec`.

No weight decay on norms, biases and embeddings: a parameter is decayed iff it is a matrix (dim >= 2) that is not an
embedding table (an `nn.Embedding`'s weight, or a name containing "embed") and whose name does not contain "norm".
Decaying an embedding pulls rare tokens' vectors to zero; decaying a norm's gain pulls it away from 1; neither is
what weight decay is for (keeping the large matrices small).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class OptimSpec:
    """AdamW and schedule settings.

    lr(step) = lr * lr_factor(step, warmup_steps, decay_steps, min_lr_ratio); gradients are clipped to a global
    norm of `grad_clip` (0 = no clipping) before each step.
    """

    lr: float
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-5
    warmup_steps: int = 0
    decay_steps: int = 1
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0


def _spec(cfg) -> OptimSpec:
    """An OptimSpec, or the `.optim` of a config that has one (TrainConfig, CellConfig)."""
    return cfg if isinstance(cfg, OptimSpec) else cfg.optim


def decays(name: str, param: torch.Tensor, embedding_params: frozenset[int] = frozenset()) -> bool:
    """Whether a parameter gets weight decay."""
    lowered = name.lower()
    return (param.dim() >= 2 and "norm" not in lowered and "embed" not in lowered
            and id(param) not in embedding_params)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed matrices and everything else (norms, biases, embeddings); empty groups dropped."""
    embedding_params = frozenset(id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if decays(name, p, embedding_params) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW over the two decay groups with the spec's betas and epsilon (fused when on CUDA)."""
    spec = _spec(cfg)
    fused = any(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(param_groups(model, spec.weight_decay), lr=spec.lr, betas=tuple(spec.betas),
                             eps=spec.eps, **({"fused": True} if fused else {}))


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


def build_scheduler(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following `lr_factor`; its state (step count) is plain numbers, saved as JSON."""
    spec = _spec(cfg)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, spec.warmup_steps, spec.decay_steps, spec.min_lr_ratio))


def sync_lr(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set each group's learning rate to the schedule's value at the scheduler's step (as LambdaLR computes it).

    After a resume the optimiser holds the rate the *saved* schedule chose for the next step; with an unchanged
    schedule this writes the same number back (bitwise), with a new horizon (`--extend`) it applies the new one from
    the first resumed step on.
    """
    for group, base, fn in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * fn(scheduler.last_epoch)

"""A generic supervised trainer: any model, any loss, any batches; early stopping on a validation set; a time budget.

Used by the classification baselines (Transformer, LSTM, GRU) and meant for the xLSTM sequence models too, so the
comparison trains every model the same way. The contract is small:

- ``train_batches(rng)`` returns an iterable over one epoch of batches ``(inputs, target)``, shuffled with the given
  ``numpy.random.Generator``; ``val_batches()`` returns the validation batches (fixed order);
- ``inputs`` is a tuple of tensors passed as ``model(*inputs)``; ``target`` is whatever ``loss_fn(output, target)``
  takes (a tensor or a tuple of tensors); the loss is a mean over the batch;
- :class:`xlstmkit.data.classification.PaddedSeries` provides such batches: ``((x, mask), labels)``.

Choices (and why): AdamW (decoupled weight decay, the default for Transformers and xLSTM alike) at a constant
learning rate with a linear warm-up over the first ``warmup_steps`` (stable starts for attention and exponential
gates); gradient-norm clipping at 1.0; the validation loss is the batch-size-weighted mean over the validation set,
checked after every epoch; training stops after ``patience`` epochs without a new best, when ``max_epochs`` or
``max_steps`` is reached, or when ``time_budget`` seconds have passed (checked after every step), and the weights of
the best validation epoch are restored. Randomness (dropout, shuffling) is seeded from ``seed`` without touching the
caller's global torch generator.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

Batch = tuple[tuple[torch.Tensor, ...], Any]


@dataclass(frozen=True)
class FitConfig:
    """Training settings; ``batch_size`` is used by helpers that build the batches (the trainer takes batches)."""

    max_epochs: int = 200
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    patience: int = 20
    time_budget: float | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.max_epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise ValueError("max_epochs, patience and batch_size must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1 or None")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError("time_budget must be > 0 seconds or None")
        if self.lr <= 0:
            raise ValueError("lr must be > 0")


@dataclass
class FitResult:
    """What happened: epochs and steps run, wall seconds, the best epoch and its validation loss (None without
    validation), why training stopped (``patience``, ``epochs``, ``steps`` or ``time``), and the per-epoch history."""

    epochs: int
    steps: int
    seconds: float
    best_epoch: int | None
    best_val_loss: float | None
    stopped: str
    history: list[dict] = field(default_factory=list)


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(o, device) for o in obj)
    return obj


def _size(inputs) -> int:
    return int(inputs[0].shape[0])


@torch.no_grad()
def evaluate_loss(model: nn.Module, loss_fn: Callable, batches: Iterable[Batch], device: str = "cpu") -> float:
    """Batch-size-weighted mean loss over ``batches`` in eval mode."""
    was = model.training
    model.eval()
    total, n = 0.0, 0
    try:
        for inputs, target in batches:
            inputs, target = _to(inputs, device), _to(target, device)
            b = _size(inputs)
            total += float(loss_fn(model(*inputs), target)) * b
            n += b
    finally:
        model.train(was)
    if n == 0:
        raise ValueError("no validation batches")
    return total / n


def fit(model: nn.Module, loss_fn: Callable, train_batches: Callable[[np.random.Generator], Iterable[Batch]],
        val_batches: Callable[[], Iterable[Batch]] | None = None, config: FitConfig = FitConfig(),
        on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train ``model`` in place; see the module docstring for the contract and the stopping rules."""
    device = torch.device(config.device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warm = max(config.warmup_steps, 0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    rng = np.random.default_rng(config.seed)
    start = time.perf_counter()
    best_loss, best_epoch, best_state = math.inf, None, None
    history: list[dict] = []
    steps, epoch, stopped, bad = 0, 0, "epochs", 0
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        model.train()
        out_of_time = False
        for epoch in range(1, config.max_epochs + 1):
            total, n = 0.0, 0
            for inputs, target in train_batches(rng):
                inputs, target = _to(inputs, device), _to(target, device)
                loss = loss_fn(model(*inputs), target)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss became {float(loss.detach())} at step {steps + 1}; "
                                             "lower the learning rate")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    nn.utils.clip_grad_norm_(params, config.grad_clip)
                opt.step()
                sched.step()
                steps += 1
                b = _size(inputs)
                total, n = total + float(loss.detach()) * b, n + b
                if config.max_steps is not None and steps >= config.max_steps:
                    stopped = "steps"
                    break
                if config.time_budget is not None and time.perf_counter() - start >= config.time_budget:
                    stopped, out_of_time = "time", True
                    break
            row = {"epoch": epoch, "steps": steps, "train_loss": total / max(n, 1),
                   "seconds": time.perf_counter() - start}
            if val_batches is not None:
                row["val_loss"] = evaluate_loss(model, loss_fn, val_batches(), config.device)
                if row["val_loss"] < best_loss:
                    best_loss, best_epoch, bad = row["val_loss"], epoch, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad += 1
            history.append(row)
            if on_epoch is not None:
                on_epoch(row)
            if stopped in ("steps", "time") or out_of_time:
                break
            if val_batches is not None and bad >= config.patience:
                stopped = "patience"
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(epoch, steps, time.perf_counter() - start, best_epoch,
                     None if best_epoch is None else best_loss, stopped, history)


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[Batch], device: str = "cpu") -> torch.Tensor:
    """Concatenated model outputs over ``batches`` (eval mode, on the CPU)."""
    was = model.training
    model.eval()
    try:
        outs = [model(*_to(inputs, device)).cpu() for inputs, _ in batches]
    finally:
        model.train(was)
    return torch.cat(outs)

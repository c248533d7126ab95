"""The training core both trainers share (the language model in `loop.py`, the synthetic tasks in `synthetic.py`):
one optimiser step, the progress display, and the loop that runs steps until a stop condition.

One optimiser step (`train_step`) on a batch split into `k` micro-batches:

    g = sum_j grad(loss_j / k)           (gradient accumulation: the mean loss of the whole batch)
    g <- g * min(1, clip / ||g||_2)      (global-norm clipping; ||g|| is reported either way)
    theta <- AdamW(theta, g, lr(step))   then the scheduler moves to step + 1

The forward pass runs under bf16 autocast when asked (weights, gradients and optimiser state stay float32); the loss
is computed in float32 from the logits.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn


def autocast(device: torch.device, dtype: str):
    """bf16 autocast on CPU or GPU when dtype is "bfloat16"; a no-op context otherwise."""
    if dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def unwrap(model: nn.Module) -> nn.Module:
    """The underlying module of a DDP or torch.compile wrapper."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


@dataclass
class StepStats:
    """What one optimiser step reports: the mean loss over its micro-batches (a tensor, not yet synchronised), the
    gradient norm before clipping, and the learning rate the step used."""

    loss: torch.Tensor
    grad_norm: float
    lr: float


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, micro_batches: Iterable,
               loss_fn: Callable[[nn.Module, object], torch.Tensor], *, grad_clip: float, device: torch.device,
               dtype: str = "float32", params: Iterable[torch.Tensor] | None = None, n_micro: int = 1) -> StepStats:
    """One optimiser step over `n_micro` micro-batches; `loss_fn(model, batch)` returns the mean loss of a batch.

    Under DDP the gradient all-reduce happens only on the last micro-batch (`no_sync` for the others).
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=device)
    for j, batch in enumerate(micro_batches):
        sync = j == n_micro - 1
        ctx = model.no_sync() if (not sync and hasattr(model, "no_sync")) else contextlib.nullcontext()
        with ctx:
            with autocast(device, dtype):
                loss = loss_fn(model, batch)
            (loss / n_micro).backward()
        loss_sum += loss.detach() / n_micro
    params = list(params if params is not None else unwrap(model).parameters())
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    return StepStats(loss=loss_sum, grad_norm=float(grad_norm), lr=lr)


def clock(seconds: float) -> str:
    """h:mm:ss or m:ss."""
    seconds = int(round(max(0.0, seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def is_terminal(stream=None) -> bool:
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A tqdm bar on a terminal; otherwise (a log file, a pipe, CI) one line every `log_every` steps and at the last
    one, so logs stay readable. `update(n, **postfix)` moves to step n (absolute)."""

    def __init__(self, total: int, *, initial: int = 0, desc: str = "", unit: str = "step", enabled: bool = True,
                 log_every: int = 0, stream=None, bar: bool | None = None) -> None:
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.log_every = log_every or max(1, total // 20)
        self.bar = None
        self.t0 = time.time()
        if enabled and (is_terminal(self.stream) if bar is None else bar):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True, file=self.stream, desc=desc,
                            smoothing=0.1,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")

    def update(self, n: int, **postfix: object) -> None:
        step, self.n = n - self.n, n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix({k: str(v) for k, v in postfix.items()}, refresh=False)
            self.bar.update(step)
        elif n // self.log_every > (n - step) // self.log_every or n == self.total:
            extra = "".join(f" {k} {v}" for k, v in postfix.items())
            print(f"{self.desc}: {self.unit} {n}/{self.total}{extra} [{clock(time.time() - self.t0)}]",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class GracefulStop:
    """While active, the first Ctrl-C (SIGINT) only asks the loop to stop after the current step (so it can save a
    checkpoint); a second one interrupts at once. Only in the main thread (signals cannot be handled elsewhere)."""

    def __init__(self, enabled: bool = True) -> None:
        self.requested = False
        self.enabled = enabled
        self._previous = None

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> GracefulStop:
        import threading

        if self.enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def fit(start_step: int, total_steps: int, step_fn: Callable[[int], object], *,
        on_step: Callable[[int, object], None] | None = None,
        should_stop: Callable[[int], str | None] | None = None,
        stop: GracefulStop | None = None) -> tuple[int, str]:
    """Run `step_fn(step)` for step = start_step, ..., total_steps - 1 (`on_step(step + 1, result)` after each);
    returns (the number of steps done, why it stopped: "max_steps", what `should_stop` returned, or "interrupted").
    """
    step = start_step
    while step < total_steps:
        if should_stop is not None:
            reason = should_stop(step)
            if reason:
                return step, reason
        result = step_fn(step)
        step += 1
        if on_step is not None:
            on_step(step, result)
        if stop is not None and stop.requested:
            return step, "interrupted"
    return step, "max_steps"

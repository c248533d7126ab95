"""The gate arithmetic both cells share, defined once (docs/mlstm.md, docs/slstm.md).

Both the mLSTM and the sLSTM use an exponential input gate exp(i~) and a forget gate that is either a sigmoid,
taken in log space as log f = logsigmoid(f~) (the paper's default), or an exponential, log f = f~. Exponential gates
overflow unless the state is kept relative to a running maximum m (the stabiliser):

    m_t = max(log f_t + m_{t-1}, i~_t),   f'_t = exp(log f_t + m_{t-1} - m_t),   i'_t = exp(i~_t - m_t)

Replacing f, i by f', i' scales the states by exp(-m_t) and leaves every output and gradient unchanged, so m carries
no gradient.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

ForgetGate = Literal["sigmoid", "exp"]
FORGET_GATES = ("sigmoid", "exp")


def check_forget_gate(forget_gate: object) -> None:
    """ValueError unless forget_gate is 'sigmoid' or 'exp'."""
    if forget_gate not in FORGET_GATES:
        raise ValueError(f"forget_gate must be 'sigmoid' or 'exp', got {forget_gate!r}")


def log_forget(f: Tensor, forget_gate: ForgetGate) -> Tensor:
    """log f_t from the pre-activation f~_t: logsigmoid(f~) for the sigmoid forget gate (default), f~ for exp."""
    check_forget_gate(forget_gate)
    return F.logsigmoid(f) if forget_gate == "sigmoid" else f


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the recurrences are computed and stored in: float32, or float64 for float64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def autocast_off(fn):
    """Run a custom autograd Function's forward or backward with autocast disabled: the ops upcast their inputs to
    the state dtype themselves, and a hand-written backward must see the dtypes its forward saw (under autocast,
    the forward's matmuls would silently run in bf16 and the backward would mix dtypes)."""

    @functools.wraps(fn)
    def wrapper(ctx, *args):
        device = next((a.device.type for a in args if isinstance(a, Tensor)), "cpu")
        with torch.autocast(device_type=device, enabled=False):
            return fn(ctx, *args)

    return wrapper


__all__ = ["ForgetGate", "FORGET_GATES", "check_forget_gate", "log_forget", "state_dtype", "autocast_off"]

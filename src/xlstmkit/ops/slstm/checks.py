"""Input validation of the sLSTM ops: shapes and dtypes only (never a look at values), with one-line messages that
name the argument, the expected and the given shape."""

from __future__ import annotations

import torch
from torch import Tensor

from ..gates import check_forget_gate
from .cell import SLSTMState, slstm_zero_state


def check_inputs(gates: Tensor, R: Tensor, mask: Tensor | None, *, step: bool, forget_gate: str) -> None:
    """gates (B, S, NH, 4, DH) (or (B, NH, 4, DH) for a step), R (NH, DH, 4 DH), mask bool (B, S) (or (B,))."""
    check_forget_gate(forget_gate)
    for name, t in (("gates", gates), ("R", R)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    rank = 4 if step else 5
    expect = "(B, NH, 4, DH)" if step else "(B, S, NH, 4, DH)"
    if gates.dim() != rank or gates.shape[-2] != 4:
        raise ValueError(f"gates must have shape {expect} (gate order i, f, z, o), got {tuple(gates.shape)}")
    NH, DH = gates.shape[-3], gates.shape[-1]
    if tuple(R.shape) != (NH, DH, 4 * DH):
        raise ValueError(f"R must have shape (NH, DH, 4 * DH) = {(NH, DH, 4 * DH)}, got {tuple(R.shape)}")
    if R.device != gates.device:
        raise ValueError(f"R is on {R.device}, gates on {gates.device}; put both on one device")
    if not step and gates.shape[1] < 1:
        raise ValueError("gates must hold at least one time step (S >= 1)")
    if mask is not None:
        want = tuple(gates.shape[:1]) if step else tuple(gates.shape[:2])
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise TypeError(f"mask must be a torch.bool tensor (True = a real step, False = padding), got {got}")
        if tuple(mask.shape) != want:
            raise ValueError(f"mask must have shape {'(B,)' if step else '(B, S)'} = {want}, got "
                             f"{tuple(mask.shape)}")
        if mask.device != gates.device:
            raise ValueError(f"mask is on {mask.device}, gates on {gates.device}; put both on one device")


def prepare_state(state, B: int, NH: int, DH: int, dtype: torch.dtype, device: torch.device) -> SLSTMState:
    """The state as an SLSTMState in `dtype` on the gates' `device` (zeros if None), each (B, NH, DH), m detached."""
    if state is None:
        return slstm_zero_state(B, NH, DH, dtype=dtype, device=device)
    if not isinstance(state, (tuple, list)) or len(state) != 4:
        raise TypeError("state must be a tuple (c, n, m, h)")
    for name, t in zip("cnmh", state):
        if not isinstance(t, Tensor):
            raise TypeError(f"state {name} must be a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != (B, NH, DH):
            raise ValueError(f"state {name} must have shape (B, NH, DH) = {(B, NH, DH)}, got {tuple(t.shape)} "
                             "(a state from a model with other sizes?)")
        if t.device != device:
            raise ValueError(f"state {name} is on {t.device}, gates on {device}")
    c, n, m, h = (t if t.dtype == dtype else t.to(dtype) for t in state)
    return SLSTMState(c, n, m.detach(), h)  # the stabiliser carries no gradient


__all__ = ["check_inputs", "prepare_state"]

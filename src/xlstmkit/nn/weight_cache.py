"""Derived weights for inference, built once and rebuilt when a parameter they come from changes.

Generation steps one token at a time, where every extra operator call costs as much as the arithmetic. Some layers
therefore precompute a fused form of several parameters (e.g. four gate projections as one matrix). The fused
tensor is cached on the module (outside its state_dict), keyed by each source parameter's version counter and data
pointer: an optimizer step (an in-place update), `load_state_dict` (in-place copy) or assigning a new Parameter all
change the key, so a stale copy is never used. Edits through `param.data` bypass the version counter (PyTorch gives
`.data` its own); after those, call `clear_derived(model)` (`xLSTMLM.clear_decode_cache()`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")


def cached_derived(module: nn.Module, name: str, sources: Sequence[torch.Tensor], build: Callable[[], T]) -> T:
    """`build()`, cached on `module` under `name` until one of `sources` changes. Build under no_grad."""
    key = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in sources)
    slot = f"_derived_{name}"
    entry = module.__dict__.get(slot)
    if entry is not None and entry[0] == key:
        return entry[1]
    with torch.no_grad():
        value = build()
    module.__dict__[slot] = (key, value)
    return value


def clear_derived(module: nn.Module) -> None:
    """Drop every cached derived weight in `module` and its submodules (they are rebuilt on next use)."""
    for m in module.modules():
        for slot in [k for k in m.__dict__ if k.startswith("_derived_")]:
            del m.__dict__[slot]
        m.__dict__.pop("_parameter_slots", None)


def current_parameters(module: nn.Module) -> list[torch.Tensor]:
    """The parameters of `module` and its submodules as they are registered now (the `sources` of a derived weight
    built from all of them), read in a few microseconds: the (submodule, name) slots are listed once and cached on
    the module, each call reads the slots, so a parameter replaced by assignment or by a conversion that makes new
    Parameter objects is seen. (Listing with `module.parameters()` walks the module tree on every call, which costs
    more than a small model's decoding step. A submodule replaced by assignment is not seen: call
    `clear_derived(model)` after such surgery.)"""
    slots = module.__dict__.get("_parameter_slots")
    if slots is None:
        slots = module.__dict__["_parameter_slots"] = [
            (m._parameters, name) for m in module.modules() for name, p in m._parameters.items() if p is not None]
    return [params[name] for params, name in slots]

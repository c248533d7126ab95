"""The optional native recurrences (docs/native.md): the sLSTM time loop, forward and backward, and its one-token
step (slstm.c), and the mLSTM's one-token inference step (mlstm.c), compiled on first use with the system C compiler
into one library and called through ctypes.

Why: a recurrence is sequential, and run as PyTorch ops each time step costs a dozen operator dispatches (a few
microseconds each) around very little arithmetic. The C loops do a step in one pass over a head's numbers, so the
per-step dispatch overhead disappears; the work that can be batched over time (the input projections, the recurrent
weight gradient, the chunkwise mLSTM) stays in PyTorch.

Every exported function is declared once, in xlstmkit.h, with the shape of each array; `call` checks each tensor
against that declaration (count, dtype, device, contiguity, shape) before passing a pointer to C, so a wrong input is
a ValueError naming the argument, never a read past a buffer. Nothing is compiled at install time; the library is
cached and verified before it is loaded (loader.py). If there is no compiler or the build fails, xlstmkit warns
once, in one line, and computes the same function with PyTorch ops. `XLSTMKIT_NATIVE=0` turns the native code off
without a warning; `use_native(False)` does so for a block of code (tests, benchmarks).
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator

import torch

from . import loader
from .loader import Library, cache_dir

_lock = threading.Lock()
_library: Library | None = None
_tried = False
_failure: str | None = None
_override: bool | None = None
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_MASK_DTYPES = (torch.bool, torch.uint8)
# the dtype of each array kind that is not the function's float type (loader._KINDS)
_KIND_DTYPES = {"mask": torch.bool, "bytes": torch.uint8, "i64": torch.int64, "i32": torch.int32}


def library() -> Library | None:
    """The compiled library, building it on the first call; None when the native code is off or unavailable."""
    global _library, _tried, _failure
    if _override is False or (_override is None and os.environ.get("XLSTMKIT_NATIVE", "1") == "0"):
        return None
    if not _tried:
        with _lock:
            if not _tried:
                try:
                    _library = loader.load()
                except Exception as exc:  # noqa: BLE001 -- any failure means: fall back, say so once
                    _failure = str(exc)
                    warnings.warn(f"xlstmkit: native recurrences unavailable ({exc}); using PyTorch ops "
                                  "(same results, slower; XLSTMKIT_NATIVE=0 silences this)", RuntimeWarning,
                                  stacklevel=3)
                _tried = True
    return _library


def status() -> dict:
    """How the native library stands in this process: 'loaded' (bool), 'path', 'built' (compiled by this process,
    False when it came verified from the cache), 'compiler' and 'flags' (from its record), 'failure' (why it is not
    loaded, if it was tried). Does not trigger a build."""
    lib = _library
    return {"loaded": lib is not None, "path": None if lib is None else str(lib.path),
            "built": None if lib is None else lib.built, "compiler": None if lib is None else lib.compiler,
            "flags": None if lib is None else lib.record.get("flags"), "failure": _failure}


def usable(*tensors: torch.Tensor) -> Library | None:
    """The library if these tensors can go to it (CPU, float32 or float64, one dtype), else None."""
    t0 = tensors[0]
    if torch.compiler.is_compiling():  # torch.compile cannot trace ctypes: callers run native calls outside the graph
        return None
    if t0.device.type != "cpu" or t0.dtype not in _SUFFIX:
        return None
    if any(t.device.type != "cpu" or t.dtype != t0.dtype for t in tensors):
        return None
    return library()


def usable_for_inference(*tensors: torch.Tensor) -> Library | None:
    """`usable`, and None as well when autograd would need to record these tensors (the native steps have no
    backward: a gradient must keep the PyTorch path)."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    return usable(*tensors)


@contextlib.contextmanager
def use_native(enabled: bool) -> Iterator[None]:
    """Turn the native code on or off inside a `with` block (on = if it can be built)."""
    global _override
    previous, _override = _override, enabled
    try:
        yield
    finally:
        _override = previous


def _matches(shape: tuple[int, ...], declared: tuple[int, ...]) -> bool:
    """A tensor shape fits a declared one if equal, or if its extra leading dimensions multiply to the first
    declared one (a (B, NH, D) tensor for a (BH, D) argument)."""
    if shape == declared:
        return True
    extra = len(shape) - len(declared)
    if extra <= 0 or not declared or shape[extra + 1:] != declared[1:]:
        return False
    lead = 1
    for s in shape[:extra + 1]:
        lead *= s
    return lead == declared[0]


def _problem(name: str, arg, t, dtype: torch.dtype, expected: tuple[int, ...]) -> str | None:
    """What is wrong with tensor t for array argument `arg` (None if nothing)."""
    if t is None:
        return None if arg.optional else f"native {name}: {arg.name} is required"
    if not isinstance(t, torch.Tensor):
        return f"native {name}: {arg.name} must be a tensor, got {type(t).__name__}"
    if not ((t.dtype in _MASK_DTYPES) if arg.kind == "mask" else (t.dtype == _KIND_DTYPES.get(arg.kind, dtype))):
        want = str(_KIND_DTYPES.get(arg.kind, dtype))
        return f"native {name}: {arg.name} must have dtype {want}, got {t.dtype}"
    if t.device.type != "cpu":
        return f"native {name}: {arg.name} must be on the CPU, got {t.device}"
    if not _matches(tuple(t.shape), expected):
        return f"native {name}: {arg.name} must have shape {expected} {arg.shape_text}, got {tuple(t.shape)}"
    if not t.is_contiguous():
        return f"native {name}: {arg.name} must be contiguous"
    return None


_checks: dict[tuple, tuple] = {}  # (function, dtype, *ints) -> ((dtype, shape) of each array)


def call(lib: Library, name: str, dtype: torch.dtype, ints: tuple[int | float, ...],
         tensors: tuple[torch.Tensor | None, ...]) -> None:
    """lib.<name>_<f32|f64>(*ints, *data pointers of tensors), after checking every argument against the function's
    declaration in xlstmkit.h: the number of scalars and tensors; each tensor's dtype (`dtype`; bool for a mask, uint8
    for bytes, int64/int32 for integer arrays),
    device (CPU), contiguity and shape (computed from the int arguments); None only where the declaration allows
    NULL. A mismatch is a ValueError naming the function, the argument, the expected and the given shape. This
    frame holds the tensors until the C function returns (a pointer to a freed temporary is the classic ctypes
    bug). The checks run on every call, generation's one-token steps included, so the expected dtypes and shapes
    are computed once per function and sizes; a call then costs about half a microsecond per tensor."""
    entry = lib.functions.get((name, _SUFFIX.get(dtype)))
    if entry is None:
        raise ValueError(f"native: no function {name!r} for dtype {dtype}")
    c_fn, decl = entry
    key = (name, dtype, *ints)
    wanted = _checks.get(key)
    if wanted is None:
        if len(ints) != len(decl.scalars):
            raise ValueError(f"native {name}: expected {len(decl.scalars)} scalars "
                             f"({', '.join(n for n, _ in decl.scalars)}), got {len(ints)}")
        if any(kind == "int" and not 0 <= int(v) < 2**31 for (_, kind), v in zip(decl.scalars, ints)):
            raise ValueError(f"native {name}: size arguments {ints} out of range")
        wanted = tuple((_KIND_DTYPES.get(arg.kind, dtype), shape, arg.optional)
                       for arg, shape in zip(decl.arrays, decl.shapes(*ints)))
        if len(_checks) > 4096:
            _checks.clear()
        _checks[key] = wanted
    if len(tensors) != len(wanted):
        raise ValueError(f"native {name}: expected {len(decl.arrays)} tensors "
                         f"({', '.join(a.name for a in decl.arrays)}), got {len(tensors)}")
    pointers = []
    for arg, t, (want, shape, optional) in zip(decl.arrays, tensors, wanted):
        if t is None and optional:
            pointers.append(None)
        elif t is not None and t.dtype is want and t.is_cpu and t.shape == shape and t.is_contiguous():
            pointers.append(t.data_ptr())
        else:  # the slower look at this argument: a shape with extra leading dimensions, a uint8 mask, or a problem
            problem = _problem(name, arg, t, dtype, shape)
            if problem:
                raise ValueError(problem)
            pointers.append(t.data_ptr())
    c_fn(*ints, *pointers)


__all__ = ["cache_dir", "call", "library", "status", "usable", "usable_for_inference", "use_native"]

"""The optional native recurrences: `slstm.c` (the sLSTM time loop, forward and backward, and its one-token step)
and `mlstm.c` (the mLSTM's one-token inference step), compiled on first use with the system C compiler into one
library, called via ctypes.

Why: a recurrence is inherently sequential, and run as PyTorch ops each time step costs a dozen operator dispatches
(a few microseconds each) around very little arithmetic. The C loops do a step in one pass over a head's numbers,
so the per-step Python and dispatch overhead disappears; the work that can be batched over time (the input
projections, the recurrent weight gradient, the chunkwise mLSTM) stays in PyTorch.

Nothing is compiled at install time. On the first call in a fresh environment the source is compiled (about a
second) into a cache folder (`$XLSTMKIT_CACHE`, else `$XDG_CACHE_HOME/xlstmkit`, else `~/.cache/xlstmkit`), keyed by
the source, the compiler and the CPU; later processes load the cached library. Compiled code is loaded only from
a folder no other user can write to; where the cache folder cannot be written or is shared, a private temporary
folder is used. If there is no compiler or the
build fails, xlstmkit warns once, in one line, and computes the same function with PyTorch ops. `XLSTMKIT_NATIVE=0`
turns the native loops off without a warning; `use_native(False)` does so for a block of code (tests, benchmarks).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

SOURCES = tuple(Path(__file__).with_name(name) for name in ("slstm.c", "mlstm.c"))
ABI = 3  # must match xlstmkit_native_abi() in slstm.c
# -ffast-math lets the compiler call glibc's vectorised exp/log1p/tanh; it is given when compiling only, not when
# linking, so that the library does not switch the whole process to flush-denormals-to-zero (crtfastmath.o)
COMPILE_FLAG_SETS = (["-O3", "-march=native", "-ffast-math"], ["-O3", "-ffast-math"], ["-O2"])
LINK_LIB_SETS = (["-lmvec", "-lm"], ["-lm"])

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False
_override: bool | None = None


def cache_dir() -> Path:
    if os.environ.get("XLSTMKIT_CACHE"):
        return Path(os.environ["XLSTMKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xlstmkit"


def _compiler() -> str | None:
    cc = os.environ.get("CC", "cc")
    return shutil.which(cc) or shutil.which("gcc") or shutil.which("clang")


def _machine_key(cc: str) -> str:
    """What the compiled code depends on besides the source: the compiler and the CPU (-march=native)."""
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features", "model name")):
                cpu += line
    return f"{version}|{cpu}|{platform.machine()}|{platform.system()}|{ABI}"


def _build(cc: str, target: Path) -> None:
    """Compile and link into `target` atomically (concurrent processes may build at once: last rename wins)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        lib = Path(tmp) / target.name
        for flags in COMPILE_FLAG_SETS:
            objects = [Path(tmp) / f"{src.stem}.o" for src in SOURCES]
            procs = [subprocess.run([cc, *flags, "-fPIC", "-c", str(src), "-o", str(obj)], capture_output=True,
                                    text=True, timeout=300) for src, obj in zip(SOURCES, objects)]
            failed = [p for p in procs if p.returncode != 0]
            if failed:
                errors.append(failed[0].stderr.strip().splitlines()[-1:] or ["?"])
                continue
            for libs in LINK_LIB_SETS:
                proc = subprocess.run([cc, "-shared", *map(str, objects), "-o", str(lib), *libs], capture_output=True,
                                      text=True, timeout=300)
                if proc.returncode == 0:
                    os.replace(lib, target)
                    return
                errors.append(proc.stderr.strip().splitlines()[-1:] or ["?"])
    raise RuntimeError(f"compilation failed: {errors[-1][0] if errors else '?'}")


def _declare(lib: ctypes.CDLL) -> None:
    i, p = ctypes.c_int, ctypes.c_void_p
    for suf in ("f32", "f64"):
        getattr(lib, f"slstm_forward_{suf}").argtypes = [i] * 5 + [p] * 7
        getattr(lib, f"slstm_step_{suf}").argtypes = [i] * 4 + [p] * 11
        getattr(lib, f"slstm_backward_{suf}").argtypes = [i] * 5 + [p] * 11
        getattr(lib, f"mlstm_step_{suf}").argtypes = [i] * 4 + [ctypes.c_double] + [p] * 12
        for name in ("slstm_forward", "slstm_step", "slstm_backward", "mlstm_step"):
            getattr(lib, f"{name}_{suf}").restype = None


def _check_private(folder: Path) -> None:
    """Create `folder` (mode 700) if needed, and refuse it unless only this user can write to it: code loaded from a
    folder that others can write to (a shared /tmp above all) could be theirs."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if hasattr(os, "getuid"):
        st = folder.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise PermissionError(f"{folder} can be written by other users; not loading compiled code from it")


def _load() -> ctypes.CDLL:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc or clang)")
    key = hashlib.sha256(b"".join(src.read_bytes() for src in SOURCES) + _machine_key(cc).encode()).hexdigest()[:16]
    suffix = ".dll" if platform.system() == "Windows" else ".so"
    name = f"recurrences-{key}{suffix}"
    # the cache folder, or a private temporary one where the cache cannot be written (a read-only home) or is not
    # private to this user
    private_tmp = Path(tempfile.gettempdir()) / f"xlstmkit-{getattr(os, 'getuid', lambda: 'user')()}"
    for folder in (cache_dir(), private_tmp):
        target = folder / name
        try:
            _check_private(folder)
            if not target.exists():
                _build(cc, target)
            break
        except OSError:
            if folder == private_tmp:
                raise
    lib = ctypes.CDLL(str(target))
    lib.xlstmkit_native_abi.restype = ctypes.c_int
    if lib.xlstmkit_native_abi() != ABI:
        raise RuntimeError(f"{target} reports another interface version; delete it to rebuild")
    _declare(lib)
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled library, building it on the first call; None when the native loop is off or unavailable."""
    global _library, _tried
    if _override is False or (_override is None and os.environ.get("XLSTMKIT_NATIVE", "1") == "0"):
        return None
    if not _tried:
        with _lock:
            if not _tried:
                try:
                    _library = _load()
                except Exception as exc:  # noqa: BLE001 -- any failure means: fall back, say so once
                    warnings.warn(f"xlstmkit: native recurrences unavailable ({exc}); using PyTorch ops "
                                  "(same results, slower; XLSTMKIT_NATIVE=0 silences this)", RuntimeWarning,
                                  stacklevel=3)
                _tried = True
    return _library


def usable(*tensors: torch.Tensor) -> ctypes.CDLL | None:
    """The library if these tensors can go to it (CPU, float32 or float64, one dtype), else None."""
    t0 = tensors[0]
    if torch.compiler.is_compiling():  # torch.compile cannot trace ctypes: callers run native calls outside the graph
        return None
    if t0.device.type != "cpu" or t0.dtype not in (torch.float32, torch.float64):
        return None
    if any(t.device.type != "cpu" or t.dtype != t0.dtype for t in tensors):
        return None
    return library()


def usable_for_inference(*tensors: torch.Tensor) -> ctypes.CDLL | None:
    """`usable`, and None as well when autograd would need to record these tensors (the native steps have no
    backward: a gradient must keep the PyTorch path)."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    return usable(*tensors)


@contextlib.contextmanager
def use_native(enabled: bool) -> Iterator[None]:
    """Turn the native loop on or off inside a `with` block (on = if it can be built)."""
    global _override
    previous, _override = _override, enabled
    try:
        yield
    finally:
        _override = previous


def call(lib: ctypes.CDLL, name: str, dtype: torch.dtype, ints: tuple[int | float, ...],
         tensors: tuple[torch.Tensor | None, ...]) -> None:
    """lib.<name>_<f32|f64>(*ints, *data pointers of tensors) (`ints`: the scalar arguments). The tensors must be contiguous; this frame holds
    them until the C function returns (a pointer to a temporary that was already freed is the classic ctypes bug)."""
    pointers = []
    for t in tensors:
        if t is not None and not t.is_contiguous():
            raise ValueError(f"internal: {name} needs contiguous tensors")
        pointers.append(None if t is None else t.data_ptr())
    getattr(lib, f"{name}_{'f64' if dtype == torch.float64 else 'f32'}")(*ints, *pointers)


__all__ = ["cache_dir", "library", "usable", "usable_for_inference", "use_native"]

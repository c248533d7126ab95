"""Building, caching, verifying and loading the native library (docs/native.md). Standard library only: no torch.

The interface comes from one place, `xlstmkit.h`: `read_interface()` parses its interface version and, for every
exported function, the argument list (which sets the ctypes argtypes) and the shape of every array argument (which
`native.call` checks before each call).

The compiled library is cached, keyed by the sources and the CPU (it is built with -march=native), never by asking
the compiler: a verified cached library loads where no compiler is installed. Beside each library a small JSON
record holds its SHA-256 and size, the compiler and flags that built it. Before anything is loaded:

- the cache folder must belong to this user and be writable by no one else, and every folder above it must belong
  to this user or root and be either writable by no one else or sticky (as /tmp): otherwise another user could
  replace the library between our check and the load;
- the library and its record must be regular files of this user, writable by no one else;
- the library's size and SHA-256 must match the record (a truncated file, which would kill the process with
  SIGBUS when mapped, an empty one, or one whose content was changed, fails here).

A library that fails a check is rebuilt, with a one-line warning; without a compiler, the caller falls back to the
PyTorch ops. A build writes a temporary file, syncs it to disk and renames it into place (libraries are named by
their content hash, so a reader never sees a half-written or replaced one), then does the same for the record.
"""

from __future__ import annotations

import ast
import ctypes
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
HEADER = HERE / "xlstmkit.h"
C_SOURCES = tuple(HERE / name for name in ("slstm.c", "mlstm.c", "decode.c"))
# every file the build reads (the hash of their contents keys the cache)
SOURCES = tuple(sorted([*HERE.glob("*.h"), *C_SOURCES]))

# Compiler flags, tried in order. No -ffast-math: its finite-math and reciprocal-math parts change results at
# infinities (1 / (1 + inf) became NaN) and remove isnan tests. The two flags kept change no value: math functions
# need not set errno, and floating-point operations may be reordered as if they could not trap. XLSTMKIT_LIBMVEC
# declares glibc's vector exp/log1p/tanh (common.h), so the loops vectorise as they did under -ffast-math;
# --no-undefined makes a missing vector function a link error (the next plan is then tried), not a load error.
IEEE = ["-fno-math-errno", "-fno-trapping-math"]
#
# OpenMP (-fopenmp) threads the decoders' large matrix-vector products (docs/inference.md). Each plan is tried with
# it first, then with -fopenmp-simd only (the `omp simd` reductions, no runtime library): a compiler without an
# OpenMP runtime still builds the single-threaded library. The OpenMP runtime is the one torch already loaded
# (GNU libgomp, same soname), so torch's threads and the decoders' are one pool; the decoders take their thread
# count from torch.get_num_threads() on every call.
_OMP = (["-fopenmp"], ["-fopenmp"])
_SIMD = (["-fopenmp-simd"], [])
BUILD_PLANS: tuple[tuple[list[str], list[str]], ...] = tuple(
    ([*flags, *extra_c], [*extra_l, *libs])
    for flags, libs in (
        (["-O3", "-march=native", *IEEE, "-DXLSTMKIT_LIBMVEC"], ["-Wl,--no-undefined", "-lmvec", "-lm"]),
        (["-O3", *IEEE, "-DXLSTMKIT_LIBMVEC"], ["-Wl,--no-undefined", "-lmvec", "-lm"]),
        (["-O3", "-march=native", *IEEE], ["-lm"]),
        (["-O2", *IEEE], ["-lm"]),
    )
    for extra_c, extra_l in (_OMP, _SIMD)
) + ((["-O2", *IEEE], ["-lm"]),)
RECORD_FORMAT = 1
MAX_RECORD_BYTES = 1 << 16


class UntrustedPath(OSError):
    """A folder or file that someone other than this user (or root) could change."""


class DamagedLibrary(RuntimeError):
    """A cached library that fails its record's check (missing record, size or SHA-256 mismatch)."""


# ---------------------------------------------------------------------------------------------------------------
# the interface, read from xlstmkit.h


@dataclass(frozen=True)
class Array:
    """An array argument: its name, element kind ('real' = the function's float type, 'mask' = bool, 'bytes' =
    uint8, 'i64' / 'i32' = int64 / int32), whether the
    function writes it, its declared shape (as written in the header) and whether NULL (None) is allowed."""

    name: str
    kind: str
    written: bool
    shape_text: str
    optional: bool


@dataclass(frozen=True)
class Function:
    """One exported function (without the _f32/_f64 suffix): scalar arguments first, then arrays. `shapes` maps the
    scalar arguments (positionally, as passed to C) to the declared shape of every array at once."""

    name: str
    scalars: tuple[tuple[str, str], ...]  # (name, 'int' | 'double')
    arrays: tuple[Array, ...]
    shapes: Callable[..., tuple[tuple[int, ...], ...]]

    def argtypes(self) -> list:
        ctype = {"int": ctypes.c_int, "double": ctypes.c_double}
        return [ctype[kind] for _, kind in self.scalars] + [ctypes.c_void_p] * len(self.arrays)


@dataclass(frozen=True)
class Interface:
    abi: int
    functions: dict[str, Function]


_PARAM = r"(const\s+)?(int64_t|int32_t|uint8_t|int|double|T|unsigned\s+char)\s*(\*?)\s*(\w+)"
# array element kinds: the function's float type, a bool mask, raw bytes (weights in any format), integer arrays
_KINDS = {"T": "real", "unsigned char": "mask", "uint8_t": "bytes", "int64_t": "i64", "int32_t": "i32"}
_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Name, ast.Load, ast.Constant)


def _shape_source(text: str, scalars: set[str]) -> str:
    """The Python tuple expression of the shape declared as `text`, e.g. '(S+1, 4, NH, B, DH)', after checking that
    it holds only integer literals, names of int arguments, +, - and *."""
    tree = ast.parse(text.strip(), mode="eval")
    dims = tree.body.elts if isinstance(tree.body, ast.Tuple) else [tree.body]
    for dim in dims:
        for node in ast.walk(dim):
            if not isinstance(node, _ALLOWED_NODES):
                raise ValueError(f"unsupported shape expression {text!r} in {HEADER.name}")
            if isinstance(node, ast.Name) and node.id not in scalars:
                raise ValueError(f"shape {text!r} in {HEADER.name} names {node.id!r}, not an int argument")
            if isinstance(node, ast.Constant) and type(node.value) is not int:
                raise ValueError(f"shape {text!r} in {HEADER.name} has a non-integer constant")
    return f"({''.join(f'({ast.unparse(d)}), ' for d in dims)})"


def _shapes_function(scalars: tuple[tuple[str, str], ...], sources: list[str]) -> Callable:
    """One compiled function from the scalar arguments (positionally) to every array's shape: a call costs one
    Python call. The expressions were checked by _shape_source; no builtins are reachable."""
    params = ", ".join(name for name, _ in scalars)
    src = f"lambda {params}: ({''.join(f'{s}, ' for s in sources)})"
    return eval(compile(src, HEADER.name, "eval"), {"__builtins__": {}})  # noqa: S307 -- checked arithmetic only


def read_interface(header: Path = HEADER) -> Interface:
    """The interface version and the exported functions, parsed from the header (format described in it)."""
    text = header.read_text()
    abi_lines = [line.split()[2] for line in text.splitlines() if line.startswith("#define XLSTMKIT_NATIVE_ABI ")]
    if len(abi_lines) != 1 or not abi_lines[0].isdigit():
        raise ValueError(f"{header.name}: expected one '#define XLSTMKIT_NATIVE_ABI <n>'")
    start = text.index("#define XLSTMKIT_DECLARE(T, SUF)")
    lines = []
    for line in text[start:].splitlines()[1:]:
        lines.append(line.rstrip().removesuffix("\\"))
        if not line.rstrip().endswith("\\"):
            break
    body = "\n".join(lines)
    functions = {}
    for head in _find_all(r"void\s+(\w+)_##SUF\s*\(", body):
        name, open_at = head
        close = body.index(");", open_at)
        params_text = body[open_at:close]
        functions[name] = _parse_function(name, params_text)
    if not functions:
        raise ValueError(f"{header.name}: no function declared in XLSTMKIT_DECLARE")
    return Interface(int(abi_lines[0]), functions)


def _find_all(pattern: str, text: str) -> list[tuple[str, int]]:
    return [(m.group(1), m.end()) for m in re.finditer(pattern, text)]


def _parse_function(name: str, text: str) -> Function:
    # drop the comments' text from the parameter search, keeping their positions to attach shapes
    comments = [(m.start(), m.end(), m.group(1).strip()) for m in re.finditer(r"/\*(.*?)\*/", text, re.S)]
    blank = list(text)
    for s, e, _ in comments:
        blank[s:e] = " " * (e - s)
    code = "".join(blank)
    params = list(re.finditer(_PARAM, code))
    scalars: list[tuple[str, str]] = []
    raw_arrays = []
    for k, m in enumerate(params):
        const, kind, star, pname = bool(m.group(1)), " ".join(m.group(2).split()), m.group(3), m.group(4)
        if not star:
            if kind not in ("int", "double") or raw_arrays:
                raise ValueError(f"{name}: scalar argument {pname!r} must be int/double and come before the arrays")
            scalars.append((pname, kind))
            continue
        end = params[k + 1].start() if k + 1 < len(params) else len(text)
        note = next((c for s, _, c in comments if m.end() <= s < end), None)
        if note is None:
            raise ValueError(f"{name}: array argument {pname!r} has no shape comment")
        optional = note.endswith("or NULL")
        shape_text = note.removesuffix("or NULL").strip()
        if kind not in _KINDS:
            raise ValueError(f"{name}: array argument {pname!r} has unsupported element type {kind!r}")
        raw_arrays.append((pname, _KINDS[kind], not const, shape_text, optional))
    int_names = {n for n, kind in scalars if kind == "int"}
    arrays = tuple(Array(n, kind, written, s, opt) for n, kind, written, s, opt in raw_arrays)
    shapes = _shapes_function(tuple(scalars), [_shape_source(a.shape_text, int_names) for a in arrays])
    return Function(name, tuple(scalars), arrays, shapes)


# ---------------------------------------------------------------------------------------------------------------
# where the library is cached, and whether a folder or file there can be trusted


def cache_dir() -> Path:
    """$XLSTMKIT_CACHE, else $XDG_CACHE_HOME/xlstmkit, else ~/.cache/xlstmkit."""
    if os.environ.get("XLSTMKIT_CACHE"):
        return Path(os.environ["XLSTMKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xlstmkit"


def private_temp_dir() -> Path:
    """The fallback folder where the cache folder cannot be used: $TMPDIR/xlstmkit-<uid>."""
    return Path(tempfile.gettempdir()) / f"xlstmkit-{getattr(os, 'getuid', lambda: 'user')()}"


def _uid() -> int | None:
    return os.getuid() if hasattr(os, "getuid") else None


def check_folder(folder: Path) -> None:
    """Raise UntrustedPath unless no one but this user (and root) can change what `folder` (a resolved path) holds:
    it belongs to this user and no one else can write to it, and every folder above it, up to the root, belongs to
    this user or root and either no one else can write to it or it is sticky (others cannot rename or replace
    entries they do not own, as in /tmp). Without POSIX ownership (Windows) nothing is checked."""
    uid = _uid()
    if uid is None:
        return
    st = os.stat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedPath(f"{folder} is not a folder")
    if st.st_uid != uid:
        raise UntrustedPath(f"{folder} belongs to another user; not loading compiled code from it")
    if st.st_mode & 0o022:
        raise UntrustedPath(f"{folder} can be written by other users; not loading compiled code from it")
    for parent in folder.parents:
        st = os.stat(parent)
        if st.st_uid not in (uid, 0):
            raise UntrustedPath(f"{parent} (above {folder}) belongs to another user; not loading compiled code "
                                "from below it")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise UntrustedPath(f"{parent} (above {folder}) can be written by other users and is not sticky; not "
                                "loading compiled code from below it")


def check_file(path: Path) -> os.stat_result:
    """Raise UntrustedPath unless `path` is a regular file (not a link) of this user that no one else can write."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise UntrustedPath(f"{path} is not a regular file")
    uid = _uid()
    if uid is not None and (st.st_uid != uid or st.st_mode & 0o022):
        raise UntrustedPath(f"{path} belongs to another user or can be written by others")
    return st


def prepare_folder(folder: Path) -> Path:
    """Create `folder` (mode 700) if needed and return its resolved path once it passes check_folder."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    resolved = folder.resolve()
    check_folder(resolved)
    return resolved


# ---------------------------------------------------------------------------------------------------------------
# the cache key and the record beside each library


def find_compiler() -> str | None:
    """$CC, else cc, gcc or clang on PATH; None if there is none."""
    cc = os.environ.get("CC", "cc")
    return shutil.which(cc) or shutil.which("gcc") or shutil.which("clang")


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU's model and feature flags, the machine and the system."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features", "model name")):
                cpu += line
                if cpu.count("\n") > 4:
                    break
                cpu += "\n"
    except OSError:
        pass
    return f"{cpu}|{platform.machine()}|{platform.system()}|{platform.processor()}"


def cache_key() -> str:
    """Sources, build plans, interface version and CPU; not the compiler (a cached library must be found where no
    compiler is installed; the record names the compiler that built it)."""
    h = hashlib.sha256()
    for src in SOURCES:
        h.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    h.update(repr(BUILD_PLANS).encode() + _cpu_identity().encode())
    return h.hexdigest()[:16]


def _suffix() -> str:
    return ".dll" if platform.system() == "Windows" else ".so"


def record_path(folder: Path, key: str) -> Path:
    return folder / f"recurrences-{key}.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified_library(folder: Path, key: str) -> tuple[Path, dict]:
    """The cached library for `key` in `folder` and its record, after every check (module docstring). Raises
    FileNotFoundError when there is none, DamagedLibrary or UntrustedPath when it fails a check."""
    rec_path = record_path(folder, key)
    if not os.path.lexists(rec_path):
        raise FileNotFoundError(rec_path)
    st = check_file(rec_path)
    if st.st_size > MAX_RECORD_BYTES:
        raise DamagedLibrary(f"{rec_path} is not a record")
    try:
        record = json.loads(rec_path.read_bytes())
        name, digest, size = record["library"], record["sha256"], record["size"]
        valid = (record.get("format") == RECORD_FORMAT and isinstance(name, str) and isinstance(digest, str)
                 and isinstance(size, int) and name == Path(name).name and name.startswith(f"recurrences-{key}-"))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        valid = False
    if not valid:
        raise DamagedLibrary(f"{rec_path} is not a valid record")
    lib = folder / name
    if not os.path.lexists(lib):
        raise DamagedLibrary(f"{lib} is missing")
    st = check_file(lib)
    if st.st_size != size:
        raise DamagedLibrary(f"{lib} has {st.st_size} bytes, its record says {size} (truncated or replaced)")
    if _sha256(lib) != digest:
        raise DamagedLibrary(f"{lib} does not match its recorded SHA-256 (damaged or changed)")
    return lib, record


# ---------------------------------------------------------------------------------------------------------------
# building


def _compiler_identity(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    return f"{cc}: {out.strip().splitlines()[0] if out.strip() else '?'}"


def _write_durably(path: Path, data: bytes | None = None, mode: int = 0o644) -> None:
    """Give `path` its mode, write `data` to it if given, and sync it to disk."""
    fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_TRUNC if data is not None else 0), mode)
    try:
        if data is not None:
            os.write(fd, data)
        os.fchmod(fd, mode) if hasattr(os, "fchmod") else None
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def build(cc: str, folder: Path, key: str) -> tuple[Path, dict]:
    """Compile the sources into `folder` (a checked folder): the library under its content-hash name, then the
    record, each written to a temporary file, synced and renamed into place (concurrent builds are safe: each
    renames a complete file)."""
    errors = []
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp:
        out = Path(tmp) / f"lib{_suffix()}"
        for flags, libs in BUILD_PLANS:
            objects = [Path(tmp) / f"{src.stem}.o" for src in C_SOURCES]
            procs = [subprocess.run([cc, *flags, "-fPIC", "-I", str(HERE), "-c", str(src), "-o", str(obj)],
                                    capture_output=True, text=True, timeout=300)
                     for src, obj in zip(C_SOURCES, objects)]
            failed = [p for p in procs if p.returncode != 0]
            if not failed:
                proc = subprocess.run([cc, "-shared", *map(str, objects), "-o", str(out), *libs],
                                      capture_output=True, text=True, timeout=300)
                if proc.returncode == 0:
                    break
                failed = [proc]
            errors.append((failed[0].stderr.strip().splitlines() or ["?"])[-1])
        else:
            raise RuntimeError(f"compilation failed: {errors[-1]}")
        _write_durably(out, mode=0o755)
        digest, size = _sha256(out), out.stat().st_size
        lib = folder / f"recurrences-{key}-{digest[:16]}{_suffix()}"
        os.replace(out, lib)
        record = {"format": RECORD_FORMAT, "library": lib.name, "sha256": digest, "size": size,
                  "compiler": _compiler_identity(cc), "flags": flags, "libs": libs,
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        tmp_record = Path(tmp) / "record.json"
        _write_durably(tmp_record, json.dumps(record, indent=1).encode())
        os.replace(tmp_record, record_path(folder, key))
    _sync_folder(folder)
    return lib, record


# ---------------------------------------------------------------------------------------------------------------
# loading


@dataclass
class Library:
    """A loaded library: its functions (ctypes, argtypes set from the header) and how it came to be loaded."""

    cdll: ctypes.CDLL
    interface: Interface
    path: Path
    record: dict
    built: bool  # True if this process compiled it, False if it came verified from the cache
    functions: dict[tuple[str, str], tuple[Callable, Function]] = field(default_factory=dict)

    @property
    def compiler(self) -> str:
        """The compiler that built the library (from its record)."""
        return self.record.get("compiler", "?")


def _open(path: Path, record: dict, built: bool, interface: Interface) -> Library:
    cdll = ctypes.CDLL(str(path))
    cdll.xlstmkit_native_abi.restype = ctypes.c_int
    cdll.xlstmkit_native_abi.argtypes = []
    if cdll.xlstmkit_native_abi() != interface.abi:
        raise DamagedLibrary(f"{path} reports interface version {cdll.xlstmkit_native_abi()}, "
                             f"{HEADER.name} declares {interface.abi}")
    lib = Library(cdll, interface, path, record, built)
    for fn in interface.functions.values():
        for suffix in ("f32", "f64"):
            c_fn = getattr(cdll, f"{fn.name}_{suffix}")
            c_fn.argtypes = fn.argtypes()
            c_fn.restype = None
            lib.functions[(fn.name, suffix)] = (c_fn, fn)
    return lib


def load(warn: Callable[[str], None] | None = None) -> Library:
    """The library for these sources on this CPU: from the first usable folder (the cache folder, else a private
    temporary one), verified, or built there if it is missing or fails a check. `warn` receives the one-line notice
    of a rebuild. Raises RuntimeError naming every problem when neither folder gives a library; the caller falls
    back to the PyTorch ops."""
    warn = warn or (lambda msg: warnings.warn(msg, RuntimeWarning, stacklevel=4))
    interface = read_interface()
    key = cache_key()
    cc = find_compiler()
    problems = []
    for candidate in (cache_dir(), private_temp_dir()):
        try:
            folder = prepare_folder(candidate)
        except OSError as exc:  # cannot be created, or not private (UntrustedPath)
            problems.append(str(exc) if isinstance(exc, UntrustedPath) else f"{candidate}: {exc.strerror or exc}")
            continue
        try:
            path, record = verified_library(folder, key)
            return _open(path, record, False, interface)
        except FileNotFoundError:
            pass
        except (DamagedLibrary, UntrustedPath, OSError) as exc:
            if cc is None:
                problems.append(f"cached library failed its check ({exc})")
                continue
            warn(f"xlstmkit: cached native library failed its check ({exc}); rebuilding it")
        if cc is None:
            continue
        try:
            path, record = build(cc, folder, key)
        except OSError as exc:  # this folder cannot be written: try the next one
            problems.append(f"{folder}: {exc.strerror or exc}")
            continue
        return _open(path, record, True, interface)
    if cc is None:
        problems.append("no C compiler found (set CC, or install gcc or clang)")
    raise RuntimeError("; ".join(problems))


__all__ = ["Array", "DamagedLibrary", "Function", "Interface", "Library", "UntrustedPath", "build", "cache_dir",
           "cache_key", "check_file", "check_folder", "find_compiler", "load", "read_interface", "verified_library"]

"""What every command shares: a parser whose errors are one line, flags built from config dataclass fields, the
engine flags (`--device`, `--dtype`, `--threads`: one meaning and one default everywhere), argument checks, and the
one-line description of an error.

Flags from fields (litgpt-style): each field of a config dataclass carries its help text in
`dataclasses.field(metadata={"help": ...})`; `add_field_flags` makes `--field-name` from it with the field's type,
choices and default (shown in the help), so a command never restates a config's fields or their defaults. The flags
default to None ("not given"), so the config's own default, a preset or a YAML file decide unless the user does.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import math
from typing import Any, Callable

# -- parser --------------------------------------------------------------------------------------------------------------


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2), like every other error of the command line."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- flags from dataclass fields --------------------------------------------------------------------------------------

def _type_of(annotation: str) -> str:
    """'int | None' -> 'int'; 'tuple[int, int] | None' -> 'tuple'."""
    parts = [p.strip() for p in str(annotation).split("|") if p.strip() != "None"]
    return parts[0].split("[")[0] if parts else "str"


def _converter(kind: str) -> Callable[[str], Any]:
    if kind == "int":
        return int
    if kind == "float":
        return float
    return str


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def add_field_flags(group, cls: type, *, skip: tuple[str, ...] = (), parsers: dict[str, Callable] | None = None,
                    only: tuple[str, ...] | None = None) -> list[str]:
    """One flag per field of the dataclass `cls` (not those in `skip`, nor those with `metadata["flag"] is False`);
    returns the field names. `parsers` maps a field's `metadata["type"]` to a converter."""
    names = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.name in skip or meta.get("flag", True) is False or (only is not None and f.name not in only):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = field_default(f)
        shown = "none" if default is None else default
        help_text = f"{meta.get('help', '')} (default: {shown})".replace("%", "%%")
        kind = meta.get("type") or _type_of(f.type)
        if kind == "bool":
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        else:
            convert = (parsers or {}).get(kind) or _converter(kind)
            group.add_argument(flag, dest=f.name, type=convert, default=None, choices=meta.get("choices"),
                               metavar=meta.get("metavar") or (None if meta.get("choices") else kind.upper()),
                               help=help_text)
        names.append(f.name)
    return names


def given(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The field flags the user gave (not None)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


# -- the engine flags: one meaning, one default, on every command -------------------------------------------------------

ENGINE_FIELDS = ("device", "dtype", "threads")


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """--device, --dtype, --threads with the help and defaults of the training config's fields."""
    from ..train.config import TrainConfig

    group = parser.add_argument_group("engine")
    add_field_flags(group, TrainConfig, only=ENGINE_FIELDS)


def add_weights_flag(parser: argparse.ArgumentParser, use: str) -> None:
    """--weights float32|bf16|int8: the storage of the loaded weights (xlstmkit.quantize); states stay float32."""
    from ..quantize import WEIGHT_DTYPES

    parser.add_argument("--weights", default="float32", choices=WEIGHT_DTYPES,
                        help=f"weight storage {use}: float32 (as trained), bf16 or int8 (weight-only, per-channel "
                             "scales); states stay float32 (default float32)")


def apply_weights(model, weights: str):
    """The model with its weights stored as --weights asks (in place; float32 leaves it as loaded)."""
    if weights != "float32":
        from ..quantize import quantize_

        quantize_(model, weights)
    return model


def engine(args: argparse.Namespace):
    """(torch.device, dtype name, threads) from the engine flags, validated; sets torch's thread count and returns
    the previous one last."""
    from ..train.config import TrainConfig
    from ..train.distributed import pick_device, set_threads

    defaults = TrainConfig()
    device = defaults.device if getattr(args, "device", None) is None else args.device
    dtype = defaults.dtype if getattr(args, "dtype", None) is None else args.dtype
    threads = getattr(args, "threads", None)
    positive("--threads", threads)
    dev = pick_device(device)
    previous = set_threads(threads)
    return dev, dtype, previous


# -- checks --------------------------------------------------------------------------------------------------------------

def positive(flag: str, value: Any, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < (0 if allow_zero else 1):
        raise ValueError(f"{flag} must be {'>= 0' if allow_zero else 'a positive integer'}, got {value}")


def finite(flag: str, value: float | None, low: float | None = None, high: float | None = None,
           low_open: bool = False) -> None:
    if value is None:
        return
    bad = not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low)) or (
        high is not None and value > high)
    if bad:
        span = f"{'(' if low_open else '['}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ValueError(f"{flag} must be a finite number in {span}, got {value}")


# -- errors as one line --------------------------------------------------------------------------------------------------

_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere (e.g. --out)",
    errno.EACCES: "permission denied: write elsewhere (e.g. --out) or fix the permissions",
    errno.EPERM: "not permitted: write elsewhere (e.g. --out) or fix the permissions",
    errno.ENOENT: "no such file or folder: check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "a folder where a file was expected: check the path",
    errno.EDQUOT: "disk quota exceeded: free some space or write elsewhere",
}


def describe(exc: BaseException) -> str:
    """One line for the user: what went wrong, where (the file or flag) and, where known, the fix."""
    if isinstance(exc, OSError) and exc.errno in _OS_HINTS:
        where = exc.filename if exc.filename is not None else ""
        return f"{where}: {_OS_HINTS[exc.errno]}" if where else _OS_HINTS[exc.errno]
    if isinstance(exc, KeyError):
        return f"missing entry {exc.args[0]!r} (a file lacks a key it needs: is it damaged or from another tool?)"
    if isinstance(exc, MemoryError):
        return "out of memory (a damaged file may claim a huge size; or use a smaller model, batch or --seq-len)"
    lines = [line.strip().removeprefix("- ") for line in str(exc).strip().splitlines() if line.strip()]
    text = "; ".join(lines) if lines else type(exc).__name__
    if type(exc).__name__ in ("SafetensorError", "JSONDecodeError", "YAMLError", "ScannerError", "ParserError",
                              "RuntimeError", "AttributeError", "TypeError", "OSError", "UnicodeDecodeError"):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 600 else text[:597] + "..."

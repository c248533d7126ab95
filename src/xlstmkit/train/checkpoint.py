"""Checkpoints that lose nothing: atomic files, a manifest with checksums, keep-last-K, verified loading.

A checkpoint is a folder `checkpoints/step_XXXXXXXX/` in the run folder holding
  model.safetensors      the parameters (and buffers)
  optimizer.safetensors  the optimiser's state tensors, keyed "<parameter name>::<state name>"
  rng.safetensors        the torch random generator states (CPU, and CUDA when present)
  state.json             everything else as JSON: step, tokens seen, scheduler and optimiser hyper-parameters,
                         Python RNG state, training time so far
  MANIFEST.json          size and SHA-256 of each file above; written last
The folder is assembled under a temporary name, every file fsync'ed, and renamed into place in one step, so a
checkpoint either exists complete or not at all, whatever moment the process is killed. Loading verifies the manifest
and names the first bad file in a one-line `CheckpointError`; resuming then falls back to the previous good one.
Nothing is ever unpickled: tensors are safetensors, the rest is JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

CHECKPOINT_DIR = "checkpoints"
MANIFEST = "MANIFEST.json"
FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")
_STEP_DIR = re.compile(r"^step_(\d{8})$")
_SEP = "::"


class CheckpointError(ValueError):
    """A checkpoint or weights file is missing, truncated or corrupt; the message is one line naming the file."""


# -- atomic file writing ---------------------------------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_fsync(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the complete new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _write_fsync(tmp, data)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def save_weights(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors as a safetensors file, atomically (contiguous CPU copies; shared storage is fine)."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a one-line CheckpointError naming the file if it is missing or corrupt."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"weights file {path} is missing") from None
    try:
        return st_load(data)
    except Exception as exc:  # safetensors raises its own error types for bad headers / truncation
        raise CheckpointError(f"weights file {path} is truncated or corrupt ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# -- optimiser and RNG state <-> tensors + JSON ---------------------------------------------------------------------

def flatten_optimizer_state(osd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state dict keyed by parameter name (torch.distributed.checkpoint's full form) -> (tensors, JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pname, pstate in osd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pname}{_SEP}{key}"] = value
            else:
                scalars.setdefault(pname, {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in osd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        pname, _, name = key.rpartition(_SEP)
        state.setdefault(pname, {})[name] = value
    for pname, extra in meta.get("scalars", {}).items():
        state.setdefault(pname, {}).update(extra)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The torch (CPU, CUDA) and Python random states: (tensors, JSON)."""
    import random

    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    version, internal, gauss = random.getstate()
    return tensors, {"python": [version, list(internal), gauss]}


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    import random

    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    if "python" in meta:
        version, internal, gauss = meta["python"]
        random.setstate((version, tuple(internal), gauss))


# -- checkpoint folders ---------------------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """A loaded, verified checkpoint."""

    path: Path
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]       # the full optimizer state dict keyed by parameter name
    rng: dict[str, torch.Tensor]
    state: dict[str, Any]           # state.json


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint folder (complete or not), oldest first; temporary folders are ignored."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(run_dir: str | Path, step: int, model_state: dict[str, torch.Tensor],
                    optimizer_state: dict[str, Any], state: dict[str, Any], keep_last: int = 3) -> Path:
    """Write checkpoint `step` atomically (temporary folder, fsync, rename) and keep only the newest `keep_last`."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    opt_tensors, opt_meta = flatten_optimizer_state(optimizer_state)
    rng_tensors, rng_meta = rng_state()
    payloads = {
        "model.safetensors": st_save({k: v.detach().cpu().contiguous().clone() for k, v in model_state.items()},
                                     metadata={"step": str(step)}),
        "optimizer.safetensors": st_save({k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()}),
        "rng.safetensors": st_save(rng_tensors),
        "state.json": json.dumps({**state, "step": step, "optimizer": opt_meta, "rng": rng_meta}).encode("utf-8"),
    }
    manifest = {"step": step, "files": {}}
    for name in FILES:  # each file complete and on disk before the manifest that vouches for it
        _write_fsync(tmp / name, payloads[name])
        manifest["files"][name] = {"bytes": len(payloads[name]), "sha256": hashlib.sha256(payloads[name]).hexdigest()}
    _write_fsync(tmp / MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))
    _fsync_dir(tmp)
    if final.exists():  # re-saving a step (e.g. after a resume that fell back past a corrupt one)
        trash = root / f".old-{final.name}-{os.getpid()}"
        os.replace(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(tmp, final)
    _fsync_dir(root)
    prune_checkpoints(run_dir, keep_last)
    return final


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints, and leftovers of interrupted writes."""
    ckpts = list_checkpoints(run_dir)
    for _, path in ckpts[: max(0, len(ckpts) - keep_last)]:
        shutil.rmtree(path, ignore_errors=True)
    root = checkpoint_dir(run_dir)
    for pattern in (".tmp-step_*", ".old-step_*"):  # folders of writes that were interrupted (this is not one)
        for p in root.glob(pattern):
            shutil.rmtree(p, ignore_errors=True)


def _read_verified(folder: Path, name: str, entry: dict[str, Any]) -> bytes:
    path = folder / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing") from None
    if len(data) != entry["bytes"]:
        raise CheckpointError(f"checkpoint file {path} is truncated or corrupt: {len(data)} bytes, "
                              f"the manifest says {entry['bytes']}")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CheckpointError(f"checkpoint file {path} is corrupt: its SHA-256 does not match the manifest")
    return data


def load_checkpoint(folder: str | Path) -> Checkpoint:
    """Load and verify one checkpoint folder; CheckpointError (one line, naming the bad file) if it is not intact."""
    folder = Path(folder)
    mpath = folder / MANIFEST
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        entries = manifest["files"]
        if set(entries) != set(FILES):
            raise KeyError("files")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {folder} is incomplete: {mpath.name} is missing") from None
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"checkpoint file {mpath} is corrupt") from None
    data = {name: _read_verified(folder, name, entries[name]) for name in FILES}
    try:
        model = st_load(data["model.safetensors"])
        opt_tensors = st_load(data["optimizer.safetensors"])
        rng = st_load(data["rng.safetensors"])
        state = json.loads(data["state.json"])
    except Exception as exc:
        raise CheckpointError(f"checkpoint {folder} is unreadable ({_one_line(exc)})") from None
    try:
        return Checkpoint(path=folder, step=int(state["step"]), model=model,
                          optimizer=unflatten_optimizer_state(opt_tensors, state.pop("optimizer")),
                          rng=rng, state=state)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {folder} is unreadable ({_one_line(exc)})") from None


def load_latest_checkpoint(run_dir: str | Path, warn=None, check=None) -> Checkpoint | None:
    """The newest intact checkpoint of a run, falling back past broken ones (each reported through `warn`, one line
    per checkpoint); None if the run has no checkpoint folders at all; CheckpointError if none is intact.

    `check(ckpt)` may raise CheckpointError for a checkpoint that is intact but unusable (weights that do not fit
    the model of the run's config): it is passed over like a corrupt one.
    """
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        return None
    errors = []
    for _, folder in reversed(ckpts):
        try:
            ckpt = load_checkpoint(folder)
            if check is not None:
                check(ckpt)
        except CheckpointError as exc:
            errors.append(str(exc))
            if warn is not None:
                warn(f"{exc}; falling back to the previous checkpoint")
            continue
        return ckpt
    raise CheckpointError(f"no intact checkpoint in {checkpoint_dir(run_dir)} ({len(errors)} broken: "
                          f"{'; '.join(errors)})")

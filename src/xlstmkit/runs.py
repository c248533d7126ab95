"""Run folders: create, lock, load, list, latest. Every command that reads or writes a run folder goes through here.

    runs/<name>/
      .lock                 the run's lock (see `RunLock`): one writer at a time; holds the writer's pid and host
      config.json           run config (model + training), tokenizer kind and vocabulary size, corpus description
      tokenizer.json        the tokenizer, with tokenizer_config.json: the files `transformers.AutoTokenizer` loads
                            (byte runs get a byte-level tokenizer.json whose ids are the bytes; xlstmkit itself reads
                            the tokenizer kind from config.json)
      unigram.safetensors   token counts of the training text (the unigram baseline)
      model.safetensors     the final weights (written at the end of training)
      checkpoints/step_*/   resumable checkpoints (see `xlstmkit.train.checkpoint`)
      metrics.csv, loss_curve.png, results.json, eval.json, events.out.tfevents.* (with --logger tensorboard)

Every file in it is replaced atomically (temporary file, fsync, rename), so a reader never sees half a file and a
kill at any moment leaves each file old or new. The lock file is the one exception: it is never replaced, because
the lock lives on its inode.

A model can also be read from a Hugging Face folder (config.json with `model_type`, safetensors weights,
tokenizer.json): transformers' xLSTM layout (model_type "xlstm", e.g. NX-AI/xLSTM-7b) or xlstmkit's own (model_type
"xlstmkit", written by `xlstmkit export` and `save_pretrained`); `load_model` accepts all of them.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .data.tokenizer import TOKENIZER_FILE, Tokenizer, load_hf_tokenizer, load_tokenizer
from .train.build import build_model
from .train.checkpoint import CheckpointError, load_latest_checkpoint, load_weights
from .train.config import RunConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
UNIGRAM_FILE = "unigram.safetensors"
METRICS_FILE = "metrics.csv"
RESULTS_FILE = "results.json"
EVAL_FILE = "eval.json"
LOSS_PLOT = "loss_curve.png"
LOCK_FILE = ".lock"
DEFAULT_ROOT = "runs"

Warn = Callable[[str], None]


# -- the lock ----------------------------------------------------------------------------------------------------------

class RunLockedError(RuntimeError):
    """Another live process holds the run folder's lock; the message names it (pid, host, command)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


class RunLock:
    """An exclusive lock on a run folder, held from `acquire` to `release` (or as a context manager).

    `fcntl.flock` on `<run>/.lock`: the kernel releases it when the holder exits, however it exits (SIGKILL
    included), so a lock left by a dead process is simply taken over. The holder writes its pid, host and command
    into the file, so a second writer can say who holds it. (On platforms without `fcntl`, and on file systems
    without flock support, no lock is taken.)
    """

    def __init__(self, run_dir: str | Path, command: str = "xlstmkit") -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.command = command
        self._fd: int | None = None

    def holder(self) -> dict[str, Any]:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            return info if isinstance(info, dict) else {}
        except (OSError, ValueError):
            return {}

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLockedError(self._busy_message()) from None
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                return self  # the file system has no locks: go on without one
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        self._fd = fd
        for leftover in self.run_dir.glob(".*.tmp-*"):  # temporary files of writes a kill interrupted (ours now)
            try:
                leftover.unlink()
            except OSError:
                pass
        return self

    def _busy_message(self) -> str:
        info = self.holder()
        pid, host = info.get("pid"), info.get("host", "?")
        who = f"process {pid} on {host}" if pid else "another process"
        if info.get("command"):
            who += f" ({info['command']}, since {info.get('since', '?')})"
        if pid and host == socket.gethostname() and not _pid_alive(int(pid)):
            who += " which has exited: a child process it started still holds the lock; stop that child"
        return f"run folder {self.run_dir} is in use by {who}: wait for it to finish, or use another folder"

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# -- creating and finding run folders ---------------------------------------------------------------------------------

def prepare_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create a folder to write into (with its parents) and check that it is one and writable; one-line errors that
    name the flag."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a folder: choose a folder name")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot create the folder ({exc.strerror}): choose a writable "
                         f"location") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: the folder is not writable: choose a writable location")
    return path


def check_writable_file(path: str | Path, flag: str) -> Path:
    """Fail now (not after hours of work) if a result file could not be written: its folder must exist (or be
    creatable) and be writable, and the path must not be a folder."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder: give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        prepare_dir(parent, flag)
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: the folder {parent} is not writable: choose another path")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path}: the file is not writable: choose another path")
    return path


def default_run_dir(root: str | Path = DEFAULT_ROOT) -> Path:
    """runs/<YYYYmmdd-HHMMSS> (with a suffix if that exists already)."""
    base = Path(root) / time.strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def is_run_dir(path: str | Path) -> bool:
    """A folder written by `xlstmkit train` (its config.json has a "train" section)."""
    config = _read_json(Path(path) / CONFIG_FILE)
    return isinstance(config, dict) and "train" in config and "model" in config


def is_hf_dir(path: str | Path) -> bool:
    """A Hugging Face xLSTM folder: config.json with a model_type and without xlstmkit's "train" section."""
    config = _read_json(Path(path) / CONFIG_FILE)
    return isinstance(config, dict) and "train" not in config and "model_type" in config


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class RunInfo:
    path: Path
    modified: float
    finished: bool     # has its final weights
    step: int | None   # newest checkpoint step, if any


def list_runs(root: str | Path = DEFAULT_ROOT) -> list[RunInfo]:
    """The run folders under `root`, oldest first (by the time their config.json was written)."""
    from .train.checkpoint import list_checkpoints

    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and (p / CONFIG_FILE).is_file():
            ckpts = list_checkpoints(p)
            found.append(RunInfo(path=p, modified=(p / CONFIG_FILE).stat().st_mtime,
                                 finished=(p / WEIGHTS_FILE).is_file(), step=ckpts[-1][0] if ckpts else None))
    return sorted(found, key=lambda r: r.modified)


def latest_run_dir(root: str | Path = DEFAULT_ROOT) -> Path | None:
    """The most recently modified run folder under `root` that has a config.json."""
    runs = list_runs(root)
    return runs[-1].path if runs else None


# -- loading models ----------------------------------------------------------------------------------------------------

def check_state_fits(model: nn.Module, state: dict[str, torch.Tensor], source: str, config_path: str) -> None:
    """CheckpointError (one line) unless `state` has exactly the model's tensors with the model's shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        detail = "; ".join(part for part in (
            f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
            (f"{shapes[0]} has shape {tuple(state[shapes[0]].shape)}, the model "
             f"{tuple(expected[shapes[0]].shape)}") if shapes else "") if part)
        raise CheckpointError(f"weights in {source} do not fit the model of {config_path} ({detail})")


@dataclass
class LoadedModel:
    """A model ready to use (eval mode) with its tokenizer; `run` is None for a Hugging Face folder."""

    model: nn.Module
    tokenizer: Tokenizer
    source: str                      # the weights file or checkpoint folder it came from
    kind: str                        # "run" | "hf"
    path: Path
    run: RunConfig | None = None
    extra: dict = field(default_factory=dict)


def load_run_weights(run_dir: Path, model: nn.Module, warn: Warn | None = None) -> str:
    """Load the newest good weights of a run into `model`: model.safetensors when it is intact and fits the config,
    else the newest intact, fitting checkpoint (a run stopped before it finished, or broken files); each file passed
    over is named in one line through `warn`. Returns the source."""
    config_path = str(run_dir / CONFIG_FILE)
    state, source = None, ""
    if (run_dir / WEIGHTS_FILE).is_file():
        try:
            state, source = load_weights(run_dir / WEIGHTS_FILE), str(run_dir / WEIGHTS_FILE)
            check_state_fits(model, state, source, config_path)
        except CheckpointError as exc:
            state = None
            if warn:
                warn(f"{exc}; using the newest intact checkpoint instead")
    if state is None:
        ckpt = load_latest_checkpoint(run_dir, warn=warn,
                                      check=lambda c: check_state_fits(model, c.model, str(c.path), config_path))
        if ckpt is None:
            raise CheckpointError(f"run folder {run_dir} has no weights: neither {WEIGHTS_FILE} nor a checkpoint "
                                  f"(train it first: xlstmkit train --resume {run_dir})")
        state, source = ckpt.model, str(ckpt.path)
    model.load_state_dict(state)
    return source


def load_hf_model(path: str | Path, dtype: torch.dtype | None = None, mmap: bool = True) -> nn.Module:
    """`xlstmkit.interop.hf.load` (transformers' xLSTM layout) or `xlstmkit.interop.pretrained.load` (an xlstmkit
    folder), with every failure (malformed JSON, a damaged or hostile safetensors header, a config that disagrees
    with the weights) as one ValueError line naming the folder."""
    from .interop import hf, pretrained

    path = Path(path)
    if pretrained.is_xlstmkit_folder(path):
        return pretrained.load(path, dtype=dtype)  # its errors are one line naming the file already
    try:
        return hf.load(path, dtype=dtype, mmap=mmap)
    except FileNotFoundError:
        raise
    except hf.CheckpointError as exc:
        more = f" (and {len(exc.problems) - 1} more problems)" if len(exc.problems) > 1 else ""
        raise ValueError(f"{path} is not a usable Hugging Face xLSTM folder: {exc.problems[0]}{more}") from None
    except Exception as exc:  # JSONDecodeError, KeyError, AttributeError, MemoryError, SafetensorError, ...
        raise ValueError(f"{path} is not a readable Hugging Face xLSTM folder ({one_line(exc)}): check its "
                         f"config.json and safetensors files") from None


def load_model(path: str | Path, warn: Warn | None = None, flag: str = "--run") -> LoadedModel:
    """The model and tokenizer of a run folder (trained weights, see `load_run_weights`) or of a Hugging Face xLSTM
    folder, in eval mode on the CPU."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {path} not found" if not path.exists()
                                else f"{flag} {path} is a file, not a run folder")
    if is_hf_dir(path):
        model = load_hf_model(path)
        tokenizer = load_hf_tokenizer(path)
        return LoadedModel(model=model.eval(), tokenizer=tokenizer, source=str(path), kind="hf", path=path)
    run, extra = RunConfig.load(path / CONFIG_FILE)
    tok_info = extra.get("tokenizer") if isinstance(extra.get("tokenizer"), dict) else {}
    tokenizer = load_tokenizer(tok_info.get("kind", run.train.tokenizer), path)
    model_cfg = dict(run.model)
    model_cfg.setdefault("vocab_size", tokenizer.vocab_size)
    model = build_model(model_cfg)
    source = load_run_weights(path, model, warn)
    return LoadedModel(model=model.eval(), tokenizer=tokenizer, source=source, kind="run", path=path, run=run,
                       extra=extra)


def load_run(run_dir: str | Path, warn: Warn | None = None):
    """(run config, config.json extras, model with trained weights in eval mode, tokenizer, weights source) of a run
    folder written by `xlstmkit train`."""
    loaded = load_model(run_dir, warn)
    if loaded.run is None:
        raise ValueError(f"{run_dir} is a Hugging Face folder, not a run folder written by `xlstmkit train`")
    return loaded.run, loaded.extra, loaded.model, loaded.tokenizer, loaded.source


def load_unigram_counts(run_dir: str | Path) -> torch.Tensor | None:
    """(vocab,) float64 training-token counts saved by `xlstmkit train`, or None if missing/corrupt."""
    path = Path(run_dir) / UNIGRAM_FILE
    if not path.is_file():
        return None
    try:
        return load_weights(path)["counts"].double()
    except (CheckpointError, KeyError):
        return None


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` (or just the type)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def command_line() -> str:
    return " ".join(["xlstmkit", *sys.argv[1:]])[:200]


__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "UNIGRAM_FILE", "METRICS_FILE", "RESULTS_FILE", "EVAL_FILE", "LOSS_PLOT",
           "LOCK_FILE", "TOKENIZER_FILE", "RunLock", "RunLockedError", "prepare_dir", "check_writable_file",
           "default_run_dir", "latest_run_dir", "list_runs", "is_run_dir", "is_hf_dir", "load_model", "load_run",
           "load_run_weights", "load_hf_model", "load_unigram_counts", "check_state_fits", "LoadedModel", "RunInfo"]

"""Run configuration: the model fields (a dict for the model family's own config class) and a frozen, validated
`TrainConfig`, from a size preset, an optional YAML file, `--set key=value` pairs and explicit command-line flags.

Precedence, lowest first: preset < YAML file < --set < explicit flags (e.g. --lr). A bare key is looked up among the
training fields, then the model fields; `model.KEY` / `train.KEY` say which explicitly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import FrozenConfig

DTYPES = ("float32", "bfloat16")
# values a preset (or a YAML file / --set) may give instead of a number or dtype; resolved by `build_run_config`
AUTO_DTYPE = "auto"      # bfloat16 autocast where the device has bf16 arithmetic units, float32 elsewhere
ALL_CORES = "all"        # one torch thread per core this process may run on (split among torchrun processes)

# Size presets. "small" is the default of `xlstmkit train`: a byte-level xLSTM with one sLSTM block among mLSTM
# blocks (the paper's xLSTM[7:1] style scaled down to 4 blocks: xLSTM[3:1], the sLSTM block third), trained for at
# most 5 minutes. Its batch, context and learning rate are the best of a small timed sweep on a 2-core CPU
# (benchmarks/recipe_sweep.md: chosen on validation bits per byte); bf16 where the CPU has bf16 units; the threads
# are left to `auto_threads` (all cores but one: a second thread sharing a core with another program stalls both).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {  # seconds on a CPU: for tests and smoke runs
        "model": {"embedding_dim": 32, "num_blocks": 2, "slstm_at": [1], "mlstm_num_heads": 2, "slstm_num_heads": 2,
                  "chunk_size": 16, "round_up_to": 16},
        "train": {"batch_size": 4, "seq_len": 32, "max_steps": 20, "warmup_steps": 2, "lr": 3e-3,
                  "checkpoint_every": 10, "eval_every": 0, "eval_tokens": 2048, "final_eval_tokens": 4096,
                  "sample_tokens": 40, "time_budget": None},
    },
    "small": {  # the default: <= 5 minutes of training (~7-8k tokens/s, bf16, one thread of a busy 2-core machine)
        "model": {"embedding_dim": 128, "num_blocks": 4, "block_pattern": "xLSTM[3:1]", "mlstm_num_heads": 4,
                  "slstm_num_heads": 4, "chunk_size": 64},
        "train": {"batch_size": 16, "seq_len": 128, "max_steps": 1000, "warmup_steps": 40, "lr": 6e-3,
                  "checkpoint_every": 200, "eval_every": 200, "eval_tokens": 8192, "final_eval_tokens": 262144,
                  "sample_tokens": 300, "time_budget": 300.0, "dtype": AUTO_DTYPE},
    },
    "medium": {  # an hour-scale CPU run, or minutes on a GPU
        "model": {"embedding_dim": 256, "num_blocks": 8, "block_pattern": "xLSTM[7:1]", "mlstm_num_heads": 4,
                  "slstm_num_heads": 4, "chunk_size": 64},
        "train": {"batch_size": 32, "seq_len": 512, "max_steps": 5000, "warmup_steps": 200, "lr": 2e-3,
                  "checkpoint_every": 500, "eval_every": 500, "eval_tokens": 65536, "final_eval_tokens": 262144,
                  "sample_tokens": 400, "time_budget": None, "dtype": AUTO_DTYPE},
    },
}
DEFAULT_PRESET = "small"


def parse_duration(value: Any) -> float | None:
    """Seconds from 540, "540", "90s", "9m", "1.5h"; None/"none"/0 mean no limit."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(value).lower())
        if str(value).strip().lower() in ("none", "off", ""):
            return None
        if match is None:
            raise ValueError(f"time_budget must be seconds or a duration like '90s', '9m', '1.5h', got {value!r}")
        seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"time_budget must be >= 0 seconds, got {value!r}")
    return seconds or None


def _f(default: Any, help: str, **meta: Any) -> Any:
    """A config field with its command-line description kept next to it (`metadata["help"]`; `resumable`: may change
    when a run is resumed; `flag=False`: no command-line flag; `metavar`, `choices`, `type`: for the flag)."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class TrainConfig(FrozenConfig):
    """Everything about a training run except the model's architecture. Validated once, at construction.

    Each field carries its own help text: `xlstmkit train` builds one flag per field from it (`--max-steps`,
    `--lr`, ...), so the flags, their defaults and the config file cannot drift apart. Fields marked `resumable` set
    how long a run goes on and how it logs, not what it computes, and may change when the run is resumed.
    """

    # data
    data: str | None = _f(None, "a text file, a folder of text files, a .jsonl file (field text_field) or a Hugging "
                          "Face dataset name in the local cache; none = the Python standard library's source",
                          metavar="PATH")
    max_files: int | None = _f(None, "use only N files of the built-in corpus (quick runs)", metavar="N")
    val_fraction: float = _f(0.05, "fraction of the text held out for validation", metavar="F")
    text_field: str = _f("text", "JSONL / dataset field holding the text", metavar="NAME")
    tokenizer: str = _f("bytes", "bytes (vocabulary 256) or a byte-level BPE trained on the training text and saved "
                        "in the run folder", choices=("bytes", "bpe"))
    bpe_vocab_size: int = _f(4096, "BPE vocabulary size", metavar="N")
    init_from: str | None = _f(None, "start from the weights of this run folder or Hugging Face xLSTM folder "
                               "(fine-tuning: new optimiser, its tokenizer and architecture)", metavar="DIR")
    # batches and length of the run
    seed: int = _f(0, "random seed (model init, dropout and data order)")
    batch_size: int = _f(16, "sequences per optimiser step (over all processes and accumulation steps)", metavar="B")
    seq_len: int = _f(256, "training context length in tokens", metavar="T")
    grad_accum: int = _f(1, "split each step's batch into N accumulated parts", metavar="N")
    max_steps: int = _f(1000, "optimiser steps to run (the schedule's length unless lr_decay_steps is set)",
                        metavar="N", resumable=True)
    max_tokens: int | None = _f(None, "stop after N training tokens (lowers max_steps)", metavar="N", resumable=True)
    time_budget: float | None = _f(None, "stop after this much training time in this process, e.g. 600, 9m, 1h or "
                                   "'none'; then checkpoint, evaluate and stop", metavar="DURATION", type=str,
                                   resumable=True)
    # optimiser and schedule (paper: AdamW (0.9, 0.95), eps 1e-5, wd 0.1, warm-up then cosine to 10 % of peak)
    lr: float = _f(3e-3, "peak learning rate (linear warm-up, then cosine decay to min_lr_ratio of it)")
    min_lr_ratio: float = _f(0.1, "final learning rate as a fraction of the peak", metavar="F")
    warmup_steps: int = _f(50, "linear warm-up steps", metavar="N")
    lr_decay_steps: int | None = _f(None, "steps of the cosine decay (default: max_steps)", metavar="N")
    weight_decay: float = _f(0.1, "AdamW weight decay of the matrices (not norms, biases, embeddings)", metavar="W")
    beta1: float = _f(0.9, "AdamW beta1", metavar="B")
    beta2: float = _f(0.95, "AdamW beta2", metavar="B")
    adam_eps: float = _f(1e-5, "AdamW epsilon", metavar="EPS")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 = no clipping)", metavar="NORM")
    # numerics and engine
    dtype: str = _f("float32", "autocast dtype: float32 (off) or bfloat16 (weights and optimiser stay float32)",
                    choices=("float32", "bfloat16"), resumable=False)
    compile: bool = _f(False, "torch.compile the model", resumable=True)
    device: str = _f("auto", "auto (CUDA when available), cpu, cuda, cuda:N or mps", metavar="DEVICE",
                     resumable=True)
    threads: int | None = _f(None, "CPU threads per process (default: all cores but one, shared among processes; "
                             "OMP_NUM_THREADS is respected)", metavar="N", resumable=True)
    fsdp: bool = _f(False, "shard the model with FSDP under torchrun")
    # checkpoints, evaluation, logging
    checkpoint_every: int = _f(100, "checkpoint every N steps (0 = only at the end)", metavar="N", resumable=True)
    keep_last: int = _f(3, "keep the newest K checkpoints", metavar="K", resumable=True)
    eval_every: int = _f(250, "validate every N steps (0 = only at the end)", metavar="N", resumable=True)
    eval_tokens: int = _f(16384, "validation tokens per periodic evaluation", metavar="N", resumable=True)
    final_eval_tokens: int = _f(65536, "validation tokens of the final evaluation", metavar="N", resumable=True)
    log_every: int = _f(0, "without a terminal: print a progress line every N steps (0 = about 20 lines per run)",
                        metavar="N", resumable=True)
    logger: str = _f("csv", "where metrics go besides metrics.csv: csv (nothing else), tensorboard or wandb "
                     "(offline unless WANDB_MODE / WANDB_API_KEY say otherwise)",
                     choices=("csv", "tensorboard", "wandb"), resumable=True)
    sample_tokens: int = _f(300, "tokens sampled at the end of training (0 = no sample)", metavar="N", resumable=True)
    sample_prompt: str = _f("def ", "prompt of the final sample", metavar="TEXT", resumable=True)
    sample_temperature: float = _f(0.8, "temperature of the final sample (0 = greedy)", metavar="T", resumable=True)
    sample_top_k: int | None = _f(40, "top-k of the final sample", metavar="K", resumable=True)

    def __post_init__(self) -> None:
        ints_pos = ("bpe_vocab_size", "batch_size", "seq_len", "grad_accum", "max_steps", "keep_last",
                    "eval_tokens", "final_eval_tokens")
        for name in ints_pos:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        ints_nonneg = ("seed", "warmup_steps", "checkpoint_every", "eval_every", "sample_tokens", "log_every")
        for name in ints_nonneg:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        for name in ("max_files", "max_tokens", "lr_decay_steps", "sample_top_k", "threads"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name} must be a positive integer or null, got {v!r}")
        object.__setattr__(self, "time_budget", parse_duration(self.time_budget))
        floats = {"lr": (0.0, None), "min_lr_ratio": (0.0, 1.0), "weight_decay": (0.0, None),
                  "beta1": (0.0, 1.0), "beta2": (0.0, 1.0), "adam_eps": (0.0, None), "grad_clip": (0.0, None),
                  "val_fraction": (0.0, 1.0), "sample_temperature": (0.0, None)}
        for name, (lo, hi) in floats.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
            if v < lo or (hi is not None and v > hi) or (name in ("lr", "adam_eps") and v == 0):
                raise ValueError(f"{name} must be in [{lo}, {hi if hi is not None else 'inf'}]"
                                 f"{' and > 0' if name in ('lr', 'adam_eps') else ''}, got {v!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        for name in ("tokenizer", "dtype", "logger"):
            allowed = _choices(name)
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        check_device(self.device)
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size ({self.batch_size}) must be divisible by grad_accum ({self.grad_accum})")
        for name in ("compile", "fsdp"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("data", "init_from", "text_field", "sample_prompt"):
            v = getattr(self, name)
            if (v is not None or name in ("text_field", "sample_prompt")) and not isinstance(v, str):
                raise ValueError(f"{name} must be a string, got {v!r}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def total_steps(self) -> int:
        """The step the run ends at: max_steps, lowered by max_tokens when given."""
        if self.max_tokens is None:
            return self.max_steps
        return max(1, min(self.max_steps, math.ceil(self.max_tokens / self.tokens_per_step)))

    @property
    def decay_steps(self) -> int:
        """The schedule's horizon: the step at which the cosine decay reaches min_lr_ratio."""
        return self.lr_decay_steps or self.total_steps

    @property
    def optim(self):
        """The optimiser and schedule settings (`xlstmkit.train.optim.OptimSpec`)."""
        from .optim import OptimSpec

        return OptimSpec(lr=self.lr, weight_decay=self.weight_decay, betas=(self.beta1, self.beta2),
                         eps=self.adam_eps, warmup_steps=self.warmup_steps, decay_steps=self.decay_steps,
                         min_lr_ratio=self.min_lr_ratio, grad_clip=self.grad_clip)


def _choices(name: str) -> tuple[str, ...]:
    return next(f.metadata["choices"] for f in dataclasses.fields(TrainConfig) if f.name == name)


def check_device(device: Any) -> str:
    """'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' (whether it is available is checked when it is used)."""
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    return device


@functools.lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic units (x86: AVX512-BF16 or AMX-BF16; Arm: the BF16 extension).

    Without them PyTorch still runs bf16 autocast, by converting to float32 and back around each operation, which is
    slower than plain float32: so the default uses bf16 only where this says yes. Asked from PyTorch when it can tell
    (x86), else read from the kernel's CPU flags (/proc/cpuinfo on Linux); no answer means no."""
    import torch

    try:
        if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
            return True
    except (AttributeError, RuntimeError):
        pass
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


CPUINFO = "/proc/cpuinfo"


def cpu_flags(path: str | None = None) -> set[str]:
    """The CPU feature flags the kernel lists (x86 "flags", Arm "Features"); empty where there is no such file."""
    flags: set[str] = set()
    try:
        with open(path or CPUINFO, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    flags.update(value.split())
    except OSError:
        pass
    return flags


def bf16_fast(device: str = "auto") -> bool:
    """Whether bf16 autocast is faster than float32 on `device` ("auto", "cpu", "cuda[:N]", "mps"): on a CUDA GPU
    that supports bf16 (Ampere or newer), on a CPU with bf16 units (`cpu_has_bf16`); not on MPS."""
    import torch

    check_device(device)
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device == "mps":
        return False
    return cpu_has_bf16()


def resolve_dtype(dtype: str, device: str = "auto") -> str:
    """"auto" -> "bfloat16" where `bf16_fast(device)`, else "float32"; any other value unchanged."""
    if dtype == AUTO_DTYPE:
        return "bfloat16" if bf16_fast(device) else "float32"
    return dtype


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_threads(threads: Any) -> int | None:
    """"all" -> one thread per available core, split among the processes of a torchrun job, unless OMP_NUM_THREADS
    says otherwise (then None: the environment decides); any other value unchanged."""
    if threads != ALL_CORES:
        return threads
    if "OMP_NUM_THREADS" in os.environ:
        return None
    world = max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    return max(1, available_cores() // world)


TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
# fields that may change when a run is resumed (they set how long it runs and how it logs, not what it computes)
RESUMABLE_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("resumable"))


def model_fields(family: str = "xlstm") -> frozenset[str]:
    """The field names of a model family's config (for resolving bare `--set` keys)."""
    from .build import model_config_class

    return frozenset(f.name for f in dataclasses.fields(model_config_class(family))) | {"family"}


@dataclass(frozen=True)
class RunConfig:
    """A whole run: the model config as a dict (validated by the family's config class when the model is built;
    `vocab_size` is set from the tokenizer) and the training config."""

    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "model": dict(self.model), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        if not isinstance(d, dict) or not isinstance(d.get("model"), dict) or not isinstance(d.get("train"), dict):
            raise ValueError("a run config needs 'model' and 'train' sections (mappings)")
        return cls(model=dict(d["model"]), train=TrainConfig.from_dict(d["train"]), preset=d.get("preset"))

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        from .checkpoint import atomic_write_bytes

        payload = {**self.to_dict(), **(extra or {})}
        atomic_write_bytes(Path(path), (json.dumps(payload, indent=2) + "\n").encode("utf-8"))

    @classmethod
    def load(cls, path: str | Path) -> tuple[RunConfig, dict[str, Any]]:
        """The run config in a config.json and the file's other entries (e.g. the tokenizer)."""
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} not found: is this a run folder written by `xlstmkit train`?") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is corrupt: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path} is corrupt: not UTF-8 text") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path} is not a run config (a JSON object with 'model' and 'train')")
        extra = {k: v for k, v in d.items() if k not in ("model", "train", "preset")}
        try:
            return cls.from_dict(d), extra
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from None


def check_resume(saved: RunConfig, new: RunConfig, extend: bool = False) -> None:
    """Refuse (one-line ValueError) a resumed config that would not continue the saved run: a changed field that is
    not `resumable` (it changes what the run computes), a changed model, or a changed schedule horizon
    (`decay_steps`) unless `extend` says the user means it."""
    old, cur = saved.train.to_dict(), new.train.to_dict()
    changed = sorted(k for k in old if old[k] != cur[k] and k not in RESUMABLE_FIELDS)
    if changed:
        raise ValueError(f"{changed[0]} cannot be changed when resuming (it changes what the run computes; only "
                         f"{', '.join(sorted(RESUMABLE_FIELDS))} may change): start a new run with another --out, "
                         f"or fine-tune from this one with --init-from")
    model = sorted(k for k, v in new.model.items() if k != "vocab_size" and saved.model.get(k, v) != v)
    if model:
        raise ValueError(f"the model field {model[0]} cannot be changed when resuming: start a new run, or fine-tune "
                         f"from this one with --init-from")
    a, b = saved.train, new.train
    if a.decay_steps != b.decay_steps and not extend:
        raise ValueError(
            f"the run's learning-rate schedule decays over {a.decay_steps} steps; resuming it for {b.total_steps} "
            f"steps would change that schedule: pass --extend to keep the warm-up and decay over {b.decay_steps} "
            f"steps from here on (not bitwise equal to any uninterrupted run), or resume with --max-steps "
            f"{a.max_steps}" + ("" if a.max_tokens is None else f" --max-tokens {a.max_tokens}"))


def parse_set(item: str) -> tuple[str, Any]:
    """'key=value' -> (key, value), the value parsed as YAML (so 3e-4, 8, true, [1, 3], null all work)."""
    if "=" not in item:
        raise ValueError(f"--set expects key=value, got {item!r}")
    key, _, raw = item.partition("=")
    key = key.strip().replace("-", "_")
    if not key:
        raise ValueError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads e.g. "3e-4" as a string
        try:
            value = float(raw)
        except ValueError:
            pass
    return key, value


# model fields that a run config cannot set, and why (one line each)
NOT_SETTABLE = {
    "vocab_size": "the tokenizer sets vocab_size (bytes: 256; bpe: bpe_vocab_size, e.g. --bpe-vocab-size 8000)",
}


def _route(key: str, family: str) -> tuple[str, str]:
    """Which section ('model' or 'train') a key belongs to, and its bare name."""
    section, name = _route_key(key, family)
    if section == "model" and name in NOT_SETTABLE:
        raise ValueError(f"{key} cannot be set: {NOT_SETTABLE[name]}")
    return section, name


def _route_key(key: str, family: str) -> tuple[str, str]:
    if key.startswith("model."):
        name = key[len("model."):]
        if name not in model_fields(family):
            raise ValueError(f"unknown model field {name!r}; known: {sorted(model_fields(family))}")
        return "model", name
    if key.startswith("train."):
        name = key[len("train."):]
        if name not in TRAIN_FIELDS:
            raise ValueError(f"unknown training field {name!r}; known: {sorted(TRAIN_FIELDS)}")
        return "train", name
    if key in TRAIN_FIELDS:
        return "train", key
    if key in model_fields(family):
        return "model", key
    raise ValueError(f"unknown config key {key!r}: not a training field ({', '.join(sorted(TRAIN_FIELDS))}) nor a "
                     f"model field ({', '.join(sorted(model_fields(family)))})")


def build_run_config(preset: str | None = None, yaml_path: str | Path | None = None, sets: list[str] | None = None,
                     overrides: dict[str, Any] | None = None) -> RunConfig:
    """Compose a RunConfig: preset, then the YAML file, then `--set` items, then explicit flags (`overrides`, training
    or model keys, None values ignored). Everything is validated here once (the model when it is built)."""
    preset = preset or DEFAULT_PRESET
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    model: dict[str, Any] = dict(PRESETS[preset]["model"])
    train: dict[str, Any] = dict(PRESETS[preset]["train"])

    touched: set[str] = set()

    def apply(key: str, value: Any) -> None:
        section, name = _route(key.replace("-", "_"), model.get("family", "xlstm"))
        (model if section == "model" else train)[name] = value
        if section == "model":
            touched.add(name)

    if yaml_path is not None:
        path = Path(yaml_path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise FileNotFoundError(f"--config {path}: no such file") from None
        except IsADirectoryError:
            raise ValueError(f"--config {path}: a folder, not a YAML file") from None
        except UnicodeDecodeError:
            raise ValueError(f"--config {path}: not a UTF-8 text file") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"--config {path}: expected a mapping of keys to values at the top level")
        for section in ("model", "train"):
            sub = loaded.pop(section, None) or {}
            if not isinstance(sub, dict):
                raise ValueError(f"--config {path}: '{section}' must be a mapping")
            for k, v in sub.items():
                apply(f"{section}.{k}", v)
        for k, v in loaded.items():
            apply(str(k), v)
    for item in sets or []:
        apply(*parse_set(item))
    for k, v in (overrides or {}).items():
        if v is not None:
            apply(k, v)
    # the sLSTM positions are given one way or the other: a user's choice replaces the preset's other one
    for given, other in (("block_pattern", "slstm_at"), ("slstm_at", "block_pattern")):
        if given in touched and other not in touched:
            model.pop(other, None)
    for name in ("data", "init_from"):  # stored absolute: the run folder is then usable from any directory
        train[name] = absolute_path(train.get(name))
    # the machine-dependent choices of a preset, fixed here so config.json records what the run really used
    train["dtype"] = resolve_dtype(train.get("dtype", "float32"), train.get("device", "auto"))
    train["threads"] = resolve_threads(train.get("threads"))
    if train.get("init_from") is not None:
        # the architecture comes from the source: only the model fields the user gave are applied on top of it
        model = {k: model[k] for k in touched}
    return RunConfig(model=model, train=TrainConfig.from_dict(train), preset=preset)


def absolute_path(value: Any) -> Any:
    """An existing file or folder as an absolute path; anything else (None, a dataset name) unchanged."""
    if isinstance(value, str) and value not in ("", "stdlib"):
        path = Path(value).expanduser()
        if path.exists():
            return str(path.resolve())
    return value

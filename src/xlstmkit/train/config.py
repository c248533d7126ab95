"""Run configuration: the model fields (a dict for the model family's own config class) and a frozen, validated
`TrainConfig`, from a size preset, an optional YAML file, `--set key=value` pairs and explicit command-line flags.

Precedence, lowest first: preset < YAML file < --set < explicit flags (e.g. --lr). A bare key is looked up among the
training fields, then the model fields; `model.KEY` / `train.KEY` say which explicitly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import FrozenConfig

DTYPES = ("float32", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")

# Size presets. "small" is the default of `xlstmkit train`: a byte-level xLSTM with one sLSTM block among mLSTM
# blocks (the paper's xLSTM[7:1] style scaled down to 4 blocks: xLSTM[3:1], the sLSTM block third) that shows a clear
# loss drop within ~10 minutes on 2 CPU cores.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {  # seconds on a CPU: for tests and smoke runs
        "model": {"embedding_dim": 32, "num_blocks": 2, "slstm_at": [1], "mlstm_num_heads": 2, "slstm_num_heads": 2,
                  "chunk_size": 16, "round_up_to": 16},
        "train": {"batch_size": 4, "seq_len": 32, "max_steps": 20, "warmup_steps": 2, "lr": 3e-3,
                  "checkpoint_every": 10, "eval_every": 0, "eval_tokens": 2048, "final_eval_tokens": 4096,
                  "sample_tokens": 40, "time_budget": None},
    },
    "small": {  # the default: <= 10 minutes on 2 CPU cores (~5k tokens/s with one thread on a busy 2-core machine)
        "model": {"embedding_dim": 128, "num_blocks": 4, "block_pattern": "xLSTM[3:1]", "mlstm_num_heads": 4,
                  "slstm_num_heads": 4, "chunk_size": 64},
        "train": {"batch_size": 32, "seq_len": 128, "max_steps": 600, "warmup_steps": 40, "lr": 3e-3,
                  "checkpoint_every": 100, "eval_every": 100, "eval_tokens": 8192, "final_eval_tokens": 32768,
                  "sample_tokens": 300, "time_budget": 480.0},
    },
    "medium": {  # an hour-scale CPU run, or minutes on a GPU
        "model": {"embedding_dim": 256, "num_blocks": 8, "block_pattern": "xLSTM[7:1]", "mlstm_num_heads": 4,
                  "slstm_num_heads": 4, "chunk_size": 64},
        "train": {"batch_size": 32, "seq_len": 512, "max_steps": 5000, "warmup_steps": 200, "lr": 2e-3,
                  "checkpoint_every": 500, "eval_every": 500, "eval_tokens": 65536, "final_eval_tokens": 262144,
                  "sample_tokens": 400, "time_budget": None},
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


@dataclass(frozen=True)
class TrainConfig(FrozenConfig):
    """Everything about a training run except the model's architecture. Validated once, at construction."""

    # data
    data: str | None = None            # None = the built-in standard-library corpus
    max_files: int | None = None       # cap on the built-in corpus's files (quick runs)
    val_fraction: float = 0.05
    text_field: str = "text"           # JSONL / dataset field holding the text
    tokenizer: str = "bytes"           # "bytes" | "bpe"
    bpe_vocab_size: int = 4096
    # batches and length of the run
    seed: int = 0
    batch_size: int = 16               # global sequences per optimiser step (over processes and accumulation)
    seq_len: int = 256
    grad_accum: int = 1
    max_steps: int = 1000
    max_tokens: int | None = None      # stop after this many training tokens (caps max_steps)
    time_budget: float | None = None   # seconds of training in this process; then checkpoint, evaluate and stop
    # optimiser and schedule (paper: AdamW (0.9, 0.95), eps 1e-5, wd 0.1, warm-up then cosine to 10 % of peak)
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    lr_decay_steps: int | None = None  # steps of the cosine decay; None = max_steps
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-5
    grad_clip: float = 1.0             # max global gradient norm; 0 = no clipping
    # numerics and engine
    dtype: str = "float32"             # autocast dtype: "float32" (off) | "bfloat16"
    compile: bool = False
    device: str = "auto"
    threads: int | None = None         # CPU threads per process; None = all cores but one, shared among processes
    fsdp: bool = False
    # checkpoints, evaluation, logging
    checkpoint_every: int = 100        # steps; 0 = only at the end
    keep_last: int = 3
    eval_every: int = 250              # steps; 0 = only at the end
    eval_tokens: int = 16384           # validation tokens per periodic evaluation
    final_eval_tokens: int = 65536     # validation tokens of the final evaluation
    sample_tokens: int = 300
    sample_prompt: str = "def "
    sample_temperature: float = 0.8
    sample_top_k: int | None = 40

    def __post_init__(self) -> None:
        ints_pos = ("bpe_vocab_size", "batch_size", "seq_len", "grad_accum", "max_steps", "keep_last",
                    "eval_tokens", "final_eval_tokens")
        for name in ints_pos:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        ints_nonneg = ("seed", "warmup_steps", "checkpoint_every", "eval_every", "sample_tokens")
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
                raise ValueError(f"{name} must be a number, got {v!r}")
            object.__setattr__(self, name, float(v))
            if v < lo or (hi is not None and v > hi) or (name in ("lr", "adam_eps") and v == 0):
                raise ValueError(f"{name} must be in [{lo}, {hi if hi is not None else 'inf'}]"
                                 f"{' and > 0' if name in ('lr', 'adam_eps') else ''}, got {v!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if self.tokenizer not in ("bytes", "bpe"):
            raise ValueError(f"tokenizer must be 'bytes' or 'bpe', got {self.tokenizer!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size ({self.batch_size}) must be divisible by grad_accum ({self.grad_accum})")
        for name in ("compile", "fsdp"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.data is not None and not isinstance(self.data, str):
            raise ValueError(f"data must be a path or dataset name, got {self.data!r}")

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
        return self.lr_decay_steps or self.total_steps



TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


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
        if not isinstance(d, dict) or "model" not in d or "train" not in d:
            raise ValueError("a run config needs 'model' and 'train' sections")
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
        extra = {k: v for k, v in d.items() if k not in ("model", "train", "preset")}
        return cls.from_dict(d), extra


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


def _route(key: str, family: str) -> tuple[str, str]:
    """Which section ('model' or 'train') a key belongs to, and its bare name."""
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
    return RunConfig(model=model, train=TrainConfig.from_dict(train), preset=preset)

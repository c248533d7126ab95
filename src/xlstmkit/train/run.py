"""A run folder as written by `xlstmkit train`, and loading a trained model back from it (for eval and generate).

    runs/<name>/
      config.json           run config (model + training), tokenizer kind and vocabulary size, corpus description
      tokenizer.json        the BPE tokenizer (BPE runs only)
      unigram.safetensors   token counts of the training text (the unigram baseline)
      model.safetensors     the final weights (written at the end of training)
      checkpoints/step_*/   resumable checkpoints (see `checkpoint.py`)
      metrics.csv, loss_curve.png, results.json, events.out.tfevents.* (TensorBoard, when installed)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..data.tokenizer import Tokenizer, load_tokenizer
from .build import build_model
from .checkpoint import CheckpointError, load_latest_checkpoint, load_weights
from .config import RunConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
UNIGRAM_FILE = "unigram.safetensors"
METRICS_FILE = "metrics.csv"
RESULTS_FILE = "results.json"
LOSS_PLOT = "loss_curve.png"


def default_run_dir(root: str | Path = "runs") -> Path:
    """runs/<YYYYmmdd-HHMMSS> (with a suffix if that exists already)."""
    base = Path(root) / time.strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def latest_run_dir(root: str | Path = "runs") -> Path | None:
    """The most recently modified run folder under `root` that has a config.json."""
    runs = [p for p in Path(root).glob("*") if (p / CONFIG_FILE).is_file()] if Path(root).is_dir() else []
    return max(runs, key=lambda p: (p / CONFIG_FILE).stat().st_mtime) if runs else None


def load_run(run_dir: str | Path, warn: Callable[[str], None] | None = None
             ) -> tuple[RunConfig, dict, nn.Module, Tokenizer, str]:
    """(run config, config.json extras, model with trained weights in eval mode, tokenizer, weights source).

    The weights come from model.safetensors when it is intact, else from the newest intact checkpoint (a run that was
    stopped before it finished); broken files are reported through `warn` in one line each.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} not found")
    run, extra = RunConfig.load(run_dir / CONFIG_FILE)
    tok_info = extra.get("tokenizer", {"kind": run.train.tokenizer})
    tokenizer = load_tokenizer(tok_info["kind"], run_dir)
    model = build_model({**run.model, "vocab_size": tokenizer.vocab_size})
    state, source = None, ""
    if (run_dir / WEIGHTS_FILE).is_file():
        try:
            state, source = load_weights(run_dir / WEIGHTS_FILE), str(run_dir / WEIGHTS_FILE)
        except CheckpointError as exc:
            if warn:
                warn(f"{exc}; using the newest intact checkpoint instead")
    if state is None:
        ckpt = load_latest_checkpoint(run_dir, warn=warn)
        if ckpt is None:
            raise CheckpointError(f"run folder {run_dir} has no weights: neither {WEIGHTS_FILE} nor a checkpoint")
        state, source = ckpt.model, str(ckpt.path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"weights in {source} do not fit the model in {run_dir / CONFIG_FILE}: missing "
                              f"{list(missing)[:3]}, unexpected {list(unexpected)[:3]}")
    model.eval()
    return run, extra, model, tokenizer, source


def load_unigram_counts(run_dir: str | Path) -> torch.Tensor | None:
    """(vocab,) float64 training-token counts saved by `xlstmkit train`, or None if missing/corrupt."""
    path = Path(run_dir) / UNIGRAM_FILE
    if not path.is_file():
        return None
    try:
        return load_weights(path)["counts"].double()
    except (CheckpointError, KeyError):
        return None

"""Train and evaluate one (task, model) cell of the paper's synthetic experiments, and grids of cells.

A cell: build the task and the model (at a parameter budget matched to xLSTM[1:1] of width `dim`), train with AdamW
(betas 0.9/0.99, weight decay 0.1 on matrices only), linear warm-up over the first 10 % of steps and cosine decay to
`min_lr`, on batches whose task lengths are drawn uniformly from `train_lengths`; then score the answer tokens of
`eval_samples` fresh instances per test length (scaled accuracy, see `xlstmkit.data.synthetic.scoring`).

Training data come from `numpy.random.default_rng([seed, 0])`, model initialisation from `torch.manual_seed(seed)`,
and the test instances from `default_rng([eval_seed, 1])`, independent of `seed`, so every model and every seed is
scored on the same test sequences (as the paper uses the same samples for all models).

The training itself is the shared core of `xlstmkit.train`: the optimiser groups and schedule of `optim.py` (an
`OptimSpec` from `CellConfig.optim`), one `core.train_step` per step, `core.fit` for the loop and `core.Progress`
for the display; the models are built by `train.build` (families xlstm, lstm, llama, mamba).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.synthetic import LengthScores, SyntheticTask, answer_token_hits, get_task
from ..data.synthetic.base import collate
from .build import build_model as build_family_model
from .checkpoint import atomic_write_bytes
from .metrics import save_figure
from .build import count_parameters
from .config import check_device
from .core import Progress, fit, train_step
from .distributed import pick_device
from .optim import OptimSpec, build_optimizer, build_scheduler

XLSTM_PATTERNS = {"xlstm[0:1]": "xLSTM[0:1]", "xlstm[1:0]": "xLSTM[1:0]", "xlstm[1:1]": "xLSTM[1:1]"}
MODELS = (*XLSTM_PATTERNS, "llama", "mamba", "lstm")
REFERENCE_MODEL = "xlstm[1:1]"  # the parameter budget every other model is matched to
_ALIASES = {"xlstm01": "xlstm[0:1]", "xlstm10": "xlstm[1:0]", "xlstm11": "xlstm[1:1]"}


def canonical_model_name(name: str) -> str:
    """'xLSTM[1:1]', 'xlstm11' -> 'xlstm[1:1]'; 'Llama' -> 'llama'. ValueError for unknown names."""
    key = name.strip().lower().replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)} (or xlstm01/xlstm10/xlstm11)")
    return key


def model_dict(name: str, vocab_size: int, dim: int, heads: int = 1) -> dict[str, Any]:
    """The `xlstmkit.train.build` model dict of one of `MODELS` with width `dim` and 2 blocks/layers.

    xLSTM models use the paper's formal-language setting: 2 blocks, sLSTM without convolution, `heads` heads.
    """
    key = canonical_model_name(name)
    if key in XLSTM_PATTERNS:
        return {"family": "xlstm", "vocab_size": vocab_size, "embedding_dim": dim, "num_blocks": 2,
                "block_pattern": XLSTM_PATTERNS[key], "slstm_conv_kernel": 0, "mlstm_num_heads": heads,
                "slstm_num_heads": heads}
    return {"family": key, "vocab_size": vocab_size, "dim": dim, "num_layers": 2}


def build_model(name: str, vocab_size: int, dim: int, heads: int = 1) -> nn.Module:
    """One of `MODELS` (see `model_dict`), built by `xlstmkit.train.build`, as `forward(input_ids (B, S)) -> logits
    (B, S, V)`."""
    return build_family_model(model_dict(name, vocab_size, dim, heads))


def _width_step(name: str, heads: int) -> int:
    """Granularity of the width search: xLSTM widths must split into `heads` heads; 4 for the rest."""
    return 4 * heads if canonical_model_name(name) in XLSTM_PATTERNS else 4


def parameter_count(name: str, vocab_size: int, dim: int, heads: int = 1) -> int:
    """Parameters of `build_model(name, vocab_size, dim)`, counted on the meta device (no memory, no init)."""
    with torch.device("meta"):
        return count_parameters(build_model(name, vocab_size, dim, heads))


def matched_dim(name: str, vocab_size: int, budget: int, heads: int = 1, max_dim: int = 2048) -> int:
    """The width (a multiple of the model's step) whose parameter count is closest to `budget`."""
    step = _width_step(name, heads)
    best, best_gap = step, math.inf
    dim = step
    while dim <= max_dim:
        gap = parameter_count(name, vocab_size, dim, heads) - budget
        if abs(gap) < best_gap:
            best, best_gap = dim, abs(gap)
        if gap > 0:  # counts grow with the width: nothing further can be closer
            break
        dim += step
    return best


# Defaults per model and task, so that `xlstmkit tasks run TASK --model MODEL` with no other flag trains in the
# regime where the paper's claims hold (benchmarks/tasks_results.md). The paper picks every model's learning rate
# from {1e-2, 1e-3, 1e-4} by a sweep (so can `--lr-sweep`); on a CPU budget of a few thousand steps at batch 32:
# - the recurrent models (xLSTM, LSTM) need 1e-2: at 1e-3 xLSTM[0:1] and xLSTM[1:1] had not learned parity after
#   1,500 steps (scaled accuracy 0.03 / -0.03, against 1.00 at 1e-2), and MQAR was learned at 1e-2;
# - Llama is better at 1e-3 (cycle navigation 0.15 at 1e-3, -0.06 at 1e-2; parity fails at both, as the paper says);
#   Mamba gets the Transformer's setting, the usual one for it.
DEFAULT_LR = {"xlstm[0:1]": 1e-2, "xlstm[1:0]": 1e-2, "xlstm[1:1]": 1e-2, "lstm": 1e-2, "llama": 1e-3,
              "mamba": 1e-3}
FORMAL_DEFAULTS = {"steps": 2000, "dim": 64, "heads": 1}
# MQAR: a 256-token vocabulary (the paper's 8,192 costs ~8x per step on a CPU, all of it in the embedding and the
# head), 4 heads (with 1 head (256, 16) stayed on its plateau for 5,000 steps; 4 heads left it at ~600) and width
# 128, and more steps as the context and the number of pairs grow.
MQAR_DEFAULTS = {"dim": 128, "heads": 4, "vocab_size": 256}
MQAR_STEPS = {"mqar": 3000, "mqar_64_4": 3000, "mqar_128_8": 4000, "mqar_256_16": 6000}


def task_defaults(task: str, model: str) -> dict[str, Any]:
    """The defaults of a (task, model) cell: lr, steps, dim, heads and (MQAR) task options."""
    lr = DEFAULT_LR[canonical_model_name(model)]
    if task.startswith("mqar"):
        return {"lr": lr, "steps": MQAR_STEPS.get(task, MQAR_STEPS["mqar"]), "dim": MQAR_DEFAULTS["dim"],
                "heads": MQAR_DEFAULTS["heads"], "task_options": {"vocab_size": MQAR_DEFAULTS["vocab_size"]}}
    return {"lr": lr, **FORMAL_DEFAULTS, "task_options": {}}


def _f(default: Any, help: str, **meta: Any) -> Any:
    """A cell field with its command-line description next to it (`xlstmkit tasks` builds its flags from these)."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class CellConfig:
    """Everything that defines one (task, model) cell. Each field carries its help text: `xlstmkit tasks` builds
    one flag per field from it, so flags and defaults live here only."""

    task: str = _f("parity", "task name (see `xlstmkit tasks list`)", flag=False)
    model: str = _f(REFERENCE_MODEL, "model name", flag=False)
    steps: int | None = _f(None, "training steps (the paper uses 100k); none = the task's default (formal "
                           "languages 2000; MQAR 3000-6000 by context)", metavar="N")
    batch_size: int = _f(32, "sequences per training step", metavar="B")
    lr: float | None = _f(None, "peak learning rate (linear warm-up, then cosine decay to min_lr); none = the "
                          "model's default (xLSTM and LSTM 1e-2, Llama and Mamba 1e-3)")
    lr_sweep: Sequence[float] | None = _f(None, "train once per learning rate, e.g. '1e-2,1e-3,1e-4', and keep "
                                          "the one with the best accuracy on a validation set of fresh instances "
                                          "at the training lengths (the paper's selection); overrides --lr",
                                          metavar="LR,LR", type="floats")
    min_lr: float = _f(1e-5, "final learning rate")
    warmup_fraction: float = _f(0.1, "fraction of the steps spent warming up", metavar="F")
    weight_decay: float = _f(0.1, "AdamW weight decay of the matrices", metavar="W")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 = no clipping)", metavar="NORM")
    dim: int | None = _f(None, "width of xLSTM[1:1]; other models get the width matching its parameter count; "
                         "none = the task's default (64; MQAR 128)", metavar="D")
    heads: int | None = _f(None, "mLSTM/sLSTM heads of the xLSTM models; none = the task's default (1; MQAR 4)",
                           metavar="H")
    match_params: bool = _f(True, "match every model's parameter count to xLSTM[1:1] of width --dim")
    seed: int = _f(0, "seed of the training data and the model initialisation")
    eval_seed: int = _f(1234, "seed of the test instances (shared by all models)")
    train_lengths: tuple[int, int] | None = _f(None, "inclusive range A:B of training lengths (default: the "
                                               "task's, 1:40)", metavar="A:B", type="range")
    test_lengths: Sequence[int] | None = _f(None, "test lengths 'A:B', 'A:B:STEP' or 'A,B,C' (default: the "
                                            "task's, 40:256; MQAR: its context length)", metavar="LENGTHS",
                                            type="lengths")
    eval_samples: int = _f(16, "test instances per test length", metavar="N")
    eval_tokens_per_batch: int = _f(16384, "tokens per evaluation batch", metavar="N")
    task_options: dict[str, Any] = _f({}, "task options (MQAR sizes)", flag=False)
    log_every: int = _f(0, "without a terminal: print the training loss every N steps (0 = about 20 lines per "
                        "cell)", metavar="N")
    device: str = _f("auto", "auto (CUDA when available), cpu, cuda or cuda:N", flag=False)
    dtype: str = _f("float32", "autocast dtype: float32 (off) or bfloat16", flag=False)

    def __post_init__(self) -> None:
        self.model = canonical_model_name(self.model)
        defaults = task_defaults(self.task, self.model)
        # the fields left to the (task, model) defaults: a grid re-resolves them for each of its cells
        self._defaulted = tuple(n for n in ("steps", "lr", "dim", "heads") if getattr(self, n) is None)
        for name in self._defaulted:
            setattr(self, name, defaults[name])
        self.task_options = {**defaults["task_options"], **(self.task_options or {})}
        if self.lr_sweep is not None:
            sweep = tuple(self.lr_sweep)
            if not sweep or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                or v <= 0 for v in sweep):
                raise ValueError(f"lr_sweep must be positive learning rates, got {self.lr_sweep!r}")
            self.lr_sweep = tuple(float(v) for v in sweep)
        for name in ("steps", "batch_size", "dim", "heads", "eval_samples", "eval_tokens_per_batch", "seed",
                     "eval_seed", "log_every"):
            value = getattr(self, name)
            low = 0 if name in ("steps", "seed", "eval_seed", "log_every") else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("lr", "min_lr", "warmup_fraction", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not self.lr > 0 or not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.train_lengths is not None:
            lo, hi = self.train_lengths
            if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
                raise ValueError(f"train_lengths must be a range A:B with 1 <= A <= B, got {self.train_lengths!r}")
        if self.test_lengths is not None and (not self.test_lengths or min(self.test_lengths) < 1):
            raise ValueError(f"test_lengths must be positive lengths, got {self.test_lengths!r}")
        check_device(self.device)
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")

    @property
    def optim(self) -> OptimSpec:
        """AdamW (0.9, 0.99), warm-up over the first `warmup_fraction` of the steps, cosine to `min_lr`."""
        return OptimSpec(lr=self.lr, weight_decay=self.weight_decay, betas=(0.9, 0.99), eps=1e-8,
                         warmup_steps=int(self.warmup_fraction * self.steps), decay_steps=self.steps,
                         min_lr_ratio=self.min_lr / self.lr, grad_clip=self.grad_clip)


def masked_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the answer positions. logits (B, S, V), targets/mask (B, S)."""
    return F.cross_entropy(logits[mask].float(), targets[mask])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: SyntheticTask,
    test_lengths: Sequence[int],
    samples_per_length: int,
    eval_seed: int,
    tokens_per_batch: int = 16384,
) -> dict[str, Any]:
    """Scaled accuracy over the answer tokens of `samples_per_length` instances per test length.

    The instances are generated length by length from one seeded stream, then grouped into right-padded batches of
    similar lengths holding about `tokens_per_batch` tokens each.
    """
    rng = np.random.default_rng([eval_seed, 1])
    lengths = [int(n) for n in test_lengths for _ in range(samples_per_length)]
    seqs = [task.sequence(task.check_length(n), rng) for n in lengths]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    scores = LengthScores(task.s_rand)
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * len(seqs[order[end]][0]) <= tokens_per_batch:
            end += 1
        idx = order[start:end]
        batch = collate([seqs[i] for i in idx], [lengths[i] for i in idx])
        batch = batch.to(device)
        logits = model(batch.input_ids)  # (b, S, V)
        correct, total = answer_token_hits(logits, batch.targets, batch.mask)
        scores.add(batch.lengths, correct, total)
        start = end
    model.train(was_training)
    return scores.summary()


def run_cell(cfg: CellConfig, progress: bool = True) -> dict[str, Any]:
    """Train and evaluate one cell; returns a JSON-able dict with `scaled_accuracy`, `per_length`, times, sizes.

    With `lr_sweep`, the cell is trained once per learning rate and the model with the best scaled accuracy on a
    validation set (`validation_lengths`: fresh instances at the training lengths, from their own seed) is the one
    tested; the result records every rate's validation score (`lr_sweep`) and the chosen `lr`."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if not cfg.lr_sweep:
        trained = _train_cell(cfg, progress)
        sweep = None
    else:
        from dataclasses import replace

        sweep, best = {}, None
        for lr in cfg.lr_sweep:
            candidate = _train_cell(replace(cfg, lr=lr, lr_sweep=None, min_lr=min(cfg.min_lr, lr)), progress)
            val = evaluate(candidate["model"], candidate["task_obj"], validation_lengths(candidate["train_lengths"]),
                           cfg.eval_samples, cfg.eval_seed + 7919, cfg.eval_tokens_per_batch)
            loss = candidate["final_train_loss"]
            sweep[f"{lr:g}"] = {"val_scaled_accuracy": val["scaled_accuracy"], "final_train_loss": loss}
            key = (val["scaled_accuracy"], -(loss if loss is not None else math.inf))
            if best is None or key > best[0]:
                best = (key, candidate)
        trained = best[1]
    model, task, test_lengths = trained["model"], trained["task_obj"], trained["test_lengths"]
    result = evaluate(model, task, test_lengths, cfg.eval_samples, cfg.eval_seed, cfg.eval_tokens_per_batch)
    out = {
        "task": cfg.task,
        "model": cfg.model,
        "scaled_accuracy": result["scaled_accuracy"],
        "accuracy": result["accuracy"],
        "s_rand": task.s_rand,
        "per_length": {str(n): v for n, v in result["per_length"].items()},
        "parameters": count_parameters(model),
        "parameter_budget": trained["budget"],
        "dim": trained["dim"],
        "lr": trained["lr"],
        "final_train_loss": trained["final_train_loss"],
        "train_lengths": list(trained["train_lengths"]),
        "test_lengths": [min(test_lengths), max(test_lengths), len(test_lengths)],
        "cpu_seconds": time.process_time() - cpu0,
        "wall_seconds": time.perf_counter() - wall0,
        "train_wall_seconds": trained["train_seconds"],
        "torch_threads": torch.get_num_threads(),
        "device": str(trained["device"]),
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("task", "model", "test_lengths")},
    }
    if sweep is not None:
        out["lr_sweep"] = sweep
    return out


def validation_lengths(train_lengths: Sequence[int], count: int = 8) -> list[int]:
    """Up to `count` lengths spread over the training range (inclusive): where `lr_sweep` validates."""
    lo, hi = int(min(train_lengths)), int(max(train_lengths))
    return sorted({int(round(v)) for v in np.linspace(lo, hi, min(count, hi - lo + 1))})


def _train_cell(cfg: CellConfig, progress: bool) -> dict[str, Any]:
    """Build and train the model of one cell (no test evaluation)."""
    wall0 = time.perf_counter()
    task = get_task(cfg.task, **cfg.task_options)
    train_lengths = tuple(cfg.train_lengths or task.default_train_lengths)
    test_lengths = [int(n) for n in (cfg.test_lengths or task.default_test_lengths)]
    for n in (*train_lengths, *test_lengths):
        task.check_length(n)
    dim = cfg.dim
    budget = parameter_count(REFERENCE_MODEL, task.vocab_size, cfg.dim, cfg.heads) if cfg.match_params else None
    if budget is not None and cfg.model != REFERENCE_MODEL:
        dim = matched_dim(cfg.model, task.vocab_size, budget, cfg.heads)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    model = build_model(cfg.model, task.vocab_size, dim, cfg.heads).to(device)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    rng = np.random.default_rng([cfg.seed, 0])
    losses: list[float] = []

    def loss_fn(m: nn.Module, batch) -> torch.Tensor:
        return masked_loss(m(batch.input_ids), batch.targets, batch.mask)

    def step_fn(step: int):
        batch = task.sample_batch(cfg.batch_size, train_lengths, rng).to(device)
        return train_step(model, optimizer, scheduler, [batch], loss_fn, grad_clip=cfg.grad_clip, device=device,
                          dtype=cfg.dtype)

    bar = Progress(cfg.steps, desc=f"{cfg.task} / {cfg.model} (lr {cfg.lr:g})", enabled=progress,
                   log_every=cfg.log_every)

    def on_step(step: int, stats) -> None:
        losses.append(float(stats.loss))
        recent = losses[-bar.log_every:]
        bar.update(step, loss=f"{sum(recent) / len(recent):.4f}")

    try:
        fit(0, cfg.steps, step_fn, on_step=on_step)
    finally:
        bar.close()
    tail = losses[-max(1, len(losses) // 10) :]
    return {"model": model, "task_obj": task, "train_lengths": train_lengths, "test_lengths": test_lengths,
            "budget": budget, "dim": dim, "lr": cfg.lr, "device": device,
            "final_train_loss": (sum(tail) / len(tail)) if tail else None,
            "train_seconds": time.perf_counter() - wall0}


def run_grid(
    tasks: Sequence[str],
    models: Sequence[str],
    base: CellConfig,
    out_dir: str | Path,
    on_cell: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every task x model cell with the settings of `base` (MQAR tasks ignore its train/test lengths and use their
    context length; the other tasks ignore its MQAR `task_options`); writes results.json, results.md and heatmap.png to
    `out_dir` (results.json after every cell, so an interrupted grid keeps what it finished)."""
    from ..runs import RunLock, command_line, prepare_dir

    out = prepare_dir(out_dir, "--out")
    with RunLock(out, command_line()):
        return _run_grid(tasks, models, base, out, on_cell)


def _run_grid(tasks, models, base, out: Path, on_cell) -> list[dict[str, Any]]:
    from dataclasses import replace

    models = [canonical_model_name(m) for m in models]
    for t in tasks:  # fail fast on unknown names, before hours of training
        get_task(t, **(base.task_options if t.startswith("mqar") else {}))
    results: list[dict[str, Any]] = []
    unset = {name: None for name in getattr(base, "_defaulted", ())}  # per-cell defaults, resolved per cell
    for task in tasks:
        for model in models:
            if task.startswith("mqar"):  # MQAR trains and tests at its own context length
                cell_cfg = replace(base, task=task, model=model, train_lengths=None, test_lengths=None, **unset)
            else:
                cell_cfg = replace(base, task=task, model=model, task_options={}, **unset)
            cell = run_cell(cell_cfg)
            results.append(cell)
            atomic_write_bytes(out / "results.json", json.dumps(results, indent=1).encode("utf-8"))
            if on_cell is not None:
                on_cell(cell)
    atomic_write_bytes(out / "results.md", markdown_table(results, tasks, models).encode("utf-8"))
    heatmap(results, tasks, models, out / "heatmap.png")
    return results


def markdown_table(results: Sequence[dict[str, Any]], tasks: Sequence[str], models: Sequence[str]) -> str:
    """Rows = tasks, columns = models; each cell 'scaled accuracy (CPU seconds)'; plus a parameter-count row."""
    by = {(r["task"], r["model"]): r for r in results}
    lines = [
        "| task | " + " | ".join(models) + " |",
        "|---|" + "---|" * len(models),
    ]
    for t in tasks:
        cells = []
        for m in models:
            r = by.get((t, m))
            cells.append("" if r is None else f"{r['scaled_accuracy']:.2f} ({r['cpu_seconds']:.0f} s)")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    params = []
    for m in models:
        counts = sorted({r["parameters"] for r in results if r["model"] == m})
        params.append("/".join(f"{c / 1e3:.0f}k" for c in counts))
    lines.append("| parameters | " + " | ".join(params) + " |")
    lines.append("")
    lines.append("Cells: scaled accuracy (acc - s_rand) / (1 - s_rand) over answer tokens, mean over test lengths; "
                 "in brackets the CPU time of the cell (training + evaluation).")
    return "\n".join(lines) + "\n"


def heatmap(results: Sequence[dict[str, Any]], tasks: Sequence[str], models: Sequence[str], path: str | Path) -> bool:
    """A task x model heat-map of scaled accuracy in the style of the paper's Figure 4 (written atomically); False
    when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(r["task"], r["model"]): r["scaled_accuracy"] for r in results}
    grid = np.array([[by.get((t, m), np.nan) for t in tasks] for m in models], dtype=float)  # (models, tasks)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.1 * len(tasks) + 2.5), 0.55 * len(models) + 1.8))
    image = ax.imshow(np.clip(grid, 0.0, 1.0), cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(tasks)), labels=tasks, rotation=40, ha="right")
    ax.set_yticks(range(len(models)), labels=models)
    for i in range(len(models)):
        for j in range(len(tasks)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="scaled accuracy")
    ax.set_title("Scaled accuracy on the test lengths", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True


def parse_lengths(spec: str) -> list[int]:
    """'40:256' (inclusive), '40:256:8' (with a step), '40,64,128' or '64' -> a list of lengths."""
    try:
        if ":" in spec:
            parts = [int(p) for p in spec.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            lo, hi = parts[0], parts[1]
            step = parts[2] if len(parts) == 3 else 1
            if lo < 1 or hi < lo or step < 1:
                raise ValueError
            values = list(range(lo, hi + 1, step))
            if values[-1] != hi:
                values.append(hi)
            return values
        values = [int(p) for p in spec.split(",") if p.strip()]
        if not values or min(values) < 1:
            raise ValueError
        return values
    except ValueError:
        raise ValueError(
            f"lengths must look like 'A:B', 'A:B:STEP' or 'A,B,C' with positive integers, got {spec!r}"
        ) from None

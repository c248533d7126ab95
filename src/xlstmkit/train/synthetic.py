"""Train and evaluate one (task, model) cell of the paper's synthetic experiments, and grids of cells.

A cell: build the task and the model (at a parameter budget matched to xLSTM[1:1] of width `dim`), train with AdamW
(betas 0.9/0.99, weight decay 0.1 on matrices only), linear warm-up over the first 10 % of steps and cosine decay to
`min_lr`, on batches whose task lengths are drawn uniformly from `train_lengths`; then score the answer tokens of
`eval_samples` fresh instances per test length (scaled accuracy, see `xlstmkit.data.synthetic.scoring`).

Training data come from `numpy.random.default_rng([seed, 0])`, model initialisation from `torch.manual_seed(seed)`,
and the test instances from `default_rng([eval_seed, 1])`, independent of `seed`, so every model and every seed is
scored on the same test sequences (as the paper uses the same samples for all models).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xlstmkit.data.synthetic import LengthScores, SyntheticTask, answer_token_hits, get_task
from xlstmkit.data.synthetic.base import collate
from xlstmkit.models.baselines import LSTMLM, count_parameters, llama, mamba

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


def build_model(name: str, vocab_size: int, dim: int, heads: int = 1) -> nn.Module:
    """One of `MODELS` with width `dim`, 2 blocks/layers, as `forward(input_ids (B, S)) -> logits (B, S, V)`.

    xLSTM models use the paper's formal-language setting: 2 blocks, sLSTM without convolution, `heads` heads.
    """
    key = canonical_model_name(name)
    if key in XLSTM_PATTERNS:
        from xlstmkit import xLSTMConfig, xLSTMLM

        cfg = xLSTMConfig(
            vocab_size=vocab_size,
            embedding_dim=dim,
            num_blocks=2,
            block_pattern=XLSTM_PATTERNS[key],
            slstm_conv_kernel=0,
            mlstm_num_heads=heads,
            slstm_num_heads=heads,
        )
        return xLSTMLM(cfg)
    if key == "llama":
        return llama(vocab_size, dim, num_layers=2)
    if key == "mamba":
        return mamba(vocab_size, dim, num_layers=2)
    return LSTMLM(vocab_size, dim, num_layers=2)


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


@dataclass
class CellConfig:
    """Everything that defines one (task, model) cell."""

    task: str
    model: str
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_fraction: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    dim: int = 64
    heads: int = 1
    match_params: bool = True
    seed: int = 0
    eval_seed: int = 1234
    train_lengths: tuple[int, int] | None = None  # inclusive range; None = the task's default (1..40)
    test_lengths: Sequence[int] | None = None  # None = the task's default (40..256)
    eval_samples: int = 16  # instances per test length
    eval_tokens_per_batch: int = 16384
    task_options: dict[str, Any] = field(default_factory=dict)
    log_every: int = 0  # print the training loss every N steps to stderr (0 = never)
    device: str = "auto"  # "auto" = CUDA when available, else CPU

    def __post_init__(self) -> None:
        self.model = canonical_model_name(self.model)
        for name in ("steps", "batch_size", "dim", "heads", "eval_samples", "eval_tokens_per_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "steps" else 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0 or not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")


def lr_factor(step: int, total: int, warmup_fraction: float, min_ratio: float) -> float:
    """Linear warm-up to 1 over the first `warmup_fraction` of `total` steps, then cosine decay to `min_ratio`."""
    warmup = int(warmup_fraction * total)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: not on norms, embeddings, biases or other vectors."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lowered = name.lower()
        if p.dim() >= 2 and "norm" not in lowered and "embed" not in lowered:
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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


def run_cell(cfg: CellConfig) -> dict[str, Any]:
    """Train and evaluate one cell; returns a JSON-able dict with `scaled_accuracy`, `per_length`, times, sizes."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
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
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    model = build_model(cfg.model, task.vocab_size, dim, cfg.heads).to(device)
    model.train()
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.99))
    min_ratio = cfg.min_lr / cfg.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.steps, cfg.warmup_fraction, min_ratio)
    )
    rng = np.random.default_rng([cfg.seed, 0])
    losses: list[float] = []
    for step in range(cfg.steps):
        batch = task.sample_batch(cfg.batch_size, train_lengths, rng).to(device)
        loss = masked_loss(model(batch.input_ids), batch.targets, batch.mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if cfg.log_every and (step + 1) % cfg.log_every == 0:
            recent = sum(losses[-cfg.log_every :]) / len(losses[-cfg.log_every :])
            print(f"[{cfg.task} / {cfg.model}] step {step + 1}/{cfg.steps} loss {recent:.4f}", file=sys.stderr)
    train_seconds = time.perf_counter() - wall0
    result = evaluate(model, task, test_lengths, cfg.eval_samples, cfg.eval_seed, cfg.eval_tokens_per_batch)
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "task": cfg.task,
        "model": cfg.model,
        "scaled_accuracy": result["scaled_accuracy"],
        "accuracy": result["accuracy"],
        "s_rand": task.s_rand,
        "per_length": {str(n): v for n, v in result["per_length"].items()},
        "parameters": count_parameters(model),
        "parameter_budget": budget,
        "dim": dim,
        "final_train_loss": (sum(tail) / len(tail)) if tail else None,
        "train_lengths": list(train_lengths),
        "test_lengths": [min(test_lengths), max(test_lengths), len(test_lengths)],
        "cpu_seconds": time.process_time() - cpu0,
        "wall_seconds": time.perf_counter() - wall0,
        "train_wall_seconds": train_seconds,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("task", "model", "test_lengths")},
    }


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
    from dataclasses import replace

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = [canonical_model_name(m) for m in models]
    for t in tasks:  # fail fast on unknown names, before hours of training
        get_task(t, **(base.task_options if t.startswith("mqar") else {}))
    results: list[dict[str, Any]] = []
    for task in tasks:
        for model in models:
            if task.startswith("mqar"):  # MQAR trains and tests at its own context length
                cell_cfg = replace(base, task=task, model=model, train_lengths=None, test_lengths=None)
            else:
                cell_cfg = replace(base, task=task, model=model, task_options={})
            cell = run_cell(cell_cfg)
            results.append(cell)
            (out / "results.json").write_text(json.dumps(results, indent=1))
            if on_cell is not None:
                on_cell(cell)
    (out / "results.md").write_text(markdown_table(results, tasks, models))
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


def heatmap(results: Sequence[dict[str, Any]], tasks: Sequence[str], models: Sequence[str], path: str | Path) -> None:
    """A task x model heat-map of scaled accuracy in the style of the paper's Figure 4."""
    import matplotlib

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
    fig.savefig(path, dpi=120)
    plt.close(fig)


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

"""`xlstmkit tasks list | run | grid`: the xLSTM paper's synthetic experiments.

    xlstmkit tasks list
    xlstmkit tasks run parity --model xlstm11 --steps 2000 --test-lengths 40:256 --json parity.json
    xlstmkit tasks grid --tasks parity mod_arith --models xlstm01 xlstm11 llama --steps 2000 --out results/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _add_cell_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=2000, help="training steps (default 2000; the paper uses 100k)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training data and the model initialisation")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine decay to --min-lr)")
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--dim", type=int, default=64,
                   help="width of xLSTM[1:1]; other models get the width matching its parameter count")
    p.add_argument("--heads", type=int, default=1, help="mLSTM/sLSTM heads of the xLSTM models")
    p.add_argument("--no-match-params", dest="match_params", action="store_false",
                   help="give every model width --dim instead of matching parameter counts")
    p.add_argument("--train-lengths", default=None, help="inclusive range A:B of training lengths (default 1:40)")
    p.add_argument("--test-lengths", default=None,
                   help="test lengths 'A:B', 'A:B:STEP' or 'A,B,C' (default 40:256; MQAR: its context length)")
    p.add_argument("--eval-samples", type=int, default=16, help="test instances per test length")
    p.add_argument("--eval-seed", type=int, default=1234, help="seed of the test instances (shared by all models)")
    p.add_argument("--mqar-vocab", type=int, default=None, help="MQAR vocabulary size (default 8192)")
    p.add_argument("--mqar-pairs", type=int, default=None, help="MQAR key-value pairs (task 'mqar': default 4)")
    p.add_argument("--mqar-context", type=int, default=None, help="MQAR context length (task 'mqar': default 64)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--log-every", type=int, default=0, help="print the training loss every N steps to stderr")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    sub.add_parser("list", help="list the tasks and models")
    run = sub.add_parser("run", help="train and evaluate one task with one model")
    run.add_argument("task", help="task name (see `xlstmkit tasks list`)")
    run.add_argument("--model", required=True, help="xlstm[0:1] | xlstm[1:0] | xlstm[1:1] | llama | mamba | lstm")
    run.add_argument("--json", default=None, help="also write the result as JSON to this file")
    _add_cell_options(run)
    grid = sub.add_parser("grid", help="train and evaluate tasks x models; write a table and a heat-map")
    grid.add_argument("--tasks", nargs="+", default=None, help="task names (default: the paper's Figure 4 tasks)")
    grid.add_argument("--models", nargs="+", default=None, help="model names (default: all)")
    grid.add_argument("--out", required=True, help="directory for results.json, results.md and heatmap.png")
    _add_cell_options(grid)


FIGURE4_TASKS = ("bucket_sort", "missing_duplicate", "mod_arith_brackets", "solve_equation", "cycle_nav",
                 "even_pairs", "mod_arith", "parity", "majority", "majority_count")


def _cell_config(args: argparse.Namespace, task: str, model: str):
    from xlstmkit.train.synthetic import CellConfig, parse_lengths

    train_lengths = None
    if args.train_lengths:
        values = parse_lengths(args.train_lengths)
        train_lengths = (min(values), max(values))
    options: dict[str, Any] = {}
    for key, value in (("vocab_size", args.mqar_vocab), ("num_kv_pairs", args.mqar_pairs),
                       ("context_length", args.mqar_context)):
        if value is not None:
            options[key] = value
    return CellConfig(
        task=task, model=model, steps=args.steps, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr,
        weight_decay=args.weight_decay, dim=args.dim, heads=args.heads, match_params=args.match_params,
        seed=args.seed, eval_seed=args.eval_seed, train_lengths=train_lengths,
        test_lengths=parse_lengths(args.test_lengths) if args.test_lengths else None,
        eval_samples=args.eval_samples, task_options=options, log_every=args.log_every, device=args.device,
    )


def _summary_line(r: dict[str, Any]) -> str:
    return (f"{r['task']:<20} {r['model']:<11} scaled accuracy {r['scaled_accuracy']:6.3f}  (accuracy "
            f"{r['accuracy']:.3f}, {r['parameters']:,} parameters, {r['cpu_seconds']:.1f} s CPU, "
            f"{r['wall_seconds']:.1f} s wall)")


def _list() -> int:
    from xlstmkit.data.synthetic import TASKS
    from xlstmkit.train.synthetic import MODELS

    print("tasks:")
    for name, factory in TASKS.items():
        task = factory()
        doc = (type(task).__doc__ or "").strip().splitlines()[0]
        print(f"  {name:<20} |V|={task.vocab_size:<5} s_rand={task.s_rand:.4f}  {doc}")
    print("models: " + ", ".join(MODELS))
    return 0


def main(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list()
    import torch

    from xlstmkit.train.synthetic import run_cell, run_grid

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.action == "run":
        result = run_cell(_cell_config(args, args.task, args.model))
        print(_summary_line(result))
        per = result["per_length"]
        print("per test length: " + ", ".join(f"{n}: {v['scaled_accuracy']:.2f}" for n, v in per.items()))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return 0
    from xlstmkit.train.synthetic import MODELS

    tasks = args.tasks or list(FIGURE4_TASKS)
    models = args.models or list(MODELS)
    base = _cell_config(args, tasks[0], models[0])
    results = run_grid(tasks, models, base, args.out, on_cell=lambda r: print(_summary_line(r), flush=True))
    print(f"wrote {Path(args.out) / 'results.md'} and heatmap.png ({len(results)} cells)", file=sys.stderr)
    return 0

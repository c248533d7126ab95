"""`xlstmkit tasks list | run | grid`: the xLSTM paper's synthetic experiments.

    xlstmkit tasks list
    xlstmkit tasks run parity --model xlstm11 --test-lengths 40:256 --json parity.json
    xlstmkit tasks run parity --model llama --lr-sweep 1e-2,1e-3,1e-4     # the paper's learning-rate selection
    xlstmkit tasks grid --tasks parity mod_arith --models xlstm01 xlstm11 llama --steps 2000 --out results/

The cell options below are the fields of `xlstmkit.train.synthetic.CellConfig` (defaults shown come from there).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .common import add_engine_flags, add_field_flags, engine, given

_CELL_FLAGS: list[str] = []


def _range(text: str) -> tuple[int, int]:
    from ..train.synthetic import parse_lengths

    try:
        values = parse_lengths(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return min(values), max(values)


def _lengths(text: str) -> list[int]:
    from ..train.synthetic import parse_lengths

    try:
        return parse_lengths(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        values = ()
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers like '1e-2,1e-3', got {text!r}")
    return values


def _add_cell_options(p: argparse.ArgumentParser) -> None:
    from ..train.synthetic import CellConfig

    group = p.add_argument_group("cell options (fields of CellConfig)")
    _CELL_FLAGS[:] = add_field_flags(group, CellConfig, parsers={"range": _range, "lengths": _lengths,
                                                                 "floats": _floats})
    group.add_argument("--mqar-vocab", type=int, default=None, metavar="N",
                       help="MQAR vocabulary size (default 256; the paper's is 8192)")
    group.add_argument("--mqar-pairs", type=int, default=None, metavar="N",
                       help="MQAR key-value pairs (task 'mqar': default 4)")
    group.add_argument("--mqar-context", type=int, default=None, metavar="N",
                       help="MQAR context length (task 'mqar': default 64)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    add_engine_flags(p)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import ArgumentParser

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=ArgumentParser)
    sub.required = True
    sub.add_parser("list", help="list the tasks and models")
    run = sub.add_parser("run", help="train and evaluate one task with one model")
    run.add_argument("task", help="task name (see `xlstmkit tasks list`)")
    run.add_argument("--model", required=True, help="xlstm[0:1] | xlstm[1:0] | xlstm[1:1] | llama | mamba | lstm")
    run.add_argument("--json", default=None, metavar="FILE", help="also write the result as JSON to this file")
    _add_cell_options(run)
    grid = sub.add_parser("grid", help="train and evaluate tasks x models; write a table and a heat-map")
    grid.add_argument("--tasks", nargs="+", default=None, help="task names (default: the paper's Figure 4 tasks)")
    grid.add_argument("--models", nargs="+", default=None, help="model names (default: all)")
    grid.add_argument("--out", required=True, metavar="DIR",
                      help="directory for results.json, results.md and heatmap.png")
    _add_cell_options(grid)


FIGURE4_TASKS = ("bucket_sort", "missing_duplicate", "mod_arith_brackets", "solve_equation", "cycle_nav",
                 "even_pairs", "mod_arith", "parity", "majority", "majority_count")


def _cell_config(args: argparse.Namespace, task: str, model: str):
    from ..train.synthetic import CellConfig

    options: dict[str, Any] = {}
    for key, value in (("vocab_size", args.mqar_vocab), ("num_kv_pairs", args.mqar_pairs),
                       ("context_length", args.mqar_context)):
        if value is not None:
            options[key] = value
    fields = given(args, _CELL_FLAGS)
    engine_fields = {k: getattr(args, k) for k in ("device", "dtype") if getattr(args, k) is not None}
    return CellConfig(task=task, model=model, task_options=options, **engine_fields, **fields)


def _check_task(task: str, options: dict[str, Any]) -> None:
    from ..data.synthetic import get_task

    get_task(task, **(options if task.startswith("mqar") else {}))


def _summary_line(r: dict[str, Any]) -> str:
    return (f"{r['task']:<20} {r['model']:<11} scaled accuracy {r['scaled_accuracy']:6.3f}  (accuracy "
            f"{r['accuracy']:.3f}, {r['parameters']:,} parameters, {r['cpu_seconds']:.1f} s CPU, "
            f"{r['wall_seconds']:.1f} s wall)")


def _list() -> int:
    from ..data.synthetic import TASKS
    from ..train.synthetic import MODELS

    print("tasks:")
    for name, factory in TASKS.items():
        task = factory()
        doc = (type(task).__doc__ or "").strip().splitlines()[0]
        print(f"  {name:<20} |V|={task.vocab_size:<5} s_rand={task.s_rand:.4f}  {doc}")
    print("models: " + ", ".join(MODELS))
    from ..train.synthetic import DEFAULT_LR, FORMAL_DEFAULTS, MQAR_DEFAULTS, MQAR_STEPS

    print("defaults (any of them can be given): learning rate " + ", ".join(f"{m} {lr:g}" for m, lr in
                                                                           DEFAULT_LR.items()))
    print(f"  formal languages: {FORMAL_DEFAULTS['steps']} steps, width {FORMAL_DEFAULTS['dim']}, "
          f"{FORMAL_DEFAULTS['heads']} head; MQAR: vocabulary {MQAR_DEFAULTS['vocab_size']}, width "
          f"{MQAR_DEFAULTS['dim']}, {MQAR_DEFAULTS['heads']} heads, steps "
          + ", ".join(f"{t} {n}" for t, n in MQAR_STEPS.items()))
    return 0


def main(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list()
    from .. import runs
    from ..train.synthetic import MODELS, canonical_model_name, run_cell, run_grid

    # -- every argument checked before any training -----------------------------------------------------------------
    engine(args)
    if args.action == "run":
        cfg = _cell_config(args, args.task, args.model)
        task = _task_for(cfg)  # an unknown task or bad MQAR options fail here
        for n in (*(cfg.train_lengths or ()), *(cfg.test_lengths or ())):
            task.check_length(n)
        if args.json:
            runs.check_writable_file(args.json, "--json")
        result = run_cell(cfg, progress=not args.no_progress)
        print(_summary_line(result))
        per = result["per_length"]
        print("per test length: " + ", ".join(f"{n}: {v['scaled_accuracy']:.2f}" for n, v in per.items()))
        if args.json:
            from ..train.checkpoint import atomic_write_bytes

            atomic_write_bytes(args.json, json.dumps(result, indent=1).encode("utf-8"))
        return 0
    tasks = args.tasks or list(FIGURE4_TASKS)
    models = [canonical_model_name(m) for m in (args.models or list(MODELS))]
    base = _cell_config(args, tasks[0], models[0])
    for task in tasks:
        _check_task(task, base.task_options)
    runs.prepare_dir(args.out, "--out")
    results = run_grid(tasks, models, base, args.out, on_cell=lambda r: print(_summary_line(r), flush=True))
    print(f"wrote {Path(args.out) / 'results.md'} and heatmap.png ({len(results)} cells)", file=sys.stderr)
    return 0


def _task_for(cfg):
    from ..data.synthetic import get_task

    return get_task(cfg.task, **cfg.task_options)

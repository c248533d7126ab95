"""The time-series classification table in one command, and the validation-only search that chose its recipe.

    python benchmarks/classification.py                 # the table: the same as
                                                        #   xlstmkit classify bench --seeds 3 --threads 1 \\
                                                        #     --out benchmarks/classification_results \\
                                                        #     --table benchmarks/classification_results.md
    python benchmarks/classification.py --seeds 1 --datasets GunPoint --models xlstm-bi minirocket   # a part
    python benchmarks/classification.py tune            # score recipe candidates on validation splits only
    python benchmarks/classification.py tune --report   # the table of the candidates run so far, nothing trained

Every flag of `xlstmkit classify bench` is accepted (the recipe fields too, e.g. --max-epochs 100). The cells are
kept in benchmarks/classification_results/cells.jsonl, so an interrupted run resumes where it stopped; delete that
file for a fresh table.

`tune` never reads a test set: each candidate recipe is trained on the training part of every dataset and scored by
its accuracy and loss on the validation part (the split early stopping also uses; seeds 0 and 1), and the table of
candidates goes to benchmarks/classification_results/tuning.md. The default recipe of `xlstmkit classify` (the
`Recipe` dataclass in src/xlstmkit/commands/classify.py) was chosen from that table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "classification_results"
TABLE = HERE / "classification_results.md"

# candidates for `tune`: changes to the default recipe, one idea each (the first is the default itself)
CANDIDATES: dict[str, dict] = {
    "default": {},
    "first_last pooling": {"pooling": "first_last"},
    "last pooling": {"pooling": "last"},
    "less patching (128 tokens)": {"target_tokens": 128},
    "more patching (32 tokens)": {"target_tokens": 32},
    "lr 1e-3": {"lr": 1e-3},
    "lr 5e-3": {"lr": 5e-3},
    "lr 5e-3, first_last": {"lr": 5e-3, "pooling": "first_last"},
    "one sLSTM in two (xLSTM[1:1])": {"block_pattern": "xLSTM[1:1]"},
    "width 32": {"embedding_dim": 32},
    "depth 3": {"depth": 3},
    "concat merge": {"merge": "concat"},
    "dropout 0.3": {"dropout": 0.3},
    "augment slice": {"augment": "slice"},
    "augment slice,scale,jitter": {"augment": "slice,scale,jitter"},
}


def tune(args: argparse.Namespace) -> int:
    import torch

    from xlstmkit.commands.classify import BENCH_DATASETS, NeuralRun, Recipe, load_data
    from xlstmkit.train.checkpoint import atomic_write_bytes

    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    cells_path = OUT / "tuning.jsonl"
    done = {}
    if cells_path.exists():
        for line in cells_path.read_text().splitlines():
            c = json.loads(line)
            done[(c["candidate"], c["model"], c["dataset"], c["seed"])] = c
    names = args.candidates or list(CANDIDATES)
    base = dict(max_epochs=args.max_epochs, patience=args.patience, time_budget=None)
    cells = []
    if args.report:  # the table of every cell run so far, nothing trained
        names, cells = [], list(done.values())
    for name in names:
        recipe = Recipe(**{**base, **CANDIDATES[name]})
        for model in args.models:
            for dataset in args.datasets or BENCH_DATASETS:
                for seed in range(args.seeds):
                    key = (name, model, dataset, seed)
                    if key in done:
                        cells.append(done[key])
                        continue
                    data, _ = load_data(dataset, None, 0.2, 0.25, seed)
                    run = NeuralRun(model, recipe, seed)
                    info = run.fit(data)
                    pred = run.predict(data, "val")  # the validation split only: the test set is never read here
                    cell = {"candidate": name, "model": model, "dataset": dataset, "seed": seed,
                            "val_accuracy": float((pred == data.val.labels).mean()),
                            "val_loss": info["best_val_loss"], "seconds": info["seconds"], "epochs": info["epochs"],
                            "params": info["params"], "load_average": os.getloadavg()[0]}
                    cells.append(cell)
                    with open(cells_path, "a") as fh:
                        fh.write(json.dumps(cell) + "\n")
                    print(f"{name:<32} {model:<9} {dataset:<17} seed {seed}: val accuracy {cell['val_accuracy']:.3f} "
                          f"loss {cell['val_loss']:.3f} ({cell['seconds']:.0f} s, {cell['epochs']} epochs)",
                          file=sys.stderr, flush=True)
    # the table: mean over datasets and seeds of the validation accuracy and loss, per candidate and model
    rows = {}
    for c in cells:
        rows.setdefault((c["candidate"], c["model"]), []).append(c)
    lines = ["Validation accuracy and loss (mean over datasets and seeds; the test sets are not read), training "
             f"seconds per run; max_epochs {args.max_epochs}, patience {args.patience}.", "",
             "| candidate | model | val accuracy | val loss | s / run | runs |", "|---|---|---|---|---|---|"]
    for (name, model), cs in rows.items():
        lines.append(f"| {name} | {model} | {statistics.fmean(c['val_accuracy'] for c in cs):.3f} | "
                     f"{statistics.fmean(c['val_loss'] for c in cs):.3f} | "
                     f"{statistics.fmean(c['seconds'] for c in cs):.0f} | {len(cs)} |")
    per_ds = {}
    for c in cells:
        per_ds.setdefault((c["candidate"], c["model"], c["dataset"]), []).append(c["val_accuracy"])
    datasets = sorted({c["dataset"] for c in cells})
    lines += ["", "Per dataset (validation accuracy, mean over seeds):", "",
              "| candidate | model | " + " | ".join(datasets) + " |", "|---|---|" + "---|" * len(datasets)]
    for (name, model) in rows:
        vals = [per_ds.get((name, model, d)) for d in datasets]
        lines.append(f"| {name} | {model} | " + " | ".join("" if v is None else f"{statistics.fmean(v):.3f}"
                                                           for v in vals) + " |")
    atomic_write_bytes(OUT / "tuning.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["tune"]:
        p = argparse.ArgumentParser(prog="classification.py tune")
        p.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), metavar="NAME")
        p.add_argument("--models", nargs="+", default=["xlstm-bi"])
        p.add_argument("--datasets", nargs="+")
        p.add_argument("--seeds", type=int, default=2)
        p.add_argument("--max-epochs", type=int, default=60)
        p.add_argument("--patience", type=int, default=15)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--report", action="store_true", help="only write the table of the cells run so far")
        return tune(p.parse_args(argv[1:]))
    from xlstmkit.cli import main as cli

    defaults = {"--out": str(OUT), "--table": str(TABLE), "--threads": "1", "--seeds": "3"}
    extra = [x for k, v in defaults.items() if k not in argv for x in (k, v)]
    return cli(["classify", "bench", *argv, *extra])


if __name__ == "__main__":
    sys.exit(main())

"""Forecasting benchmark: the xLSTM forecaster beside statsforecast's SeasonalNaive, AutoETS, AutoARIMA, AutoTheta and
neuralforecast's xLSTM, NHITS, PatchTST, on the same test windows of the bundled datasets.

    python benchmarks/forecasting.py [--datasets m1_yearly airline ...] [--seeds 0 1 2] [--steps 500]
                                     [--threads 1] [--out benchmarks/forecasting_results]
    python benchmarks/forecasting.py --merge a/results.json b/results.json --out DIR   # one table from parts

This is `xlstmkit forecast bench` with the benchmark's settings, plus a report: the command, the budgets, the load
average and the published Monash numbers for M1 yearly. The neural models (ours and neuralforecast's) get the same
budget: at most --steps optimiser steps (ours: 64 windows per step, early stopping on the validation windows;
neuralforecast: its defaults otherwise, batch_size 32 series and its windows_batch_size), the same input window
(ours: 4 horizons, given to neuralforecast as input_size) and the seeds; the statistical models are deterministic and
run once. `--merge` combines results.json files of runs split over processes (the first row of each (dataset,
model, seed) wins) into results.json, results.md and report.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

MONASH_M1 = ("Published for M1 yearly (Godahewa et al. 2021, Monash archive, Tables 5 and 7, mean MASE / sMAPE): "
             "ETS 3.771 / 18.61, TBATS 3.499 / 17.42, N-BEATS 4.384 / 20.52, DeepAR 4.603 / 18.72, "
             "Theta 4.191 / 20.17, ARIMA 4.479 / 19.47.")


def merge(files: list[str], out: Path) -> None:
    from xlstmkit.commands.forecast import bench_table

    rows, seen, loads = [], set(), []
    for f in files:
        res = json.loads(Path(f).read_text())
        loads += res.get("load_average", [])
        for r in res["rows"]:
            key = (r["dataset"], r["model"], r["seed"])
            if key not in seen:
                seen.add(key)
                rows.append(r)
    order = ["m1_yearly", "airline", "lynx", "shampoo_sales", "pbs", "uschange", "solar"]
    rows.sort(key=lambda r: (order.index(r["dataset"]) if r["dataset"] in order else 99, r["seed"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"rows": rows, "load_average": loads}, indent=1, default=str))
    table = bench_table(rows)
    (out / "results.md").write_text(table + "\n")
    print(table)
    if loads:
        print(f"\nload average over the parts: min {min(loads):.1f}, max {max(loads):.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--baselines", nargs="*", default=None)
    ap.add_argument("--merge", nargs="+", default=None, metavar="RESULTS_JSON")
    ap.add_argument("--out", default="benchmarks/forecasting_results")
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, Path(args.out))
        return
    from xlstmkit.cli import main as cli

    argv = ["forecast", "bench", "--seeds", *map(str, args.seeds), "--steps", str(args.steps), "--threads",
            str(args.threads), "--out", args.out]
    if args.datasets:
        argv += ["--datasets", *args.datasets]
    if args.baselines is not None:
        argv += ["--baselines", *args.baselines]
    start, load0 = time.time(), os.getloadavg()[0]
    code = cli(argv)
    if code:
        sys.exit(code)
    res = json.loads((Path(args.out) / "results.json").read_text())
    loads = res["load_average"]
    table = (Path(args.out) / "results.md").read_text()
    header = [
        "# Forecasting benchmark",
        "",
        f"Command: `{' '.join(['xlstmkit', *argv])}` ({(time.time() - start) / 60:.0f} min wall, "
        f"{args.threads} thread(s), load average {load0:.1f} at the start, max {max(loads):.1f}, "
        f"end {loads[-1]:.1f}; seconds in the table are wall time under that load).",
        "",
        f"Budget: at most {args.steps} optimiser steps for every neural model; the statistical models have none.",
        "",
        MONASH_M1,
        "",
    ]
    (Path(args.out) / "report.md").write_text("\n".join(header) + table + "\n")
    print("\n".join(header))


if __name__ == "__main__":
    main()

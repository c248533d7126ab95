"""Forecasting benchmark: the xLSTM forecaster beside statsforecast's SeasonalNaive, AutoETS, AutoARIMA, AutoTheta and
neuralforecast's xLSTM, NHITS, PatchTST, on the same test windows of the bundled datasets.

    python benchmarks/forecasting.py [--datasets m1_yearly airline ...] [--seeds 0 1 2] [--steps 1000]
                                     [--threads 1] [--out benchmarks/forecasting_results]

This is `xlstmkit forecast bench` with the benchmark's settings, plus a header for the results file: the command,
the budgets, the load average and the published Monash numbers for M1 yearly. The neural models (ours and
neuralforecast's) get the same budget: at most --steps optimiser steps (ours: 64 windows per step with early
stopping on the validation windows; neuralforecast: its defaults, batch_size 32 series x windows_batch_size, early
stopping off), the same input window (ours: 4 horizons; given to neuralforecast as input_size) and the seeds;
the statistical models are deterministic and run once.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--baselines", nargs="*", default=None)
    ap.add_argument("--out", default="benchmarks/forecasting_results")
    args = ap.parse_args()
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

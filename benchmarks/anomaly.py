"""Anomaly detection benchmark: the xLSTM forecast-distance detector beside aeon's STOMP and MERLIN, on the UCR
anomaly archive's series 135 (bundled with aeon) and on the seeded benchmark of anomalies injected into real series.

    python benchmarks/anomaly.py [--seeds 0 1 2] [--steps 300] [--threads 1] [--out benchmarks/anomaly_results]
                                 [--resume]

Per series: the UCR hit (the top-scoring test point within the labelled region +- 100 points), AUC-PR and AUC-ROC
per point over the test part (the anomaly-free training prefix left out for every detector alike), and the seconds.
Prints markdown tables (per kind of injected anomaly, and KDD-TSAD 135 per seed) and writes results.json.
Seeds: the xLSTM detector's weight/window seed, and the injected benchmark's seed (positions and sizes of the
anomalies). The detector's defaults were checked on injected seed 100 (validation), never on these.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch


def run_one(series, detector: str, steps: int, seed: int, **kw) -> dict:
    from xlstmkit.anomaly import DetectorConfig, ForecastDetector, evaluate
    from xlstmkit.baselines.anomaly import make

    t = time.perf_counter()
    if detector == "xlstm":
        det = ForecastDetector(DetectorConfig(steps=steps, seed=seed, **kw)).fit(series.train)
        s = det.score(series.values, series.train_end)
    else:
        s = make(detector).score(series)
    return {"series": series.name, "kind": series.kind or "ucr", "detector": detector, "seed": seed,
            **evaluate(s, series), "seconds": time.perf_counter() - t}


def table(rows: list[dict]) -> str:
    groups = list(dict.fromkeys(r["kind"] for r in rows))
    dets = list(dict.fromkeys(r["detector"] for r in rows))
    out = ["| anomalies | detector | UCR hit rate | AUC-PR | AUC-ROC | seconds / series | series x seeds |",
           "|---|---|---|---|---|---|---|"]
    for g in groups + ["all injected"]:
        for d in dets:
            rs = [r for r in rows if r["detector"] == d
                  and (r["kind"] == g or (g == "all injected" and r["kind"] != "ucr"))]
            if not rs:
                continue
            def m(key):
                return statistics.fmean(float(r[key]) for r in rs)
            out.append(f"| {g} | {d} | {m('hit'):.2f} | {m('auc_pr'):.3f} | {m('auc_roc'):.3f} | {m('seconds'):.1f} | "
                       f"{len(rs)} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--detectors", nargs="+", default=["xlstm", "stomp", "merlin"])
    ap.add_argument("--no-kdd", action="store_true")
    ap.add_argument("--no-injected", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="DetectorConfig fields (tuning)")
    ap.add_argument("--out", default=None, metavar="DIR")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows of DIR/results.json and run only the (series, detector, seed) cells it lacks "
                         "(the scores do not depend on the machine's load: no detector has a time budget here)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from xlstmkit.data.anomaly import injected_benchmark, load_kdd_tsad_135

    kw = {k: (None if v == "none" else float(v) if "." in v or v == "inf" else int(v))
          for k, v in (s.split("=", 1) for s in args.set)}
    loads, rows = [os.getloadavg()[0]], []
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.resume:
        if not (out and (out / "results.json").exists()):
            sys.exit("--resume needs --out DIR with a results.json from an earlier run")
        old = json.loads((out / "results.json").read_text())
        rows, loads = old["rows"], old.get("load_average", []) + loads
        done = {(r["series"], r["detector"], r["seed"]) for r in rows}
    for seed in args.seeds:
        todo = ([] if args.no_kdd else [load_kdd_tsad_135()]) + ([] if args.no_injected else injected_benchmark(seed))
        for series in todo:
            for det in args.detectors:
                if det != "xlstm" and series.kind == "" and seed != args.seeds[0]:
                    continue  # STOMP and MERLIN are deterministic: KDD-135 once
                if (series.name, det, seed) in done:
                    continue
                r = run_one(series, det, args.steps, seed, **kw)
                rows.append(r)
                print(json.dumps(r), flush=True)
            loads.append(os.getloadavg()[0])
            if out:
                (out / "results.json").write_text(json.dumps({"rows": rows, "load_average": loads}, indent=1))
    print()
    print(table(rows))
    kdd = [r for r in rows if r["kind"] == "ucr"]
    if kdd:
        print()
        print("| KDD-TSAD 135 | seed | top index | hit | AUC-PR | AUC-ROC | seconds |")
        print("|---|---|---|---|---|---|---|")
        for r in kdd:
            print(f"| {r['detector']} | {r['seed']} | {r['top_index']} | {'yes' if r['hit'] else 'no'} | "
                  f"{r['auc_pr']:.3f} | {r['auc_roc']:.3f} | {r['seconds']:.1f} |")
    print(f"\nload average: start {loads[0]:.2f}, max {max(loads):.2f}, end {loads[-1]:.2f}; {args.threads} thread(s), "
          f"{args.steps} training steps at most")


if __name__ == "__main__":
    main()

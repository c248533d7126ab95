"""`xlstmkit forecast`: train the xLSTM forecaster on a dataset, forecast its test window, score it (and baselines).

    xlstmkit forecast --dataset m1_yearly --json m1.json --out runs/m1
    xlstmkit forecast --dataset sales.csv --horizon 12 --quantiles 0.05 0.5 0.95 --time-budget 300
    xlstmkit forecast --dataset airline --baselines                    # all seven baselines beside it
    xlstmkit forecast --dataset airline --baselines SeasonalNaive AutoETS --baseline-steps 1000
    xlstmkit forecast --dataset solar --model tirex --checkpoint model.ckpt   # TiRex zero-shot
    xlstmkit forecast bench --datasets m1_yearly airline --seeds 0 1 2 --out bench/

The last H points of every series are the test window; the model trains on the rest (one global model over every
series; the last window before the test window of each series is the validation window for early stopping). The run
folder (--out, default runs/<time>) receives forecasts.csv (unique_id, ds, model, point, one column per quantile),
forecast.png (the last context, the forecast, its 80 % band and the actuals for a few series), results.json, and the
trained model (model.safetensors, config.json). --json writes results.json's content to another file too:
{"dataset", "horizon", "mase", "smape", "scaled_crps", "coverage_80", "seconds", ..., "baselines": {name: {...}}}.
Datasets: m1_yearly, airline, lynx, shampoo_sales, pbs, uschange, solar (bundled with aeon, offline), or a CSV
(long: unique_id, ds, y; or wide: a time column and one column per series; empty cells are missing values).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from .common import add_field_flags, finite, given, positive

_MODEL_FLAGS: list[str] = []
RESULT_KEYS = ("mase", "smape", "scaled_crps", "coverage_80", "seconds")
ALL_BASELINES = ("SeasonalNaive", "AutoETS", "AutoARIMA", "AutoTheta", "xLSTM", "NHITS", "PatchTST")
BENCH_DATASETS = ("m1_yearly", "airline", "lynx", "shampoo_sales", "pbs", "uschange", "solar")
DEFAULT_STEPS = 1000


def _add_common(p: argparse.ArgumentParser, bench: bool) -> None:
    from ..models.forecaster import ForecasterConfig

    t = p.add_argument_group("training")
    t.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="N",
                   help=f"optimiser steps at most (default {DEFAULT_STEPS}; early stopping may end sooner)")
    t.add_argument("--batch-size", type=int, default=64, metavar="N", help="windows per step (default 64)")
    t.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3, 50 warm-up steps)")
    t.add_argument("--patience", type=int, default=10, metavar="N",
                   help="epochs of 100 steps without a better validation loss before stopping (default 10)")
    t.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop training after this many seconds (the best weights so far are kept)")
    t.add_argument("--quantiles", type=float, nargs="+", default=None, metavar="Q",
                   help="quantile levels (default the deciles 0.1 ... 0.9; 0.5 is always added)")
    t.add_argument("--samples", type=int, default=200, metavar="N",
                   help="sampled paths for horizons beyond the trained one (default 200)")
    t.add_argument("--baseline-steps", type=int, default=None, metavar="N",
                   help="training steps of the neural baselines (default: --steps, the matched budget)")
    t.add_argument("--no-progress", action="store_true", help="no progress lines")
    m = p.add_argument_group("model (fields of ForecasterConfig; context and patch default to 4 horizons in 16 "
                             "patches)")
    _MODEL_FLAGS[:] = add_field_flags(m, ForecasterConfig, skip=("horizon",))
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads (default: torch's)")
    if not bench:
        p.add_argument("--seed", type=int, default=0, help="seed of the weights, the windows and the paths")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("action", nargs="?", choices=["bench"], help="bench: the benchmark table over datasets")
    parser.add_argument("--dataset", default=None, metavar="NAME|CSV",
                        help="a bundled set (m1_yearly, airline, lynx, shampoo_sales, pbs, uschange, solar) or a CSV")
    parser.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                        help="bench: the datasets (default: all seven bundled sets)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S", help="bench: seeds (default 0)")
    parser.add_argument("--baseline-seeds", type=int, nargs="+", default=None, metavar="S",
                        help="bench: the seeds the neural baselines run with (default: --seeds); the statistical "
                             "ones are deterministic and run once")
    parser.add_argument("--no-xlstm", action="store_true", help="bench: the baselines only")
    parser.add_argument("--horizon", type=int, default=None, metavar="H",
                        help="steps to forecast (default: the dataset's standard horizon)")
    parser.add_argument("--freq", default=None, help="CSV: the pandas frequency (default: inferred)")
    parser.add_argument("--model", choices=["xlstm", "tirex"], default="xlstm",
                        help="xlstm: train xlstmkit's forecaster (default); tirex: TiRex zero-shot from --checkpoint")
    parser.add_argument("--checkpoint", default=None, metavar="FILE", help="TiRex's model.ckpt (with --model tirex)")
    parser.add_argument("--baselines", nargs="*", default=None, metavar="NAME",
                        help=f"also run baselines on the same windows (no names: all of {', '.join(ALL_BASELINES)})")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON to this file")
    parser.add_argument("--out", default=None, metavar="DIR", help="run folder (default runs/<time>; bench: where "
                                                                   "results.json and results.md go)")
    parser.add_argument("--no-plot", action="store_true", help="no forecast.png")
    _add_common(parser, bench=False)


# -- data -------------------------------------------------------------------------------------------------------------


def load_data(dataset: str, horizon: int | None = None, freq: str | None = None):
    """A bundled set by name, or a CSV file; ``horizon`` replaces the default one."""
    from ..data.forecasting import BUNDLED, _ALIASES, load_forecasting, read_csv

    key = _ALIASES.get(dataset.lower(), dataset.lower())
    if key in BUNDLED:
        data = load_forecasting(key)
    elif os.path.exists(dataset) or dataset.lower().endswith((".csv", ".tsv", ".txt")):
        if not os.path.isfile(dataset):
            raise ValueError(f"--dataset {dataset}: no such file; give a CSV or one of {', '.join(BUNDLED)}")
        data = read_csv(dataset, freq=freq, horizon=horizon)
    else:
        raise ValueError(f"--dataset {dataset!r} is neither a bundled set ({', '.join(BUNDLED)}) nor a CSV file")
    if horizon is not None:
        data.horizon, data.horizon_source = int(horizon), "given"
    return data


# -- the models -------------------------------------------------------------------------------------------------------


def model_config(horizon: int, args: argparse.Namespace):
    from ..models.forecaster import DECILES, ForecasterConfig

    changes = given(args, _MODEL_FLAGS)
    return ForecasterConfig.for_horizon(horizon, quantiles=tuple(args.quantiles or DECILES), **changes)


def fit_config(args: argparse.Namespace, seed: int):
    from ..train.supervised import FitConfig

    return FitConfig(max_epochs=1_000_000, max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                     warmup_steps=min(50, max(args.steps // 10, 1)), patience=args.patience,
                     time_budget=args.time_budget, seed=seed)


def run_xlstm(data, horizon: int, args: argparse.Namespace, seed: int, log=None) -> dict[str, Any]:
    """Train and forecast; returns {"forecast": frame, "model": model, "fit": FitResult, "seconds": s}."""
    from ..models.forecaster import fit, predict

    train_df, _ = data.split(horizon)
    cfg = model_config(horizon, args)
    start = time.perf_counter()

    def on_epoch(row: dict) -> None:
        if log is not None:
            val = f"  val {row['val_loss']:.4f}" if "val_loss" in row else ""
            log(f"epoch {row['epoch']:>3}  step {row['steps']:>5}  train {row['train_loss']:.4f}{val}  "
                f"{row['seconds']:.1f} s")

    model, result = fit(train_df, cfg, fit_config(args, seed), on_epoch=on_epoch)
    if log is not None and getattr(result, "note", ""):
        log(result.note)
    fc = predict(model, train_df, horizon, data.freq, num_samples=args.samples, seed=seed)
    return {"forecast": fc, "model": model, "fit": result, "seconds": time.perf_counter() - start,
            "quantiles": cfg.quantiles}


def run_tirex(data, horizon: int, checkpoint: str, quantiles=None) -> dict[str, Any]:
    """TiRex zero-shot on the training part of every series (its last 2048 points)."""
    import numpy as np
    import pandas as pd

    from ..baselines.forecasting import quantile_column
    from ..data.forecasting import series_arrays
    from ..interop.tirex import load_tirex
    from ..models.forecaster import future_times

    model = load_tirex(checkpoint)
    levels = model.config.quantiles
    want = tuple(sorted(set(quantiles or levels) | {0.5}))
    missing = [q for q in want if not any(abs(q - lv) < 1e-9 for lv in levels)]
    if missing:
        raise ValueError(f"TiRex forecasts the fixed levels {list(levels)}; --quantiles {missing} are not among them")
    train_df, _ = data.split(horizon)
    ids, values = series_arrays(train_df)
    start = time.perf_counter()
    q, _ = model.forecast([v[-model.config.train_ctx_len:] for v in values], prediction_length=horizon)
    seconds = time.perf_counter() - start
    q = q.double().numpy()
    last = train_df.groupby("unique_id", sort=False)["ds"].last()
    ds = np.concatenate([np.asarray(future_times(last.loc[u], horizon, data.freq)) for u in ids])
    fc = pd.DataFrame({"unique_id": np.repeat(ids, horizon), "ds": ds})
    fc["point"] = q[..., levels.index(0.5)].reshape(-1)
    for lv in want:
        fc[quantile_column(lv)] = q[..., [abs(lv - x) < 1e-9 for x in levels].index(True)].reshape(-1)
    return {"forecast": fc, "model": model, "fit": None, "seconds": seconds, "quantiles": want}


def score(name: str, fc, quantiles, seconds: float, data, horizon: int) -> dict[str, Any]:
    from ..baselines.forecasting import BaselineForecast, evaluate

    train_df, test_df = data.split(horizon)
    r = evaluate(BaselineForecast(name, fc, tuple(quantiles), seconds), train_df, test_df, data.season_length)
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}


def run_baselines(names, data, horizon: int, quantiles, steps: int, input_size: int, seed: int, log=None
                  ) -> dict[str, dict]:
    from ..baselines.forecasting import run_many

    train_df, _ = data.split(horizon)
    out = {}
    for name in names:  # one at a time: a failing model is reported, the others still run
        if log is not None:
            log(f"baseline {name} ...")
        try:
            fc = run_many([name], train_df, horizon, data.freq, data.season_length, quantiles, max_steps=steps,
                          input_size=input_size, seed=seed)[name]
            out[name] = {**score(name, fc.df, fc.quantiles, fc.seconds, data, horizon), "forecast": fc.df}
        except ImportError:
            raise
        except Exception as exc:  # noqa: BLE001 -- e.g. ETS on series too short for it: say so, keep going
            first = str(exc).splitlines()[0] if str(exc) else ""
            out[name] = {"model": name, "error": f"{type(exc).__name__}: {first}"}
            if log is not None:
                log(f"baseline {name} failed: {out[name]['error']}")
    return out


# -- outputs ----------------------------------------------------------------------------------------------------------


def plot(path: Path, data, horizon: int, forecasts: dict, max_series: int = 4) -> bool:
    """The last context, the forecast (median) with its 80 % band, and the actuals of the first few series."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from ..train.metrics import save_figure

    train_df, test_df = data.split(horizon)
    ids = list(dict.fromkeys(test_df["unique_id"]))[:max_series]
    fig, axes = plt.subplots(len(ids), 1, figsize=(8, 2.6 * len(ids)), squeeze=False)
    for ax, uid in zip(axes[:, 0], ids):
        tr = train_df[train_df["unique_id"] == uid].tail(max(4 * horizon, 24))
        te = test_df[test_df["unique_id"] == uid]
        ax.plot(tr["ds"], tr["y"], color="#4a90d0", lw=1.2, label="context")
        ax.plot(te["ds"], te["y"], color="black", lw=1.2, ls="--", label="actual")
        for k, (name, fc) in enumerate(forecasts.items()):
            f = fc[fc["unique_id"] == uid]
            color = ["#d94e4e", "#4caf50", "#9c27b0", "#ff9800"][k % 4]
            ax.plot(f["ds"], f["point"], color=color, lw=1.5, label=f"{name} median")
            if "q0.1" in f and "q0.9" in f:
                ax.fill_between(f["ds"], f["q0.1"], f["q0.9"], color=color, alpha=0.2, label=f"{name} 80 % band")
        ax.set_title(str(uid), fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True


def _write_json(path, obj) -> None:
    from ..train.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(obj, indent=1, default=str) + "\n").encode("utf-8"))


def _forecast_csv(forecasts: dict) -> bytes:
    import pandas as pd

    frames = []
    for name, fc in forecasts.items():
        f = fc.copy()
        f.insert(2, "model", name)
        frames.append(f)
    return pd.concat(frames, ignore_index=True).to_csv(index=False).encode("utf-8")


# -- the command ------------------------------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> None:
    positive("--steps", args.steps)
    positive("--batch-size", args.batch_size)
    positive("--patience", args.patience)
    positive("--samples", args.samples)
    positive("--horizon", args.horizon)
    positive("--baseline-steps", args.baseline_steps)
    positive("--threads", args.threads)
    finite("--lr", args.lr, 0.0, None, low_open=True)
    finite("--time-budget", args.time_budget, 0.0, None, low_open=True)
    if args.quantiles is not None:
        from ..models.forecaster import check_quantiles

        check_quantiles(args.quantiles)
    if args.baselines:
        bad = [b for b in args.baselines if b not in ALL_BASELINES]
        if bad:
            raise ValueError(f"--baselines: unknown {bad}; choose from {', '.join(ALL_BASELINES)}")


def main(args: argparse.Namespace) -> int:
    _check(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.action == "bench":
        return bench_main(args)
    if args.dataset is None:
        raise ValueError("--dataset is required (a bundled set or a CSV); or run `xlstmkit forecast bench`")
    if args.model == "tirex" and not args.checkpoint:
        raise ValueError("--model tirex needs --checkpoint FILE (TiRex's model.ckpt, downloaded once)")
    if args.checkpoint and args.model != "tirex":
        raise ValueError("--checkpoint is for --model tirex")
    from .. import runs

    log = None if args.no_progress else (lambda msg: print(msg, file=sys.stderr, flush=True))
    data = load_data(args.dataset, args.horizon, args.freq)
    H = data.horizon
    data.split(H)  # a horizon too long for the data fails here, before any work
    if args.json:
        runs.check_writable_file(args.json, "--json")
    out = runs.prepare_dir(args.out or runs.default_run_dir(), "--out")
    with runs.RunLock(out, command="xlstmkit forecast"):
        if log:
            log(f"{data.name}: {data.n_series} series, horizon {H} ({data.horizon_source}), season "
                f"{data.season_length}; run folder {out}")
        if args.model == "tirex":
            r = run_tirex(data, H, args.checkpoint, args.quantiles)
            name = "TiRex"
        else:
            r = run_xlstm(data, H, args, args.seed, log)
            name = "xLSTMForecaster"
        result: dict[str, Any] = {"dataset": data.name, "horizon": H, "model": name,
                                  **{k: v for k, v in score(name, r["forecast"], r["quantiles"], r["seconds"], data,
                                                            H).items() if k != "model"}}
        forecasts = {name: r["forecast"]}
        if r["fit"] is not None:
            f = r["fit"]
            result["training"] = {"steps": f.steps, "epochs": f.epochs, "stopped": f.stopped,
                                  "best_epoch": f.best_epoch, "best_val_loss": f.best_val_loss,
                                  "note": getattr(f, "note", "")}
            result["config"] = r["model"].config.to_dict()
            result["parameters"] = r["model"].num_parameters()
            from ..train.checkpoint import save_weights

            save_weights(out / "model.safetensors", r["model"].state_dict())
            _write_json(out / "config.json", {"kind": "forecaster", "model": result["config"], "dataset": data.name,
                                              "freq": str(data.freq)})
        if args.baselines is not None:
            names = list(args.baselines) or list(ALL_BASELINES)
            input_size = model_config(H, args).context_length
            base = run_baselines(names, data, H, r["quantiles"], args.baseline_steps or args.steps, input_size,
                                 args.seed, log)
            result["baselines"] = {}
            for n, b in base.items():
                if "forecast" in b:
                    forecasts[n] = b.pop("forecast")
                result["baselines"][n] = {k: v for k, v in b.items() if k != "model"}
            result["baseline_budget"] = {"max_steps": args.baseline_steps or args.steps, "input_size": input_size}
        from ..train.checkpoint import atomic_write_bytes

        atomic_write_bytes(out / "forecasts.csv", _forecast_csv(forecasts))
        if not args.no_plot:
            shown = {k: v for k, v in forecasts.items() if k in (name, "AutoETS")}
            plot(out / "forecast.png", data, H, shown)
        _write_json(out / "results.json", result)
        if args.json:
            _write_json(args.json, result)
    print(_line(name, result))
    for n, b in result.get("baselines", {}).items():
        print(_line(n, b))
    return 0


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _line(name: str, r: dict) -> str:
    if "error" in r:
        return f"{name:<16} failed: {r['error']}"
    return (f"{name:<16} MASE {_fmt(r.get('mase'), '.3f')}  sMAPE {_fmt(r.get('smape'), '.2f')}  scaled CRPS "
            f"{_fmt(r.get('scaled_crps'), '.4f')}  80% coverage {_fmt(r.get('coverage_80'), '.3f')}  "
            f"{r.get('seconds', 0):.1f} s")


# -- bench ------------------------------------------------------------------------------------------------------------


def bench_main(args: argparse.Namespace) -> int:
    """Every dataset x (xLSTM forecaster + baselines) x seeds; prints the markdown table."""
    from .. import runs

    datasets = args.datasets or ([args.dataset] if args.dataset else list(BENCH_DATASETS))
    seeds = args.seeds or [0]
    names = list(ALL_BASELINES) if args.baselines is None or args.baselines == [] else list(args.baselines)
    log = None if args.no_progress else (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = runs.prepare_dir(args.out, "--out") if args.out else None
    if args.json:
        runs.check_writable_file(args.json, "--json")
    for d in datasets:
        load_data(d, args.horizon, args.freq)  # unknown names fail before any training
    rows: list[dict] = []
    load = [os.getloadavg()[0]]
    for d in datasets:
        data = load_data(d, args.horizon, args.freq)
        H = data.horizon
        L = model_config(H, args).context_length
        base_seeds = args.baseline_seeds if args.baseline_seeds is not None else seeds
        for seed in sorted(set(seeds) | set(base_seeds), key=lambda x: (x not in seeds, x)):
            if log:
                log(f"== {d} (horizon {H}), seed {seed}")
            quantiles = model_config(H, args).quantiles
            if seed in seeds and not args.no_xlstm:
                r = run_xlstm(data, H, args, seed, log)
                s = score("xLSTMForecaster", r["forecast"], r["quantiles"], r["seconds"], data, H)
                rows.append({"dataset": d, "model": "xLSTMForecaster", "seed": seed, "steps": r["fit"].steps,
                             "stopped": r["fit"].stopped, **s})
            todo = [n for n in names if (n in ("xLSTM", "NHITS", "PatchTST") and seed in base_seeds)
                    or (n not in ("xLSTM", "NHITS", "PatchTST") and seed == min(base_seeds or [seed]))]
            base = run_baselines(todo, data, H, quantiles, args.baseline_steps or args.steps, L, seed, log)
            for n, b in base.items():
                b.pop("forecast", None)
                rows.append({"dataset": d, "seed": seed, **b, "model": n})
            load.append(os.getloadavg()[0])
            if out is not None:
                _write_json(out / "results.json", {"rows": rows, "load_average": load})
    table = bench_table(rows)
    print(table)
    if out is not None:
        _write_json(out / "results.json", {"rows": rows, "load_average": load})
        from ..train.checkpoint import atomic_write_bytes

        atomic_write_bytes(out / "results.md", (table + "\n").encode("utf-8"))
    if args.json:
        _write_json(args.json, {"rows": rows, "load_average": load})
    return 0


def _agg(values: list[float]) -> tuple[float, float, int]:
    import statistics

    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan"), 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def bench_table(rows: list[dict]) -> str:
    """Markdown: per dataset and model, MASE / sMAPE / scaled CRPS / 80 % coverage / seconds (mean +- std over
    seeds), then the mean MASE over the datasets and its geometric mean relative to SeasonalNaive."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    lines = ["| dataset | model | MASE | sMAPE | scaled CRPS | 80% coverage | seconds | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    per: dict[tuple[str, str], float] = {}
    for d in datasets:
        for m in models:
            rs = [r for r in rows if r["dataset"] == d and r["model"] == m]
            if not rs:
                continue
            if all("error" in r for r in rs):
                lines.append(f"| {d} | {m} | failed: {rs[0]['error'][:60]} | | | | | |")
                continue
            cells = []
            for key, spec in (("mase", ".3f"), ("smape", ".2f"), ("scaled_crps", ".4f"), ("coverage_80", ".3f"),
                              ("seconds", ".1f")):
                mean, std, n = _agg([r.get(key) for r in rs if "error" not in r])
                if n == 0:  # e.g. the scaled CRPS of a test window that is all zeros (no level to scale by)
                    cells.append("undefined")
                    continue
                cells.append(format(mean, spec) + (f" ± {format(std, spec)}" if n > 1 else ""))
                if key == "mase":
                    per[(d, m)] = mean
            lines.append(f"| {d} | {m} | " + " | ".join(cells) + f" | {len([r for r in rs if 'error' not in r])} |")
    lines += ["", "| model | mean MASE over datasets | geometric mean of MASE / SeasonalNaive's | datasets |",
              "|---|---|---|---|"]
    for m in models:
        ds = [d for d in datasets if (d, m) in per and math.isfinite(per[(d, m)])]
        if not ds:
            continue
        mean = sum(per[(d, m)] for d in ds) / len(ds)
        # datasets where either MASE is 0 (a series the seasonal naive forecast gets exactly) have no finite ratio
        rel = [per[(d, m)] / per[(d, "SeasonalNaive")] for d in ds
               if per.get((d, "SeasonalNaive"), 0.0) > 0 and per[(d, m)] > 0]
        geo = math.exp(sum(math.log(x) for x in rel) / len(rel)) if rel else float("nan")
        lines.append(f"| {m} | {mean:.3f} | {geo:.3f} | {len(ds)} |")
    return "\n".join(lines)

"""`xlstmkit detect`: train the xLSTM forecaster on a series' anomaly-free prefix and score every point by how far it
falls outside the forecast distribution; report the most anomalous region.

    xlstmkit detect --dataset kdd_tsad_135 --json r.json --out runs/kdd135
    xlstmkit detect --dataset injected:airline/level_shift --baselines
    xlstmkit detect --dataset sensor.csv --train-length 2000            # a CSV: a value column (and a label column)

Datasets: ``kdd_tsad_135`` (UCR anomaly archive series 135, bundled with aeon; prefix 1200 points), ``injected:SOURCE/
KIND[@SEED]`` (a real series with one injected anomaly: SOURCE airline, solar, pbs or kdd135_normal; KIND spike,
level_shift, frequency or flatline; see docs/datasets.md), or a CSV whose last numeric column (or the column named
value or y) is the series and an optional column named label/is_anomaly holds 0/1 labels. --train-length N says how
many leading points are anomaly-free (the training prefix; required for a CSV).

Writes scores.csv (index, value, score, label), detection.png (the series, the scores, the labelled region and the
reported one), results.json; --json F holds {"top_index", "hit", "auc_pr", "auc_roc", "region", ...} (hit and the
AUCs need labels) and, with --baselines, the same per baseline (aeon's STOMP and MERLIN).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .common import add_field_flags, given, positive

_DET_FLAGS: list[str] = []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..anomaly import DetectorConfig

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("--dataset", required=True, metavar="NAME|CSV",
                        help="kdd_tsad_135, injected:SOURCE/KIND[@SEED], or a CSV file")
    parser.add_argument("--train-length", type=int, default=None, metavar="N",
                        help="leading anomaly-free points to train on (default: the dataset's prefix)")
    parser.add_argument("--baselines", action="store_true", help="also score with aeon's STOMP and MERLIN")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON to this file")
    parser.add_argument("--out", default=None, metavar="DIR", help="run folder (default runs/<time>)")
    parser.add_argument("--no-plot", action="store_true", help="no detection.png")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads (default: torch's)")
    group = parser.add_argument_group("detector (fields of DetectorConfig)")
    _DET_FLAGS[:] = add_field_flags(group, DetectorConfig)


def load_series(dataset: str, train_length: int | None = None):
    """An AnomalySeries by name or from a CSV (module docstring)."""
    from ..data.anomaly import KINDS, AnomalySeries, injected_benchmark, load_kdd_tsad_135

    name = dataset.strip()
    if name.lower() in ("kdd_tsad_135", "kdd-tsad_135", "kdd135", "ucr135"):
        s = load_kdd_tsad_135()
    elif name.lower().startswith("injected:"):
        spec = name.split(":", 1)[1]
        seed = 0
        if "@" in spec:
            spec, seed_text = spec.rsplit("@", 1)
            try:
                seed = int(seed_text)
            except ValueError:
                raise ValueError(f"--dataset {dataset}: the seed after @ must be an integer") from None
        if "/" not in spec:
            raise ValueError(f"--dataset {dataset}: write injected:SOURCE/KIND, e.g. injected:airline/spike")
        source, kind = spec.split("/", 1)
        if kind not in KINDS:
            raise ValueError(f"--dataset {dataset}: unknown kind {kind!r}; choose from {', '.join(KINDS)}")
        s = injected_benchmark(seed, kinds=(kind,), sources=(source,))[0]
    elif Path(name).is_file():
        s = _read_csv(Path(name), train_length)
    else:
        raise ValueError(f"--dataset {dataset!r}: not kdd_tsad_135, injected:SOURCE/KIND, or an existing CSV file")
    if train_length is not None:
        if not 0 < train_length < len(s):
            raise ValueError(f"--train-length {train_length} must be between 1 and {len(s) - 1} (the series has "
                             f"{len(s)} points)")
        if s.labels[:train_length].any():
            raise ValueError(f"--train-length {train_length}: the training prefix (the first {train_length} points) "
                             "holds labelled anomalies; it must be anomaly-free")
        s = AnomalySeries(s.name, s.values, s.labels, train_length, kind=s.kind, source=s.source)
    return s


def _read_csv(path: Path, train_length: int | None):
    import pandas as pd

    from ..data.anomaly import AnomalySeries

    if train_length is None:
        raise ValueError(f"--dataset {path}: give --train-length N, the number of leading anomaly-free points")
    df = pd.read_csv(path)
    cols = {c.lower(): c for c in df.columns}
    label_col = next((cols[c] for c in ("label", "is_anomaly", "anomaly") if c in cols), None)
    value_col = next((cols[c] for c in ("value", "y") if c in cols), None)
    if value_col is None:
        numeric = [c for c in df.columns if c != label_col and pd.api.types.is_numeric_dtype(df[c])]
        if not numeric:
            raise ValueError(f"{path}: no numeric column; give a column named value (and optionally label)")
        value_col = numeric[-1]
    values = pd.to_numeric(df[value_col], errors="coerce").to_numpy(np.float64)
    if np.isnan(values).any():
        i = int(np.nonzero(np.isnan(values))[0][0])
        raise ValueError(f"{path}: row {i} of column {value_col!r} is empty or not a number; the detector needs "
                         "every point (fill or drop it)")
    labels = np.zeros(len(values), np.int8) if label_col is None else df[label_col].fillna(0).astype(int).to_numpy()
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{path}: column {label_col!r} must hold 0/1 labels")
    if not 0 < train_length < len(values):
        raise ValueError(f"--train-length {train_length} must be between 1 and {len(values) - 1}")
    return AnomalySeries(path.stem, values, labels, train_length, source=str(path))


def detector_config(args: argparse.Namespace):
    from ..anomaly import DetectorConfig

    return DetectorConfig(**given(args, _DET_FLAGS))


def plot(path: Path, series, scores: dict[str, np.ndarray], region: tuple[int, int]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from ..train.metrics import save_figure

    fig, axes = plt.subplots(1 + len(scores), 1, figsize=(10, 2.2 * (1 + len(scores))), sharex=True, squeeze=False)
    ax = axes[0, 0]
    ax.plot(series.values, lw=0.7, color="#4a90d0")
    ax.axvspan(0, series.train_end, color="grey", alpha=0.12, label="training prefix")
    for k, (a, b) in enumerate(series.anomalies):
        ax.axvspan(a, b + 1, color="red", alpha=0.3, label="labelled anomaly" if k == 0 else None)
    ax.axvspan(region[0], region[1] + 1, color="orange", alpha=0.3, label="reported region")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(series.name, fontsize=9)
    for row, (name, s) in enumerate(scores.items(), start=1):
        a = axes[row, 0]
        a.plot(s, lw=0.7, color="black")
        a.set_ylabel(name, fontsize=8)
        for lo, hi in series.anomalies:
            a.axvspan(lo, hi + 1, color="red", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True


def main(args: argparse.Namespace) -> int:
    from .. import runs
    from ..anomaly import ForecastDetector, evaluate, most_anomalous_region

    positive("--train-length", args.train_length)
    positive("--threads", args.threads)
    cfg = detector_config(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    series = load_series(args.dataset, args.train_length)
    labelled = bool(series.labels[series.train_end:].any())
    if args.json:
        runs.check_writable_file(args.json, "--json")
    out = runs.prepare_dir(args.out or runs.default_run_dir(), "--out")
    log = None if args.no_progress else (lambda msg: print(msg, file=sys.stderr, flush=True))
    with runs.RunLock(out, command="xlstmkit detect"):
        if log:
            log(f"{series.name}: {len(series)} points, training prefix {series.train_end}; run folder {out}")
        start = time.perf_counter()
        det = ForecastDetector(cfg)

        def on_epoch(row):
            if log:
                val = f"  val {row['val_loss']:.4f}" if "val_loss" in row else ""
                log(f"epoch {row['epoch']:>3}  step {row['steps']:>5}  train {row['train_loss']:.4f}{val}  "
                    f"{row['seconds']:.1f} s")

        det.fit(series.train, on_epoch=on_epoch)
        scores = det.score(series.values, series.train_end)
        region = most_anomalous_region(scores, series.train_end, det.window)
        result = {"dataset": series.name, "train_length": series.train_end, "detector": "xlstm forecast distance",
                  "top_index": int(series.train_end + np.argmax(scores[series.train_end:])), "region": list(region),
                  "seconds": time.perf_counter() - start, "period": det.period, "smooth": det.window,
                  "context_length": det.model.config.context_length, "training_steps": det.fit_result.steps}
        if labelled:
            result.update({k: v for k, v in evaluate(scores, series).items() if k != "top_index"})
        all_scores = {"xlstm": scores}
        if args.baselines:
            from ..baselines.anomaly import make

            result["baselines"] = {}
            for name in ("stomp", "merlin"):
                t = time.perf_counter()
                s = make(name).score(series)
                r = {"top_index": int(series.train_end + np.argmax(s[series.train_end:])),
                     "seconds": time.perf_counter() - t}
                if labelled:
                    r.update({k: v for k, v in evaluate(s, series).items() if k != "top_index"})
                result["baselines"][name] = r
                all_scores[name] = s
        import pandas as pd

        from ..train.checkpoint import atomic_write_bytes

        table = pd.DataFrame({"index": np.arange(len(series)), "value": series.values, "score": scores,
                              "label": series.labels})
        atomic_write_bytes(out / "scores.csv", table.to_csv(index=False).encode("utf-8"))
        if not args.no_plot:
            plot(out / "detection.png", series, all_scores, region)
        text = (json.dumps(result, indent=1) + "\n").encode("utf-8")
        atomic_write_bytes(out / "results.json", text)
        if args.json:
            atomic_write_bytes(args.json, text)
    print(_line("xlstm", result))
    for name, r in result.get("baselines", {}).items():
        print(_line(name, r))
    print(f"most anomalous region: {region[0]}-{region[1]}")
    return 0


def _line(name: str, r: dict) -> str:
    if "hit" not in r:
        return f"{name:<7} top point {r['top_index']}  ({r['seconds']:.1f} s; no labels to score against)"
    return (f"{name:<7} top point {r['top_index']}  UCR hit {'yes' if r['hit'] else 'no'}  AUC-PR {r['auc_pr']:.3f}  "
            f"AUC-ROC {r['auc_roc']:.3f}  ({r['seconds']:.1f} s)")

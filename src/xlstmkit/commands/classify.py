"""`xlstmkit classify`: time-series classification with a bidirectional xLSTM, beside its baselines on the same splits.

    xlstmkit classify --dataset GunPoint                          # bidirectional xLSTM, a few minutes on 2 cores
    xlstmkit classify --dataset JapaneseVowels --model minirocket --json jv.json
    xlstmkit classify --dataset train.ts --test test.ts --model xlstm --time-budget 60
    xlstmkit classify --dataset clips/                             # a folder of audio clips: log-mel features
    xlstmkit classify bench --seeds 3                              # the whole results table

--dataset is a UCR/UEA name aeon bundles (GunPoint, ItalyPowerDemand, ArrowHead, OSULeaf, BasicMotions,
JapaneseVowels, ...; nothing is downloaded), a .ts/.npz/.csv/.tsv file or an audio folder (docs/datasets.md). A
validation split is taken from the training set for early stopping (the test set is only scored); data without a
test set gets one from its training set first (--test-fraction). Models: xlstm-bi (default; every block reads both
ways), xlstm (causal), xlstm-alt (Vision-LSTM's alternating directions), and the baselines minirocket (aeon),
transformer, lstm, gru (bidirectional; the neural baselines matched to xlstm-bi's parameter count). The run folder
gets config.json, results.json, metrics.csv (per epoch), confusion_matrix.png and model.safetensors.

`bench` trains every model on every dataset for --seeds seeds (the same splits for every model of a seed) and writes
the table of mean test accuracy +- standard deviation, training time and parameters beside the published accuracies
(--table; the cells are kept in --out/cells.jsonl, so an interrupted bench resumes where it stopped).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .common import add_engine_flags, add_field_flags, engine, finite, given, positive

XLSTM_MODELS = {"xlstm-bi": "both", "xlstm": "causal", "xlstm-alt": "alternate"}
BASELINE_MODELS = ("minirocket", "transformer", "lstm", "gru")
MODELS = (*XLSTM_MODELS, *BASELINE_MODELS)
DEFAULT_MODEL = "xlstm-bi"
BENCH_DATASETS = ("GunPoint", "ItalyPowerDemand", "ArrowHead", "OSULeaf", "BasicMotions", "JapaneseVowels")
BENCH_MODELS = ("xlstm-bi", "xlstm", "minirocket", "transformer", "lstm")  # --models ... gru xlstm-alt for more

# Published test accuracies on the default train/test split (docs/sequence.md, "Results", lists the sources):
# ROCKET: angus924/rocket results_ucr.csv (mean of 10 runs); MiniRocket: angus924/minirocket results_ucr109_mean.csv
# (mean over 30 resamples); InceptionTime: hfawaz/InceptionTime results-InceptionTime-128.csv (univariate) and
# results-mts.csv (multivariate); HIVE-COTE 2: aeon's HC2_accuracy.csv (timeseriesclassification.com reference).
PUBLISHED: dict[str, dict[str, float | None]] = {
    "ArrowHead": {"ROCKET": 0.814, "MiniRocket": 0.881, "InceptionTime": 0.846, "HC2": 0.869},
    "GunPoint": {"ROCKET": 1.000, "MiniRocket": 0.992, "InceptionTime": 1.000, "HC2": 1.000},
    "ItalyPowerDemand": {"ROCKET": 0.970, "MiniRocket": 0.960, "InceptionTime": 0.965, "HC2": 0.970},
    "OSULeaf": {"ROCKET": 0.941, "MiniRocket": 0.958, "InceptionTime": 0.942, "HC2": 0.967},
    "ACSF1": {"ROCKET": 0.886, "MiniRocket": 0.822, "InceptionTime": 0.920, "HC2": 0.910},
    "BasicMotions": {"ROCKET": None, "MiniRocket": None, "InceptionTime": 1.000, "HC2": None},
    "JapaneseVowels": {"ROCKET": None, "MiniRocket": None, "InceptionTime": 0.992, "HC2": None},
    "PickupGestureWiimoteZ": {"ROCKET": 0.830, "MiniRocket": None, "InceptionTime": 0.760, "HC2": None},
}


def _f(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class Recipe:
    """The xLSTM classifier and the training of every neural model: chosen once for all datasets, on validation
    splits only (benchmarks/classification_results.md says what was tried). Each field is a flag of the command."""

    depth: int = _f(2, "bidirectional blocks of xlstm-bi; xlstm and xlstm-alt get twice as many one-way blocks (the "
                       "same parameters and compute)", metavar="N")
    embedding_dim: int = _f(64, "width of the xLSTM blocks", metavar="E")
    block_pattern: str = _f("xLSTM[1:0]", "mLSTM:sLSTM ratio of the blocks (paper notation; xLSTM[1:0] = mLSTM only)",
                            metavar="xLSTM[a:b]")
    num_heads: int = _f(4, "heads of the mLSTM and sLSTM cells", metavar="N")
    chunk_size: int = _f(32, "chunk of the mLSTM's chunkwise form", metavar="N")
    target_tokens: int = _f(64, "patching: P = ceil(longest training series / this) steps per token", metavar="N")
    pooling: str = _f("mean", "read-out of the real tokens", choices=("mean", "last", "first_last"))
    merge: str = _f("sum", "xlstm-bi: how the two directions' updates combine", choices=("sum", "concat"))
    dropout: float = _f(0.1, "dropout inside the blocks and before the head (all neural models)", metavar="P")
    augment: str = _f("none", "augmentation of the training batches (all neural models): none, or a comma-separated "
                              "subset of slice, scale, jitter (xlstmkit.data.classification.augment)", metavar="KINDS")
    lr: float = _f(2e-3, "AdamW learning rate (all neural models)", metavar="LR")
    weight_decay: float = _f(0.05, "AdamW weight decay (all neural models)", metavar="WD")
    batch_size: int = _f(16, "training batch size (all neural models)", metavar="N")
    warmup_steps: int = _f(20, "linear learning-rate warm-up", metavar="N")
    epoch_steps: int = _f(10, "an epoch is whole passes over the training set until at least this many batches (so "
                              "small and large sets are checked on validation equally often)", metavar="N")
    max_epochs: int = _f(60, "at most this many epochs", metavar="N")
    patience: int = _f(15, "early stopping: epochs without a better validation loss", metavar="N")
    max_steps: int | None = _f(None, "at most this many optimiser steps", metavar="N")
    time_budget: float | None = _f(180.0, "seconds of training per model (0: none)", metavar="SECONDS")

    def __post_init__(self) -> None:
        for name in ("depth", "embedding_dim", "num_heads", "chunk_size", "target_tokens", "batch_size", "epoch_steps",
                     "max_epochs", "patience"):
            positive("--" + name.replace("_", "-"), getattr(self, name))
        positive("--warmup-steps", self.warmup_steps, allow_zero=True)
        positive("--max-steps", self.max_steps)
        finite("--dropout", self.dropout, 0.0, 1.0)
        if self.dropout >= 1.0:
            raise ValueError(f"--dropout must be below 1, got {self.dropout}")
        from ..data.classification import AUGMENTATIONS

        bad = [k for k in self.augmentations if k not in AUGMENTATIONS]
        if bad:
            raise ValueError(f"--augment: unknown kind(s) {', '.join(bad)}; give none or a comma-separated subset of "
                             f"{', '.join(AUGMENTATIONS)}")
        finite("--lr", self.lr, 0.0, low_open=True)
        finite("--weight-decay", self.weight_decay, 0.0)
        if self.time_budget is not None:
            finite("--time-budget", self.time_budget, 0.0)
            if self.time_budget == 0:
                object.__setattr__(self, "time_budget", None)

    @property
    def augmentations(self) -> tuple[str, ...]:
        """The kinds named by `augment` (empty for "none")."""
        kinds = tuple(k.strip() for k in self.augment.split(",") if k.strip())
        return () if kinds in ((), ("none",)) else kinds

    def fit_config(self, seed: int, device: str = "cpu"):
        from ..train.supervised import FitConfig

        return FitConfig(max_epochs=self.max_epochs, max_steps=self.max_steps, batch_size=self.batch_size, lr=self.lr,
                         weight_decay=self.weight_decay, warmup_steps=self.warmup_steps, patience=self.patience,
                         time_budget=self.time_budget, seed=seed, device=device)


# -- the models -----------------------------------------------------------------------------------------------------

def patch_size(longest: int, recipe: Recipe) -> int:
    return max(1, math.ceil(longest / recipe.target_tokens))


def build_xlstm(model: str, n_channels: int, n_classes: int, longest: int, recipe: Recipe):
    """The xLSTM classifier `model` (xlstm-bi, xlstm, xlstm-alt) for series of up to `longest` training steps."""
    from ..config import xLSTMConfig
    from ..models.sequence import SequenceClassifier, SequenceConfig

    direction = XLSTM_MODELS[model]
    blocks = xLSTMConfig(embedding_dim=recipe.embedding_dim,
                         num_blocks=recipe.depth * (1 if direction == "both" else 2),
                         block_pattern=recipe.block_pattern, mlstm_num_heads=recipe.num_heads,
                         slstm_num_heads=recipe.num_heads, chunk_size=recipe.chunk_size, dropout=recipe.dropout)
    cfg = SequenceConfig(input_size=n_channels, blocks=blocks, direction=direction, merge=recipe.merge,
                         patch_size=patch_size(longest, recipe))
    return SequenceClassifier(cfg, n_classes, pooling=recipe.pooling, dropout=recipe.dropout)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def xlstm_params(data, recipe: Recipe, model: str = DEFAULT_MODEL) -> int:
    """Parameters of an xLSTM classifier for `data` (built on the meta device: no memory, no time)."""
    import torch

    with torch.device("meta"):
        return count_params(build_xlstm(model, data.n_channels, data.n_classes, int(data.train.lengths.max()),
                                        recipe))


def build_baseline(name: str, data, recipe: Recipe):
    """A Transformer, LSTM or GRU baseline (baselines/classification.py: bidirectional RNNs, two layers each) whose
    parameter count is within 5% of xlstm-bi's on the same data."""
    from ..baselines.classification import build, width_for_params

    kw: dict[str, Any] = {"n_layers": 2, "dropout": recipe.dropout}
    if name == "transformer":  # position embeddings for the longest series of any split (lengths only)
        kw["max_len"] = max(16, *(int(p.lengths.max()) for p in (data.train, data.val, data.test) if p is not None))
    arch = width_for_params(name, xlstm_params(data, recipe), data.n_channels, data.n_classes, **kw)
    return build(name, data.n_channels, data.n_classes, **kw, **arch)


class NeuralRun:
    """A neural classifier (an xLSTM or a Transformer/LSTM/GRU baseline) behind the interface of the baselines
    (`fit(data) -> dict`, `predict(data, split)`): every one is built under the same seed and trained by
    `xlstmkit.train.supervised.fit` with the same recipe (AdamW, warm-up, clipping, early stopping on data.val)."""

    def __init__(self, name: str, recipe: Recipe, seed: int = 0, device: str = "cpu",
                 on_epoch: Callable[[dict], None] | None = None) -> None:
        self.name, self.recipe, self.seed, self.device, self.on_epoch = name, recipe, seed, device, on_epoch
        self.model = None
        self.result = None

    def build(self, data):
        if self.name in XLSTM_MODELS:
            return build_xlstm(self.name, data.n_channels, data.n_classes, int(data.train.lengths.max()),
                               self.recipe)
        return build_baseline(self.name, data, self.recipe)

    def fit(self, data) -> dict:
        import torch
        import torch.nn.functional as F

        from ..data.classification import augment
        from ..train.supervised import fit

        cfg = self.recipe.fit_config(self.seed, self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model = self.build(data)
        self._stats = data.stats
        train, val = data.to_padded("train"), data.to_padded("val")
        bs, min_steps = cfg.batch_size, self.recipe.epoch_steps

        kinds = self.recipe.augmentations

        def epoch(rng):  # whole shuffled passes until at least `epoch_steps` batches
            n = 0
            while n < min_steps:
                for (x, mask), y in train.batches(bs, rng):
                    n += 1
                    yield ((augment(x, mask, kinds) if kinds else x), mask), y

        self.result = r = fit(self.model, F.cross_entropy, epoch, lambda: val.batches(256), cfg,
                              on_epoch=self.on_epoch)
        info = {"params": count_params(self.model), "epochs": r.epochs, "steps": r.steps, "seconds": r.seconds,
                "best_epoch": r.best_epoch, "best_val_loss": r.best_val_loss, "stopped": r.stopped}
        if self.name in XLSTM_MODELS:
            info["patch_size"] = self.model.config.patch_size
        return info

    def predict(self, data, split: str = "test"):
        from ..data.classification import pad_series
        from ..train.supervised import predict

        if self.model is None:
            raise RuntimeError("fit the model first")
        part = data.split(split)
        p = pad_series(part.series, part.labels, stats=self._stats)
        return predict(self.model, p.batches(256), self.device).argmax(-1).numpy()


def make_model(name: str, recipe: Recipe, seed: int, device: str = "cpu",
               on_epoch: Callable[[dict], None] | None = None):
    """A model with `fit(data)` and `predict(data, split)`: MiniRocket (aeon) or a `NeuralRun`."""
    if name == "minirocket":
        from ..baselines.classification import MiniRocketBaseline

        return MiniRocketBaseline(seed=seed, n_jobs=1)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return NeuralRun(name, recipe, seed, device, on_epoch)


# -- one run ----------------------------------------------------------------------------------------------------------

def load_data(dataset: str, test: str | None, val_fraction: float, test_fraction: float, seed: int):
    """(data with a validation split, the same data before the split): the test set from the source, or taken from
    its training set when it has none; the validation set always from the training set, never from the test set."""
    from ..data.classification import load, train_test_split, train_val_split

    data = load(dataset, test=test)
    if data.test is None:
        data = train_test_split(data, test_fraction, seed)
    if data.train is None or len(data.train) < 2:
        raise ValueError(f"{dataset}: the training set has fewer than 2 series; nothing to learn from")
    return train_val_split(data, val_fraction, seed), data


def run_model(name: str, data, full, recipe: Recipe, seed: int, device: str = "cpu",
              on_epoch: Callable[[dict], None] | None = None) -> tuple[dict, Any]:
    """Train `name` and score it on the test set: (result dict, the fitted model object). Neural models train on
    data.train and stop early on data.val; MiniRocket, which needs no validation, fits the whole training set
    (`full`), its published protocol."""
    import numpy as np

    from .. import metrics

    model = make_model(name, recipe, seed, device, on_epoch)
    start = time.perf_counter()
    own = full if name == "minirocket" else data  # (the same test set; normalised with the statistics fit used)
    info = model.fit(own)
    seconds = time.perf_counter() - start
    pred = model.predict(own, "test")
    y = data.test.labels
    K = data.n_classes
    params = info.get("params")
    if params is None and name == "minirocket":
        params = _minirocket_params(model)
    result = {"dataset": data.name, "model": name, "seed": seed,
              "test_accuracy": metrics.accuracy(y, pred), "macro_f1": metrics.macro_f1(y, pred, K),
              "params": params, "seconds": seconds,
              "confusion_matrix": metrics.confusion_matrix(y, pred, K).tolist(),
              "n_train": len(full.train) if name == "minirocket" else len(data.train),
              "n_val": 0 if name == "minirocket" else len(data.val), "n_test": len(data.test),
              **{k: v for k, v in info.items() if k in ("epochs", "steps", "best_epoch", "best_val_loss", "stopped",
                                                         "patch_size")}}
    result["predictions"] = np.asarray(pred).tolist()
    return result, model


def _minirocket_params(model) -> int | None:
    """The learned parameters of MiniRocket: its ridge classifier's weights and intercepts (the random kernels and
    their biases are fitted from data quantiles, not trained; not counted)."""
    ridge = getattr(getattr(model, "_clf", None), "estimator_", None)  # aeon's fitted RidgeClassifierCV
    if ridge is None or not hasattr(ridge, "coef_"):
        return None
    return int(ridge.coef_.size + ridge.intercept_.size)


class _EpochProgress:
    """Per-epoch progress (a tqdm bar on a terminal, else a line now and then) with the train and validation loss."""

    def __init__(self, desc: str, total: int, enabled: bool) -> None:
        from ..train.core import Progress

        self.progress = Progress(total, desc=desc, unit="epoch", enabled=enabled)
        self.rows: list[dict] = []

    def __call__(self, row: dict) -> None:
        self.rows.append(row)
        post = {"loss": f"{row['train_loss']:.3f}"}
        if "val_loss" in row:
            post["val"] = f"{row['val_loss']:.3f}"
        self.progress.update(row["epoch"], **post)

    def close(self) -> None:
        self.progress.close()


def _write_metrics_csv(rows: list[dict], path: Path) -> None:
    from ..train.checkpoint import atomic_write_bytes

    keys = ["epoch", "steps", "train_loss", "val_loss", "seconds"]
    lines = [",".join(keys)] + [",".join("" if r.get(k) is None else f"{r[k]:.6g}" if isinstance(r[k], float)
                                         else str(r[k]) for k in keys) for r in rows]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))


# -- the command ------------------------------------------------------------------------------------------------------

_RECIPE_FLAGS: list[str] = []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("action", nargs="?", default="run", choices=("run", "bench"),
                        help="run (default): one model on one dataset; bench: the results table")
    g = parser.add_argument_group("run")
    g.add_argument("--dataset", metavar="NAME|PATH", help="bundled UCR/UEA name, .ts/.npz/.csv/.tsv file, or audio "
                   "folder")
    g.add_argument("--test", metavar="PATH", help="test file for a .ts/.csv training file (else one is split off)")
    g.add_argument("--model", default=DEFAULT_MODEL, choices=MODELS, help=f"(default {DEFAULT_MODEL})")
    g.add_argument("--seed", type=int, default=0, help="seed of the splits, the initialisation and the batches "
                   "(default 0)")
    g.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                   help="share of the training set held out for early stopping (default 0.2)")
    g.add_argument("--test-fraction", type=float, default=0.25, metavar="F",
                   help="share taken as the test set when the data has none (default 0.25)")
    g.add_argument("--out", metavar="DIR", help="run: the run folder (default runs/<timestamp>); bench: the folder "
                   "of the cells (default benchmarks/classification_results)")
    g.add_argument("--json", metavar="FILE", help="also write the result as JSON (bench: every cell)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    b = parser.add_argument_group("bench")
    b.add_argument("--datasets", nargs="+", metavar="NAME", help=f"(default {' '.join(BENCH_DATASETS)})")
    b.add_argument("--models", nargs="+", metavar="MODEL", help=f"(default {' '.join(BENCH_MODELS)})")
    b.add_argument("--seeds", type=int, default=3, metavar="N", help="seeds 0..N-1 per cell (default 3)")
    b.add_argument("--table", metavar="FILE.md", help="the results table (default <out>/results.md)")
    recipe = parser.add_argument_group("model and training (fields of the recipe; the same for every dataset)")
    _RECIPE_FLAGS[:] = add_field_flags(recipe, Recipe)
    add_engine_flags(parser)


def _recipe(args: argparse.Namespace) -> Recipe:
    return Recipe(**given(args, _RECIPE_FLAGS))


def main(args: argparse.Namespace) -> int:
    from .. import runs

    recipe = _recipe(args)  # every flag checked before any work
    for flag in ("val_fraction", "test_fraction"):
        value = getattr(args, flag)
        finite("--" + flag.replace("_", "-"), value, 0.0, 1.0, low_open=True)
        if value >= 1.0:
            raise ValueError(f"--{flag.replace('_', '-')} must be below 1, got {value}")
    if args.json:
        runs.check_writable_file(args.json, "--json")
    if args.dtype not in (None, "float32"):
        raise ValueError(f"--dtype {args.dtype}: classify trains in float32 (the models are small; bf16 would not be "
                         "faster on a CPU); drop --dtype")
    if args.action == "bench":
        return _bench(args, recipe)
    if args.dataset is None:
        raise ValueError("--dataset is required: a bundled UCR/UEA name (e.g. GunPoint) or a file or folder")
    for flag in ("datasets", "models", "table"):
        if getattr(args, flag) is not None:
            raise ValueError(f"--{flag} belongs to `xlstmkit classify bench`")
    device, _, _ = engine(args)
    data, full = load_data(args.dataset, args.test, args.val_fraction, args.test_fraction, args.seed)
    run_dir = runs.prepare_dir(args.out or runs.default_run_dir(), "--out")
    with runs.RunLock(run_dir, runs.command_line()):
        return _run(args, recipe, data, full, run_dir, str(device))


def _run(args, recipe: Recipe, data, full, run_dir: Path, device: str) -> int:
    from ..train.checkpoint import atomic_write_bytes, save_weights

    summary = data.summary()
    print(f"{data.name}: {data.n_classes} classes, {data.n_channels} channel(s), train {summary['train']['n']} / "
          f"validation {summary['val']['n']} / test {summary['test']['n']} series, length "
          f"{summary['train']['min_length']}-{summary['train']['max_length']}"
          + (f" (MiniRocket needs no validation: it fits all {len(full.train)} training series)"
             if args.model == "minirocket" else ""), file=sys.stderr)
    config = {"classify": {"dataset": args.dataset, "name": data.name, "source": data.source, "model": args.model,
                           "seed": args.seed, "val_fraction": args.val_fraction, "recipe": dataclasses.asdict(recipe),
                           "class_names": list(map(str, data.class_names)), "data": summary}}
    progress = _EpochProgress(f"{data.name} {args.model}", recipe.max_epochs, not args.no_progress)
    try:
        result, model = run_model(args.model, data, full, recipe, args.seed, device, on_epoch=progress)
    finally:
        progress.close()
    net = getattr(model, "model", None)
    if args.model in XLSTM_MODELS:
        config["classify"]["model_config"] = net.config.to_dict()
        config["classify"]["pooling"] = net.pooling
    atomic_write_bytes(run_dir / "config.json", json.dumps(config, indent=1).encode("utf-8"))
    if net is not None:
        save_weights(run_dir / "model.safetensors", net.state_dict())
    if progress.rows:
        _write_metrics_csv(progress.rows, run_dir / "metrics.csv")
    result["run_dir"] = str(run_dir)
    result["class_names"] = list(map(str, data.class_names))
    png = run_dir / "confusion_matrix.png"
    title = f"{data.name}, {args.model}\naccuracy {result['test_accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f}"
    from ..train.metrics import plot_confusion

    result["confusion_matrix_png"] = str(png) if plot_confusion(result["confusion_matrix"], result["class_names"],
                                                                png, title) else None
    text = json.dumps(result, indent=1).encode("utf-8")
    atomic_write_bytes(run_dir / "results.json", text)
    if args.json:
        atomic_write_bytes(args.json, text)
    stop = f", {result['epochs']} epochs, stopped: {result['stopped']}" if "epochs" in result else ""
    print(f"{data.name}  {args.model}  test accuracy {result['test_accuracy']:.4f}  macro-F1 {result['macro_f1']:.4f}  "
          f"({_count(result['params'])} parameters, {result['seconds']:.1f} s training{stop})")
    if result["confusion_matrix_png"]:
        print(f"confusion matrix: {png}")
    else:
        print("confusion matrix: not drawn (matplotlib is not installed: pip install 'xlstmkit[timeseries]')")
    print(f"run folder: {run_dir}")
    return 0


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


# -- the benchmark table ----------------------------------------------------------------------------------------------

DEFAULT_BENCH_DIR = "benchmarks/classification_results"
NOTES_MARKER = "<!-- notes: kept when the table above is rewritten -->"


def _cell_key(dataset: str, model: str, seed: int, recipe: Recipe) -> str:
    return json.dumps([dataset, model, seed, dataclasses.asdict(recipe)], sort_keys=True)


def _bench(args: argparse.Namespace, recipe: Recipe) -> int:
    from .. import runs
    from ..data.classification import bundled_names

    if args.dataset is not None or args.test is not None:
        raise ValueError("bench runs --datasets (names or paths), not --dataset/--test")
    positive("--seeds", args.seeds)
    datasets = args.datasets or list(BENCH_DATASETS)
    models = args.models or list(BENCH_MODELS)
    bad = [m for m in models if m not in MODELS]
    if bad:
        raise ValueError(f"--models: unknown {bad}; choose from {', '.join(MODELS)}")
    names = set(bundled_names())
    for d in datasets:
        if d not in names and not Path(d).exists():
            raise ValueError(f"--datasets: {d} is neither a bundled dataset nor an existing file or folder")
    device, _, _ = engine(args)
    out = runs.prepare_dir(args.out or DEFAULT_BENCH_DIR, "--out")
    table = Path(args.table) if args.table else out / "results.md"
    runs.check_writable_file(table, "--table")
    with runs.RunLock(out, runs.command_line()):
        cells = run_bench(datasets, models, args.seeds, recipe, out, str(device), table,
                          progress=not args.no_progress, val_fraction=args.val_fraction,
                          test_fraction=args.test_fraction)
    if args.json:
        from ..train.checkpoint import atomic_write_bytes

        atomic_write_bytes(args.json, json.dumps(cells, indent=1).encode("utf-8"))
    print(f"wrote {table} ({len(cells)} cells; every cell in {out / 'cells.jsonl'})", file=sys.stderr)
    return 0


def run_bench(datasets: list[str], models: list[str], seeds: int, recipe: Recipe, out: Path, device: str,
              table: Path, progress: bool = True, val_fraction: float = 0.2, test_fraction: float = 0.25) -> list[dict]:
    """Every model on every dataset for seeds 0..seeds-1; the cells appended to out/cells.jsonl as they finish (a
    cell already there, with the same recipe, is not run again) and the table rewritten after each."""
    import os

    cells_path = out / "cells.jsonl"
    done: dict[str, dict] = {}
    if cells_path.exists():
        for line in cells_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                cell = json.loads(line)
                done[cell["key"]] = cell
    cells: list[dict] = []
    for dataset in datasets:
        for seed in range(seeds):
            data = full = None
            for model in models:
                key = _cell_key(dataset, model, seed, recipe)
                if key in done:
                    cells.append(done[key])
                    continue
                if data is None:
                    data, full = load_data(dataset, None, val_fraction, test_fraction, seed)
                bar = _EpochProgress(f"{dataset} {model} seed {seed}", recipe.max_epochs, progress)
                try:
                    result, _ = run_model(model, data, full, recipe, seed, device, on_epoch=bar)
                finally:
                    bar.close()
                result.pop("predictions", None)
                result.update(key=key, load_average=list(os.getloadavg()), threads=_threads())
                cells.append(result)
                with open(cells_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(result) + "\n")
                print(f"{dataset:<18} {model:<11} seed {seed}  accuracy {result['test_accuracy']:.4f}  "
                      f"macro-F1 {result['macro_f1']:.4f}  {result['seconds']:.1f} s", file=sys.stderr, flush=True)
                write_table(cells, models, table, recipe)
    write_table(cells, models, table, recipe)
    return cells


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(cells: list[dict], models: list[str]) -> dict:
    """{dataset: {model: {"acc": (mean, sd), "f1": (mean, sd), "seconds": mean, "params": int, "n": seeds}}}."""
    table: dict[str, dict[str, dict]] = {}
    for c in cells:
        table.setdefault(c["dataset"], {}).setdefault(c["model"], []).append(c)
    out: dict[str, dict] = {}
    for ds, per_model in table.items():
        out[ds] = {}
        for m, cs in per_model.items():
            out[ds][m] = {"acc": _mean_sd([c["test_accuracy"] for c in cs]),
                          "f1": _mean_sd([c["macro_f1"] for c in cs]),
                          "seconds": statistics.fmean(c["seconds"] for c in cs),
                          "params": cs[0]["params"], "n": len(cs)}
    return out


def write_table(cells: list[dict], models: list[str], path: Path, recipe: Recipe) -> None:
    """The markdown results table: accuracy mean +- sd per model and dataset beside the published accuracies, the
    mean over the datasets every model finished, then training seconds and parameters."""
    from ..train.checkpoint import atomic_write_bytes

    s = summarize(cells, models)
    datasets = list(s)
    pubs = ("ROCKET", "MiniRocket", "InceptionTime", "HC2")
    seeds = sorted({c["seed"] for c in cells})
    lines = ["# Time-series classification: xLSTM and baselines", "",
             "Written by `xlstmkit classify bench` (`python benchmarks/classification.py`).", "",
             f"Test accuracy, mean ± standard deviation over seeds {seeds} (the seed sets the validation split, the "
             "initialisation and the batches); published accuracies on the same default train/test split for "
             "reference.", ""]
    head = "| dataset | " + " | ".join(models) + " | " + " | ".join(f"{p} (published)" for p in pubs) + " |"
    lines += [head, "|" + "---|" * (1 + len(models) + len(pubs))]
    for ds in datasets:
        row = [ds]
        for m in models:
            v = s[ds].get(m)
            row.append(f"{v['acc'][0]:.3f} ± {v['acc'][1]:.3f}" if v else "")
        pub = PUBLISHED.get(ds, {})
        row += [f"{pub[p]:.3f}" if pub.get(p) is not None else "–" for p in pubs]
        lines.append("| " + " | ".join(row) + " |")
    complete = [ds for ds in datasets if all(m in s[ds] for m in models)]
    if complete:
        row = [f"**mean ({len(complete)} sets)**"]
        for m in models:
            row.append(f"**{statistics.fmean(s[ds][m]['acc'][0] for ds in complete):.3f}**")
        lines.append("| " + " | ".join(row) + " |" + " |" * len(pubs))
    lines += ["", "Macro-F1 (mean over seeds), training seconds (wall, mean over seeds) and parameters:", "",
              "| dataset | " + " | ".join(f"{m} F1 / s / params" for m in models) + " |",
              "|" + "---|" * (1 + len(models))]
    for ds in datasets:
        row = [ds]
        for m in models:
            v = s[ds].get(m)
            row.append(f"{v['f1'][0]:.3f} / {v['seconds']:.0f} / {v['params'] if v['params'] is not None else '–'}"
                       if v else "")
        lines.append("| " + " | ".join(row) + " |")
    loads = [c.get("load_average", [0])[0] for c in cells if c.get("load_average")]
    if loads:
        lines += ["", f"Load average (1 min) while the cells ran: {min(loads):.1f} to {max(loads):.1f}; torch threads "
                      f"{sorted({c.get('threads') for c in cells})}."]
    lines += ["", "Recipe: `" + json.dumps(dataclasses.asdict(recipe)) + "`"]
    notes = ""
    if path.exists():  # hand-written notes below the marker survive a rerun
        old = path.read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            notes = "\n" + NOTES_MARKER + old.split(NOTES_MARKER, 1)[1]
    atomic_write_bytes(path, ("\n".join(lines) + "\n" + notes).encode("utf-8"))

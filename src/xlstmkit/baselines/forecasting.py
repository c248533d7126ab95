"""Forecasting baselines behind one interface, all producing the same quantiles on the same test windows.

:func:`run` (or :func:`run_many`) takes the training part of a long-format frame (``unique_id, ds, y``), the
horizon, frequency and season length, and quantile levels, and returns a :class:`BaselineForecast`: a frame
``unique_id, ds, point, q0.1, ..., q0.9`` for the ``horizon`` steps after each series' training data, plus the
wall time. :func:`evaluate` scores it against the test window with :mod:`xlstmkit.metrics`.

**Statistical** (statsforecast, extra ``timeseries``): ``SeasonalNaive``, ``AutoETS``, ``AutoARIMA``,
``AutoTheta``, each with ``season_length``. Quantiles come from the models' prediction intervals: quantile q < 0.5 is
the lower bound of the central ``100 (1 - 2q)`` % interval, q > 0.5 the upper bound of the ``100 (2q - 1)`` %
interval, and q = 0.5 the point forecast (the mean, equal to the median under these models' Gaussian errors).
statsforecast cannot take missing values, so NaNs in the training data are linearly interpolated for these models
only (the edges are filled with the nearest value).

**Neural** (neuralforecast, extra ``bench``): ``xLSTM`` (the official ``xlstm`` package inside, ``backbone="mLSTM"``
because the package's sLSTM defaults to a CUDA kernel), ``NHITS`` and ``PatchTST``. Every model gets the same
training budget (``max_steps`` optimiser steps and optionally ``max_seconds`` of wall time, enforced by Lightning's
``max_time``), the same input window (``input_size``, default ``2 * horizon``, the neuralforecast examples' choice;
shorter series are left-padded), the same batch settings and seed, and the multi-quantile loss ``MQLoss`` at the
requested levels; the point forecast is the 0.5 quantile (median). Runs on the CPU with progress bars, model summaries,
checkpoints and loggers off; missing values are passed as neuralforecast's ``available_mask``. Nothing is downloaded.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..data.forecasting import align, series_arrays
from ..extras import require
from .. import metrics

DEFAULT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
STATISTICAL = ("SeasonalNaive", "AutoETS", "AutoARIMA", "AutoTheta")
NEURAL = ("xLSTM", "NHITS", "PatchTST")


def quantile_column(q: float) -> str:
    """The column name of quantile level q (``q0.1``)."""
    return f"q{q:g}"


@dataclass
class BaselineForecast:
    """One model's forecasts: ``df`` with ``unique_id, ds, point`` and one column per quantile level."""

    model: str
    df: "pd.DataFrame"  # noqa: F821
    quantiles: tuple[float, ...]
    seconds: float

    @property
    def quantile_columns(self) -> list[str]:
        return [quantile_column(q) for q in self.quantiles]


def _check_quantiles(quantiles: Sequence[float]) -> tuple[float, ...]:
    qs = tuple(float(q) for q in quantiles)
    if not qs or any(not 0 < q < 1 for q in qs) or len(set(qs)) != len(qs):
        raise ValueError(f"quantiles must be distinct levels in (0, 1), got {list(quantiles)}")
    return tuple(sorted(qs))


def _level(q: float):
    """Interval level (percent) whose bound is quantile q; an int when it is whole (statsforecast's column names)."""
    lv = round(abs(100.0 * (1.0 - 2.0 * q)), 6)
    return int(lv) if float(lv).is_integer() else lv


# --------------------------------------------------------------------------------------------------------------------
# statsforecast


def _statistical(name: str, train_df, horizon: int, freq, season_length: int, quantiles, n_jobs: int = 1):
    pd = require("pandas", "timeseries", "the statistical baselines")
    sf_core = require("statsforecast", "timeseries", "the statistical baselines")
    sf_models = require("statsforecast.models", "timeseries", "the statistical baselines")
    m = season_length
    model = {"SeasonalNaive": lambda: sf_models.SeasonalNaive(season_length=m),
             "AutoETS": lambda: sf_models.AutoETS(season_length=m),
             "AutoARIMA": lambda: sf_models.AutoARIMA(season_length=m),
             "AutoTheta": lambda: sf_models.AutoTheta(season_length=m)}[name]()
    df = train_df[["unique_id", "ds", "y"]].copy()
    if df["y"].isna().any():
        df["y"] = df.groupby("unique_id", sort=False)["y"].transform(
            lambda s: s.interpolate(limit_direction="both"))
        if df["y"].isna().any():
            raise ValueError("a series has no observed training value; drop it")
    levels = sorted({_level(q) for q in quantiles if q != 0.5})
    sf = sf_core.StatsForecast(models=[model], freq=freq, n_jobs=n_jobs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fc = sf.forecast(df=df, h=horizon, level=levels or None)
    alias = str(model)
    out = pd.DataFrame({"unique_id": fc["unique_id"].astype(str), "ds": fc["ds"], "point": fc[alias]})
    for q in quantiles:
        col = alias if q == 0.5 else f"{alias}-{'lo' if q < 0.5 else 'hi'}-{_level(q)}"
        out[quantile_column(q)] = fc[col].to_numpy(dtype=np.float64)
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------------------------------------------
# neuralforecast


def _quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "neuralforecast"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _neural(names: Sequence[str], train_df, horizon: int, freq, quantiles, *, input_size: int | None = None,
            max_steps: int = 500, max_seconds: float | None = None, batch_size: int = 32,
            learning_rate: float | None = None, seed: int = 0, model_kw: dict | None = None):
    import datetime

    pd = require("pandas", "timeseries", "the neural forecasting baselines")
    nf_core = require("neuralforecast", "bench", "the neural forecasting baselines")
    nf_models = require("neuralforecast.models", "bench", "the neural forecasting baselines")
    losses = require("neuralforecast.losses.pytorch", "bench", "the neural forecasting baselines")
    _quiet_lightning()
    input_size = int(input_size or 2 * horizon)
    trainer = dict(accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
                   logger=False, enable_checkpointing=False)
    if max_seconds is not None:
        trainer["max_time"] = datetime.timedelta(seconds=float(max_seconds))
    loss_levels = sorted(set(quantiles) | {0.5})  # the median is the point forecast
    common = dict(h=horizon, input_size=input_size, loss=losses.MQLoss(quantiles=loss_levels),
                  max_steps=max_steps, batch_size=batch_size, random_seed=seed, start_padding_enabled=True,
                  **trainer)
    if learning_rate is not None:
        common["learning_rate"] = learning_rate
    models = []
    for name in names:
        kw = dict(common, **(model_kw or {}).get(name, {}))
        if name == "xLSTM":
            require("xlstm", "bench", "neuralforecast's xLSTM model")
            kw.setdefault("backbone", "mLSTM")
            if kw["backbone"] != "mLSTM":
                raise ValueError("neuralforecast's xLSTM baseline runs with backbone='mLSTM' on a CPU "
                                 "(the xlstm package's sLSTM defaults to a CUDA kernel)")
            models.append(nf_models.xLSTM(**kw))
        elif name == "NHITS":
            models.append(nf_models.NHITS(**kw))
        elif name == "PatchTST":
            kw.setdefault("patch_len", min(16, input_size))
            kw.setdefault("stride", max(1, kw["patch_len"] // 2))
            models.append(nf_models.PatchTST(**kw))
        else:
            raise ValueError(f"unknown neural baseline {name!r}; choose from {NEURAL}")
    df = train_df[["unique_id", "ds", "y"]].copy()
    df["available_mask"] = (~df["y"].isna()).astype(np.float32)
    df["y"] = df["y"].fillna(0.0)
    out = {}
    for model in models:  # one at a time, so each gets its own wall time
        nf = nf_core.NeuralForecast(models=[model], freq=freq)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nf.fit(df=df)
            fc = nf.predict()
        seconds = time.perf_counter() - start
        alias = str(model)
        names_out = list(model.loss.output_names)
        levels = [float(q) for q in model.loss.quantiles.cpu().numpy()]
        res = pd.DataFrame({"unique_id": fc["unique_id"].astype(str), "ds": fc["ds"]})
        def column(q: float):
            j = int(np.argmin([abs(lv - q) for lv in levels]))
            return fc[alias + names_out[j]].to_numpy(dtype=np.float64)

        res["point"] = column(0.5)
        for q in quantiles:
            res[quantile_column(q)] = column(q)
        out[alias] = (res.reset_index(drop=True), seconds)
    return out


# --------------------------------------------------------------------------------------------------------------------
# the interface


def run(name: str, train_df, horizon: int, freq, season_length: int, quantiles: Sequence[float] = DEFAULT_QUANTILES,
        **kw) -> BaselineForecast:
    """Forecast ``horizon`` steps after every series of ``train_df`` with one baseline (see the module docstring)."""
    return run_many([name], train_df, horizon, freq, season_length, quantiles, **kw)[name]


def run_many(names: Sequence[str], train_df, horizon: int, freq, season_length: int,
             quantiles: Sequence[float] = DEFAULT_QUANTILES, *, n_jobs: int = 1, **neural_kw
             ) -> dict[str, BaselineForecast]:
    """Several baselines on the same data; neural keyword arguments (``input_size``, ``max_steps``,
    ``max_seconds``, ``batch_size``, ``learning_rate``, ``seed``, ``model_kw``) apply to every neural model alike."""
    qs = _check_quantiles(quantiles)
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    unknown = [n for n in names if n not in STATISTICAL + NEURAL]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {STATISTICAL + NEURAL}")
    out: dict[str, BaselineForecast] = {}
    for name in names:
        if name in STATISTICAL:
            start = time.perf_counter()
            df = _statistical(name, train_df, horizon, freq, season_length, qs, n_jobs)
            out[name] = BaselineForecast(name, df, qs, time.perf_counter() - start)
    neural = [n for n in names if n in NEURAL]
    if neural:
        for name, (df, seconds) in _neural(neural, train_df, horizon, freq, qs, **neural_kw).items():
            out[name] = BaselineForecast(name, df, qs, seconds)
    return {n: out[n] for n in names}


def evaluate(forecast: BaselineForecast, train_df, test_df, season_length: int, level: float = 80.0) -> dict:
    """Metrics of one forecast on the test window (:func:`xlstmkit.metrics.forecast_scores`)."""
    cols = ["point", *forecast.quantile_columns]
    y, arr = align(test_df, forecast.df, cols)
    order = list(dict.fromkeys(test_df["unique_id"].astype(str)))
    ids, values = series_arrays(train_df)
    pos = {u: i for i, u in enumerate(ids)}
    missing = [u for u in order if u not in pos]
    if missing:
        raise ValueError(f"series {missing[0]!r} has test data but no training data")
    insample = [values[pos[u]] for u in order]
    q_hat = np.stack([arr[c] for c in forecast.quantile_columns], axis=-1)
    scores = metrics.forecast_scores(y, arr["point"], insample, season_length, q_hat, forecast.quantiles, level)
    return {"model": forecast.model, **scores, "seconds": forecast.seconds}

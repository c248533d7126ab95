"""Forecasting data: series in the Nixtla long format, bundled benchmark sets, the user's CSV, splits and windows.

**The format.** Every loader returns a :class:`ForecastData` whose ``df`` is a pandas DataFrame with columns
``unique_id`` (str), ``ds`` (datetime64, or int64 for a plain step index) and ``y`` (float64), sorted by series and
time, one row per time step on a regular grid of frequency ``freq``: the long format statsforecast, neuralforecast and
utilsforecast take. A missing observation is a row whose ``y`` is NaN; it is kept (models mask it), never filled in.

**Seasonality and horizon.** ``season_length`` is the primary seasonal period in steps (the Monash archive's choice
per frequency: yearly 1, quarterly 4, monthly 12, weekly 52, daily 7, sub-daily the steps in one day). ``horizon``
is the default number of steps to forecast, and ``horizon_source`` says where it comes from: a competition's horizon
where the data come from one (M1: 6), else the Monash archive's rule for data without one (yearly 6 and quarterly 8
as in the M competitions, monthly 12 = one year, weekly 8, daily 30, sub-daily one day).

**Splits.** :func:`train_test_split` holds out the last ``horizon`` points of every series (the test window).
:class:`WindowSampler` cuts (context, horizon) windows out of the training part for global models: seeded sampling of
training windows, and a validation window per series, the last window before the test window.

**Bundled sets** (offline, read from the files inside the installed aeon; :data:`BUNDLED`): M1 yearly (181 series),
Airline, Lynx, ShampooSales, PBS, Uschange (5 series, forecast channel-independently) and solar.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..extras import require


def _pd():
    return require("pandas", "timeseries", "forecasting data")


# --------------------------------------------------------------------------------------------------------------------
# frequency -> seasonality and default horizon


def _freq_kind(freq) -> tuple[str, int]:
    """('year'|'quarter'|'month'|'week'|'bday'|'day'|'subday'|'multiday'|'step', steps per natural period)."""
    if isinstance(freq, (int, np.integer)):
        return "step", 1
    pd = _pd()
    try:
        off = pd.tseries.frequencies.to_offset(freq)
    except ValueError:
        raise ValueError(f"unknown frequency {freq!r}; use a pandas alias such as 'MS', 'QS', 'YS', 'W', 'D', 'h'") from None
    o = pd.tseries.offsets
    n = max(int(off.n), 1)
    if isinstance(off, (o.YearBegin, o.YearEnd, o.BYearBegin, o.BYearEnd)):
        return "year", 1
    if isinstance(off, (o.QuarterBegin, o.QuarterEnd, o.BQuarterBegin, o.BQuarterEnd)):
        return "quarter", 4 // n if 4 % n == 0 else 1
    if isinstance(off, (o.MonthBegin, o.MonthEnd, o.BusinessMonthBegin, o.BusinessMonthEnd)):
        return "month", 12 // n if 12 % n == 0 else 1
    if isinstance(off, o.Week):
        return "week", max(52 // n, 1)
    if isinstance(off, (o.BusinessDay, o.CustomBusinessDay)):
        return "bday", 5 if n == 1 else 1
    if isinstance(off, pd.tseries.offsets.Tick):
        day = pd.Timedelta("1D").value
        if off.nanos == day:
            return "day", 7
        if off.nanos < day:
            per_day = day / off.nanos
            return "subday", int(per_day) if float(per_day).is_integer() else 1
        return "multiday", 1
    return "other", 1


def season_length_for(freq) -> int:
    """Primary seasonal period for a frequency (Monash archive convention; 1 when there is none)."""
    return _freq_kind(freq)[1]


_HORIZON_RULE = {
    "year": (6, "yearly horizon of the M1/M3/M4 competitions (6)"),
    "quarter": (8, "quarterly horizon of the M1/M3/M4 competitions (8)"),
    "month": (12, "Monash archive rule for monthly data without a competition horizon: one year (12)"),
    "week": (8, "Monash archive rule for weekly data: 8 weeks"),
    "bday": (30, "Monash archive rule for daily data: 30 days"),
    "day": (30, "Monash archive rule for daily data: 30 days"),
}


def default_horizon_for(freq) -> tuple[int, str]:
    """(horizon, where it comes from) for a frequency; raises for a plain step index (no natural horizon)."""
    kind, season = _freq_kind(freq)
    if kind in _HORIZON_RULE:
        return _HORIZON_RULE[kind]
    if kind == "subday" and season > 1:
        return season, f"Monash archive rule for sub-daily data: one day ({season} steps)"
    raise ValueError(f"no default horizon for frequency {freq!r}; pass horizon=")


# --------------------------------------------------------------------------------------------------------------------
# container


@dataclass
class ForecastData:
    """Series in the long format (``df``: unique_id, ds, y) with their frequency, seasonality and default horizon."""

    name: str
    df: "pd.DataFrame"  # noqa: F821
    freq: str | int
    season_length: int
    horizon: int
    horizon_source: str
    source: str = ""

    @property
    def n_series(self) -> int:
        return int(self.df["unique_id"].nunique())

    @property
    def lengths(self) -> np.ndarray:
        return self.df.groupby("unique_id", sort=False).size().to_numpy()

    def split(self, horizon: int | None = None):
        """``train_test_split(self.df, horizon or self.horizon)``."""
        return train_test_split(self.df, self.horizon if horizon is None else horizon)

    def summary(self) -> dict:
        ln = self.lengths
        return {"name": self.name, "n_series": self.n_series, "min_length": int(ln.min()), "max_length": int(ln.max()),
                "freq": self.freq, "season_length": self.season_length, "horizon": self.horizon,
                "horizon_source": self.horizon_source, "missing": int(self.df["y"].isna().sum())}


# --------------------------------------------------------------------------------------------------------------------
# bundled data


@dataclass(frozen=True)
class _Spec:
    file: str
    freq: str
    season_length: int
    horizon: int
    horizon_source: str
    description: str


_MONTHLY = "Monash archive rule for monthly data without a competition horizon: one year (12)"
BUNDLED: dict[str, _Spec] = {
    "m1_yearly": _Spec("m1_yearly_dataset/m1_yearly_dataset.tsf", "YS", 1, 6,
                       "the file's @horizon: the M1 competition's yearly horizon (6), as in the Monash archive",
                       "M1 competition, 181 yearly series, lengths 15-58"),
    "airline": _Spec("Airline/Airline.csv", "MS", 12, 12, _MONTHLY,
                     "Box-Jenkins airline passengers, monthly 1949-1960, 144 points"),
    "lynx": _Spec("Lynx/Lynx.csv", "YS", 1, 6, "yearly horizon of the M1/M3/M4 competitions (6)",
                  "Canadian lynx trappings, yearly 1821-1934, 114 points (a ~10-year cycle, not a season)"),
    "shampoo_sales": _Spec("ShampooSales/ShampooSales.csv", "MS", 12, 12, _MONTHLY,
                           "shampoo sales, monthly over 3 years, 36 points"),
    "pbs": _Spec("PBS_dataset/PBS_dataset.csv", "MS", 12, 12, _MONTHLY,
                 "Australian PBS scripts (immune sera), monthly 1991-07 to 2008-06, 204 points, intermittent"),
    "uschange": _Spec("Uschange/Uschange.csv", "QS", 4, 8, "quarterly horizon of the M1/M3/M4 competitions (8)",
                      "US quarterly % changes 1970Q1-2016Q3: 5 series (Consumption, Income, Production, Savings, "
                      "Unemployment), forecast channel-independently"),
    "solar": _Spec("solar/solar.csv", "30min", 48, 48,
                   "Monash archive rule for sub-daily data: one day (48 half-hours)",
                   "GB national solar generation estimate (Sheffield Solar PV_Live), half-hourly, 289 points"),
}

_ALIASES = {"m1_yearly_dataset": "m1_yearly", "m1": "m1_yearly", "shampoosales": "shampoo_sales",
            "shampoo": "shampoo_sales", "pbs_dataset": "pbs"}


def _aeon_data_dir() -> Path:
    datasets = require("aeon.datasets", "timeseries", "loading the bundled forecasting data")
    return Path(datasets.__file__).parent / "data"


def _single(pd, uid: str, ds, values) -> "pd.DataFrame":  # noqa: F821
    return pd.DataFrame({"unique_id": uid, "ds": ds, "y": np.asarray(values, dtype=np.float64)})


def load_forecasting(name: str) -> ForecastData:
    """A bundled set by name (``m1_yearly``, ``airline``, ``lynx``, ``shampoo_sales``, ``pbs``, ``uschange``,
    ``solar``; aeon's own names are accepted too), read from the copy inside aeon: no network."""
    pd = _pd()
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in BUNDLED:
        raise ValueError(f"unknown forecasting set {name!r}; bundled: {', '.join(BUNDLED)}")
    spec = BUNDLED[key]
    path = _aeon_data_dir() / spec.file
    if key == "m1_yearly":
        datasets = require("aeon.datasets", "timeseries", "reading .tsf files")
        raw, meta = datasets.load_from_tsf_file(str(path))
        if int(meta.get("forecast_horizon") or spec.horizon) != spec.horizon:
            raise ValueError(f"{path}: unexpected @horizon {meta.get('forecast_horizon')}")
        parts = [_single(pd, str(r.series_name), pd.date_range(r.start_timestamp, periods=len(r.series_value),
                                                                    freq=spec.freq), list(r.series_value))
                 for r in raw.itertuples()]
        df = pd.concat(parts, ignore_index=True)
    else:
        raw = pd.read_csv(path)
        if key == "uschange":
            ds = pd.PeriodIndex(raw["Quarter"].str.replace(" ", "", regex=False), freq="Q").to_timestamp(how="start")
            cols = [c for c in raw.columns if c not in ("Quarter",) and not str(c).startswith("Unnamed")]
            df = pd.concat([_single(pd, c, ds, raw[c]) for c in cols], ignore_index=True)
        elif key == "solar":
            ds = pd.to_datetime(raw.iloc[:, 0], utc=True).dt.tz_localize(None)  # UTC wall time, naive
            df = _single(pd, "solar", ds, raw.iloc[:, 1])
        elif key == "lynx":
            ds = pd.to_datetime(raw.iloc[:, 0].astype(int).astype(str), format="%Y")
            df = _single(pd, "lynx", ds, raw.iloc[:, 1])
        else:  # monthly: '1949-01' or '1991 Jul'
            ds = pd.PeriodIndex(pd.to_datetime(raw.iloc[:, 0], format="mixed"), freq="M").to_timestamp(how="start")
            df = _single(pd, key, ds, raw.iloc[:, 1])
    df = validate_long(df, freq=spec.freq, where=str(path))
    return ForecastData(key, df, spec.freq, spec.season_length, spec.horizon, spec.horizon_source, str(path))


# --------------------------------------------------------------------------------------------------------------------
# checking the long format (used for bundled and user data alike)


def _infer_freq(df, where: str):
    pd = _pd()
    found: dict[str, int] = {}
    for _, g in df.groupby("unique_id", sort=False):
        if len(g) >= 3:
            f = pd.infer_freq(pd.DatetimeIndex(g["ds"]))
            if f is not None:
                found[f] = found.get(f, 0) + 1
    if not found:
        raise ValueError(f"{where}: cannot infer the frequency (gaps, irregular times or series shorter than 3); "
                         "pass freq= (a pandas alias such as 'MS', 'D', 'h')")
    return max(found, key=found.get)


def validate_long(df, *, freq=None, where: str = "data"):
    """Check and normalise a long-format frame; returns it sorted with dtypes unique_id str, ds datetime64/int64,
    y float64. One-line ValueErrors for: missing columns, non-numeric y, unparseable times, duplicate or unsorted
    times inside a series, and gaps (a time missing from the regular grid of ``freq``; ``freq`` inferred with pandas
    when not given). Missing values (NaN y) are kept."""
    pd = _pd()
    missing = {"unique_id", "ds", "y"} - set(df.columns)
    if missing:
        raise ValueError(f"{where}: missing column(s) {sorted(missing)}; the long format needs unique_id, ds, y")
    df = df[["unique_id", "ds", "y"]].copy()
    df["unique_id"] = df["unique_id"].astype(str)
    y = pd.to_numeric(df["y"], errors="coerce")
    bad = y.isna() & df["y"].notna() & (df["y"].astype(str).str.strip() != "")
    if bad.any():
        i = bad.to_numpy().nonzero()[0][0]
        raise ValueError(f"{where}: y value {df['y'].iloc[i]!r} (series {df['unique_id'].iloc[i]!r}, row {i}) is not "
                         "a number; write missing values as an empty cell or NaN")
    df["y"] = y.astype(np.float64)
    integer_time = pd.api.types.is_integer_dtype(df["ds"])
    if not integer_time:
        ds = df["ds"]
        if not pd.api.types.is_datetime64_any_dtype(ds):
            ds = pd.to_datetime(ds, errors="coerce", format="mixed")
            if ds.isna().any():
                i = ds.isna().to_numpy().nonzero()[0][0]
                raise ValueError(f"{where}: time {df['ds'].iloc[i]!r} (row {i}) is not a date; use ISO dates "
                                 "(2024-01-31, 2024-01-31 13:00) or integer steps")
        if getattr(ds.dt, "tz", None) is not None:
            ds = ds.dt.tz_convert("UTC").dt.tz_localize(None)
        df["ds"] = ds.astype("datetime64[ns]")
    # order of series as first seen; times must already be increasing inside each series
    codes = pd.factorize(df["unique_id"])[0]
    df = df.iloc[np.argsort(codes, kind="stable")].reset_index(drop=True)
    same = df["unique_id"].to_numpy()[1:] == df["unique_id"].to_numpy()[:-1]
    t = df["ds"].to_numpy()
    step = t[1:] - t[:-1]
    zero = np.zeros((), dtype=step.dtype)
    dup = same & (step == zero)
    if dup.any():
        i = int(dup.nonzero()[0][0]) + 1
        raise ValueError(f"{where}: series {df['unique_id'].iloc[i]!r} has time {df['ds'].iloc[i]} twice; "
                         "keep one row per time")
    back = same & (step < zero)
    if back.any():
        i = int(back.nonzero()[0][0]) + 1
        raise ValueError(f"{where}: times of series {df['unique_id'].iloc[i]!r} are not sorted (at {df['ds'].iloc[i]});"
                         " sort the rows by time")
    if integer_time:
        if freq not in (None, 1):
            raise ValueError(f"{where}: integer times step by 1; freq={freq!r} does not apply")
        gap = same & (step != 1)
        if gap.any():
            i = int(gap.nonzero()[0][0])
            raise ValueError(f"{where}: series {df['unique_id'].iloc[i]!r} has a gap after step {df['ds'].iloc[i]}; "
                             "add the missing steps with an empty y (kept as missing)")
        df["ds"] = df["ds"].astype(np.int64)
        return df
    freq = freq if freq is not None else _infer_freq(df, where)
    _check_grid(df, freq, where)
    return df


def _check_grid(df, freq, where: str) -> None:
    pd = _pd()
    for uid, g in df.groupby("unique_id", sort=False):
        ds = pd.DatetimeIndex(g["ds"])
        grid = pd.date_range(ds[0], periods=len(ds), freq=freq)
        if len(ds) and grid[0] != ds[0]:
            raise ValueError(f"{where}: series {uid!r} starts at {ds[0]}, which is not on the {freq!r} grid; "
                             "align the times or pass the right freq=")
        off = np.nonzero(grid.to_numpy() != ds.to_numpy())[0]
        if len(off):
            i = int(off[0])
            if ds[i] > grid[i]:
                raise ValueError(f"{where}: series {uid!r} has a gap: no row for {grid[i]} (frequency {freq!r}); "
                                 "add the missing times with an empty y (kept as missing)")
            raise ValueError(f"{where}: series {uid!r} has time {ds[i]} off the {freq!r} grid (expected {grid[i]}); "
                             "pass the right freq=")


# --------------------------------------------------------------------------------------------------------------------
# the user's CSV


def read_csv(path: str | os.PathLike, *, layout: str = "auto", time_col: str | None = None, freq=None,
             season_length: int | None = None, horizon: int | None = None, name: str | None = None) -> ForecastData:
    """A CSV of series, long or wide, checked and converted to the long format.

    - **long**: columns ``unique_id, ds, y`` (any order, other columns ignored), one row per series and time.
    - **wide**: a time column (``time_col``, default the first column) and one column per series, named by its id;
      empty cells are missing values. Leading and trailing empty cells of a column are dropped (a series starts at
      its first value), inner ones are kept as NaN.

    ``layout="auto"`` picks long when the three long columns are present. Times are ISO dates (or integers: a plain
    step index, freq 1). ``freq`` is inferred with pandas when not given; ``season_length`` and ``horizon`` default
    from the frequency (see the module docstring). Errors are one line: gaps, duplicate or unsorted times,
    non-numeric values, unknown columns.
    """
    pd = _pd()
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    try:
        raw = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    if layout == "auto":
        layout = "long" if {"unique_id", "ds", "y"} <= set(raw.columns) else "wide"
    where = str(path)
    if layout == "long":
        df = raw
    elif layout == "wide":
        tcol = time_col or raw.columns[0]
        if tcol not in raw.columns:
            raise ValueError(f"{where}: no time column {tcol!r}; columns are {list(raw.columns)}")
        value_cols = [c for c in raw.columns if c != tcol]
        if not value_cols:
            raise ValueError(f"{where}: only a time column; add one column per series")
        parts = []
        for c in value_cols:
            col = raw[c]
            present = col.notna() & (col.astype(str).str.strip() != "")
            if not present.any():
                continue
            idx = present.to_numpy().nonzero()[0]
            sl = slice(idx[0], idx[-1] + 1)
            parts.append(pd.DataFrame({"unique_id": c, "ds": raw[tcol].iloc[sl].to_numpy(),
                                       "y": col.iloc[sl].to_numpy()}))
        if not parts:
            raise ValueError(f"{where}: every series column is empty")
        df = pd.concat(parts, ignore_index=True)
    else:
        raise ValueError(f"layout must be 'auto', 'long' or 'wide', got {layout!r}")
    df = validate_long(df, freq=freq, where=where)
    integer_time = pd.api.types.is_integer_dtype(df["ds"])
    if integer_time:
        freq = 1
    elif freq is None:
        freq = _infer_freq(df, where)
    season = season_length if season_length is not None else season_length_for(freq)
    if horizon is None:
        horizon, source = default_horizon_for(freq)
    else:
        source = "given"
    return ForecastData(name or path.stem, df, freq, int(season), int(horizon), source, str(path))


def from_arrays(series: Sequence[np.ndarray] | np.ndarray, *, freq="D", start="2000-01-01", ids=None,
                season_length: int | None = None, horizon: int | None = None, name: str = "arrays") -> ForecastData:
    """Series given as arrays (a 2-D array is one series per row) as ForecastData on a regular grid from ``start``."""
    pd = _pd()
    rows = [np.asarray(s, dtype=np.float64).reshape(-1) for s in series]
    ids = [str(i) for i in (ids if ids is not None else range(len(rows)))]
    parts = [_single(pd, i, pd.date_range(start, periods=len(v), freq=freq), v) for i, v in zip(ids, rows)]
    df = validate_long(pd.concat(parts, ignore_index=True), freq=freq, where=name)
    if horizon is None:
        horizon, source = default_horizon_for(freq)
    else:
        source = "given"
    season = season_length if season_length is not None else season_length_for(freq)
    return ForecastData(name, df, freq, int(season), int(horizon), source)


# --------------------------------------------------------------------------------------------------------------------
# splits, arrays, windows


def train_test_split(df, horizon: int):
    """(train, test): the last ``horizon`` rows of every series are the test window, the rest is training data."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    sizes = df.groupby("unique_id", sort=False)["y"].transform("size")
    short = sizes <= horizon
    if short.any():
        uid = df["unique_id"][short].iloc[0]
        raise ValueError(f"series {uid!r} has {int(sizes[short].iloc[0])} points; a test window of {horizon} needs at "
                         "least one more (shorten the horizon or drop the series)")
    from_end = df.groupby("unique_id", sort=False).cumcount(ascending=False)
    test = from_end < horizon
    return df[~test].reset_index(drop=True), df[test].reset_index(drop=True)


def series_arrays(df) -> tuple[list[str], list[np.ndarray]]:
    """(ids in order of appearance, float64 value arrays) of a long-format frame."""
    ids, values = [], []
    for uid, g in df.groupby("unique_id", sort=False):
        ids.append(str(uid))
        values.append(g["y"].to_numpy(dtype=np.float64))
    return ids, values


def align(test_df, forecast_df, columns: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Actuals and forecasts as (N, H) arrays, matched on (unique_id, ds): ``y`` and one array per column.

    Every test row must have a forecast; series keep the order of ``test_df`` and need the same H.
    """
    merged = test_df[["unique_id", "ds", "y"]].merge(forecast_df[["unique_id", "ds", *columns]],
                                                     on=["unique_id", "ds"], how="left", validate="one_to_one")
    lost = merged[list(columns)].isna().all(axis=1)
    if lost.any():
        r = merged[lost].iloc[0]
        raise ValueError(f"no forecast for series {r['unique_id']!r} at {r['ds']}; forecast every test time")
    sizes = merged.groupby("unique_id", sort=False).size()
    if sizes.nunique() != 1:
        raise ValueError("test windows differ in length between series; align needs one horizon")
    n, h = len(sizes), int(sizes.iloc[0])
    y = merged["y"].to_numpy(dtype=np.float64).reshape(n, h)
    return y, {c: merged[c].to_numpy(dtype=np.float64).reshape(n, h) for c in columns}


@dataclass
class Windows:
    """A batch of forecasting windows: ``context`` (B, L) and ``target`` (B, H) float32 with missing values set to 0,
    their masks (True = observed; context positions before a series' start are left padding, mask False), the series
    index (into :attr:`WindowSampler.ids`) and the cutoff (index in that series of the first target point)."""

    context: torch.Tensor
    context_mask: torch.Tensor
    target: torch.Tensor
    target_mask: torch.Tensor
    series: torch.Tensor
    cutoff: torch.Tensor

    def __len__(self) -> int:
        return self.context.shape[0]

    def batch(self) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """``((context, context_mask), (target, target_mask))``: the batch form :func:`xlstmkit.train.supervised.fit`
        takes (``model(context, context_mask)``, ``loss_fn(output, (target, target_mask))``)."""
        return (self.context, self.context_mask), (self.target, self.target_mask)


class WindowSampler:
    """(context, horizon) windows over many series for training a global model.

    Built on the *training* part (after :func:`train_test_split`). For a series of n training points and cutoff t
    (index of the first target point), the window is ``context = y[t-L : t]`` (left-padded where t < L) and
    ``target = y[t : t+H]``.

    - :meth:`validation`: one window per series with ``t = n - H``: the last H training points, i.e. the window just
      before the test window.
    - :meth:`sample`: training windows with ``min_context <= t <= n - 2H`` (targets end before the validation target;
      with ``hold_out_validation=False``, ``t <= n - H``), drawn uniformly over all valid (series, t) pairs with the
      caller's seeded generator.
    - :meth:`forecast_context`: the last L training points of every series (the input for forecasting the test window).
    """

    def __init__(self, df, context_length: int, horizon: int, *, min_context: int = 1,
                 hold_out_validation: bool = True):
        if context_length < 1 or horizon < 1 or min_context < 1:
            raise ValueError("context_length, horizon and min_context must be >= 1")
        self.ids, self.values = series_arrays(df)
        self.context_length, self.horizon, self.min_context = int(context_length), int(horizon), int(min_context)
        self.lengths = np.array([len(v) for v in self.values], dtype=np.int64)
        self._flat = np.concatenate(self.values) if self.values else np.zeros(0)
        self._start = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        last = self.lengths - (2 if hold_out_validation else 1) * self.horizon
        self._count = np.clip(last - self.min_context + 1, 0, None)
        self._cum = np.cumsum(self._count)

    @property
    def n_windows(self) -> int:
        """How many distinct training windows there are."""
        return int(self._cum[-1]) if len(self._cum) else 0

    def _gather(self, series: np.ndarray, cutoff: np.ndarray, with_target: bool = True) -> Windows:
        L, H = self.context_length, self.horizon
        pos = cutoff[:, None] + np.arange(-L, H if with_target else 0)[None, :]  # positions in each series
        inside = (pos >= 0) & (pos < self.lengths[series][:, None])
        flat = np.where(inside, self._start[series][:, None] + pos, 0)
        vals = np.where(inside, self._flat[flat] if len(self._flat) else 0.0, np.nan)
        obs = ~np.isnan(vals)
        vals = np.where(obs, vals, 0.0).astype(np.float32)
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        return Windows(t(vals[:, :L]), t(obs[:, :L]), t(vals[:, L:]), t(obs[:, L:]),
                       t(series.astype(np.int64)), t(cutoff.astype(np.int64)))

    def sample(self, batch_size: int, rng: np.random.Generator) -> Windows:
        """``batch_size`` training windows drawn uniformly (with replacement) over all valid (series, cutoff)."""
        if self.n_windows == 0:
            raise ValueError(f"no training windows: every series is shorter than min_context + 2*horizon "
                             f"({self.min_context} + {2 * self.horizon}); shorten the horizon or the context")
        k = rng.integers(0, self.n_windows, size=batch_size)
        series = np.searchsorted(self._cum, k, side="right")
        before = np.where(series > 0, self._cum[np.maximum(series - 1, 0)], 0)
        cutoff = self.min_context + (k - before)
        return self._gather(series, cutoff)

    def batches(self, batch_size: int, steps: int, rng: np.random.Generator):
        """``steps`` sampled training batches in :meth:`Windows.batch` form: one "epoch" for
        :func:`xlstmkit.train.supervised.fit` (``train_batches=lambda rng: sampler.batches(64, 100, rng)``)."""
        for _ in range(steps):
            yield self.sample(batch_size, rng).batch()

    def validation(self) -> Windows:
        """The last window of each series whose cutoff ``n - H`` leaves at least ``min_context`` points before it."""
        cutoff = self.lengths - self.horizon
        keep = np.nonzero(cutoff >= self.min_context)[0]
        if len(keep) == 0:
            raise ValueError("no validation window: every series is shorter than min_context + horizon")
        return self._gather(keep, cutoff[keep])

    def forecast_context(self) -> Windows:
        """Contexts ending at the last training point of every series (targets empty: H = 0 columns)."""
        series = np.arange(len(self.values))
        w = self._gather(series, self.lengths.copy(), with_target=False)
        return w

"""Anomaly-detection baselines behind one interface: aeon's MERLIN and STOMP.

Every detector has ``name`` and ``score(series: AnomalySeries) -> (T,) float64``: one score per point of the whole
series, higher = more anomalous, ready for :func:`xlstmkit.metrics.auc_pr`, :func:`~xlstmkit.metrics.auc_roc` and
:func:`~xlstmkit.metrics.ucr_hit`. Both detectors are unsupervised and scan the whole series, training prefix
included (as in the UCR archive's matrix-profile baselines); the prefix only serves to pick the window length.

- :class:`STOMP`: the matrix profile (stumpy, via aeon): each window's z-normalised distance to its nearest
  non-trivial neighbour, spread back to points (aeon's reverse windowing: a point gets the mean profile value of the
  windows covering it).
- :class:`MERLIN`: discord discovery over a range of lengths. aeon returns only the start of the top discord of each
  length (a 0/1 array), so the point score is the number of discord starts in the ``max_length`` points before and
  including t, i.e. how many of the discords found could cover t. The top score sits where discords of many lengths
  agree.

Window length: given, or the series' dominant period estimated on the training prefix (the lag of the highest
autocorrelation peak between 4 and ``len // 4``; 16 when there is no clear peak), the usual choice for
matrix-profile detectors on periodic signals.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..data.anomaly import AnomalySeries
from ..extras import require


def dominant_period(x: np.ndarray, min_lag: int = 4, max_lag: int | None = None, default: int = 16) -> int:
    """The lag of the highest local maximum of the autocorrelation in ``[min_lag, max_lag]`` (max_lag: len // 4),
    or ``default`` when there is none with a positive correlation."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean()
    n = len(x)
    max_lag = max_lag or n // 4
    if n < 3 * min_lag or max_lag <= min_lag or not x.any():
        return default
    spec = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(spec * np.conj(spec))[:n]
    acf = acf / acf[0]
    lags = np.arange(min_lag, min(max_lag, n - 2) + 1)
    peak = lags[(acf[lags] > acf[lags - 1]) & (acf[lags] >= acf[lags + 1]) & (acf[lags] > 0)]
    if len(peak) == 0:
        return default
    return int(peak[np.argmax(acf[peak])])


def _window(series: AnomalySeries, window: int | None) -> int:
    if window is not None:
        return int(window)
    ref = series.train if series.train_end >= 32 else series.values
    return dominant_period(ref)


@dataclass
class STOMP:
    """aeon's STOMP (matrix profile, k = 1 nearest neighbour) as per-point scores."""

    window: int | None = None
    name: str = "stomp"

    def score(self, series: AnomalySeries) -> np.ndarray:
        dist = require("aeon.anomaly_detection.series.distance_based", "timeseries", "the STOMP baseline")
        require("stumpy", "timeseries", "the STOMP baseline")
        w = min(_window(series, self.window), len(series) // 4)
        if w < 3:
            raise ValueError(f"{series.name}: series of {len(series)} points is too short for STOMP")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = dist.STOMP(window_size=w).fit_predict(series.values)
        return np.asarray(s, dtype=np.float64)


@dataclass
class MERLIN:
    """aeon's MERLIN over discord lengths ``[min_length, max_length]`` (default: half to twice the window)."""

    window: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    name: str = "merlin"

    def score(self, series: AnomalySeries) -> np.ndarray:
        dist = require("aeon.anomaly_detection.series.distance_based", "timeseries", "the MERLIN baseline")
        w = _window(series, self.window)
        lo = max(4, self.min_length or w // 2)
        hi = min(self.max_length or 2 * w, len(series) // 2)
        if hi < lo:
            raise ValueError(f"{series.name}: series of {len(series)} points is too short for MERLIN lengths "
                             f"{lo}..{self.max_length or 2 * w}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            starts = np.asarray(dist.MERLIN(min_length=lo, max_length=hi).fit_predict(series.values), dtype=bool)
        counts = np.convolve(starts.astype(np.float64), np.ones(hi), mode="full")[: len(starts)]
        return counts


def make(name: str, **kw):
    """A detector by name: ``stomp`` or ``merlin``."""
    if name == "stomp":
        return STOMP(**kw)
    if name == "merlin":
        return MERLIN(**kw)
    raise ValueError(f"unknown anomaly baseline {name!r}; choose stomp or merlin")


BASELINES = ("stomp", "merlin")

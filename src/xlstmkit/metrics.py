"""Evaluation metrics for the time-series applications (classification, forecasting, anomaly detection).

Classification (scikit-learn): :func:`accuracy`, :func:`macro_f1`, :func:`confusion_matrix`.

Forecasting, on arrays of actuals ``y`` (N, H) (N series, H steps; NaN = missing, skipped), point forecasts
``y_hat`` (N, H) and quantile forecasts ``q_hat`` (N, H, Q) at levels ``quantiles`` (Q,):

- :func:`mase`: per series ``mean_h |y - ŷ| / scale``, ``scale = mean_t |x_t - x_{t-m}|`` over the series' own
  training data x (the in-sample seasonal-naive error, season m); averaged over series (the Monash/M4 "mean MASE").
- :func:`smape`: per series ``200 * mean_h |y - ŷ| / (|y| + |ŷ|)`` in percent (0/0 counts 0), averaged over series
  (Monash/M4 sMAPE; utilsforecast's ``smape`` is the same ratio without the factor 200).
- :func:`pinball_loss`: ``mean over series, steps and quantiles of max(q (y - ŷ_q), (q - 1)(y - ŷ_q))``.
- :func:`scaled_crps`: per series ``2 * mean_q sum_h pinball_q / sum_h |y|`` (the quantile approximation of the
  CRPS scaled by the series' absolute level, Rangapuram et al. 2021, as utilsforecast computes it), averaged over
  series; ``pooled=True`` sums numerator and denominator over all series first (GluonTS's weighted quantile loss).
  Undefined (NaN) for a series that is 0 over the whole window; the mean skips such series.
- :func:`coverage`: the fraction of observed points inside ``[lo, hi]`` of a central interval.
- :func:`mae`, :func:`mse`: per series, averaged over series.

Anomaly detection, on per-point scores (T,) and 0/1 labels (T,): :func:`auc_pr` (average precision, scikit-learn's
step-wise area under the precision-recall curve), :func:`auc_roc`, and :func:`ucr_hit` (the UCR archive's score: the
top-scoring test point lies in ``[start - 100, end + 100]``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .extras import require


def _sk_metrics():
    return require("sklearn.metrics", "timeseries", "computing classification and anomaly metrics")


# --------------------------------------------------------------------------------------------------------------------
# classification


def accuracy(y_true, y_pred) -> float:
    """Fraction of correct predictions."""
    return float(_sk_metrics().accuracy_score(np.asarray(y_true), np.asarray(y_pred)))


def macro_f1(y_true, y_pred, n_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 (over ``range(n_classes)`` when given, so absent classes count as 0)."""
    labels = list(range(n_classes)) if n_classes is not None else None
    return float(_sk_metrics().f1_score(np.asarray(y_true), np.asarray(y_pred), labels=labels, average="macro",
                                        zero_division=0))


def confusion_matrix(y_true, y_pred, n_classes: int | None = None) -> np.ndarray:
    """Counts C[i, j] of true class i predicted as j (rows and columns ``range(n_classes)`` when given)."""
    labels = list(range(n_classes)) if n_classes is not None else None
    return _sk_metrics().confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=labels)


# --------------------------------------------------------------------------------------------------------------------
# forecasting


def _2d(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{name} must be (N, H) or (H,), got shape {a.shape}")
    return a


def _pair(y, y_hat) -> tuple[np.ndarray, np.ndarray]:
    y, y_hat = _2d(y, "y"), _2d(y_hat, "y_hat")
    if y.shape != y_hat.shape:
        raise ValueError(f"y {y.shape} and y_hat {y_hat.shape} differ in shape")
    if np.isnan(y_hat[~np.isnan(y)]).any():
        raise ValueError("y_hat has NaN where y is observed; every evaluated point needs a forecast")
    return y, y_hat


def _series_mean(per_point: np.ndarray, per_series: bool):
    """Mean over each series' observed points, then (unless per_series) over series."""
    with np.errstate(invalid="ignore"):
        s = np.nanmean(per_point, axis=1) if per_point.size else np.zeros(0)
    if np.isnan(s).any():
        raise ValueError("a series has no observed value in the evaluated window")
    return s if per_series else float(s.mean())


def mae(y, y_hat, *, per_series: bool = False):
    y, y_hat = _pair(y, y_hat)
    return _series_mean(np.abs(y - y_hat), per_series)


def mse(y, y_hat, *, per_series: bool = False):
    y, y_hat = _pair(y, y_hat)
    return _series_mean((y - y_hat) ** 2, per_series)


def seasonal_naive_scale(insample: Sequence[np.ndarray], season_length: int) -> np.ndarray:
    """Per series ``mean_t |x_t - x_{t-m}|`` over the training data (missing pairs skipped)."""
    if season_length < 1:
        raise ValueError(f"season_length must be >= 1, got {season_length}")
    out = np.empty(len(insample))
    for i, x in enumerate(insample):
        x = np.asarray(x, dtype=np.float64)
        if len(x) <= season_length:
            raise ValueError(f"series {i} has {len(x)} training points; MASE needs more than season_length "
                             f"({season_length}) (use season_length=1 for short series)")
        d = np.abs(x[season_length:] - x[:-season_length])
        out[i] = np.nanmean(d) if np.isfinite(d).any() else np.nan
    return out


def mase(y, y_hat, insample: Sequence[np.ndarray], season_length: int, *, per_series: bool = False):
    """Mean absolute scaled error: per-series MAE over the in-sample seasonal-naive MAE (see module docstring).

    A series whose in-sample scale is 0 (constant at lag m) gives inf (or NaN with a perfect forecast), as the
    definition does; such series should be reported, not silently dropped.
    """
    y, y_hat = _pair(y, y_hat)
    if len(insample) != y.shape[0]:
        raise ValueError(f"{len(insample)} in-sample series for {y.shape[0]} forecast series")
    scale = seasonal_naive_scale(insample, season_length)
    with np.errstate(divide="ignore", invalid="ignore"):
        per = _series_mean(np.abs(y - y_hat), True) / scale
    return per if per_series else float(per.mean())


def smape(y, y_hat, *, per_series: bool = False):
    """sMAPE in percent, 0..200: ``200 * mean |y - ŷ| / (|y| + |ŷ|)``, a 0/0 term counts as 0."""
    y, y_hat = _pair(y, y_hat)
    den = np.abs(y) + np.abs(y_hat)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(den == 0, 0.0, np.abs(y - y_hat) / den)
    term = np.where(np.isnan(y), np.nan, term)
    return 200.0 * _series_mean(term, per_series)


def _quantile_args(y, q_hat, quantiles) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = _2d(y, "y")
    q_hat = np.asarray(q_hat, dtype=np.float64)
    if q_hat.ndim == 2:
        q_hat = q_hat[None]
    qs = np.asarray(quantiles, dtype=np.float64).reshape(-1)
    if q_hat.shape != (*y.shape, len(qs)):
        raise ValueError(f"q_hat has shape {q_hat.shape}; expected (N, H, Q) = {(*y.shape, len(qs))}")
    if ((qs <= 0) | (qs >= 1)).any():
        raise ValueError(f"quantile levels must be in (0, 1), got {qs.tolist()}")
    return y, q_hat, qs


def _pinball_points(y, q_hat, qs) -> np.ndarray:
    """(N, H, Q) pinball losses; NaN where y is missing."""
    diff = y[..., None] - q_hat
    return np.maximum(qs * diff, (qs - 1.0) * diff)


def pinball_loss(y, q_hat, quantiles, *, per_series: bool = False):
    """Mean quantile (pinball) loss over observed points and quantile levels."""
    y, q_hat, qs = _quantile_args(y, q_hat, quantiles)
    per_point = _pinball_points(y, q_hat, qs).mean(axis=2)
    return _series_mean(per_point, per_series)


def scaled_crps(y, q_hat, quantiles, *, per_series: bool = False, pooled: bool = False):
    """CRPS approximated by quantile losses, scaled by the absolute level (see module docstring).

    Per series: ``2 * mean_q sum_h pinball / sum_h |y|``; the result is the mean over series, or with
    ``pooled=True`` ``2 * mean_q sum_{i,h} pinball / sum_{i,h} |y|`` over all series at once.

    A series that is 0 over the whole window has no level to scale by: its score is NaN (undefined) and the mean
    is over the other series (NaN if there are none); :func:`forecast_scores` reports how many were left out.
    utilsforecast divides by ``sum |y| + eps`` instead, which turns such a series into ~1e16 and swamps the mean
    (the PBS set's test window is all zeros); on every other series the two agree.
    """
    y, q_hat, qs = _quantile_args(y, q_hat, quantiles)
    loss = np.nansum(_pinball_points(y, q_hat, qs).mean(axis=2), axis=1)  # (N,) sum over steps
    level = np.nansum(np.abs(y), axis=1)
    if pooled:
        return float(2.0 * loss.sum() / level.sum()) if level.sum() > 0 else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(level > 0, 2.0 * loss / level, np.nan)
    return per if per_series else _mean_of_defined(per)


def _mean_of_defined(per: np.ndarray) -> float:
    """The mean over the series whose score is defined (not NaN); NaN if none is."""
    return float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")


def coverage(y, lo, hi, *, per_series: bool = False):
    """Fraction of observed points with ``lo <= y <= hi`` (the empirical coverage of an interval)."""
    y, lo = _pair(y, lo)
    _, hi = _pair(y, hi)
    inside = ((y >= lo) & (y <= hi)).astype(np.float64)
    inside[np.isnan(y)] = np.nan
    return _series_mean(inside, per_series)


def interval_quantiles(level: float) -> tuple[float, float]:
    """The (lower, upper) quantile levels of a central ``level`` % interval, e.g. 80 -> (0.1, 0.9)."""
    if not 0 < level < 100:
        raise ValueError(f"level must be in (0, 100), got {level}")
    return 0.5 - level / 200.0, 0.5 + level / 200.0


def forecast_scores(y, y_hat, insample, season_length: int, q_hat=None, quantiles=None,
                    level: float = 80.0) -> dict[str, float]:
    """All forecasting metrics in one dict (MASE, sMAPE, MAE, MSE; with quantiles also pinball, scaled CRPS and
    the coverage of the central ``level`` % interval, read from the matching quantile columns)."""
    out = {"mase": mase(y, y_hat, insample, season_length), "smape": smape(y, y_hat), "mae": mae(y, y_hat),
           "mse": mse(y, y_hat)}
    if q_hat is not None:
        qs = np.asarray(quantiles, dtype=np.float64)
        out["pinball"] = pinball_loss(y, q_hat, qs)
        crps = scaled_crps(y, q_hat, qs, per_series=True)
        out["scaled_crps"] = _mean_of_defined(crps)
        out["scaled_crps_undefined_series"] = int(np.isnan(crps).sum())
        lo_q, hi_q = interval_quantiles(level)
        lo_i, hi_i = np.nonzero(np.isclose(qs, lo_q))[0], np.nonzero(np.isclose(qs, hi_q))[0]
        if len(lo_i) and len(hi_i):
            q_hat = np.asarray(q_hat, dtype=np.float64)
            out[f"coverage_{level:g}"] = coverage(y, q_hat[..., lo_i[0]], q_hat[..., hi_i[0]])
    return out


# --------------------------------------------------------------------------------------------------------------------
# anomaly detection


def _scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    lab = np.asarray(labels).reshape(-1).astype(np.int8)
    if s.shape != lab.shape:
        raise ValueError(f"{len(s)} scores for {len(lab)} labels")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf; give every point a finite score")
    if lab.min() == lab.max():
        raise ValueError("labels hold a single class; AUC needs both normal and anomalous points")
    return s, lab


def auc_pr(scores, labels) -> float:
    """Area under the precision-recall curve per point (scikit-learn's average precision)."""
    s, lab = _scores_labels(scores, labels)
    return float(_sk_metrics().average_precision_score(lab, s))


def auc_roc(scores, labels) -> float:
    """Area under the ROC curve per point."""
    s, lab = _scores_labels(scores, labels)
    return float(_sk_metrics().roc_auc_score(lab, s))


def ucr_hit(scores, start: int, end: int, *, train_end: int = 0, margin: int = 100) -> bool:
    """The UCR anomaly archive's score for one series: is the highest-scoring point at or after ``train_end``
    within ``[start - margin, end + margin]``? (ties: the earliest top point).

    ``start``/``end`` are the inclusive 0-based anomaly bounds in the full series; ``margin`` is 100 points as in the
    archive's evaluation.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not 0 <= train_end < len(s):
        raise ValueError(f"train_end {train_end} outside the {len(s)} scores")
    if not np.isfinite(s[train_end:]).all():
        raise ValueError("scores contain NaN or inf; give every test point a finite score")
    top = train_end + int(np.argmax(s[train_end:]))
    return bool(start - margin <= top <= end + margin)

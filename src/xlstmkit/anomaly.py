"""Anomaly detection with the xLSTM forecaster: a point is anomalous when it falls far outside the distribution the
model forecast for it from the points before it.

    det = ForecastDetector(DetectorConfig())
    det.fit(series.train)                      # the anomaly-free prefix
    scores = det.score(series.values)          # (T,), higher = more anomalous
    start, end = most_anomalous_region(scores, series.train_end, det.window)

**Why forecasting, not reconstruction.** The forecast distribution says, point by point, how predictable the series
is there: where it is regular the 80 % band is narrow and a small deviation stands out; where it is noisy the band
is wide and noise does not. A reconstruction error has no such per-point yardstick (an autoencoder reconstructs
noise badly everywhere), and a reconstruction window sees the anomaly itself in its input, so it can partly
reconstruct it. The forecaster is causal: each score uses only the past, so the detector also works online.

**The score.** For each point t (after the first ``context_length`` points), the model forecasts
``horizon`` steps from the context ending at the last multiple of ``horizon`` before t; with its median m_t and
its 10 % and 90 % quantiles,

    s_t = |y_t - m_t| / max(q0.9_t - q0.1_t, floor),       floor = 0.05 * robust std of the training prefix

(the distance from the median in units of the 80 % band width; s > 0.5 means outside the band; the floor keeps a
perfectly predicted flat stretch from dividing by ~0). An anomaly in a context distorts the forecasts after it (its
values enter the scaling and the input), so the scores are computed twice: the second pass gives the points that
scored above ``mask_above`` in the first as *missing values* to the model (the forecaster's mask), so the points
after an anomaly are judged against forecasts from the normal points only. The scores are then averaged over a
centred window of ``smooth`` points, because anomalies in the UCR archive are mostly collective (a stretch of wrong
shape), and points before the first forecast get the smallest score.

**The most anomalous region** is the window of ``smooth`` points (at least 1) around the highest score in the test
part, widened while neighbouring scores stay above half the peak.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .models.forecaster import ForecasterConfig, fit, xLSTMForecaster


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class DetectorConfig:
    """How the detector forecasts and scores; None picks the rule given in each help text."""

    context_length: int | None = field(default=None, metadata=_help(
        "context points (default: 4 periods of the prefix's dominant period, 32 to 256, at most a third of the "
        "training prefix)"))
    horizon: int = field(default=4, metadata=_help("points forecast per pass"))
    smooth: int | None = field(default=None, metadata=_help(
        "points the scores are averaged over (default: half the dominant period, at least 1)"))
    mask_above: float | None = field(default=1.5, metadata=_help(
        "second pass: points scoring above this (band widths from the median) are masked in later contexts; "
        "inf: one pass"))
    steps: int = field(default=300, metadata=_help("training steps at most"))
    batch_size: int = field(default=64, metadata=_help("windows per training step"))
    time_budget: float | None = field(default=None, metadata=_help("stop training after this many seconds"))
    seed: int = field(default=0, metadata=_help("seed of the weights and windows"))

    def __post_init__(self) -> None:
        for name in ("horizon", "steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.mask_above is not None and (isinstance(self.mask_above, bool) or not self.mask_above > 0):
            raise ValueError(f"mask_above must be a number > 0 (inf: one pass), got {self.mask_above!r}")
        for name in ("context_length", "smooth"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {v!r}")


def robust_std(x: np.ndarray) -> float:
    from .data.anomaly import robust_std as rs

    return rs(np.asarray(x, dtype=np.float64))


class ForecastDetector:
    """Scores points by their distance from the xLSTM forecaster's forecast (module docstring)."""

    name = "xlstm"

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self.model: xLSTMForecaster | None = None
        self.fit_result = None
        self.period = 16
        self.floor = 1e-6

    @property
    def window(self) -> int:
        return self.config.smooth or max(1, self.period // 2)

    def fit(self, train: np.ndarray, on_epoch=None) -> "ForecastDetector":
        """Train the forecaster on the anomaly-free prefix (one series: windows over it, the last one held out for
        early stopping)."""
        from .baselines.anomaly import dominant_period
        from .data.forecasting import from_arrays
        from .train.supervised import FitConfig

        train = np.asarray(train, dtype=np.float64).reshape(-1)
        c = self.config
        if len(train) < 3 * c.horizon + 8:
            raise ValueError(f"the training prefix has {len(train)} points; the detector needs at least "
                             f"{3 * c.horizon + 8} (give a longer --train-length)")
        self.period = dominant_period(train) if len(train) >= 32 else 8
        L = c.context_length or int(np.clip(4 * self.period, 32, 256))
        L = max(min(L, len(train) // 3), c.horizon + 1)
        P = max(1, -(-L // 16))
        cfg = ForecasterConfig(horizon=c.horizon, context_length=L, patch_size=min(P, L))
        self.floor = 0.05 * robust_std(train) or 1e-6
        # the last fifth of the prefix validates (its windows, every horizon-th cutoff); the rest trains
        cut = max(L + c.horizon, int(0.8 * len(train)))
        cut = min(cut, len(train) - c.horizon)
        data = from_arrays([train[:cut]], freq="D", horizon=c.horizon, name="prefix")
        cuts = np.arange(cut, len(train) - c.horizon + 1, c.horizon)
        idx = cuts[:, None] + np.arange(-L, c.horizon)[None, :]
        win = torch.as_tensor(train[np.clip(idx, 0, None)], dtype=torch.float32)
        ok = torch.as_tensor(idx >= 0)
        win = torch.where(ok, win, torch.zeros(()))
        validation = (win[:, :L], ok[:, :L], win[:, L:], ok[:, L:])
        fc = FitConfig(max_epochs=1_000_000, max_steps=c.steps, batch_size=c.batch_size, lr=1e-3,
                       warmup_steps=min(50, c.steps // 10 or 1), patience=10, time_budget=c.time_budget,
                       seed=c.seed)
        self.model, self.fit_result = fit(data.df, cfg, fc, min_context=min(L, max(2, cut // 4)),
                                          on_epoch=on_epoch, validation=validation)
        return self

    @torch.no_grad()
    def forecasts(self, values: np.ndarray, missing: np.ndarray | None = None, batch_size: int = 512
                  ) -> tuple[int, np.ndarray]:
        """(first scored index, quantiles (T - first, Q)) of the rolling forecasts over ``values``; points flagged
        in ``missing`` are given to the model as missing values (masked) in every context that holds them."""
        if self.model is None:
            raise ValueError("the detector is not trained: call fit(train) first")
        cfg = self.model.config
        x = torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=torch.float32)
        if missing is not None:
            x = x.masked_fill(torch.as_tensor(np.asarray(missing, dtype=bool)), float("nan"))
        T, h = len(x), cfg.horizon
        first = min(cfg.context_length, T)
        cuts = np.arange(first, T, h)
        out = []
        for i in range(0, len(cuts), batch_size):
            c = cuts[i:i + batch_size]
            idx = torch.as_tensor(c[:, None] + np.arange(-cfg.context_length, 0)[None, :])
            ctx = x[idx.clamp(min=0)]
            ctx[idx < 0] = float("nan")
            out.append(self.model(ctx))  # (b, h, Q)
        q = torch.cat(out).reshape(-1, len(cfg.quantiles))[: T - first]
        return first, q.double().numpy()

    def point_scores(self, values: np.ndarray, missing: np.ndarray | None = None) -> tuple[int, np.ndarray]:
        """(first scored index, unsmoothed scores of the points from there on)."""
        first, q = self.forecasts(values, missing)
        qs = self.model.config.quantiles
        m = q[:, qs.index(0.5)]
        lo, hi = q[:, _nearest(qs, 0.1)], q[:, _nearest(qs, 0.9)]
        width = np.maximum(hi - lo, self.floor)
        s = np.abs(values[first:] - m) / width
        return first, np.where(np.isfinite(s), s, 0.0)

    def score(self, values: np.ndarray, train_end: int = 0) -> np.ndarray:
        """One score per point of ``values`` (module docstring); points before the first forecast get the minimum.

        Two passes: points after ``train_end`` whose first-pass score exceeds ``config.mask_above`` are given to
        the model as missing values in the contexts of the second pass, so an anomaly does not distort the
        forecasts (and so the scores) of the points after it."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        first, s = self.point_scores(values)
        if self.config.mask_above is not None and np.isfinite(self.config.mask_above):
            flagged = np.zeros(len(values), dtype=bool)
            flagged[first:] = s > self.config.mask_above
            flagged[:train_end] = False
            if flagged.any():
                first, s = self.point_scores(values, flagged)
        scores = np.full(len(values), s.min() if len(s) else 0.0)
        scores[first:] = s
        return smooth(scores, self.window)


def _nearest(levels, q: float) -> int:
    return int(np.argmin([abs(lv - q) for lv in levels]))


def smooth(scores: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` points (shrunk at the edges)."""
    if window <= 1:
        return scores
    k = np.ones(window)
    num = np.convolve(scores, k, mode="same")
    den = np.convolve(np.ones_like(scores), k, mode="same")
    return num / den


def most_anomalous_region(scores: np.ndarray, train_end: int = 0, window: int = 1) -> tuple[int, int]:
    """(start, end), inclusive: around the top score at or after ``train_end``, widened to ``window`` points and
    further while the scores stay above half of the peak."""
    s = np.asarray(scores, dtype=np.float64)
    if not 0 <= train_end < len(s):
        raise ValueError(f"train_end {train_end} outside the {len(s)} scores")
    top = train_end + int(np.argmax(s[train_end:]))
    start = max(train_end, top - window // 2)
    end = min(len(s) - 1, start + window - 1)
    half = s[top] / 2 if s[top] > 0 else s[top]
    while start > train_end and s[start - 1] >= half:
        start -= 1
    while end < len(s) - 1 and s[end + 1] >= half:
        end += 1
    return int(start), int(end)


def evaluate(scores: np.ndarray, series) -> dict:
    """UCR hit (top test point within the labelled region +- 100), AUC-PR and AUC-ROC per point over the test part
    (the anomaly-free prefix is left out for every detector alike), and the top index."""
    from .metrics import auc_pr, auc_roc, ucr_hit

    s = np.asarray(scores, dtype=np.float64)
    start, end = series.anomalies[0]
    test_s, test_l = s[series.train_end:], series.labels[series.train_end:]
    return {"top_index": int(series.train_end + np.argmax(test_s)),
            "hit": bool(ucr_hit(s, start, end, train_end=series.train_end)),
            "auc_pr": float(auc_pr(test_s, test_l)), "auc_roc": float(auc_roc(test_s, test_l)),
            "anomaly": [int(start), int(end)]}


__all__ = ["DetectorConfig", "ForecastDetector", "evaluate", "most_anomalous_region", "smooth"]

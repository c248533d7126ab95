"""Anomaly-detection data: the UCR anomaly series aeon ships, and a seeded benchmark of injected anomalies.

**Convention** (the UCR / KDD-Cup-2021 anomaly archive). A series ``values`` (T,) comes with point labels (T,) (1 on
anomalous points) and ``train_end``: the prefix ``values[:train_end]`` is anomaly-free and may be used for fitting;
the anomalies lie in ``values[train_end:]``. A detector scores every point of the whole series; the UCR score counts
a hit when the highest-scoring test point lies within 100 points of the labelled anomaly
(:func:`xlstmkit.metrics.ucr_hit`). Anomaly ranges are 0-based and inclusive ``(start, end)``.

**Bundled.** :func:`load_kdd_tsad_135`: series 135 of the archive (InternalBleeding16), 7501 points, 12 anomalous
points at 4187-4198, an anomaly-free training prefix of 1200 points; read from the copy inside aeon, offline. (aeon's
Daphnet copy carries no anomaly labels and is not used.)

**Injected benchmark.** :func:`injected_benchmark` takes real series (Airline, solar, PBS and the normal prefix of
KDD 135), and for each one and each kind of anomaly makes a copy with one anomaly placed at a seeded random position
in its test part (after ``train_end``):

- ``spike``: one point moved by ±(5..8) robust standard deviations;
- ``level_shift``: a segment moved by ±(3..5) robust standard deviations (then back, so only the segment is labelled);
- ``frequency``: a segment replaced by the series read at 2-3 times its speed (linear interpolation), a local change
  of frequency that keeps the value range;
- ``flatline``: a segment held at its first value (a stuck sensor).

The robust standard deviation is ``1.4826 * MAD`` of the series (its std when the MAD is 0, e.g. intermittent counts).
A placement is kept only if it changes the series visibly (the largest change over the segment is at least 2 robust
standard deviations for spikes and shifts, at least 1 for the others); otherwise another position is drawn.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..extras import require

UCR_MARGIN = 100
KINDS = ("spike", "level_shift", "frequency", "flatline")


@dataclass
class AnomalySeries:
    """One univariate series with point labels; ``values[:train_end]`` is anomaly-free."""

    name: str
    values: np.ndarray
    labels: np.ndarray
    train_end: int
    anomalies: list[tuple[int, int]] = field(default_factory=list)
    kind: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int8).reshape(-1)
        if self.values.shape != self.labels.shape:
            raise ValueError(f"{self.name}: {len(self.values)} values but {len(self.labels)} labels")
        if not 0 <= self.train_end <= len(self.values):
            raise ValueError(f"{self.name}: train_end {self.train_end} outside 0..{len(self.values)}")
        if self.labels[: self.train_end].any():
            raise ValueError(f"{self.name}: the training prefix (before {self.train_end}) holds labelled anomalies")
        if not self.anomalies:
            self.anomalies = ranges(self.labels)

    @property
    def train(self) -> np.ndarray:
        return self.values[: self.train_end]

    @property
    def test(self) -> np.ndarray:
        return self.values[self.train_end:]

    def __len__(self) -> int:
        return len(self.values)


def ranges(labels: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (start, end) of every run of 1s in a 0/1 label array."""
    lab = np.asarray(labels).astype(bool).astype(np.int8)
    d = np.diff(np.concatenate([[0], lab, [0]]))
    starts, ends = np.nonzero(d == 1)[0], np.nonzero(d == -1)[0] - 1
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


def load_kdd_tsad_135() -> AnomalySeries:
    """UCR anomaly archive series 135 (InternalBleeding16) from aeon's bundled copy: 7501 points, anomaly at
    4187-4198 (12 points), anomaly-free training prefix of 1200 points. No network."""
    datasets = require("aeon.datasets", "timeseries", "loading the UCR anomaly series")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X, y = datasets.load_kdd_tsad_135(split="test")
        X_train, y_train = datasets.load_kdd_tsad_135(split="train")
    X, y, X_train = np.asarray(X, np.float64), np.asarray(y), np.asarray(X_train, np.float64)
    train_end = len(X_train)
    if not np.array_equal(X[:train_end], X_train) or np.asarray(y_train).any():
        raise ValueError("aeon's KDD-TSAD 135 files disagree: the train split is not the anomaly-free prefix")
    path = Path(datasets.__file__).parent / "data" / "KDD-TSAD_135"
    return AnomalySeries("kdd_tsad_135", X, y, train_end, source=str(path))


# --------------------------------------------------------------------------------------------------------------------
# injected anomalies


def robust_std(x: np.ndarray) -> float:
    """1.4826 * median absolute deviation (the normal-consistent MAD); the std if the MAD is 0; 1 if both are."""
    x = np.asarray(x, dtype=np.float64)
    mad = 1.4826 * float(np.median(np.abs(x - np.median(x))))
    if mad > 0:
        return mad
    sd = float(np.std(x))
    return sd if sd > 0 else 1.0


def inject(values: np.ndarray, kind: str, start: int, length: int, rng: np.random.Generator,
           scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One anomaly of ``kind`` at ``values[start : start + length]`` (a spike uses one point); returns (new values,
    labels). ``scale`` is the series' robust standard deviation (computed if None)."""
    x = np.asarray(values, dtype=np.float64).copy()
    n = len(x)
    s = robust_std(x) if scale is None else scale
    labels = np.zeros(n, dtype=np.int8)
    if kind == "spike":
        length = 1
    if not (0 <= start and start + length <= n and length >= 1):
        raise ValueError(f"anomaly [{start}, {start + length}) does not fit in a series of {n}")
    seg = slice(start, start + length)
    sign = rng.choice([-1.0, 1.0])
    if kind == "spike":
        x[start] += sign * rng.uniform(5.0, 8.0) * s
    elif kind == "level_shift":
        x[seg] += sign * rng.uniform(3.0, 5.0) * s
    elif kind == "frequency":
        speed = rng.uniform(2.0, 3.0)
        pos = start + speed * np.arange(length)
        x[seg] = np.interp(pos, np.arange(n), values)  # read ahead at `speed` (held at the last value past the end)
    elif kind == "flatline":
        x[seg] = x[start]
    else:
        raise ValueError(f"unknown anomaly kind {kind!r}; choose from {KINDS}")
    labels[seg] = 1
    return x, labels


def _base_series() -> dict[str, tuple[np.ndarray, int]]:
    """name -> (values, season length) of the real series the benchmark injects into."""
    from .forecasting import load_forecasting

    out = {}
    for name in ("airline", "solar", "pbs"):
        d = load_forecasting(name)
        out[name] = (d.df["y"].to_numpy(np.float64), d.season_length)
    kdd = load_kdd_tsad_135()
    out["kdd135_normal"] = (kdd.train.copy(), 0)
    return out


def injected_benchmark(seed: int = 0, kinds: tuple[str, ...] = KINDS, sources: tuple[str, ...] | None = None,
                       train_fraction: float = 1 / 3) -> list[AnomalySeries]:
    """One series per (source, kind): a copy of a real series with one injected anomaly in its test part.

    ``train_end = floor(train_fraction * T)``; segment length ``max(3, T // 30)`` (a spike is one point); the
    position is drawn from the seeded generator inside ``[train_end, T - length)``. Same seed, same benchmark.
    """
    base = _base_series()
    names = tuple(base) if sources is None else sources
    unknown = set(names) - set(base)
    if unknown:
        raise ValueError(f"unknown source(s) {sorted(unknown)}; choose from {sorted(base)}")
    bad = set(kinds) - set(KINDS)
    if bad:
        raise ValueError(f"unknown anomaly kind(s) {sorted(bad)}; choose from {KINDS}")
    rng = np.random.default_rng(seed)
    out = []
    for src in names:
        values, _ = base[src]
        n = len(values)
        train_end = int(n * train_fraction)
        s = robust_std(values[:train_end])
        for kind in kinds:
            length = 1 if kind == "spike" else max(3, n // 30)
            need = 2.0 if kind in ("spike", "level_shift") else 1.0
            for _ in range(200):
                start = int(rng.integers(train_end, n - length))
                x, lab = inject(values, kind, start, length, rng, scale=s)
                if np.max(np.abs(x - values)) >= need * s:
                    break
            else:
                raise ValueError(f"could not place a visible {kind} anomaly in {src}")
            out.append(AnomalySeries(f"{src}/{kind}", x, lab, train_end, kind=kind, source=src))
    return out

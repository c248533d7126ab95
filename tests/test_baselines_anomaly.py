"""Anomaly baselines: aeon's STOMP and MERLIN as per-point scores (the real runs compile numba code: slow)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("aeon")
from xlstmkit.baselines import anomaly as B  # noqa: E402
from xlstmkit.data.anomaly import AnomalySeries, load_kdd_tsad_135  # noqa: E402
from xlstmkit import metrics as M  # noqa: E402


def _planted(n=600, period=25, at=420, width=12):
    """A noisy sine with one stretch replaced by a different shape (a discord) in its test part."""
    rng = np.random.default_rng(0)
    t = np.arange(n)
    x = np.sin(2 * np.pi * t / period) + 0.05 * rng.normal(size=n)
    x[at : at + width] = np.linspace(1.5, -1.5, width)
    lab = np.zeros(n)
    lab[at : at + width] = 1
    return AnomalySeries("planted", x, lab, train_end=n // 3)


def test_dominant_period_finds_the_cycle_or_falls_back():
    t = np.arange(400)
    assert B.dominant_period(np.sin(2 * np.pi * t / 25)) == 25
    noisy = np.sin(2 * np.pi * t / 37) + 0.3 * np.random.default_rng(0).normal(size=400)
    assert B.dominant_period(noisy) in (36, 37, 38)
    assert B.dominant_period(np.zeros(100)) == 16
    assert B.dominant_period(np.arange(100.0), default=9) == 9  # a trend: no positive local peak


def test_merlin_scores_count_discord_starts_that_could_cover_each_point(monkeypatch):
    import types

    class FakeMerlin:
        def __init__(self, min_length, max_length):
            self.max_length = max_length

        def fit_predict(self, x):
            out = np.zeros(len(x), dtype=bool)
            out[[50, 52, 90]] = True  # discord starts of three lengths
            return out

    # stand in for aeon's module (importing it costs seconds): only the score conversion is under test here
    monkeypatch.setattr(B, "require", lambda *a: types.SimpleNamespace(MERLIN=FakeMerlin))
    s = B.MERLIN(min_length=4, max_length=10).score(_planted(200, at=150, width=5))
    expected = np.array([sum(t - 9 <= st <= t for st in (50, 52, 90)) for t in range(200)], dtype=float)
    np.testing.assert_array_equal(s, expected)
    assert int(np.argmax(s)) == 52  # the first point both nearby discords cover


def test_detectors_by_name():
    assert B.make("stomp", window=8).window == 8 and B.make("merlin").name == "merlin"
    with pytest.raises(ValueError, match="unknown anomaly baseline"):
        B.make("isolation_forest")


@pytest.mark.slow  # stumpy compiles its matrix-profile kernels with numba in every new process (~40 s)
def test_stomp_finds_planted_discord_and_the_ucr_135_anomaly():
    pytest.importorskip("stumpy")
    s = _planted()
    scores = B.STOMP().score(s)
    assert scores.shape == (600,) and np.isfinite(scores).all()
    assert M.ucr_hit(scores, 420, 431, train_end=200, margin=25)
    assert M.auc_roc(scores, s.labels) > 0.9
    kdd = load_kdd_tsad_135()
    k_scores = B.STOMP().score(kdd)
    assert M.ucr_hit(k_scores, *kdd.anomalies[0], train_end=kdd.train_end)


@pytest.mark.slow  # aeon's MERLIN compiles with numba on first use on a machine
def test_merlin_finds_planted_discord():
    s = _planted()
    scores = B.MERLIN().score(s)
    assert scores.shape == (600,)
    assert M.ucr_hit(scores, 420, 431, train_end=200, margin=50)

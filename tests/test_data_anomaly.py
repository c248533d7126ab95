"""Anomaly data: the bundled UCR series 135 (offline, with the archive's numbers) and the injected benchmark."""

from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("aeon")
pytest.importorskip("pandas")
from xlstmkit.data import anomaly as A  # noqa: E402



def test_kdd_tsad_135_has_the_archive_numbers_and_loads_offline(no_network):
    s = A.load_kdd_tsad_135()
    assert s.values.shape == (7501,) and s.labels.shape == (7501,)
    assert s.train_end == 1200 and not s.labels[:1200].any()
    assert np.nonzero(s.labels)[0].tolist() == list(range(4187, 4199))  # 12 points, 4187-4198 inclusive
    assert s.anomalies == [(4187, 4198)]
    assert np.isfinite(s.values).all()


def test_ranges_finds_runs_including_edges():
    assert A.ranges(np.array([1, 1, 0, 0, 1, 0, 1])) == [(0, 1), (4, 4), (6, 6)]
    assert A.ranges(np.zeros(4)) == []


def test_series_with_labels_in_the_training_prefix_is_rejected():
    with pytest.raises(ValueError, match="training prefix"):
        A.AnomalySeries("x", np.zeros(10), np.eye(10)[2], train_end=5)


@pytest.fixture(scope="module")
def bench():
    return A.injected_benchmark(seed=0)


@pytest.fixture(scope="module")
def bases():
    return A._base_series()


def test_benchmark_has_one_series_per_source_and_kind_with_one_test_anomaly(bench, bases):
    assert [s.name for s in bench] == [f"{src}/{k}" for src in bases for k in A.KINDS]
    for s in bench:
        base = bases[s.source][0]
        assert len(s) == len(base) and s.train_end == len(base) // 3
        assert len(s.anomalies) == 1
        a, b = s.anomalies[0]
        assert a >= s.train_end
        outside = np.ones(len(s), bool)
        outside[a : b + 1] = False
        np.testing.assert_array_equal(s.values[outside], base[outside])  # only the labelled segment changed
        assert (b - a + 1) == (1 if s.kind == "spike" else max(3, len(s) // 30))


def test_benchmark_is_reproducible_from_its_seed(bench):
    again = A.injected_benchmark(seed=0)
    assert all(np.array_equal(x.values, y.values) and x.anomalies == y.anomalies for x, y in zip(bench, again))
    other = A.injected_benchmark(seed=1)
    assert any(x.anomalies != y.anomalies for x, y in zip(bench, other))


def test_each_kind_changes_the_segment_as_described(bench, bases):
    for s in bench:
        base = bases[s.source][0]
        a, b = s.anomalies[0]
        seg, orig = s.values[a : b + 1], base[a : b + 1]
        sd = A.robust_std(base[: s.train_end])
        if s.kind == "spike":
            assert 5 * sd - 1e-9 <= abs(seg[0] - orig[0]) <= 8 * sd + 1e-9
        elif s.kind == "level_shift":
            d = seg - orig
            assert np.allclose(d, d[0]) and 3 * sd - 1e-9 <= abs(d[0]) <= 5 * sd + 1e-9
        elif s.kind == "flatline":
            assert np.all(seg == base[a]) and np.max(np.abs(seg - orig)) >= sd
        elif s.kind == "frequency":
            speeds = [(np.interp(a + k * np.arange(len(seg)), np.arange(len(base)), base), k)
                      for k in np.linspace(2.0, 3.0, 2001)]
            assert min(np.max(np.abs(v - seg)) for v, _ in speeds) < 1e-3 * (np.ptp(base) + 1)


def test_inject_rejects_unknown_kinds_and_segments_out_of_range():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown anomaly kind"):
        A.inject(np.arange(20.0), "wobble", 3, 4, rng)
    with pytest.raises(ValueError, match="does not fit"):
        A.inject(np.arange(20.0), "flatline", 18, 4, rng)
    with pytest.raises(ValueError, match="unknown source"):
        A.injected_benchmark(sources=("nope",))


def test_robust_std_falls_back_for_constant_medians():
    assert A.robust_std(np.array([0, 0, 0, 0, 5.0])) == pytest.approx(2.0)  # MAD 0 -> std
    assert A.robust_std(np.zeros(5)) == 1.0
    x = np.random.default_rng(0).normal(0, 3, 20000)
    assert A.robust_std(x) == pytest.approx(3.0, rel=0.03)

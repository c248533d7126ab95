"""The forecast-distance anomaly detector: scores peak at an anomaly, the second pass masks flagged points, the region
and the evaluation. Tiny configs, a few training steps; no network."""

from __future__ import annotations


import numpy as np
import pytest

from xlstmkit.anomaly import DetectorConfig, ForecastDetector, evaluate, most_anomalous_region, smooth
from xlstmkit.data.anomaly import AnomalySeries


pytestmark = pytest.mark.usefixtures("no_network")  # data must load offline (the fixture is in conftest.py)

def _sine_with_spike(n: int = 400, at: int = 300) -> AnomalySeries:
    rng = np.random.default_rng(0)
    t = np.arange(n)
    x = np.sin(2 * np.pi * t / 20) + 0.05 * rng.standard_normal(n)
    x[at] += 4.0
    labels = np.zeros(n, np.int8)
    labels[at] = 1
    return AnomalySeries("sine", x, labels, 160)


@pytest.fixture(scope="module")
def trained():
    series = _sine_with_spike()
    det = ForecastDetector(DetectorConfig(steps=20, batch_size=16, smooth=1, context_length=32)).fit(series.train)
    return series, det


def test_scores_peak_at_a_spike_and_evaluate_reports_a_hit(trained):
    series, det = trained
    scores = det.score(series.values, series.train_end)
    assert scores.shape == (len(series),) and np.isfinite(scores).all()
    assert int(np.argmax(scores[series.train_end:])) + series.train_end == 300
    r = evaluate(scores, series)
    assert r["hit"] and r["top_index"] == 300 and r["auc_roc"] > 0.95 and r["anomaly"] == [300, 300]


def test_flagged_points_are_given_to_the_model_as_missing_values(trained):
    series, det = trained
    missing = np.zeros(len(series), bool)
    missing[300] = True
    nan_values = series.values.copy()
    nan_values[300] = np.nan
    first, q_masked = det.forecasts(series.values, missing)
    _, q_nan = det.forecasts(nan_values)
    np.testing.assert_allclose(q_masked, q_nan)
    _, q_raw = det.forecasts(series.values)
    after = slice(300 - first + 4, 300 - first + 20)  # forecasts whose contexts hold the spike
    assert np.abs(q_masked[after] - q_raw[after]).max() > 1e-4


def test_most_anomalous_region_grows_while_scores_stay_above_half_the_peak():
    s = np.array([0, 0, 1, 3, 6, 10, 7, 4, 1, 0, 9.0])
    assert most_anomalous_region(s, train_end=0, window=1) == (4, 6)  # 6, 10, 7 are >= 5
    assert most_anomalous_region(s, train_end=0, window=5) == (3, 7)
    assert most_anomalous_region(s[:10], train_end=6, window=1) == (6, 7)  # the test part only
    with pytest.raises(ValueError, match="train_end"):
        most_anomalous_region(s, train_end=20)


def test_smooth_is_a_centred_moving_average_shrunk_at_the_edges():
    s = np.array([0.0, 0, 3, 0, 0])
    np.testing.assert_allclose(smooth(s, 3), [0, 1, 1, 1, 0])
    np.testing.assert_allclose(smooth(s, 1), s)


def test_detector_config_checks_and_an_untrained_detector_says_so():
    with pytest.raises(ValueError, match="horizon"):
        DetectorConfig(horizon=0)
    with pytest.raises(ValueError, match="mask_above"):
        DetectorConfig(mask_above=-1.0)
    with pytest.raises(ValueError, match="not trained"):
        ForecastDetector().score(np.zeros(50))
    with pytest.raises(ValueError, match="at least"):
        ForecastDetector(DetectorConfig(horizon=4)).fit(np.zeros(10))

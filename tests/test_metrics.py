"""Metrics: forecasting ones against utilsforecast.losses on the same data, the rest against direct formulas."""

from __future__ import annotations

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("sklearn")
losses = pytest.importorskip("utilsforecast.losses")
from xlstmkit import metrics as M  # noqa: E402

QS = np.array([0.1, 0.25, 0.5, 0.75, 0.9])


@pytest.fixture(scope="module")
def case():
    """Three series, H = 5, training parts of different lengths; forecasts and sorted quantile forecasts."""
    rng = np.random.default_rng(0)
    N, H = 3, 5
    insample = [rng.normal(10, 3, n) + np.arange(n) * 0.2 for n in (12, 20, 9)]
    y = rng.normal(10, 3, (N, H))
    y[2, 1] = -0.5  # a sign change for sMAPE
    y_hat = y + rng.normal(0, 2, (N, H))
    y_hat[0, 0], y[0, 0] = 0.0, 0.0  # a 0/0 sMAPE term
    q_hat = np.sort(y_hat[..., None] + rng.normal(0, 2, (N, H, len(QS))), axis=-1)
    ids = ["a", "b", "c"]
    test = pd.DataFrame({"unique_id": np.repeat(ids, H), "ds": np.tile(np.arange(100, 100 + H), N),
                         "y": y.ravel(), "m": y_hat.ravel()})
    for j, q in enumerate(QS):
        test[f"q{j}"] = q_hat[..., j].ravel()
    test["lo"], test["hi"] = q_hat[..., 0].ravel(), q_hat[..., -1].ravel()
    train = pd.concat([pd.DataFrame({"unique_id": u, "ds": np.arange(100 - len(x), 100), "y": x})
                       for u, x in zip(ids, insample)], ignore_index=True)
    return dict(y=y, y_hat=y_hat, q_hat=q_hat, insample=insample, test=test, train=train)


def _per_series(frame, col="m"):
    return frame.sort_values("unique_id")[col].to_numpy()


@pytest.mark.parametrize("season", [1, 2, 4])
def test_mase_matches_utilsforecast(case, season):
    ref = losses.mase(case["test"], ["m"], seasonality=season, train_df=case["train"])
    np.testing.assert_allclose(M.mase(case["y"], case["y_hat"], case["insample"], season, per_series=True),
                               _per_series(ref), rtol=1e-12)
    assert M.mase(case["y"], case["y_hat"], case["insample"], season) == pytest.approx(_per_series(ref).mean())


def test_smape_is_utilsforecast_times_200(case):
    ref = losses.smape(case["test"], ["m"])
    np.testing.assert_allclose(M.smape(case["y"], case["y_hat"], per_series=True), 200 * _per_series(ref),
                               rtol=1e-12)
    assert 0 <= M.smape(case["y"], case["y_hat"]) <= 200


def test_mae_mse_match_utilsforecast(case):
    np.testing.assert_allclose(M.mae(case["y"], case["y_hat"], per_series=True),
                               _per_series(losses.mae(case["test"], ["m"])), rtol=1e-12)
    np.testing.assert_allclose(M.mse(case["y"], case["y_hat"], per_series=True),
                               _per_series(losses.mse(case["test"], ["m"])), rtol=1e-12)


def test_pinball_loss_matches_the_direct_formula(case):
    y, q_hat = case["y"], case["q_hat"]
    total = 0.0
    for i in range(y.shape[0]):
        for h in range(y.shape[1]):
            for j, q in enumerate(QS):
                e = y[i, h] - q_hat[i, h, j]
                total += q * e if e >= 0 else (q - 1) * e
    assert M.pinball_loss(y, q_hat, QS) == pytest.approx(total / q_hat.size, rel=1e-12)
    for j, q in enumerate(QS):  # and each level agrees with utilsforecast's quantile_loss
        ref = losses.quantile_loss(case["test"], {"m": f"q{j}"}, q=q)
        np.testing.assert_allclose(M.pinball_loss(y, q_hat[..., j : j + 1], [q], per_series=True),
                                   _per_series(ref), rtol=1e-12)


def test_scaled_crps_matches_utilsforecast(case):
    models = {"m": [f"q{j}" for j in range(len(QS))]}
    ref = losses.scaled_crps(case["test"], models, QS)
    np.testing.assert_allclose(M.scaled_crps(case["y"], case["q_hat"], QS, per_series=True), _per_series(ref),
                               rtol=1e-10)
    y, q = case["y"], case["q_hat"]
    pooled = 2 * M._pinball_points(y, q, QS).mean(axis=2).sum() / np.abs(y).sum()
    assert M.scaled_crps(y, q, QS, pooled=True) == pytest.approx(pooled, rel=1e-10)


def test_scaled_crps_is_undefined_for_a_series_that_is_zero_over_the_window(case):
    # PBS's test window is all zeros: dividing by sum|y| + eps gave ~1e16 and swamped every mean
    y, q = case["y"].copy(), case["q_hat"]
    y[2] = 0.0
    per = M.scaled_crps(y, q, QS, per_series=True)
    assert np.isnan(per[2]) and np.isfinite(np.delete(per, 2)).all()
    assert M.scaled_crps(y, q, QS) == pytest.approx(np.delete(per, 2).mean(), rel=1e-12)
    assert np.isnan(M.scaled_crps(np.zeros_like(y), q, QS))
    assert np.isnan(M.scaled_crps(np.zeros_like(y), q, QS, pooled=True))
    s = M.forecast_scores(y, case["y_hat"], case["insample"], 1, q, QS)
    assert s["scaled_crps_undefined_series"] == 1 and np.isfinite(s["scaled_crps"])


def test_coverage_matches_utilsforecast(case):
    t = case["test"].rename(columns={"lo": "m-lo-80", "hi": "m-hi-80"})
    ref = losses.coverage(t, ["m"], level=80)
    cov = M.coverage(case["y"], case["q_hat"][..., 0], case["q_hat"][..., -1], per_series=True)
    np.testing.assert_allclose(cov, _per_series(ref))
    assert 0 < cov.mean() < 1  # the fixture has points on both sides of the interval


def test_missing_actuals_are_skipped(case):
    y = case["y"].copy()
    y[1, 3] = np.nan
    keep = [0, 1, 2, 4]
    assert M.mae(y, case["y_hat"], per_series=True)[1] == pytest.approx(
        np.abs(y[1, keep] - case["y_hat"][1, keep]).mean())
    assert np.isfinite(M.scaled_crps(y, case["q_hat"], QS))
    assert np.isfinite(M.smape(y, case["y_hat"]))
    with pytest.raises(ValueError, match="forecast"):
        M.mae(case["y"], np.where(np.isnan(y), 0, np.nan))


def test_forecast_scores_reads_the_interval_from_quantile_columns(case):
    s = M.forecast_scores(case["y"], case["y_hat"], case["insample"], 1, case["q_hat"], QS, level=80)
    assert s["coverage_80"] == pytest.approx(M.coverage(case["y"], case["q_hat"][..., 0], case["q_hat"][..., -1]))
    assert {"mase", "smape", "mae", "mse", "pinball", "scaled_crps"} <= set(s)
    assert M.interval_quantiles(80) == pytest.approx((0.1, 0.9))


def test_mase_rejects_too_short_training_data():
    with pytest.raises(ValueError, match="more than season_length"):
        M.mase(np.ones((1, 2)), np.ones((1, 2)), [np.ones(4)], 4)


# ---------------------------------------------------------------------------------------------- classification


def test_classification_metrics_match_hand_counts():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0, 2])
    assert M.accuracy(y, p) == pytest.approx(5 / 7)
    cm = M.confusion_matrix(y, p, n_classes=4)
    assert cm.shape == (4, 4) and cm.tolist()[:3] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 2, 0]]
    f1 = []
    for c in range(3):
        tp, fp, fn = cm[c, c], cm[:, c].sum() - cm[c, c], cm[c, :].sum() - cm[c, c]
        f1.append(2 * tp / (2 * tp + fp + fn))
    assert M.macro_f1(y, p) == pytest.approx(np.mean(f1))
    assert M.macro_f1(y, p, n_classes=4) == pytest.approx(np.sum(f1) / 4)  # an absent class counts as 0


# ---------------------------------------------------------------------------------------------- anomaly


def test_auc_roc_equals_the_rank_statistic():
    rng = np.random.default_rng(1)
    labels = (rng.random(200) < 0.1).astype(int)
    scores = rng.normal(size=200) + labels
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert M.auc_roc(scores, labels) == pytest.approx(pairs)


def test_auc_pr_is_average_precision():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, 0, 1, 0, 0])
    assert M.auc_pr(scores, labels) == pytest.approx((1 / 1 + 2 / 3) / 2)  # mean precision at each hit
    with pytest.raises(ValueError, match="single class"):
        M.auc_pr(scores, np.zeros(5))


def test_ucr_hit_uses_a_100_point_margin_and_ignores_the_training_prefix():
    s = np.zeros(1000)
    s[400] = 1.0
    assert M.ucr_hit(s, 500, 520)
    s[400], s[399] = 0.0, 1.0
    assert not M.ucr_hit(s, 500, 520)
    s = np.zeros(1000)
    s[620] = 1.0
    assert M.ucr_hit(s, 500, 520) and not M.ucr_hit(s, 500, 519)
    s = np.zeros(1000)
    s[10], s[450] = 5.0, 1.0  # the training prefix holds the global maximum
    assert not M.ucr_hit(s, 500, 520) and M.ucr_hit(s, 500, 520, train_end=100)

"""Forecasting baselines: statsforecast models as quantiles on the test window, neuralforecast models (slow)."""

from __future__ import annotations

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("statsforecast")
pytest.importorskip("aeon")
from xlstmkit.baselines import forecasting as B  # noqa: E402
from xlstmkit.data import forecasting as F  # noqa: E402

QS = (0.1, 0.25, 0.5, 0.75, 0.9)


@pytest.fixture(scope="module")
def airline():
    d = F.load_forecasting("airline")
    train, test = d.split()
    return d, train, test


def test_seasonal_naive_point_forecast_repeats_the_last_season(airline):
    d, train, test = airline
    fc = B.run("SeasonalNaive", train, d.horizon, d.freq, d.season_length, QS)
    np.testing.assert_allclose(fc.df["point"].to_numpy(), train["y"].to_numpy()[-12:])
    assert fc.df["ds"].tolist() == test["ds"].tolist()
    assert fc.quantile_columns == ["q0.1", "q0.25", "q0.5", "q0.75", "q0.9"]


def test_statistical_quantiles_are_the_models_own_interval_bounds(airline):
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    d, train, _ = airline
    fc = B.run("AutoETS", train, d.horizon, d.freq, d.season_length, QS)
    ref = StatsForecast(models=[AutoETS(season_length=12)], freq="MS").forecast(df=train, h=12, level=[80, 50])
    np.testing.assert_allclose(fc.df["q0.1"], ref["AutoETS-lo-80"], rtol=1e-9)
    np.testing.assert_allclose(fc.df["q0.75"], ref["AutoETS-hi-50"], rtol=1e-9)
    np.testing.assert_allclose(fc.df["q0.5"], ref["AutoETS"], rtol=1e-9)
    q = fc.df[fc.quantile_columns].to_numpy()
    assert (np.diff(q, axis=1) > 0).all()  # Gaussian intervals: strictly increasing quantiles


def test_all_statistical_baselines_forecast_every_series_and_score():
    d = F.load_forecasting("shampoo_sales")  # short: AutoARIMA's search stays fast
    train, test = d.split()
    res = B.run_many(list(B.STATISTICAL), train, d.horizon, d.freq, d.season_length, QS)
    assert list(res) == list(B.STATISTICAL)
    for name, fc in res.items():
        assert len(fc.df) == 12 and np.isfinite(fc.df[["point", *fc.quantile_columns]].to_numpy()).all()
        s = B.evaluate(fc, train, test, d.season_length, level=80)
        assert s["model"] == name and s["mase"] > 0 and 0 <= s["coverage_80"] <= 1 and s["seconds"] >= 0


def test_missing_training_values_are_interpolated_for_statsforecast_only(airline):
    d, train, _ = airline
    holey = train.copy()
    holey.loc[[50, 51, 100], "y"] = np.nan
    fc = B.run("AutoTheta", holey, d.horizon, d.freq, d.season_length, QS)
    assert np.isfinite(fc.df["point"]).all()
    assert holey["y"].isna().sum() == 3  # the caller's frame is untouched


def test_bad_requests_are_clear_errors(airline):
    d, train, _ = airline
    with pytest.raises(ValueError, match="unknown baseline"):
        B.run("Prophet", train, 12, "MS", 12)
    with pytest.raises(ValueError, match="quantiles must be distinct levels"):
        B.run("SeasonalNaive", train, 12, "MS", 12, quantiles=(0.0, 0.5))


@pytest.mark.slow  # importing neuralforecast and Lightning alone takes ~10 s
def test_neural_baselines_share_budget_and_quantile_output(airline, capfd, no_network):
    pytest.importorskip("neuralforecast")
    pytest.importorskip("xlstm")
    d, train, test = airline
    small = {"xLSTM": dict(encoder_hidden_size=16, decoder_hidden_size=16),
             "NHITS": dict(mlp_units=[[32, 32]] * 3),
             "PatchTST": dict(hidden_size=16, n_heads=2, encoder_layers=1, linear_hidden_size=32)}
    res = B.run_many(list(B.NEURAL), train, d.horizon, d.freq, d.season_length, QS, max_steps=10, model_kw=small)
    for name, fc in res.items():
        assert fc.df["ds"].tolist() == test["ds"].tolist()
        assert np.isfinite(fc.df[["point", *fc.quantile_columns]].to_numpy()).all()
        np.testing.assert_array_equal(fc.df["point"], fc.df["q0.5"])
        assert B.evaluate(fc, train, test, d.season_length)["mase"] > 0
    out = capfd.readouterr()
    assert "GPU available" not in out.out + out.err and "Epoch" not in out.out + out.err  # quiet Lightning
    with pytest.raises(ValueError, match="backbone='mLSTM'"):
        B.run("xLSTM", train, 12, "MS", 12, max_steps=1, model_kw={"xLSTM": {"backbone": "sLSTM"}})


def test_multi_series_forecasts_keep_each_series_apart():
    d = F.load_forecasting("uschange")
    train, test = d.split()
    fc = B.run("SeasonalNaive", train, d.horizon, d.freq, d.season_length, QS)
    y, arr = F.align(test, fc.df, ["point"])
    ids, values = F.series_arrays(train)
    assert y.shape == (5, 8)
    for i, v in enumerate(values):  # season 4, horizon 8: the last season repeated twice
        np.testing.assert_allclose(arr["point"][i], np.tile(v[-4:], 2))

"""Forecasting data: bundled sets read offline, the user's CSV (long and wide), checks, splits and windows."""

from __future__ import annotations

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("aeon")
from xlstmkit.data import forecasting as F  # noqa: E402


# name, n_series, total points, freq, season, horizon, first ds, first y
BUNDLED = [
    ("m1_yearly", 181, 4515, "YS", 1, 6, "1972-01-01", 3600.0),
    ("airline", 1, 144, "MS", 12, 12, "1949-01-01", 112.0),
    ("lynx", 1, 114, "YS", 1, 6, "1821-01-01", 269.0),
    ("shampoo_sales", 1, 36, "MS", 12, 12, "1991-01-01", 266.0),
    ("pbs", 1, 204, "MS", 12, 12, "1991-07-01", 1.0),
    ("uschange", 5, 5 * 187, "QS", 4, 8, "1970-01-01", 0.615986218),
    ("solar", 1, 289, "30min", 48, 48, "2021-05-01 00:00", 0.0),
]


@pytest.mark.parametrize("name,n,total,freq,season,h,ds0,y0", BUNDLED)
def test_bundled_sets_load_offline_on_a_regular_grid(no_network, name, n, total, freq, season, h, ds0, y0):
    d = F.load_forecasting(name)
    assert (d.n_series, len(d.df), d.freq, d.season_length, d.horizon) == (n, total, freq, season, h)
    assert list(d.df.columns) == ["unique_id", "ds", "y"] and d.df["y"].dtype == np.float64
    assert d.df["ds"].iloc[0] == pd.Timestamp(ds0) and d.df["y"].iloc[0] == pytest.approx(y0)
    assert d.horizon_source
    for _, g in d.df.groupby("unique_id"):  # every series sits on the stated grid with no gaps
        assert (pd.date_range(g["ds"].iloc[0], periods=len(g), freq=freq) == pd.DatetimeIndex(g["ds"])).all()


def test_m1_yearly_matches_the_tsf_file_and_its_horizon(no_network):
    datasets = pytest.importorskip("aeon.datasets")
    raw, meta = datasets.load_from_tsf_file(str(F._aeon_data_dir() / F.BUNDLED["m1_yearly"].file))
    d = F.load_forecasting("m1_yearly_dataset")  # aeon's name is accepted
    assert meta["forecast_horizon"] == d.horizon == 6
    lengths = d.lengths
    assert (lengths.min(), lengths.max()) == (15, 58)
    np.testing.assert_allclose(d.df[d.df.unique_id == "T2"]["y"].to_numpy(), np.asarray(raw.series_value[1]))


def test_uschange_is_five_channel_independent_series():
    d = F.load_forecasting("uschange")
    assert list(dict.fromkeys(d.df.unique_id)) == ["Consumption", "Income", "Production", "Savings", "Unemployment"]
    assert d.df.groupby("unique_id").size().tolist() == [187] * 5
    assert d.df["ds"].iloc[186] == pd.Timestamp("2016-07-01")  # 2016 Q3


def test_unknown_bundled_name_lists_the_choices():
    with pytest.raises(ValueError, match="bundled: m1_yearly"):
        F.load_forecasting("m4_hourly")


@pytest.mark.parametrize("freq,season,h", [("YS", 1, 6), ("QS", 4, 8), ("MS", 12, 12), ("W", 52, 8), ("D", 7, 30),
                                           ("h", 24, 24), ("30min", 48, 48), ("2MS", 6, 12)])
def test_season_length_and_default_horizon_follow_the_frequency(freq, season, h):
    assert F.season_length_for(freq) == season
    assert F.default_horizon_for(freq)[0] == h


# ---------------------------------------------------------------------------------------------- user CSV


def _long(n=30, freq="MS", ids=("a", "b")):
    parts = [pd.DataFrame({"unique_id": u, "ds": pd.date_range("2001-01-01", periods=n - 3 * j, freq=freq),
                           "y": np.arange(n - 3 * j, dtype=float) + 10 * j}) for j, u in enumerate(ids)]
    return pd.concat(parts, ignore_index=True)


def test_long_csv_roundtrip_with_frequency_inference(tmp_path):
    df = _long()
    df.to_csv(tmp_path / "s.csv", index=False)
    d = F.read_csv(tmp_path / "s.csv")
    assert (d.freq, d.season_length, d.horizon, d.name) == ("MS", 12, 12, "s")
    pd.testing.assert_frame_equal(d.df, df)


def test_wide_csv_becomes_long_and_trims_only_outer_empty_cells(tmp_path):
    (tmp_path / "w.csv").write_text("date,north,south\n2020-01-01,1,\n2020-01-02,,5\n2020-01-03,3,6\n"
                                    "2020-01-04,4,7\n2020-01-05,,\n")
    d = F.read_csv(tmp_path / "w.csv")
    assert d.freq == "D" and d.season_length == 7
    north = d.df[d.df.unique_id == "north"]
    assert north["ds"].tolist() == list(pd.date_range("2020-01-01", periods=4))
    assert np.isnan(north["y"].iloc[1]) and north["y"].iloc[3] == 4  # the inner gap stays missing, not filled
    south = d.df[d.df.unique_id == "south"]
    assert south["ds"].iloc[0] == pd.Timestamp("2020-01-02") and len(south) == 3


def test_missing_values_inside_series_are_kept_not_interpolated(tmp_path):
    df = _long()
    df.loc[5, "y"] = np.nan
    df.to_csv(tmp_path / "m.csv", index=False)
    d = F.read_csv(tmp_path / "m.csv")
    assert np.isnan(d.df["y"].iloc[5]) and d.summary()["missing"] == 1


def test_hourly_csv_with_explicit_horizon(tmp_path):
    _long(60, "h").to_csv(tmp_path / "h.csv", index=False)
    d = F.read_csv(tmp_path / "h.csv", horizon=5)
    assert (d.freq, d.season_length, d.horizon, d.horizon_source) == ("h", 24, 5, "given")


def test_integer_time_index_is_a_step_frequency(tmp_path):
    (tmp_path / "i.csv").write_text("unique_id,ds,y\na,0,1\na,1,2\na,2,3\n")
    d = F.read_csv(tmp_path / "i.csv", horizon=1)
    assert d.freq == 1 and d.df["ds"].dtype == np.int64
    with pytest.raises(ValueError, match="pass horizon="):
        F.read_csv(tmp_path / "i.csv")


def _write(tmp_path, rows):
    p = tmp_path / "bad.csv"
    p.write_text("unique_id,ds,y\n" + "\n".join(rows) + "\n")
    return p


@pytest.mark.parametrize("rows,kw,match", [
    (["a,2020-01-01,1", "a,2020-01-02,2", "a,2020-01-04,3", "a,2020-01-05,4"], {"freq": "D"},
     "gap: no row for 2020-01-03"),
    (["a,2020-01-01,1", "a,2020-01-02,2", "a,2020-01-02,3"], {}, "twice"),
    (["a,2020-01-02,1", "a,2020-01-01,2", "a,2020-01-03,3"], {}, "not sorted"),
    (["a,2020-01-01,1", "a,2020-01-02,abc", "a,2020-01-03,3"], {}, "'abc'.*not a number"),
    (["a,2020-01-01,1", "a,yesterday,2", "a,2020-01-03,3"], {}, "not a date"),
    (["a,2020-01-01,1", "a,2020-01-02,2", "a,2020-01-04,3", "a,2020-01-07,4"], {}, "cannot infer the frequency"),
    (["a,2020-01-01,1", "a,2020-01-02,2", "a,2020-01-03,3"], {"freq": "MS"}, "2020-01-02 00:00:00 off the 'MS' grid"),
    (["a,2020-01-05,1", "a,2020-02-05,2", "a,2020-03-05,3"], {"freq": "MS"}, "not on the 'MS' grid"),
])
def test_csv_problems_are_one_line_errors(tmp_path, rows, kw, match):
    with pytest.raises(ValueError, match=match) as e:
        F.read_csv(_write(tmp_path, rows), **kw)
    assert "\n" not in str(e.value)


def test_wide_csv_with_a_non_numeric_cell(tmp_path):
    (tmp_path / "w.csv").write_text("t,x\n2020-01-01,1\n2020-01-02,n/a?\n2020-01-03,3\n")
    with pytest.raises(ValueError, match="not a number"):
        F.read_csv(tmp_path / "w.csv")


# ---------------------------------------------------------------------------------------------- splits and windows


def test_train_test_split_holds_out_the_last_h_points_of_every_series():
    df = _long()
    train, test = F.train_test_split(df, 4)
    for u, g in df.groupby("unique_id"):
        assert test[test.unique_id == u]["y"].tolist() == g["y"].tolist()[-4:]
        assert train[train.unique_id == u]["y"].tolist() == g["y"].tolist()[:-4]
    with pytest.raises(ValueError, match="needs at least one more"):
        F.train_test_split(df, 27)


def _series(lengths=(9, 14), nan_at=None):
    vals = [np.arange(n, dtype=float) + 100 * j for j, n in enumerate(lengths)]
    if nan_at is not None:
        vals[0][nan_at] = np.nan
    return F.from_arrays(vals, freq="D", horizon=3).df, vals


def test_windows_match_direct_slices_with_left_padding_and_missing_masks():
    df, vals = _series(nan_at=2)
    ws = F.WindowSampler(df, context_length=5, horizon=3)
    w = ws._gather(np.array([0, 0, 1]), np.array([1, 4, 8]))
    for b, (s, t) in enumerate([(0, 1), (0, 4), (1, 8)]):
        full = np.concatenate([np.full(5, np.nan), vals[s]])  # left padding = missing
        ctx, tgt = full[t : t + 5], full[t + 5 : t + 8]
        np.testing.assert_array_equal(w.context_mask[b].numpy(), ~np.isnan(ctx))
        np.testing.assert_array_equal(w.context[b].numpy(), np.nan_to_num(ctx).astype(np.float32))
        np.testing.assert_array_equal(w.target[b].numpy(), np.nan_to_num(tgt).astype(np.float32))
        np.testing.assert_array_equal(w.target_mask[b].numpy(), ~np.isnan(tgt))
    assert not w.context_mask[0, :4].any() and w.context_mask[0, 4]  # cutoff 1: one observed point, four padded


def test_validation_window_is_the_last_window_before_the_test_window():
    df, vals = _series()
    train, test = F.train_test_split(df, 3)
    ws = F.WindowSampler(train, context_length=4, horizon=3)
    v = ws.validation()
    for b, s in enumerate(v.series.tolist()):
        tr = np.concatenate([np.full(4, np.nan), vals[s][:-3]])  # training part, left-padded
        np.testing.assert_array_equal(v.target[b].numpy(), tr[-3:])
        np.testing.assert_array_equal(v.context[b].numpy(), np.nan_to_num(tr[-7:-3]))
        np.testing.assert_array_equal(v.context_mask[b].numpy(), ~np.isnan(tr[-7:-3]))
    fc = ws.forecast_context()
    np.testing.assert_array_equal(fc.context[1].numpy(), vals[1][:-3][-4:])
    assert fc.target.shape == (2, 0)


def test_sampled_windows_cover_every_valid_cutoff_and_never_reach_the_validation_target():
    df, vals = _series()
    ws = F.WindowSampler(df, context_length=4, horizon=3, min_context=2)
    expected = {(s, t) for s, n in enumerate((9, 14)) for t in range(2, n - 6 + 1)}
    assert ws.n_windows == len(expected)
    w = ws.sample(4000, np.random.default_rng(0))
    got = set(zip(w.series.tolist(), w.cutoff.tolist()))
    assert got == expected
    counts = np.bincount(w.series.numpy())
    assert abs(counts[0] / counts.sum() - 2 / 9) < 0.03  # uniform over windows: 2 of the 9 windows are series 0's


def test_window_sampling_is_seeded():
    df, _ = _series()
    ws = F.WindowSampler(df, 4, 3)
    a, b = ws.sample(16, np.random.default_rng(7)), ws.sample(16, np.random.default_rng(7))
    assert a.cutoff.tolist() == b.cutoff.tolist() and a.series.tolist() == b.series.tolist()
    c = ws.sample(16, np.random.default_rng(8))
    assert a.cutoff.tolist() != c.cutoff.tolist()


def test_window_batches_feed_the_generic_trainer():
    torch = pytest.importorskip("torch")
    from xlstmkit.train.supervised import FitConfig, fit

    df, _ = _series(lengths=(40, 60))
    ws = F.WindowSampler(df, context_length=8, horizon=3)
    (ctx, cmask), (tgt, tmask) = next(ws.batches(5, 1, np.random.default_rng(0)))
    assert ctx.shape == (5, 8) and cmask.dtype == torch.bool and tgt.shape == tmask.shape == (5, 3)

    class Last(torch.nn.Module):  # forecast = last observed value + a learned offset per step
        def __init__(self):
            super().__init__()
            self.offset = torch.nn.Parameter(torch.zeros(3))

        def forward(self, context, mask):
            return context[:, -1:] + self.offset

    def masked_mae(out, target):
        y, m = target
        return ((out - y).abs() * m).sum() / m.sum()

    model = Last()
    res = fit(model, masked_mae, lambda rng: ws.batches(16, 10, rng), lambda: [ws.validation().batch()],
              FitConfig(max_epochs=15, lr=0.1, patience=15))
    torch.testing.assert_close(model.offset.detach(), torch.tensor([1.0, 2.0, 3.0]), atol=0.1, rtol=0)  # y = t + c
    assert res.best_val_loss < 0.1


def test_series_too_short_for_any_window_is_a_clear_error():
    df, _ = _series(lengths=(5, 6))
    with pytest.raises(ValueError, match="no training windows"):
        F.WindowSampler(df, 4, 3).sample(2, np.random.default_rng(0))


def test_align_orders_forecasts_by_series_and_time():
    df = _long(10)
    _, test = F.train_test_split(df, 2)
    fc = test.sample(frac=1.0, random_state=0).rename(columns={"y": "m"})
    y, arr = F.align(test, fc, ["m"])
    np.testing.assert_array_equal(y, arr["m"])
    assert y.shape == (2, 2)
    with pytest.raises(ValueError, match="no forecast for series"):
        F.align(test, fc.iloc[1:], ["m"])

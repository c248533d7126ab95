"""The xLSTM forecaster: scaling inverted exactly, ordered quantiles, the pinball loss, masks for missing values and
left padding, the sampled-path rollout, and a tiny fit/predict over long-format data. Tiny configs; no network."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from xlstmkit.models.forecaster import (ForecasterConfig, check_quantiles, fit, instance_scale,
                                        interpolate_quantiles, patch_tokens, predict, quantile_loss,
                                        training_windows, xLSTMForecaster)

TINY = dict(embedding_dim=16, num_heads=2, embed_hidden=16, head_hidden=16)


pytestmark = pytest.mark.usefixtures("no_network")  # data must load offline (the fixture is in conftest.py)

def _model(seed: int = 0, **kw) -> xLSTMForecaster:
    torch.manual_seed(seed)
    cfg = ForecasterConfig(**{**dict(horizon=3, context_length=12, patch_size=3), **TINY, **kw})
    return xLSTMForecaster(cfg).double().eval()


def _series(B: int = 4, L: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, L, generator=g, dtype=torch.float64).cumsum(1) + 3.0)


def test_instance_scale_is_inverted_exactly_by_the_output_map():
    """Forecasting a x + b gives a * forecast(x) + b: the network sees the same scaled input, and its output is
    mapped back with the row's own loc and scale."""
    model = _model()
    x = _series()
    q = model(x)
    for a, b in ((3.0, -7.0), (1e-3, 50.0), (250.0, 1e4)):
        torch.testing.assert_close(model(a * x + b), a * q + b, rtol=1e-9, atol=1e-9 * abs(b) + 1e-9 * a)


def test_instance_scale_matches_nan_aware_mean_and_population_std():
    x = torch.tensor([[1.0, 2.0, float("nan"), 5.0], [4.0, 4.0, 4.0, 4.0], [float("nan")] * 4], dtype=torch.float64)
    obs = ~torch.isnan(x)
    loc, scale = instance_scale(torch.nan_to_num(x), obs)
    v = np.array([1.0, 2.0, 5.0])
    assert loc[0, 0].item() == pytest.approx(v.mean()) and scale[0, 0].item() == pytest.approx(v.std())
    assert scale[1, 0].item() == pytest.approx(4.0 + 1e-5)  # constant row: |loc| + eps
    assert (loc[2, 0].item(), scale[2, 0].item()) == (0.0, 1.0)  # no observation at all


def test_quantiles_are_ordered_even_for_extreme_head_outputs():
    model = _model(quantiles=(0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95))
    with torch.no_grad():
        for p in model.head.parameters():
            p.mul_(200.0)  # huge raw outputs of both signs
    q = model(_series(8))
    assert q.shape == (8, 3, 7)
    assert (q.diff(dim=-1) >= 0).all()


def test_pinball_loss_matches_a_direct_loop():
    g = torch.Generator().manual_seed(1)
    q_hat = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    y = torch.randn(3, 4, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 4, generator=g) > 0.3
    levels = [0.1, 0.3, 0.5, 0.7, 0.9]
    total, n = 0.0, 0
    for b in range(3):
        for h in range(4):
            if not mask[b, h]:
                continue
            n += 1
            for k, q in enumerate(levels):
                d = float(y[b, h] - q_hat[b, h, k])
                total += (q * d if d >= 0 else (q - 1) * d) / len(levels)
    y_nan = y.masked_fill(~mask, float("nan"))  # missing targets may be NaN: they must not leak through the mask
    assert quantile_loss(q_hat, y_nan, levels, mask).item() == pytest.approx(total / n, rel=1e-12)


def test_missing_values_are_masked_not_interpolated():
    model = _model()
    x = _series()
    x_nan = x.clone()
    x_nan[:, 5] = float("nan")
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[:, 5] = False
    # a NaN, and any value under a False mask, give the same forecast: the value is not read
    torch.testing.assert_close(model(x_nan), model(x, mask))
    torch.testing.assert_close(model(x.masked_fill(~mask, 1e6), mask), model(x, mask))
    # ... and it is not silently replaced by a number: the mask features tell the model it is missing
    filled = x.clone()
    filled[:, 5] = (x[:, 4] + x[:, 6]) / 2
    assert (model(filled) - model(x_nan)).abs().max() > 1e-6
    zero_tokens = patch_tokens(torch.zeros(1, 6, dtype=torch.float64), torch.tensor([[True] * 5 + [False]]), 3)
    assert zero_tokens[0, 1].tolist() == [0, 0, 0, 1, 1, 0]


def test_left_padding_changes_no_state():
    """A short series forecasts exactly as its real patches alone would: leading patches without observations are
    masked in the blocks (the state passes them unchanged)."""
    model = _model(block_pattern="xLSTM[1:1]", num_blocks=2)
    x = _series(2)
    short = x.clone()
    short[:, :6] = float("nan")  # two leading patches missing
    q = model(short)
    # reference: the last two patches only, through the same layers, no padding at all
    loc, scale = instance_scale(torch.nan_to_num(short[:, 6:]), ~torch.isnan(short[:, 6:]))
    tokens = patch_tokens((x[:, 6:] - loc) / scale, torch.ones(2, 6, dtype=torch.bool), 3)
    h, _ = model.backbone(model.embedding(tokens))
    ref = model.ordered(model.head(h[:, -1]).view(2, 3, 9)) * scale.unsqueeze(-1) + loc.unsqueeze(-1)
    torch.testing.assert_close(q, ref)


def test_context_shorter_than_configured_is_left_padded_and_longer_is_cut():
    model = _model()
    x = _series(2, 20)
    torch.testing.assert_close(model(x), model(x[:, -12:]))
    short = x[:, -5:]
    padded = torch.cat([torch.full((2, 7), float("nan"), dtype=torch.float64), short], 1)
    torch.testing.assert_close(model(short), model(padded))


def test_rollout_beyond_the_trained_horizon_on_sampled_paths():
    model = _model()
    x = _series(3)
    q = model.forecast(x, horizon=8, num_samples=64, seed=5)
    assert q.shape == (3, 8, 9)
    torch.testing.assert_close(q[:, :3], model(x))  # the first chunk is the model's own forecast
    assert (q.diff(dim=-1) >= 0).all() and torch.isfinite(q).all()
    torch.testing.assert_close(model.forecast(x, horizon=8, num_samples=64, seed=5), q)  # seeded
    assert not torch.equal(model.forecast(x, horizon=8, num_samples=64, seed=6), q)


def test_calibration_widens_overconfident_intervals_by_the_pinball_loss():
    model = _model()
    x = _series(64, seed=3)
    g = torch.Generator().manual_seed(4)
    q = model(x)
    med = q[..., 4]
    target = med + 8.0 * (q[..., 8] - q[..., 0]) * torch.randn(med.shape, generator=g, dtype=torch.float64)
    levels = model.levels.double()
    before = quantile_loss(q, target, levels).item()
    spread = model.calibrate(x, None, target, None)
    assert spread > 2.0 and model.spread.item() == spread
    after = model(x)
    assert quantile_loss(after, target, levels).item() < before
    torch.testing.assert_close(after[..., 4], med)  # the median does not move
    assert (after.diff(dim=-1) >= 0).all()
    assert "spread" in model.state_dict()


def test_interpolated_quantile_function_hits_the_levels_and_extrapolates_linearly():
    levels = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    values = torch.tensor([[1.0, 2.0, 4.0]], dtype=torch.float64)
    u = torch.tensor([[0.1, 0.3, 0.5, 0.7, 0.9, 0.0, 1.0]], dtype=torch.float64)
    got = interpolate_quantiles(levels, values.expand(7, 3).unsqueeze(0).squeeze(0), u[0]).tolist()
    assert got == pytest.approx([1.0, 1.5, 2.0, 3.0, 4.0, 0.75, 4.5])


def test_config_checks_and_the_median_is_always_a_level():
    assert check_quantiles([0.9, 0.1]) == (0.1, 0.5, 0.9)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        ForecasterConfig(quantiles=(0.0, 0.5))
    with pytest.raises(ValueError, match="patch_size"):
        ForecasterConfig(context_length=4, patch_size=8)
    with pytest.raises(ValueError, match="horizon"):
        ForecasterConfig(horizon=0)
    cfg = ForecasterConfig.for_horizon(6)
    assert (cfg.context_length, cfg.patch_size) == (24, 2)
    assert ForecasterConfig.from_dict(cfg.to_dict()) == cfg


def _long_frame():
    from xlstmkit.data.forecasting import from_arrays

    rng = np.random.default_rng(0)
    t = np.arange(40)
    rows = [10 + np.sin(t / 3) + 0.1 * rng.standard_normal(40), 5 + 0.2 * t + 0.1 * rng.standard_normal(40),
            50 + 3 * np.cos(t / 2)]
    rows[0][7] = np.nan  # a missing value inside a series
    rows.append(rows[1][:14])  # a short series
    return from_arrays(rows, freq="MS", horizon=4)


def test_fit_and_predict_a_global_model_on_long_format_data():
    from xlstmkit.train.supervised import FitConfig

    data = _long_frame()
    train, test = data.split()
    cfg = ForecasterConfig(horizon=4, context_length=12, patch_size=3, **TINY)
    model, result = fit(train, cfg, FitConfig(max_steps=6, batch_size=8, seed=0), steps_per_epoch=3)
    assert result.steps == 6 and result.best_val_loss is not None and 0.5 <= model.spread.item() <= 4.0
    fc = predict(model, train, 4, data.freq)
    assert list(fc.columns[:3]) == ["unique_id", "ds", "point"] and len(fc) == 4 * 4
    assert fc.filter(regex="^q").shape[1] == 9 and np.isfinite(fc.filter(regex="^q").to_numpy()).all()
    assert (fc["ds"].to_numpy() == test["ds"].to_numpy()).all()  # dated like the test window
    long = predict(model, train, 10, data.freq, num_samples=16)
    assert len(long) == 4 * 10


def test_series_too_short_for_a_validation_window_train_without_one():
    from xlstmkit.data.forecasting import from_arrays

    data = from_arrays([np.arange(16.0)], freq="MS", horizon=6)
    train, _ = data.split()
    td = training_windows(train, ForecasterConfig(horizon=6, context_length=12, patch_size=3))
    assert not td.validation and "without early stopping" in td.note and td.sampler.n_windows > 0
    with pytest.raises(ValueError, match="shorten the horizon"):
        training_windows(train.head(5), ForecasterConfig(horizon=6, context_length=12, patch_size=3))

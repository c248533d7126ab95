"""Classification baselines and the generic supervised trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("aeon")
from xlstmkit.baselines import classification as B  # noqa: E402
from xlstmkit.data import classification as C  # noqa: E402
from xlstmkit import metrics as M  # noqa: E402
from xlstmkit.train.supervised import FitConfig, evaluate_loss, fit  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: a second busy thread only slows them down


def _toy(n_per_class=32, seed=0, channels=2) -> C.ClassificationData:
    """Two classes of variable-length series: a slow sine around -0.5 vs a fast sine around +0.5, with noise."""
    rng = np.random.default_rng(seed)
    series, labels = [], []
    for label, freq in ((0, 0.15), (1, 1.2)):
        for _ in range(n_per_class):
            L = int(rng.integers(12, 30))
            t = np.arange(L)
            x = np.stack([np.sin(freq * t + rng.uniform(0, 6)) + label - 0.5 + 0.1 * rng.normal(size=L)
                          for _ in range(channels)])
            series.append(x.astype(np.float32))
            labels.append(label)
    s = C.SeriesSet(series, labels)
    idx = rng.permutation(len(s))
    return C.ClassificationData("toy", s.subset(idx[: 2 * n_per_class * 3 // 4]),
                                s.subset(idx[2 * n_per_class * 3 // 4:]), ["slow", "fast"], channels)


@pytest.mark.parametrize("kind", ["transformer", "lstm", "gru"])
@pytest.mark.parametrize("target", [30_000, 250_000])
def test_width_for_params_lands_within_five_percent(kind, target):
    arch = B.width_for_params(kind, target, n_channels=12, n_classes=9, max_len=64) if kind == "transformer" else \
        B.width_for_params(kind, target, n_channels=12, n_classes=9)
    kw = {"max_len": 64} if kind == "transformer" else {}
    n = B.count_params(B.build(kind, 12, 9, **kw, **arch))
    assert abs(n - target) <= 0.05 * target


def test_width_for_params_refuses_an_unreachable_match():
    with pytest.raises(ValueError, match="more than 5%"):
        B.width_for_params("lstm", 900, n_channels=12, n_classes=9, n_layers=4)


@pytest.mark.parametrize("kind", ["transformer", "lstm", "gru"])
def test_padding_does_not_change_a_series_output(kind):
    torch.manual_seed(0)
    model = B.build(kind, 3, 4, **({"d_model": 16, "max_len": 40} if kind == "transformer" else {"hidden": 8}))
    model.eval()
    series = [torch.randn(L, 3) for L in (1, 7, 13)]
    p = C.pad_series([s.T.numpy() for s in series], [0, 0, 0], length=20)
    with torch.no_grad():
        batched = model(p.x, p.mask)
        for i, s in enumerate(series):
            alone = model(s[None], torch.ones(1, s.shape[0], dtype=torch.bool))
            torch.testing.assert_close(batched[i], alone[0], rtol=1e-5, atol=1e-5)


def test_transformer_rejects_series_longer_than_its_positions():
    m = B.build("transformer", 1, 2, d_model=8, n_heads=2, max_len=4)
    with pytest.raises(ValueError, match="max_len"):
        m(torch.zeros(1, 5, 1), torch.ones(1, 5, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------- trainer


def _loaders(data):
    v = C.train_val_split(data, 0.25, 0)
    tr, va = v.to_padded("train"), v.to_padded("val")
    return v, (lambda rng: tr.batches(8, rng)), (lambda: va.batches(64))


def test_trainer_learns_a_separable_task_and_restores_the_best_epoch():
    data = _toy()
    v, train_b, val_b = _loaders(data)
    torch.manual_seed(0)
    model = B.build("gru", 2, 2, hidden=16, n_layers=1)
    res = fit(model, F.cross_entropy, train_b, val_b, FitConfig(max_epochs=12, patience=4, lr=3e-3, seed=0))
    assert res.best_epoch is not None and res.stopped in ("patience", "epochs")
    assert evaluate_loss(model, F.cross_entropy, val_b()) == pytest.approx(res.best_val_loss, rel=1e-6)
    assert res.best_val_loss == min(r["val_loss"] for r in res.history)
    logits = model(*v.to_padded("test").batches(10_000).__next__()[0])
    assert M.accuracy(v.test.labels, logits.argmax(-1).numpy()) >= 0.9


def test_trainer_is_reproducible_from_its_seed():
    data = _toy()
    _, train_b, val_b = _loaders(data)
    weights = []
    for _ in range(2):
        torch.manual_seed(1)
        model = B.build("transformer", 2, 2, d_model=8, n_heads=2, n_layers=1, max_len=32)
        fit(model, F.cross_entropy, train_b, val_b, FitConfig(max_epochs=3, seed=5))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_trainer_stops_at_the_time_budget_and_at_max_steps():
    data = _toy()
    _, train_b, val_b = _loaders(data)
    model = B.build("lstm", 2, 2, hidden=8)
    res = fit(model, F.cross_entropy, train_b, val_b, FitConfig(max_epochs=10_000, patience=10_000,
                                                               time_budget=0.3))
    assert res.stopped == "time" and res.seconds < 5
    res = fit(model, F.cross_entropy, train_b, None, FitConfig(max_steps=7))
    assert (res.stopped, res.steps, res.best_val_loss) == ("steps", 7, None)


def test_trainer_reports_a_diverging_loss():
    data = _toy()
    _, train_b, _ = _loaders(data)
    model = B.build("gru", 2, 2, hidden=4)

    def bad_loss(out, y):
        return F.cross_entropy(out, y) * float("nan")

    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(model, bad_loss, train_b, None, FitConfig(max_epochs=1))


# ---------------------------------------------------------------------------------------------- uniform interface


@pytest.mark.parametrize("kind", ["transformer", "lstm", "gru"])
def test_neural_baselines_fit_and_predict_on_the_same_splits(kind):
    data = _toy(seed=1)
    b = B.make(kind, params=12_000, config=FitConfig(max_epochs=8, patience=4, lr=3e-3, batch_size=16))
    info = b.fit(data)
    assert abs(info["params"] - 12_000) <= 600
    pred = b.predict(data, "test")
    assert pred.shape == (len(data.test),) and M.accuracy(data.test.labels, pred) >= 0.8


@pytest.mark.slow  # aeon's MiniRocket compiles with numba on first use (tens of seconds on a fresh machine)
def test_minirocket_on_variable_length_multichannel_data():
    data = C.load_classification("JapaneseVowels")
    b = B.make("minirocket", n_kernels=2000)
    info = b.fit(data)
    assert info["length"] == 29  # padded to the longest series of any split
    assert M.accuracy(data.test.labels, b.predict(data)) > 0.9  # published MiniRocket-class results are ~0.99


@pytest.mark.slow
def test_minirocket_gunpoint_reference_accuracy():
    data = C.load_classification("GunPoint")
    b = B.make("minirocket", seed=0)
    b.fit(data)
    assert M.accuracy(data.test.labels, b.predict(data)) >= 0.97  # MiniRocket's 30-resample mean is 0.992

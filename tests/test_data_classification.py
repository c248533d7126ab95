"""Classification data: bundled UCR/UEA sets read offline, user files (.ts, .npz, .csv, audio), padding, splits."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("aeon")
from xlstmkit.data import classification as C  # noqa: E402
from xlstmkit.extras import require  # noqa: E402


def test_no_network_fixture_blocks_connections(no_network):
    with pytest.raises(AssertionError, match="network"):
        socket.create_connection(("127.0.0.1", 9))


# name, n_train, n_test, min length, max length, channels, classes (sizes parsed from the bundled .ts files)
BUNDLED = [
    ("GunPoint", 50, 150, 150, 150, 1, 2),
    ("ItalyPowerDemand", 67, 1029, 24, 24, 1, 2),
    ("ArrowHead", 36, 175, 251, 251, 1, 3),
    ("OSULeaf", 200, 242, 427, 427, 1, 6),
    ("BasicMotions", 40, 40, 100, 100, 6, 4),
    ("JapaneseVowels", 270, 370, 7, 29, 12, 9),
]


@pytest.mark.parametrize("name,n_train,n_test,lmin,lmax,ch,k", BUNDLED)
def test_bundled_sets_load_offline_with_archive_sizes(no_network, name, n_train, n_test, lmin, lmax, ch, k):
    d = C.load_classification(name)
    assert (len(d.train), len(d.test), d.n_channels, d.n_classes) == (n_train, n_test, ch, k)
    lengths = np.concatenate([d.train.lengths, d.test.lengths])
    assert (lengths.min(), lengths.max()) == (lmin, lmax)
    assert all(s.dtype == np.float32 and s.shape[0] == ch for s in d.train.series)
    assert set(np.unique(d.train.labels)) == set(range(k))  # every class is present in the training split
    assert d.test.labels.min() >= 0 and d.test.labels.max() < k


def test_bundled_names_lists_only_classification_sets():
    names = C.bundled_names()
    assert {"GunPoint", "JapaneseVowels", "BasicMotions", "OSULeaf"} <= set(names)
    assert "Covid3Month" not in names  # a regression set (@targetLabel) is not a classification set


def test_single_split_loads_and_other_split_is_absent(no_network):
    d = C.load_classification("GunPoint", split="test")
    assert d.train is None and len(d.test) == 150
    with pytest.raises(ValueError, match="no training split"):
        d.stats


def test_unknown_bundled_name_is_one_line_error():
    with pytest.raises(ValueError, match="not bundled") as e:
        C.load_classification("NoSuchSet")
    assert "\n" not in str(e.value)


def test_to_padded_right_pads_and_masks_variable_lengths():
    d = C.load_classification("JapaneseVowels")
    p = d.to_padded("test")
    lengths = d.test.lengths
    assert p.x.shape == (370, lengths.max(), 12) and p.x.dtype == torch.float32
    assert torch.equal(p.lengths, torch.from_numpy(lengths))
    assert torch.equal(p.mask.sum(1), p.lengths)
    assert torch.equal(p.mask, torch.arange(p.x.shape[1])[None] < p.lengths[:, None])  # right padding
    assert float(p.x[~p.mask].abs().max()) == 0.0
    i = int(np.argmin(lengths))
    expected = (d.test.series[i].astype(np.float64) - d.stats.mean[:, None]) / d.stats.std[:, None]
    np.testing.assert_allclose(p.x[i, : lengths[i]].numpy().T, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(p.labels, torch.from_numpy(d.test.labels))


def test_normalisation_statistics_come_from_training_split_only():
    d = C.load_classification("BasicMotions")
    cat = np.concatenate(d.train.series, axis=1).astype(np.float64)
    np.testing.assert_allclose(d.stats.mean, cat.mean(1), rtol=1e-6)
    np.testing.assert_allclose(d.stats.std, cat.std(1), rtol=1e-6)
    shifted = C.ClassificationData(d.name, d.train, C.SeriesSet([s + 100 for s in d.test.series], d.test.labels),
                                   d.class_names, d.n_channels)
    np.testing.assert_array_equal(shifted.stats.mean, d.stats.mean)
    train = d.to_padded("train")
    flat = train.x[train.mask]  # (sum L, C) normalised training values
    np.testing.assert_allclose(flat.mean(0).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(flat.std(0, unbiased=False).numpy(), 1.0, atol=1e-4)


def test_constant_channel_gets_unit_std():
    s = C.SeriesSet([np.stack([np.arange(5.0), np.full(5, 3.0)]).astype(np.float32)] * 2, [0, 1])
    d = C.ClassificationData("c", s, None, ["a", "b"], 2)
    assert d.stats.std[1] == 1.0
    assert torch.isfinite(d.to_padded().x).all()


def test_batches_cut_each_batch_to_its_longest_series():
    d = C.load_classification("JapaneseVowels")
    p = d.to_padded("train")
    seen = []
    for (x, mask), y in p.batches(32, np.random.default_rng(0)):
        assert x.shape[1] == int(mask.sum(1).max())
        seen.append(y)
    assert sorted(torch.cat(seen).tolist()) == sorted(p.labels.tolist())


def test_train_val_split_is_stratified_seeded_and_from_train_only():
    d = C.load_classification("JapaneseVowels")
    v = C.train_val_split(d, 0.2, seed=3)
    assert len(v.train) + len(v.val) == len(d.train) and v.test is d.test
    counts = np.bincount(d.train.labels)
    np.testing.assert_array_equal(np.bincount(v.val.labels, minlength=9), np.round(0.2 * counts).astype(int))
    joined = sorted(map(bytes, (s.tobytes() for s in v.train.series + v.val.series)))
    assert joined == sorted(map(bytes, (s.tobytes() for s in d.train.series)))
    again = C.train_val_split(d, 0.2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(again.val.series, v.val.series))
    other = C.train_val_split(d, 0.2, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(other.val.series, v.val.series))
    np.testing.assert_allclose(v.stats.mean, C.ChannelStats.of(v.train.series).mean)  # recomputed on the rest


def test_split_keeps_a_training_series_of_every_class():
    s = C.SeriesSet([np.zeros((1, 4), np.float32)] * 5, [0, 0, 0, 1, 1])
    d = C.ClassificationData("t", s, None, ["a", "b"], 1)
    v = C.train_val_split(d, 0.9, 0)
    assert set(v.train.labels) == {0, 1} and set(v.val.labels) == {0, 1}
    with pytest.raises(ValueError, match="fraction"):
        C.train_val_split(d, 1.5, 0)


def test_train_test_split_for_single_file_data():
    s = C.SeriesSet([np.full((1, 4), i, np.float32) for i in range(20)], [0] * 10 + [1] * 10)
    d = C.train_test_split(C.ClassificationData("t", s, None, ["a", "b"], 1), 0.3, 0)
    assert (len(d.train), len(d.test)) == (14, 6)
    with pytest.raises(ValueError, match="already has a test set"):
        C.train_test_split(d, 0.3, 0)


# ---------------------------------------------------------------------------------------------- user files


def test_ts_file_reads_like_the_bundled_copy(tmp_path):
    src = Path(C._aeon_data_dir()) / "BasicMotions"
    shutil.copy(src / "BasicMotions_TRAIN.ts", tmp_path / "mine_TRAIN.ts")
    shutil.copy(src / "BasicMotions_TEST.ts", tmp_path / "mine_TEST.ts")
    d = C.load(tmp_path / "mine_TRAIN.ts", test=tmp_path / "mine_TEST.ts")
    ref = C.load_classification("BasicMotions")
    assert d.name == "mine" and d.class_names == ref.class_names
    np.testing.assert_array_equal(d.train.stacked(), ref.train.stacked())
    np.testing.assert_array_equal(d.test.labels, ref.test.labels)


def test_npz_train_test_keys_with_lengths(tmp_path):
    X = np.random.default_rng(0).normal(size=(6, 2, 10))
    y = np.array(["cat", "dog", "cat", "dog", "cat", "dog"])
    lengths = np.array([10, 4, 7, 10, 1, 3])
    np.savez(tmp_path / "d.npz", X_train=X, y_train=y, lengths_train=lengths, X_test=X[:2], y_test=y[:2])
    d = C.load(tmp_path / "d.npz")
    assert d.class_names == ["cat", "dog"] and d.n_channels == 2
    np.testing.assert_array_equal(d.train.lengths, lengths)
    np.testing.assert_allclose(d.train.series[2], X[2, :, :7].astype(np.float32))
    assert len(d.test) == 2 and list(d.test.labels) == [0, 1]


def test_npz_single_array_with_split_and_nan_padding(tmp_path):
    X = np.arange(5 * 8, dtype=np.float64).reshape(5, 8)  # (N, L): one channel
    X[1, 5:] = np.nan
    np.savez(tmp_path / "d.npz", X=X, y=np.array([2, 10, 2, 10, 2]), split=np.array(["train"] * 3 + ["test"] * 2))
    d = C.load_npz(tmp_path / "d.npz")
    assert d.class_names == ["2", "10"]  # numeric order, not text order
    assert list(d.train.lengths) == [8, 5, 8] and len(d.test) == 2


def test_npz_object_array_needs_explicit_pickle_consent(tmp_path):
    X = np.empty(2, dtype=object)
    X[0], X[1] = np.zeros((1, 3)), np.ones((1, 5))
    np.savez(tmp_path / "o.npz", X=X, y=np.array([0, 1]))
    with pytest.raises(ValueError, match="allow_pickle=True") as e:
        C.load(tmp_path / "o.npz")
    assert "\n" not in str(e.value)
    d = C.load(tmp_path / "o.npz", allow_pickle=True)
    assert list(d.train.lengths) == [3, 5]


def test_npz_with_wrong_keys_or_damage_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "k.npz", data=np.zeros(3))
    with pytest.raises(ValueError, match="expected keys"):
        C.load(tmp_path / "k.npz")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        C.load(tmp_path / "bad.npz")


def test_csv_row_layout_variable_length_and_tab_variant(tmp_path):
    (tmp_path / "d_TRAIN.csv").write_text("walk,1,2,3,4\nrun,5,6\nwalk,7,8,9,,\n")
    (tmp_path / "d_TEST.tsv").write_text("run\t1\t2\t3\nwalk\t4\t5\tNaN\n")
    d = C.load(tmp_path / "d_TRAIN.csv", test=tmp_path / "d_TEST.tsv")
    assert d.name == "d" and d.class_names == ["run", "walk"]
    assert list(d.train.lengths) == [4, 2, 3] and list(d.train.labels) == [1, 0, 1]
    assert list(d.test.lengths) == [3, 2]
    np.testing.assert_array_equal(d.train.series[1], [[5, 6]])


def test_old_ucr_space_separated_text_with_float_labels(tmp_path):
    (tmp_path / "old_TRAIN.txt").write_text("  1.0000000e+00  -6.4e-01  -6.5e-01\n  2.0000000e+00   1.0e+00   2.0e+00\n")
    d = C.load(tmp_path / "old_TRAIN.txt")
    assert d.class_names == ["1", "2"] and list(d.train.labels) == [0, 1]
    np.testing.assert_allclose(d.train.series[0], [[-0.64, -0.65]])


def test_csv_long_layout_multichannel_sorted_by_time(tmp_path):
    (tmp_path / "long.csv").write_text(textwrap.dedent("""\
        series_id,label,time,ax,ay
        s1,up,1,0.1,1.1
        s1,up,0,0.0,1.0
        s2,down,0,5.0,6.0
        s1,up,2,0.2,1.2
        """))
    d = C.load(tmp_path / "long.csv")
    assert d.n_channels == 2 and d.class_names == ["down", "up"]
    np.testing.assert_allclose(d.train.series[0], [[0.0, 0.1, 0.2], [1.0, 1.1, 1.2]])
    assert list(d.train.labels) == [1, 0]


@pytest.mark.parametrize("text,match", [
    ("a,1,x,3\n", "not a number"),
    ("a,1,,3\nb,2,3\n", "missing or infinite values inside"),
    ("series_id,label,v\ns1,a,1\ns1,b,2\n", "several labels"),
    ("series_id,label,v\ns1,a,1\ns1,a,oops\n", "non-numeric"),
])
def test_csv_problems_are_one_line_errors(tmp_path, text, match):
    (tmp_path / "x.csv").write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        C.load(tmp_path / "x.csv")
    assert "\n" not in str(e.value)


def test_test_labels_outside_training_classes_are_rejected(tmp_path):
    (tmp_path / "tr.csv").write_text("a,1,2\nb,3,4\n")
    (tmp_path / "te.csv").write_text("c,1,2\n")
    with pytest.raises(ValueError, match="not among the training classes"):
        C.load(tmp_path / "tr.csv", test=tmp_path / "te.csv")


# ---------------------------------------------------------------------------------------------- audio


def _tone(freq: float, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t * (1 + 0.1 * t))).astype(np.float32)  # a gentle upward sweep


@pytest.fixture
def audio_folder(tmp_path):
    sf = pytest.importorskip("soundfile")
    pytest.importorskip("librosa")
    for cls, f in (("low", 300.0), ("high", 3000.0)):
        (tmp_path / cls).mkdir()
        for j, (sec, sr) in enumerate(((0.30, 16000), (0.25, 16000), (0.20, 8000))):
            sf.write(tmp_path / cls / f"{j}.wav", _tone(f * (1 + 0.05 * j), sec, sr), sr)
    return tmp_path


def test_audio_folder_gives_log_mel_series_per_clip(audio_folder):
    cfg = C.LogMelConfig()
    d = C.load(audio_folder)
    assert d.class_names == ["high", "low"] and d.n_channels == cfg.n_mels and len(d.train) == 6 and d.test is None
    expected_frames = [1 + int(sec * 16000) // cfg.hop_length for sec in (0.30, 0.25, 0.20)] * 2
    assert list(d.train.lengths) == expected_frames  # the 8 kHz clip is resampled to 16 kHz first
    peak_band = [int(np.argmax(s.mean(axis=1))) for s in d.train.series]
    high = [b for b, y in zip(peak_band, d.train.labels) if y == 0]
    low = [b for b, y in zip(peak_band, d.train.labels) if y == 1]
    assert min(high) > max(low) + 10  # 3 kHz tones peak in much higher mel bands than 300 Hz tones


def test_audio_train_test_subfolders(audio_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("split")
    shutil.copytree(audio_folder, root / "train")
    shutil.copytree(audio_folder, root / "test")
    d = C.load_audio_folder(root, C.LogMelConfig(n_mels=20, hop_length=320))
    assert len(d.train) == len(d.test) == 6 and d.n_channels == 20
    assert d.train.lengths[0] == 1 + int(0.30 * 16000) // 320


def test_damaged_audio_clip_is_a_clear_error_in_a_subprocess(audio_folder):
    (audio_folder / "low" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    code = ("import sys; from xlstmkit.data.classification import load\n"
            "try:\n    load(sys.argv[1])\nexcept ValueError as e:\n    print('VALUEERROR', e); sys.exit(3)\n")
    src = str(Path(C.__file__).parents[2])
    r = subprocess.run([sys.executable, "-c", code, str(audio_folder)], capture_output=True, text=True,
                       env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"}, timeout=120)
    assert r.returncode == 3, r.stderr
    assert "broken.wav: cannot read audio" in r.stdout


# ---------------------------------------------------------------------------------------------- extras


def test_require_names_the_install_command_for_a_missing_package():
    with pytest.raises(ImportError) as e:
        require("no_such_pkg_xyz.sub", "timeseries", "testing")
    msg = str(e.value)
    assert msg == "testing needs 'no_such_pkg_xyz', which is not installed: pip install 'xlstmkit[timeseries]'"


def test_require_reraises_errors_from_inside_an_installed_package(tmp_path, monkeypatch):
    (tmp_path / "brokenpkg_xyz").mkdir()
    (tmp_path / "brokenpkg_xyz" / "__init__.py").write_text("import missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="missing_dependency_xyz"):
        require("brokenpkg_xyz", "timeseries", "testing")
    assert require("json", "audio", "testing").dumps([1]) == "[1]"
    with pytest.raises(ValueError, match="unknown extra"):
        require("json", "nope", "testing")


# -- augmentation of training batches ---------------------------------------------------------------------------------

def _padded_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([9, 1, 5, 2])
    mask = torch.arange(9)[None, :] < lengths[:, None]
    x = torch.randn(4, 9, 3, generator=g, dtype=torch.float64) * mask.unsqueeze(-1)
    return x, mask, lengths


@pytest.mark.parametrize("kinds", [("slice",), ("scale",), ("jitter",), ("slice", "scale", "jitter")])
def test_augment_keeps_shape_and_pads_and_is_reproducible(kinds):
    x, mask, _ = _padded_batch()
    a = C.augment(x, mask, kinds, generator=torch.Generator().manual_seed(1))
    b = C.augment(x, mask, kinds, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert torch.all(a[~mask] == 0)  # pads stay 0
    assert not torch.equal(a[mask], x[mask])  # it does change the real steps


def test_slice_is_a_stretched_window_of_each_row():
    """Against a direct per-row formula: a window of r (L - 1) steps from `start`, sampled at L evenly spaced
    points by linear interpolation (np.interp); the start is recovered from the first output point."""
    x, mask, lengths = _padded_batch(3)
    r = 0.7
    out = C.augment(x, mask, ("slice",), slice_ratio=r, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    span = (lengths - 1).to(torch.float64)
    start = torch.rand(4, generator=g, dtype=torch.float64) * (span - r * span)
    for b in range(4):
        L = int(lengths[b])
        pos = np.linspace(float(start[b]), float(start[b]) + r * (L - 1), L) if L > 1 else np.zeros(1)
        for c in range(3):
            ref = np.interp(pos, np.arange(L), x[b, :L, c].numpy())
            np.testing.assert_allclose(out[b, :L, c].numpy(), ref, rtol=1e-12, atol=1e-12)


def test_slice_with_ratio_one_and_a_row_of_length_one_is_the_identity():
    x, mask, _ = _padded_batch(4)
    out = C.augment(x, mask, ("slice",), slice_ratio=1.0)
    assert torch.allclose(out, x, atol=1e-12)


def test_scale_multiplies_each_row_and_channel_by_one_factor():
    x, mask, _ = _padded_batch(6)
    out = C.augment(x, mask, ("scale",), generator=torch.Generator().manual_seed(2))
    ratio = out[0] / x[0]  # row 0 is all real
    assert torch.allclose(ratio, ratio[:1].expand_as(ratio))
    assert not torch.allclose(ratio[0], torch.ones(3, dtype=ratio.dtype))


def test_augment_refuses_unknown_kinds_and_ratios():
    x, mask, _ = _padded_batch()
    with pytest.raises(ValueError, match="unknown augmentation"):
        C.augment(x, mask, ("warp",))
    with pytest.raises(ValueError, match="slice_ratio"):
        C.augment(x, mask, ("slice",), slice_ratio=0.0)
    with pytest.raises(ValueError, match="right-padded"):
        C.augment(x, mask.flip(1), ("jitter",))

"""Offline image data (xlstmkit.data.images): digits, the Pathfinder generator, image folders, augmentation."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from xlstmkit.data import images as I


def test_digits_upsampled_and_split_stratified_and_seeded():
    a = I.load_digits(image_size=16, test_fraction=0.2, seed=3)
    b = I.load_digits(image_size=16, test_fraction=0.2, seed=3)
    c = I.load_digits(image_size=16, test_fraction=0.2, seed=4)
    assert a.train_x.shape[1:] == (1, 16, 16) and a.train_x.dtype == torch.uint8
    assert len(a.train_y) + len(a.test_y) == 1797
    assert torch.equal(a.test_x, b.test_x) and not torch.equal(a.test_y, c.test_y)
    per_class = torch.bincount(a.test_y, minlength=10).float() / torch.bincount(
        torch.cat([a.train_y, a.test_y]), minlength=10)
    assert ((per_class - 0.2).abs() < 0.02).all()  # every class split 80/20
    assert a.train_x.max() > 200 and a.classes == [str(d) for d in range(10)]
    with pytest.raises(ValueError, match="at least 8"):
        I.load_digits(image_size=4)


def test_pathfinder_is_seeded_balanced_and_binary_images():
    spec = I.PathfinderSpec(image_size=24, segments=5)
    x1, y1 = I.pathfinder_images(20, seed=5, spec=spec)
    x2, y2 = I.pathfinder_images(20, seed=5, spec=spec)
    x3, _ = I.pathfinder_images(20, seed=6, spec=spec)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert x1.shape == (20, 1, 24, 24) and int(y1.sum()) == 10
    assert set(x1.unique().tolist()) <= {0, 255}


def _dist(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def test_pathfinder_dots_sit_on_one_path_iff_positive_and_paths_keep_apart():
    spec = I.PathfinderSpec(image_size=32, segments=6, distractors=2)
    rng = np.random.default_rng(0)
    pos_d, neg_d = [], []
    for n in range(40):
        positive = n % 2 == 0
        img, geo = I.pathfinder_image(rng, spec, positive, geometry=True)
        paths, (d1, d2) = geo["paths"], geo["dots"]
        assert len(paths) == 2 + spec.distractors
        owner = [[k for k, p in enumerate(paths) if min(_dist(dot, p[0]), _dist(dot, p[-1])) < 1e-9]
                 for dot in (d1, d2)]
        assert len(owner[0]) == 1 and len(owner[1]) == 1
        assert (owner[0][0] == owner[1][0]) == positive  # both dots on one path exactly in positive images
        for a in range(len(paths)):  # no two paths touch (the occupancy grid is exact to about 0.4 px)
            for b in range(a + 1, len(paths)):
                pa, pb = I._samples(paths[a], 3.0)[0], I._samples(paths[b], 3.0)[0]
                assert np.linalg.norm(pa[:, None] - pb[None], axis=-1).min() > spec.min_separation - 0.75
        (pos_d if positive else neg_d).append(_dist(d1, d2))
        for dot in (d1, d2):  # the dots are drawn
            assert img[int(round(dot[0])), int(round(dot[1]))] == 1.0
    # the dot distance does not give the answer away: both classes have about the same distances
    assert abs(np.mean(pos_d) - np.mean(neg_d)) < 3.0


def test_pathfinder_augmentation_is_a_symmetry_of_the_square():
    x, _ = I.pathfinder_images(8, seed=1, spec=I.PathfinderSpec(image_size=16, segments=3))
    x = x.float()
    out = I.augment_batch(x, "pathfinder", torch.Generator().manual_seed(0))
    for a, b in zip(x, out):
        variants = [torch.rot90(a, r, (-2, -1)) for r in range(4)]
        variants += [v.flip(-1) for v in variants]
        assert any(torch.equal(b, v) for v in variants)
    again = I.augment_batch(x, "pathfinder", torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_digit_and_natural_augmentations_are_seeded_and_keep_shapes():
    x = torch.rand(6, 3, 16, 16)
    for kind in ("digits", "natural"):
        a = I.augment_batch(x, kind, torch.Generator().manual_seed(1))
        b = I.augment_batch(x, kind, torch.Generator().manual_seed(1))
        c = I.augment_batch(x, kind, torch.Generator().manual_seed(2))
        assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert I.augment_batch(x, "none", torch.Generator()) is x
    with pytest.raises(ValueError, match="unknown augmentation"):
        I.augment_batch(x, "mixup", torch.Generator())


def test_stratified_split_keeps_every_class_in_both_parts():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 2)
    tr, te = I.stratified_split(labels, 0.25, seed=0)
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(15))
    assert set(labels[te]) == {0, 1, 2} and set(labels[tr]) == {0, 1, 2}


def _write_folder(root, classes, per_class, size=(20, 30), mode="RGB", seed=0):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(seed)
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (*size, 3) if mode == "RGB" else size
            a = np.clip(rng.normal(60 * k, 20, shape), 0, 255).astype(np.uint8)
            Image.fromarray(a, mode=mode).save(root / c / f"{i}.png")


def test_image_folder_with_a_seeded_split(tmp_path):
    pytest.importorskip("torchvision")
    _write_folder(tmp_path / "d", ["cats", "dogs", "eels"], 5)
    ds = I.load_image_folder(tmp_path / "d", image_size=16, test_fraction=0.2, seed=0)
    assert ds.classes == ["cats", "dogs", "eels"] and ds.channels == 3
    assert ds.train_x.shape[1:] == (3, 16, 16) and len(ds.train_y) == 12 and len(ds.test_y) == 3
    assert sorted(ds.test_y.tolist()) == [0, 1, 2] and ds.augment == "natural"
    again = I.load_image_folder(tmp_path / "d", image_size=16, test_fraction=0.2, seed=0)
    assert torch.equal(ds.test_x, again.test_x)


def test_image_folder_with_train_and_test_folders_and_grey_images(tmp_path):
    pytest.importorskip("torchvision")
    _write_folder(tmp_path / "d" / "train", ["a", "b"], 4, mode="L")
    _write_folder(tmp_path / "d" / "test", ["a", "b"], 2, mode="L", seed=1)
    ds = I.load_image_folder(tmp_path / "d", image_size=8)
    assert ds.info["split"] == "folders" and ds.channels == 1
    assert len(ds.train_y) == 8 and len(ds.test_y) == 4 and ds.train_x.shape[1:] == (1, 8, 8)


def test_image_folder_errors_are_one_line(tmp_path):
    pytest.importorskip("torchvision")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        I.load_image_folder(tmp_path / "missing")
    _write_folder(tmp_path / "one", ["only"], 3)
    with pytest.raises(ValueError, match="at least 2"):
        I.load_image_folder(tmp_path / "one")
    _write_folder(tmp_path / "bad", ["a", "b"], 3)
    (tmp_path / "bad" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        I.load_image_folder(tmp_path / "bad", image_size=8)


def test_without_torchvision_a_folder_names_the_vision_extra(monkeypatch, tmp_path):
    real = importlib.import_module

    def fake(name, *a, **kw):
        if name.split(".")[0] == "torchvision":
            raise ModuleNotFoundError(f"No module named {name!r}", name="torchvision")
        return real(name, *a, **kw)

    monkeypatch.setattr("xlstmkit.extras.importlib.import_module", fake)
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "b").mkdir()
    with pytest.raises(ImportError, match=r"pip install 'xlstmkit\[vision\]'"):
        I.load_image_folder(tmp_path / "d")

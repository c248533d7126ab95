"""Image classification data that ships offline, and the user's own images (docs/vision.md).

Three sources, one shape: an `ImageSet` holds the training and test images as uint8 tensors (N, C, H, W) in memory,
their labels, the class names, and which augmentation suits them.

- `digits`: scikit-learn's handwritten digits (1,797 images of 8 x 8 pixels, 10 classes, bundled with
  scikit-learn), upsampled bilinearly to `image_size` (default 32, so patches of 4 give an 8 x 8 grid), with a
  seeded stratified split.
- `pathfinder`: a procedurally generated task after the Pathfinder task of the Long Range Arena (Linsley et al.
  2018; Tay et al. 2021): an image holds dashed curved paths and two dots; the label says whether one path joins
  the two dots. Deciding it means following a path across the image: local features do not suffice. Seeded: the
  same arguments give the same images on every machine (numpy's PCG64 generator).
- a folder: one sub-folder per class (torchvision's `ImageFolder`); with `train/` and `test/` sub-folders those are
  the split, otherwise a seeded stratified split. Images are resized (shorter side) and centre-cropped to the image
  size with torchvision's transforms when loaded. Needs the `vision` extra.

Augmentation (`augment_batch`) runs on whole batches in torch, from a generator the trainer seeds with (seed, step):
the batches of a step are then a function of the step alone, which is what makes a resumed run bitwise equal to an
uninterrupted one. What suits each source:
- digits: small random affine maps (rotation up to 10 degrees, scale 0.9-1.1, shifts up to 10 %): no flips (a
  flipped 2 is not a 2);
- pathfinder: a random symmetry of the square (the 8 flips and quarter turns): they keep the answer exactly and move
  no pixel off the grid;
- folders (natural images): random resized crops (35-100 % of the area, aspect 3/4-4/3) and horizontal flips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..extras import require

AUGMENTATIONS = ("digits", "pathfinder", "natural", "none")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class ImageSet:
    """Images in memory. x: uint8 (N, C, H, W); y: int64 (N,)."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[str]
    augment: str = "none"
    description: str = ""
    info: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and standard deviation of the training images (in [0, 1] units): the normalisation
        the model sees, computed once and saved with the run."""
        x = self.train_x.double() / 255.0
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
        return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): from each class round(test_fraction * n_class) test images (at least one, at most all
    but one), chosen with a seeded permutation; both index lists sorted."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = min(max(1, int(round(test_fraction * len(idx)))), len(idx) - 1) if len(idx) > 1 else 0
        test.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64))


# -- scikit-learn's digits -------------------------------------------------------------------------------------------

def load_digits(image_size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> ImageSet:
    """The 1,797 8 x 8 digits of scikit-learn, upsampled bilinearly to image_size x image_size (grey, 1 channel;
    the 17 grey levels 0..16 scaled to 0..255), split with `stratified_split`."""
    datasets = require("sklearn.datasets", "vision", "the digits data set")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 for the 8 x 8 digits, got {image_size}")
    bunch = datasets.load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    tr, te = stratified_split(bunch.target, test_fraction, seed)
    return ImageSet("digits", x[tr], y[tr], x[te], y[te], [str(d) for d in range(10)], augment="digits",
                    description=f"scikit-learn digits upsampled to {image_size}x{image_size} ({len(tr)} train / "
                                f"{len(te)} test)", info={"test_fraction": test_fraction, "split_seed": seed})


# -- Pathfinder ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PathfinderSpec:
    """How the Pathfinder images are drawn (lengths in pixels, angles in radians).

    Every image holds `2 + distractors` paths: a path is a chain of `segments` straight pieces of
    `segment_length`, each turned from the previous one by a uniform angle in [-max_turn, max_turn], drawn dashed
    (`dash` on, `gap` off) one pixel wide. Two dots of radius `dot_radius` mark path ends: in a positive image both
    ends of one path; in a negative image one end each of two different paths, chosen so that the distance between
    the dots is distributed as in positive images (within `distance_tolerance`), so the distance alone does not
    give the answer. Paths keep `min_separation` pixels from each other, so no two paths touch."""

    image_size: int = 32
    segments: int = 8
    segment_length: float = 3.0
    max_turn: float = 0.5
    distractors: int = 1
    dash: float = 2.0
    gap: float = 1.5
    dot_radius: float = 1.5
    min_separation: float = 2.5
    distance_tolerance: float = 2.0

    def __post_init__(self) -> None:
        if self.image_size < 12:
            raise ValueError(f"pathfinder image_size must be at least 12, got {self.image_size}")
        if self.segments < 1 or self.distractors < 0:
            raise ValueError("pathfinder segments must be >= 1 and distractors >= 0")
        for name in ("segment_length", "dash", "dot_radius"):
            if not getattr(self, name) > 0:
                raise ValueError(f"pathfinder {name} must be > 0")


def _paths(rng: np.random.Generator, spec: PathfinderSpec, batch: int = 64) -> np.ndarray:
    """Candidate paths inside the image (margin 2 px): corner points (K, segments + 1, 2), K <= batch. Each has a
    random start and heading, and each segment is turned by a uniform angle in [-max_turn, max_turn]; `batch` are
    drawn at once and those that leave the image dropped."""
    size, margin, n = spec.image_size, 2.0, spec.segments
    start = rng.uniform(margin, size - 1 - margin, size=(batch, 1, 2))
    turns = rng.uniform(-spec.max_turn, spec.max_turn, size=(batch, n))
    heading = rng.uniform(0, 2 * math.pi, size=(batch, 1)) + np.cumsum(turns, axis=1)
    steps = spec.segment_length * np.stack([np.cos(heading), np.sin(heading)], axis=2)  # (batch, n, 2)
    points = np.concatenate([start, start + np.cumsum(steps, axis=1)], axis=1)  # (batch, n + 1, 2)
    inside = ((points >= margin) & (points <= size - 1 - margin)).all(axis=(1, 2))
    return points[inside]


def _samples(points: np.ndarray, segment_length: float, step: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Points every ~`step` px along polylines of equal segments (..., n + 1, 2) and their arc length:
    (..., M, 2), (M,)."""
    k = max(1, int(math.ceil(segment_length / step)))
    t = np.arange(k) / k
    a, b = points[..., :-1, :], points[..., 1:, :]
    pts = a[..., :, None, :] + t[:, None] * (b - a)[..., :, None, :]  # (..., n, k, 2)
    n = points.shape[-2] - 1
    arc = ((np.arange(n)[:, None] + t[None, :]) * segment_length).reshape(-1)
    pts = np.concatenate([pts.reshape(*points.shape[:-2], n * k, 2), points[..., -1:, :]], axis=-2)
    return pts, np.append(arc, n * segment_length)


def _draw_disk(img: np.ndarray, centre: np.ndarray, radius: float) -> None:
    size = img.shape[0]
    rr, cc = np.mgrid[0:size, 0:size]
    img[(rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius ** 2] = 1.0


class _Occupancy:
    """The points within `radius` px of the paths placed so far, on a grid of half pixels: a new path may not touch
    them (a fast stand-in for all pairwise distances, exact to about 0.4 px)."""

    def __init__(self, size: int, radius: float, res: int = 2) -> None:
        self.res, self.n = res, size * res
        self.mask = np.zeros((self.n, self.n), dtype=bool)
        r = radius * res
        o = np.arange(-math.ceil(r), math.ceil(r) + 1)
        dy, dx = np.meshgrid(o, o, indexing="ij")
        keep = dy ** 2 + dx ** 2 <= r * r
        self.offsets = np.stack([dy[keep], dx[keep]], axis=1)

    def _cells(self, pts: np.ndarray) -> np.ndarray:
        return np.clip(np.round(pts * self.res).astype(np.int64), 0, self.n - 1)

    def hits(self, pts: np.ndarray) -> np.ndarray:
        """pts (..., M, 2) -> (...,) bool: whether any of the M points is occupied."""
        ij = self._cells(pts)
        return self.mask[ij[..., 0], ij[..., 1]].any(axis=-1)

    def add(self, pts: np.ndarray) -> None:
        ij = np.clip((self._cells(pts)[:, None, :] + self.offsets[None]).reshape(-1, 2), 0, self.n - 1)
        self.mask[ij[:, 0], ij[:, 1]] = True


def _place(rng: np.random.Generator, spec: PathfinderSpec, occupied: _Occupancy, accept=None,
           tries: int = 20) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]] | None:
    """A random path that keeps min_separation px from the paths already `occupied` (and passes
    `accept(paths) -> bool per path`), with its samples; it is added to `occupied`. None after `tries` batches of
    candidates without one."""
    for _ in range(tries):
        cands = _paths(rng, spec)
        if not len(cands):
            continue
        pts, arc = _samples(cands, spec.segment_length)
        ok = ~occupied.hits(pts)
        if accept is not None:
            ok &= accept(cands)
        hit = np.flatnonzero(ok)
        if len(hit):
            j = hit[0]
            occupied.add(pts[j])
            return cands[j], (pts[j], arc)
    return None


def pathfinder_image(rng: np.random.Generator, spec: PathfinderSpec, positive: bool, geometry: bool = False):
    """One image (size, size) float32 in [0, 1]: paths and two dots, joined by one path iff `positive` (with
    geometry=True also {"paths": corner points of each path, "dots": the two dot centres}).

    Paths are placed one after another, each redrawn until it keeps its distance from those placed before: path A
    (a dot at its start), then path B (in a negative image one of its ends gets the second dot, and it is redrawn
    until that dot's distance from the first matches A's end-to-end distance), then the distractors."""
    for _ in range(100):
        occupied = _Occupancy(spec.image_size, spec.min_separation)
        first = _place(rng, spec, occupied)
        if first is None:
            continue
        A, sa = first
        reference = float(np.linalg.norm(A[-1] - A[0]))  # the dot distance of a positive image with path A

        def matches(end: np.ndarray) -> np.ndarray:  # end (..., 2) -> (...,) bool
            return np.abs(np.linalg.norm(end - A[0], axis=-1) - reference) <= spec.distance_tolerance

        second = _place(rng, spec, occupied,
                        None if positive else (lambda p: matches(p[:, 0]) | matches(p[:, -1])))
        if second is None:
            continue
        B, sb = second
        placed = [(A, sa), (B, sb)]
        for _ in range(spec.distractors):
            more = _place(rng, spec, occupied)
            if more is None:
                break
            placed.append(more)
        if len(placed) < 2 + spec.distractors:
            continue
        if positive:
            dots = (A[0], A[-1])
        else:
            ends = [e for e in (B[0], B[-1]) if matches(e)]
            dots = (A[0], ends[int(rng.integers(len(ends)))])
        img = np.zeros((spec.image_size, spec.image_size), dtype=np.float32)
        period = spec.dash + spec.gap
        for _, (pts, arc) in placed:
            offset = rng.uniform(0, period)
            on = ((arc + offset) % period) < spec.dash
            ij = np.clip(np.round(pts[on]).astype(int), 0, spec.image_size - 1)
            img[ij[:, 0], ij[:, 1]] = 1.0
        for dot in dots:
            _draw_disk(img, dot, spec.dot_radius)
        if geometry:
            return img, {"paths": [p for p, _ in placed], "dots": dots}
        return img
    raise RuntimeError("pathfinder: could not place the paths in 100 tries: use a larger image_size, shorter paths "
                       "or fewer distractors")


def pathfinder_images(n: int, seed: int, spec: PathfinderSpec = PathfinderSpec()) -> tuple[Tensor, Tensor]:
    """n images (uint8 (n, 1, size, size)) and labels (int64 (n,), exactly half positive when n is even, in a
    seeded random order)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    images = np.stack([pathfinder_image(rng, spec, bool(lab)) for lab in labels]) if n else \
        np.zeros((0, spec.image_size, spec.image_size), np.float32)
    x = torch.from_numpy((images * 255).round().astype(np.uint8)).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def load_pathfinder(n_train: int = 4000, n_test: int = 1000, seed: int = 0,
                    spec: PathfinderSpec = PathfinderSpec()) -> ImageSet:
    """Training and test images from independent seeded streams (seed and seed + 1_000_003)."""
    if n_train < 2 or n_test < 2:
        raise ValueError(f"pathfinder needs at least 2 training and 2 test images, got {n_train} and {n_test}")
    tx, ty = pathfinder_images(n_train, seed, spec)
    ex, ey = pathfinder_images(n_test, seed + 1_000_003, spec)
    return ImageSet("pathfinder", tx, ty, ex, ey, ["disconnected", "connected"], augment="pathfinder",
                    description=f"pathfinder {spec.image_size}x{spec.image_size}, {spec.segments} segments, "
                                f"{spec.distractors} distractor(s) ({n_train} train / {n_test} test)",
                    info={"spec": spec.__dict__.copy(), "seed": seed})


# -- a folder of images ----------------------------------------------------------------------------------------------

def _class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_transform(image_size: int, channels: int):
    """The torchvision transform every image of a folder run goes through (training, evaluation and prediction
    alike): to `channels` colours, shorter side resized to image_size, centre crop, uint8 tensor (C, H, W)."""
    T = require("torchvision.transforms.v2", "vision", "reading image folders")
    mode = {1: "L", 3: "RGB"}[channels]
    return T.Compose([T.Lambda(lambda im: im.convert(mode)), T.PILToTensor(),
                      T.Resize(image_size, antialias=True), T.CenterCrop(image_size)])


def _read_folder(root: Path, classes: list[str], image_size: int, channels: int) -> tuple[Tensor, Tensor]:
    datasets = require("torchvision.datasets", "vision", "reading image folders")
    transform = image_transform(image_size, channels)

    def find_classes(directory):
        return classes, {c: i for i, c in enumerate(classes)}

    class _Folder(datasets.ImageFolder):  # our class list, so train/ and test/ agree on the label numbers
        def find_classes(self, directory):
            return find_classes(directory)

    try:
        folder = _Folder(str(root), transform=transform, allow_empty=True)
    except FileNotFoundError as exc:
        raise ValueError(f"--data {root}: {exc}") from None
    if len(folder) == 0:
        raise ValueError(f"--data {root}: no images found (expected one sub-folder per class with files ending in "
                         f"{', '.join(IMAGE_SUFFIXES)})")
    xs, ys = [], []
    for i in range(len(folder)):
        path = folder.samples[i][0]
        try:
            img, label = folder[i]
        except Exception as exc:  # PIL's UnidentifiedImageError, OSError on a truncated file, ...
            raise ValueError(f"cannot read image {path} ({type(exc).__name__}): remove or replace it") from None
        xs.append(img)
        ys.append(label)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


def folder_channels(root: Path) -> int:
    """3 unless every image of the folder (its first 50) is single-channel (grey): then 1."""
    Image = require("PIL.Image", "vision", "reading image folders")
    seen = 0
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            try:
                with Image.open(p) as im:
                    if im.mode not in ("L", "1", "I;16", "I"):
                        return 3
            except OSError:
                continue
            seen += 1
            if seen >= 50:
                break
    return 1 if seen else 3


def load_image_folder(root: str | Path, image_size: int = 64, test_fraction: float = 0.2, seed: int = 0,
                      channels: int | None = None) -> ImageSet:
    """A folder with one sub-folder per class, or with `train/` and `test/` sub-folders that each have one per
    class (then that split is used, else a seeded stratified split)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root}: no such folder (give digits, pathfinder or a folder with one "
                                f"sub-folder per class)")
    split = (root / "train").is_dir() and (root / "test").is_dir()
    base = root / "train" if split else root
    classes = _class_folders(base)
    if len(classes) < 2:
        raise ValueError(f"--data {base}: found {len(classes)} class sub-folder(s); a classifier needs at least 2 "
                         f"(one sub-folder per class)")
    if split:
        extra = sorted(set(_class_folders(root / "test")) - set(classes))
        if extra:
            raise ValueError(f"--data {root}: test/ has classes that train/ lacks: {extra[:5]}")
    channels = channels or folder_channels(base)
    if split:
        tx, ty = _read_folder(root / "train", classes, image_size, channels)
        ex, ey = _read_folder(root / "test", classes, image_size, channels)
        how = "train/ and test/ folders"
    else:
        x, y = _read_folder(root, classes, image_size, channels)
        tr, te = stratified_split(y.numpy(), test_fraction, seed)
        if len(te) == 0:
            raise ValueError(f"--data {root}: too few images for a test split (at least 2 per class)")
        tx, ty, ex, ey = x[tr], y[tr], x[te], y[te]
        how = f"a seeded split ({test_fraction:.0%} test)"
    return ImageSet(str(root), tx, ty, ex, ey, classes, augment="natural",
                    description=f"{root} ({len(classes)} classes, {len(tx)} train / {len(ex)} test, {how}, "
                                f"{image_size}x{image_size}, {channels} channel(s))",
                    info={"split": "folders" if split else "seeded", "test_fraction": test_fraction,
                          "split_seed": seed, "channels": channels})


# -- augmentation ----------------------------------------------------------------------------------------------------

def _affine(x: Tensor, theta: Tensor) -> Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _uniform(g: torch.Generator, n: int, low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64).float()


def augment_batch(x: Tensor, kind: str, g: torch.Generator) -> Tensor:
    """A random augmentation of each image of a float batch (B, C, H, W) (see the module docstring), drawn from
    `g` only (on the CPU), so the result depends on the generator's seed alone."""
    if kind == "none":
        return x
    B = x.shape[0]
    if kind == "pathfinder":  # one of the 8 symmetries of the square per image: exact, no resampling
        if x.shape[-1] != x.shape[-2]:
            raise ValueError("pathfinder augmentation needs square images")
        k = torch.randint(0, 4, (B,), generator=g)
        flip = torch.randint(0, 2, (B,), generator=g).bool()
        out = torch.empty_like(x)
        for r in range(4):
            for fl in (False, True):
                sel = ((k == r) & (flip == fl)).nonzero().flatten()
                if len(sel):
                    t = torch.rot90(x[sel], r, dims=(-2, -1))
                    out[sel] = t.flip(-1) if fl else t
        return out
    if kind == "digits":
        angle = _uniform(g, B, -10, 10) * math.pi / 180
        scale = _uniform(g, B, 0.9, 1.1)
        tx, ty = _uniform(g, B, -0.2, 0.2), _uniform(g, B, -0.2, 0.2)  # in [-1, 1] coordinates: 10 % of the side
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        return _affine(x, theta.to(x.dtype))
    if kind == "natural":  # random resized crop (area 35-100 %, aspect 3/4-4/3) and horizontal flip
        area = _uniform(g, B, 0.35, 1.0)
        log_r = _uniform(g, B, math.log(3 / 4), math.log(4 / 3))
        ratio = torch.exp(log_r)
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (_uniform(g, B, 0, 1) * 2 - 1) * (1 - w)
        cy = (_uniform(g, B, 0, 1) * 2 - 1) * (1 - h)
        flip = torch.where(torch.rand(B, generator=g) < 0.5, -1.0, 1.0)
        zero = torch.zeros(B)
        theta = torch.stack([torch.stack([w * flip, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
        return _affine(x, theta.to(x.dtype))
    raise ValueError(f"unknown augmentation {kind!r}; choose one of {AUGMENTATIONS}")


def normalise(x: Tensor, mean: list[float], std: list[float]) -> Tensor:
    """uint8 (B, C, H, W) -> float32 (x / 255 - mean) / std per channel."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s


__all__ = ["ImageSet", "PathfinderSpec", "load_digits", "load_pathfinder", "load_image_folder", "pathfinder_image",
           "pathfinder_images", "augment_batch", "normalise", "stratified_split", "image_transform", "AUGMENTATIONS"]

"""Time-series classification data: UCR/UEA sets aeon bundles, and the user's own .ts, .npz, .csv files and audio.

Everything lands in one shape. A :class:`SeriesSet` holds ``N`` series as a list of float32 arrays of shape
``(C, L_i)`` (channels first, as aeon and the UCR/UEA archives store them; lengths may differ) and integer labels
``0..K-1``. A :class:`ClassificationData` holds the train set, the test set (and a validation set once
:func:`train_val_split` has taken one from the training set), the class names (``class_names[label]``) and the channel
count. Models that take padded batches call :meth:`ClassificationData.to_padded`, which gives ``(B, S, C)`` float
tensors, right padded with zeros, with a ``(B, S)`` bool mask (True on real steps) and the lengths.

Normalisation is per channel, with statistics from the training split only (never the test set, never the
validation set once one is split off): ``mean_c`` and ``std_c`` over every real time step of every training series,
``x' = (x - mean_c) / std_c`` (``std_c`` below 1e-8, a constant channel, is replaced by 1). Padding stays 0 after
normalisation, i.e. at the channel mean, and the mask says it is not data.

Sources (:func:`load` picks by the argument):

- a UCR/UEA name aeon bundles (:func:`bundled_names`: ArrowHead, BasicMotions, GunPoint, ItalyPowerDemand,
  JapaneseVowels, OSULeaf, ACSF1, PickupGestureWiimoteZ, ...): :func:`load_classification` reads the copy inside the
  installed aeon package with aeon's .ts reader and never touches the network;
- a ``.ts`` file (aeon's reader; the archive's own format, uni- or multivariate, variable length);
- a ``.npz`` file (:func:`load_npz` documents the keys);
- a ``.csv``/``.tsv`` file (:func:`load_csv`: the UCR archive's row layout, or a long layout for multivariate data);
- a folder of audio clips, one sub-folder per class (:func:`load_audio_folder`: log-mel features).

A file source gives a training set; the test set comes from a second file (``test=``) or, when the file carries none,
from :func:`train_test_split` (stratified, seeded).
"""

from __future__ import annotations

import csv
import io
import math
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..extras import require

_STD_FLOOR = 1e-8


# --------------------------------------------------------------------------------------------------------------------
# containers


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and standard deviation (float64, shape (C,)), computed on a training split."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, series: Sequence[np.ndarray]) -> "ChannelStats":
        """Statistics over every time step of every series: the mean and population std of each channel."""
        if len(series) == 0:
            raise ValueError("cannot compute normalisation statistics of an empty training set")
        cat = np.concatenate([np.asarray(s, dtype=np.float64) for s in series], axis=1)  # (C, sum L_i)
        mean = cat.mean(axis=1)
        std = cat.std(axis=1)
        std = np.where(std < _STD_FLOOR, 1.0, std)
        return cls(mean=mean, std=std)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise one series of shape (C, L)."""
        return ((x - self.mean[:, None]) / self.std[:, None]).astype(np.float32)


@dataclass
class SeriesSet:
    """N series, each a float32 array (C, L_i), with integer labels (N,) in 0..K-1."""

    series: list[np.ndarray]
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.series) != len(self.labels):
            raise ValueError(f"{len(self.series)} series but {len(self.labels)} labels; give one label per series")
        channels = {s.shape[0] for s in self.series}
        if len(channels) > 1:
            raise ValueError(f"series have different channel counts {sorted(channels)}; every series needs the same C")

    def __len__(self) -> int:
        return len(self.series)

    @property
    def n_channels(self) -> int:
        return self.series[0].shape[0] if self.series else 0

    @property
    def lengths(self) -> np.ndarray:
        return np.array([s.shape[1] for s in self.series], dtype=np.int64)

    @property
    def equal_length(self) -> bool:
        return len(set(self.lengths.tolist())) <= 1

    def stacked(self) -> np.ndarray:
        """The series as one float32 array (N, C, L); only for equal lengths (else use :func:`pad_series`)."""
        if not self.equal_length:
            raise ValueError("series have different lengths; use to_padded() / pad_series() for a padded array")
        return np.stack(self.series) if self.series else np.zeros((0, 0, 0), np.float32)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "SeriesSet":
        idx = np.asarray(indices, dtype=np.int64)
        return SeriesSet([self.series[i] for i in idx], self.labels[idx])


@dataclass
class PaddedSeries:
    """A padded batch: ``x`` (B, S, C) float32, ``mask`` (B, S) bool (True on real steps, right padding),
    ``lengths`` (B,) int64, ``labels`` (B,) int64."""

    x: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def batches(
        self, batch_size: int, rng: np.random.Generator | None = None
    ) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]:
        """Mini-batches ``((x, mask), labels)`` for :func:`xlstmkit.train.supervised.fit`; shuffled when ``rng`` is given.

        Each batch is cut to its own longest series, so a batch of short series costs no padded steps.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        order = rng.permutation(n) if rng is not None else np.arange(n)
        for start in range(0, n, batch_size):
            idx = torch.as_tensor(order[start : start + batch_size])
            s = int(self.lengths[idx].max())
            yield (self.x[idx, :s], self.mask[idx, :s]), self.labels[idx]


AUGMENTATIONS = ("scale", "jitter", "slice")


def augment(x: torch.Tensor, mask: torch.Tensor, kinds: Sequence[str], *, scale_sd: float = 0.1,
            jitter_sd: float = 0.05, slice_ratio: float = 0.9,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """A randomly transformed copy of a padded training batch ``x`` (B, S, C) with mask (B, S) (right padding), for
    small training sets on which a network memorises its few series (ArrowHead: 30 of them after the validation
    split, training loss 0 and validation loss rising from the third epoch). ``kinds``, applied in this order:

    - ``slice`` (window slicing, Le Guennec et al. 2016): each row's real part ``x[0:L]`` is replaced by a random
      window of ``slice_ratio * (L - 1)`` steps stretched back to ``L`` steps by linear interpolation; a row
      keeps its length and its class, and sees its shape slightly shifted and stretched;
    - ``scale``: each row and channel multiplied by ``exp(scale_sd * z)``, z ~ N(0, 1) (amplitude changes);
    - ``jitter``: N(0, jitter_sd^2) noise added to every real step (the data are in units of the training set's
      per-channel standard deviation, so 0.05 is 5% of it).

    Pads stay 0 and the mask is unchanged. The draws come from ``generator`` (torch's global one when None, which
    the trainer seeds)."""
    bad = [k for k in kinds if k not in AUGMENTATIONS]
    if bad:
        raise ValueError(f"unknown augmentation(s) {bad}; choose from {', '.join(AUGMENTATIONS)}")
    if not 0.0 < slice_ratio <= 1.0:
        raise ValueError(f"slice_ratio must be in (0, 1], got {slice_ratio}")
    from ..nn.direction import is_right_padded

    B, S, C = x.shape
    if not is_right_padded(mask):
        raise ValueError("augment takes right-padded batches (each row's real steps first), as pad_series makes them")
    m = mask.unsqueeze(-1).to(x.dtype)
    out = x
    if "slice" in kinds:
        L = mask.sum(1).to(x.dtype)  # (B,)
        span = (L - 1).clamp(min=0)
        width = slice_ratio * span
        start = torch.rand(B, generator=generator, dtype=x.dtype) * (span - width)
        j = torch.arange(S, dtype=x.dtype)
        step = torch.where(span > 0, width / span.clamp(min=1), torch.zeros_like(span))
        pos = start[:, None] + j[None, :].minimum(span[:, None]) * step[:, None]  # (B, S), inside [0, L - 1]
        lo = pos.floor().long().clamp(0, S - 1)
        hi = (lo + 1).minimum((L.long() - 1).clamp(min=0)[:, None])
        frac = (pos - lo.to(x.dtype)).unsqueeze(-1)
        at_lo = torch.gather(out, 1, lo.unsqueeze(-1).expand(B, S, C))
        at_hi = torch.gather(out, 1, hi.unsqueeze(-1).expand(B, S, C))
        out = (at_lo * (1 - frac) + at_hi * frac) * m
    if "scale" in kinds:
        out = out * torch.exp(scale_sd * torch.randn(B, 1, C, generator=generator, dtype=x.dtype))
    if "jitter" in kinds:
        out = out + jitter_sd * torch.randn(B, S, C, generator=generator, dtype=x.dtype) * m
    return out


@dataclass
class ClassificationData:
    """A classification problem: train/test (and optional validation) series, class names, channel count.

    ``stats`` (per-channel mean/std) are computed from ``train`` only. ``train`` is None only when
    :func:`load_classification` was asked for ``split="test"`` alone.
    """

    name: str
    train: SeriesSet | None
    test: SeriesSet | None
    class_names: list[str]
    n_channels: int
    val: SeriesSet | None = None
    source: str = ""
    _stats: ChannelStats | None = field(default=None, repr=False, compare=False)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def stats(self) -> ChannelStats:
        if self._stats is None:
            if self.train is None or len(self.train) == 0:
                raise ValueError(f"{self.name}: no training split loaded, so no normalisation statistics; load it")
            self._stats = ChannelStats.of(self.train.series)
        return self._stats

    def split(self, name: str) -> SeriesSet:
        part = {"train": self.train, "val": self.val, "test": self.test}.get(name, ...)
        if part is ...:
            raise ValueError(f"unknown split {name!r}; choose 'train', 'val' or 'test'")
        if part is None:
            raise ValueError(f"{self.name} has no {name!r} split" + (
                "; take one with train_val_split()" if name == "val" else ""))
        return part

    def to_padded(self, split: str = "train", *, normalize: bool = True, length: int | None = None) -> PaddedSeries:
        """One split as a padded batch (right padding to the longest series, or to ``length``)."""
        part = self.split(split)
        return pad_series(part.series, part.labels, stats=self.stats if normalize else None, length=length)

    def summary(self) -> dict:
        """Sizes for logs and reports (JSON-safe)."""
        out = {"name": self.name, "n_classes": self.n_classes, "n_channels": self.n_channels}
        for k in ("train", "val", "test"):
            part = getattr(self, k)
            if part is not None:
                ln = part.lengths
                out[k] = {"n": len(part), "min_length": int(ln.min()) if len(ln) else 0,
                          "max_length": int(ln.max()) if len(ln) else 0}
        return out


def pad_series(
    series: Sequence[np.ndarray],
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    stats: ChannelStats | None = None,
    length: int | None = None,
) -> PaddedSeries:
    """Right-pad series (C, L_i) into ``x`` (B, S, C) with a (B, S) mask; normalise with ``stats`` if given."""
    if len(series) == 0:
        raise ValueError("no series to pad")
    lengths = np.array([s.shape[1] for s in series], dtype=np.int64)
    s_max = int(lengths.max())
    if length is not None:
        if length < s_max:
            raise ValueError(f"a series has length {s_max} > length={length}; raise length or crop the series first")
        s_max = length
    c = series[0].shape[0]
    x = np.zeros((len(series), s_max, c), dtype=np.float32)
    for i, s in enumerate(series):
        v = stats.apply(s) if stats is not None else np.asarray(s, dtype=np.float32)
        x[i, : s.shape[1]] = v.T
    mask = np.arange(s_max)[None, :] < lengths[:, None]
    lab = np.full(len(series), -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    return PaddedSeries(torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(lengths), torch.from_numpy(lab))


# --------------------------------------------------------------------------------------------------------------------
# labels and series checks


def _natural_order(names: Sequence[str]) -> list[str]:
    """Class names in a stable order: numeric order when every name is a number ('2' before '10'), else text order."""
    uniq = list(dict.fromkeys(str(n) for n in names))
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return sorted(uniq)


def _encode(raw: Sequence, class_names: list[str], where: str) -> np.ndarray:
    index = {n: i for i, n in enumerate(class_names)}
    out = np.empty(len(raw), dtype=np.int64)
    for i, r in enumerate(raw):
        key = _label_text(r)
        if key not in index:
            raise ValueError(f"{where}: label {key!r} of series {i} is not among the training classes {class_names}")
        out[i] = index[key]
    return out


def _label_text(v) -> str:
    """A label as text; 1.0 and 1 both read '1' so numeric labels from different readers agree."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (bytes, np.bytes_)):
        v = v.decode()
    text = str(v).strip()
    if any(c in text for c in ".eE") and _is_number(text) and float(text).is_integer():
        return str(int(float(text)))  # '1.0000000e+00' (the old UCR text files) reads '1'
    return text


def _clean(x, where: str, i: int) -> np.ndarray:
    """One series as float32 (C, L): trailing all-NaN steps are padding and go; a NaN inside is an error."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{where}: series {i} has shape {a.shape}; expected (channels, length) or (length,)")
    observed = ~np.isnan(a).all(axis=0)
    n = int(np.nonzero(observed)[0].max()) + 1 if observed.any() else 0
    a = a[:, :n]
    if n == 0:
        raise ValueError(f"{where}: series {i} is empty (no values); drop it")
    if not np.isfinite(a).all():
        raise ValueError(f"{where}: series {i} has missing or infinite values inside; fill or drop them first")
    return a.astype(np.float32)


def _series_set(xs, raw_labels, class_names: list[str], where: str) -> SeriesSet:
    series = [_clean(x, where, i) for i, x in enumerate(xs)]
    return SeriesSet(series, _encode(raw_labels, class_names, where))


def _assemble(name, source, train_xy, test_xy, class_names=None) -> ClassificationData:
    """Build ClassificationData from raw (X, y) pairs; classes are those of the training labels."""
    if class_names is None:
        base = train_xy if train_xy is not None else test_xy
        class_names = _natural_order([_label_text(v) for v in base[1]])
    train = _series_set(*train_xy, class_names, f"{name} (train)") if train_xy is not None else None
    test = _series_set(*test_xy, class_names, f"{name} (test)") if test_xy is not None else None
    parts = [p for p in (train, test) if p is not None and len(p)]
    channels = {p.n_channels for p in parts}
    if len(channels) > 1:
        raise ValueError(f"{name}: train and test have different channel counts {sorted(channels)}")
    return ClassificationData(name, train, test, list(class_names), channels.pop() if channels else 0, source=source)


# --------------------------------------------------------------------------------------------------------------------
# UCR/UEA data bundled with aeon


def _aeon_data_dir() -> Path:
    datasets = require("aeon.datasets", "timeseries", "loading UCR/UEA classification data")
    return Path(datasets.__file__).parent / "data"


def bundled_names() -> list[str]:
    """Classification sets inside the installed aeon (a folder with ``<name>_TRAIN.ts`` and ``<name>_TEST.ts``)."""
    root = _aeon_data_dir()
    return sorted(
        d.name for d in root.iterdir()
        if d.is_dir() and (d / f"{d.name}_TEST.ts").is_file() and _has_class_labels(d / f"{d.name}_TRAIN.ts")
    )


def _has_class_labels(path: Path) -> bool:
    """True when a .ts header declares ``@classLabel true`` (regression sets declare ``@targetLabel``)."""
    if not path.is_file():
        return False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            low = line.strip().lower()
            if low.startswith("@classlabel"):
                return low.split()[1:2] == ["true"]
            if low.startswith("@data"):
                return False
    return False


def _read_ts(path: Path):
    datasets = require("aeon.datasets", "timeseries", "reading .ts files")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X, y, meta = datasets.load_from_ts_file(str(path), return_meta_data=True)
    if not meta.get("classlabel", True):
        raise ValueError(f"{path} holds a regression target (@targetlabel), not class labels")
    return list(X), np.asarray(y), meta


def load_classification(name: str, split: str | None = None, extract_path: str | os.PathLike | None = None
                        ) -> ClassificationData:
    """A UCR/UEA set by name, from disk only: aeon's bundled copy, or ``<extract_path>/<name>/<name>_TRAIN.ts``.

    ``split``: None for train and test, ``"train"`` or ``"test"`` for one of them (the other is None). Class names
    come from the file's ``@classLabel`` header, in its order. Nothing is downloaded: for a set aeon does not bundle,
    download the archive once (e.g. ``aeon.datasets.load_classification(name, extract_path=DIR)``) and pass that DIR.
    """
    if split is not None and split not in ("train", "test"):
        raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
    if extract_path is None:
        folder = _aeon_data_dir() / name
        if not (folder / f"{name}_TRAIN.ts").is_file():
            raise ValueError(f"{name!r} is not bundled with aeon (bundled: {', '.join(bundled_names())}); "
                             "pass extract_path= to a folder holding the archive")
    else:
        folder = Path(extract_path) / name
        if not (folder / f"{name}_TRAIN.ts").is_file():
            raise ValueError(f"{folder / (name + '_TRAIN.ts')} not found; download the set there first")
    train_xy = test_xy = None
    class_names = None
    if split in (None, "train"):
        X, y, meta = _read_ts(folder / f"{name}_TRAIN.ts")
        train_xy, class_names = (X, y), meta.get("class_values") or None
    if split in (None, "test"):
        X, y, meta = _read_ts(folder / f"{name}_TEST.ts")
        test_xy, class_names = (X, y), class_names or meta.get("class_values") or None
    if class_names is not None:
        class_names = [_label_text(c) for c in class_names]
    return _assemble(name, str(folder), train_xy, test_xy, class_names)


# --------------------------------------------------------------------------------------------------------------------
# the user's files


def load_ts(path: str | os.PathLike, test: str | os.PathLike | None = None) -> ClassificationData:
    """A ``.ts`` file (the UCR/UEA archive format, read by aeon), with an optional test file."""
    path = Path(path)
    X, y, meta = _read_ts(path)
    class_names = [_label_text(c) for c in meta.get("class_values") or []] or None
    test_xy = None
    if test is not None:
        Xt, yt, _ = _read_ts(Path(test))
        test_xy = (Xt, yt)
    return _assemble(path.stem.removesuffix("_TRAIN"), str(path), (X, y), test_xy, class_names)


def _npz_series(X, lengths, where: str) -> list[np.ndarray]:
    X = np.asarray(X)
    if X.dtype == object:
        return [np.asarray(x, dtype=np.float64) for x in X]
    if X.ndim == 2:
        X = X[:, None, :]
    if X.ndim != 3:
        raise ValueError(f"{where}: X has shape {X.shape}; expected (N, C, L) or (N, L)")
    if lengths is None:
        return list(X.astype(np.float64))
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.shape != (X.shape[0],) or (lengths < 1).any() or (lengths > X.shape[2]).any():
        raise ValueError(f"{where}: lengths must be (N,) integers in 1..{X.shape[2]}")
    return [X[i, :, : lengths[i]].astype(np.float64) for i in range(X.shape[0])]


def load_npz(path: str | os.PathLike, *, allow_pickle: bool = False) -> ClassificationData:
    """A ``.npz`` archive (``numpy.savez``) with one of two key layouts.

    - ``X_train, y_train`` and optionally ``X_test, y_test`` (each X optionally with ``lengths_train`` /
      ``lengths_test``);
    - ``X, y`` and optionally ``split`` (N,) of strings ``"train"``/``"test"`` (or ``is_test`` (N,) bool), and
      ``lengths``.

    ``X`` is (N, C, L) (or (N, L) for one channel) float. Variable lengths: right-pad X and give ``lengths`` (N,), or
    pad with NaN (trailing all-NaN steps are dropped). Labels ``y`` are integers or strings. An object array of
    (C, L_i) arrays is read only with ``allow_pickle=True``, because loading object arrays unpickles, which can run
    code from an untrusted file.
    """
    path = Path(path)
    where = str(path)
    try:
        z = np.load(path, allow_pickle=allow_pickle)
    except (ValueError, OSError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        raise ValueError(f"{where}: not a readable .npz archive ({err})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{where}: a single .npy array, not a .npz archive; save with numpy.savez(path, X=..., y=...)")
    with z:
        keys = set(z.files)
        try:
            if {"X_train", "y_train"} <= keys:
                train_xy = (_npz_series(z["X_train"], z.get("lengths_train"), where), z["y_train"])
                test_xy = None
                if {"X_test", "y_test"} <= keys:
                    test_xy = (_npz_series(z["X_test"], z.get("lengths_test"), where), z["y_test"])
            elif {"X", "y"} <= keys:
                xs = _npz_series(z["X"], z.get("lengths"), where)
                y = np.asarray(z["y"])
                if "split" in keys:
                    sp = np.asarray([_label_text(s).lower() for s in z["split"]])
                    bad = set(sp.tolist()) - {"train", "test"}
                    if bad:
                        raise ValueError(f"{where}: split values must be 'train' or 'test', found {sorted(bad)}")
                    is_test = sp == "test"
                elif "is_test" in keys:
                    is_test = np.asarray(z["is_test"], dtype=bool)
                else:
                    is_test = np.zeros(len(xs), dtype=bool)
                if len(is_test) != len(xs) or len(y) != len(xs):
                    raise ValueError(f"{where}: X, y and split must have the same length N")
                tr, te = np.nonzero(~is_test)[0], np.nonzero(is_test)[0]
                train_xy = ([xs[i] for i in tr], y[tr])
                test_xy = ([xs[i] for i in te], y[te]) if len(te) else None
            else:
                raise ValueError(f"{where}: expected keys X_train/y_train (and X_test/y_test) or X/y; found "
                                 f"{sorted(keys)}")
        except ValueError as err:
            if "allow_pickle" in str(err):
                raise ValueError(f"{where}: X is an object array, which needs pickle; store X padded with a "
                                 "`lengths` array, or pass allow_pickle=True for a file you trust") from None
            raise
    return _assemble(path.stem, where, train_xy, test_xy)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def load_csv(path: str | os.PathLike, test: str | os.PathLike | None = None) -> ClassificationData:
    """A ``.csv``/``.tsv``/``.txt`` file in one of two layouts (the delimiter, comma, tab or spaces, is detected).

    **Row layout** (the UCR archive's own ``.tsv`` layout, and its older space-separated ``.txt`` files; no header):
    one series per row, the class label in the first column, the values after it; rows may end early (empty or NaN
    cells) for variable length; one channel::

        1,-0.64,-0.64,-0.65,...
        2,-0.78,-0.78,-0.79,...

    **Long layout** (for several channels; a header row is required): one row per time step, columns ``series_id``,
    ``label``, optionally ``time`` (rows are ordered by it inside each series; else file order), and every other
    column a channel::

        series_id,label,time,acc_x,acc_y,acc_z
        s1,walking,0,0.12,0.30,9.81
        s1,walking,1,0.15,0.28,9.79

    The long layout is chosen when the first row holds the ``series_id`` and ``label`` columns. A test file in the
    same layout may be given as ``test``.
    """
    path = Path(path)
    train_xy = _read_class_csv(path)
    test_xy = _read_class_csv(Path(test)) if test is not None else None
    return _assemble(path.stem.removesuffix("_TRAIN"), str(path), train_xy, test_xy)


def _read_class_csv(path: Path):
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise ValueError(f"{path} is empty")
    first = text.splitlines()[0]
    if "\t" in first and (path.suffix == ".tsv" or "," not in first):
        delim = "\t"
    elif "," in first:
        delim = ","
    else:
        delim = None  # whitespace, as in the old UCR .txt files
    header = [h.strip().lower() for h in (first.split(delim) if delim else first.split())]
    if "series_id" in header and "label" in header:
        if delim is None:
            raise ValueError(f"{path}: the long layout needs comma- or tab-separated columns")
        return _read_long_csv(path, text, delim)
    if delim is None:
        rows = [line.split() for line in text.splitlines()]
    else:
        rows = list(csv.reader(io.StringIO(text), delimiter=delim))
    xs, ys = [], []
    start = 0
    if rows and len(rows[0]) > 1 and not _is_number(rows[0][1].strip() or "nan"):
        start = 1  # a header row (the values column is not a number)
    for r, row in enumerate(rows[start:], start=start + 1):
        if not row or all(not c.strip() for c in row):
            continue
        cells = [c.strip() for c in row[1:]]
        while cells and cells[-1] in ("", "nan", "NaN", "NA"):
            cells.pop()
        try:
            vals = [float(c) if c else math.nan for c in cells]
        except ValueError:
            bad = next(c for c in cells if c and not _is_number(c))
            raise ValueError(f"{path}, line {r}: value {bad!r} is not a number (row layout: label, then values)") from None
        if not vals:
            raise ValueError(f"{path}, line {r}: a label with no values")
        xs.append(np.asarray(vals)[None, :])
        ys.append(row[0].strip())
    if not xs:
        raise ValueError(f"{path} has no series")
    return xs, np.asarray(ys)


def _read_long_csv(path: Path, text: str, delim: str):
    pd = require("pandas", "timeseries", "reading a long-layout classification CSV")
    df = pd.read_csv(io.StringIO(text), sep=delim)
    df.columns = [str(c).strip() for c in df.columns]
    lower = {c.lower(): c for c in df.columns}
    sid, lab = lower["series_id"], lower["label"]
    tcol = lower.get("time")
    channels = [c for c in df.columns if c not in (sid, lab, tcol)]
    if not channels:
        raise ValueError(f"{path}: no channel columns besides series_id/label/time")
    for c in channels:
        if not pd.api.types.is_numeric_dtype(df[c]):
            bad = pd.to_numeric(df[c], errors="coerce").isna() & df[c].notna()
            raise ValueError(f"{path}: channel {c!r} has a non-numeric value {df[c][bad].iloc[0]!r}")
    xs, ys = [], []
    for key, g in df.groupby(sid, sort=False):
        if tcol is not None:
            if g[tcol].duplicated().any():
                raise ValueError(f"{path}: series {key!r} repeats a time value; each time once per series")
            g = g.sort_values(tcol, kind="stable")
        labels = g[lab].astype(str).unique()
        if len(labels) != 1:
            raise ValueError(f"{path}: series {key!r} has several labels {list(labels)}; one label per series")
        xs.append(g[channels].to_numpy(dtype=np.float64).T)
        ys.append(labels[0])
    return xs, np.asarray(ys)


# --------------------------------------------------------------------------------------------------------------------
# audio


@dataclass(frozen=True)
class LogMelConfig:
    """Log-mel features for audio clips (the usual speech front end).

    Clips are mixed to mono and resampled to ``sample_rate`` (16 kHz); frames of ``n_fft`` = 400 samples (25 ms,
    Hann window) every ``hop_length`` = 160 samples (10 ms), centred (librosa pads half a frame at each end), power
    spectrum to ``n_mels`` = 40 mel bands between ``fmin`` and ``fmax`` (None: Nyquist), then decibels
    ``10 log10(max(S, 1e-10))``. A clip of T seconds becomes ``1 + floor(T * sample_rate / hop_length)`` frames, so
    a series (n_mels, frames): channels are mel bands.
    """

    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 40
    fmin: float = 0.0
    fmax: float | None = None

    def features(self, audio: np.ndarray, sr: int) -> np.ndarray:
        librosa = require("librosa", "audio", "computing log-mel features")
        y = np.asarray(audio, dtype=np.float32)
        if y.ndim == 2:  # soundfile gives (frames, channels)
            y = y.mean(axis=1)
        if sr != self.sample_rate:
            y = librosa.resample(y, orig_sr=sr, target_sr=self.sample_rate)
        mel = librosa.feature.melspectrogram(y=y, sr=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length,
                                             n_mels=self.n_mels, fmin=self.fmin, fmax=self.fmax, power=2.0)
        return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None).astype(np.float32)


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")


def _read_audio_classes(root: Path, cfg: LogMelConfig):
    sf = require("soundfile", "audio", "reading audio clips")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no class sub-folders; put each class's clips in <folder>/<class>/*.wav")
    xs, ys = [], []
    for cls in classes:
        clips = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
        for p in clips:
            try:
                audio, sr = sf.read(str(p), always_2d=False)
            except Exception as err:  # soundfile raises its own LibsndfileError on damaged files
                raise ValueError(f"{p}: cannot read audio ({err})") from None
            if audio.size == 0:
                raise ValueError(f"{p}: the clip has no samples")
            xs.append(cfg.features(audio, sr))
            ys.append(cls)
    if not xs:
        raise ValueError(f"{root}: no audio clips ({', '.join(AUDIO_SUFFIXES)}) in the class sub-folders")
    return xs, np.asarray(ys), classes


def load_audio_folder(path: str | os.PathLike, features: LogMelConfig = LogMelConfig()) -> ClassificationData:
    """Audio clips in ``<path>/<class>/*.wav`` (one sub-folder per class; name = class) as log-mel series.

    With ``<path>/train/<class>/...`` and ``<path>/test/<class>/...`` the two become the train and test sets;
    otherwise every clip is training data (take a test set with :func:`train_test_split`). WAV, FLAC, OGG and AIFF
    are read with soundfile; features are described by :class:`LogMelConfig`.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    if (root / "train").is_dir():
        Xtr, ytr, classes = _read_audio_classes(root / "train", features)
        test_xy = None
        if (root / "test").is_dir():
            Xte, yte, _ = _read_audio_classes(root / "test", features)
            test_xy = (Xte, yte)
        return _assemble(root.name, str(root), (Xtr, ytr), test_xy, classes)
    X, y, classes = _read_audio_classes(root, features)
    return _assemble(root.name, str(root), (X, y), None, classes)


# --------------------------------------------------------------------------------------------------------------------
# one entry point and splits


def load(source: str | os.PathLike, *, test: str | os.PathLike | None = None,
         extract_path: str | os.PathLike | None = None, audio: LogMelConfig = LogMelConfig(),
         allow_pickle: bool = False) -> ClassificationData:
    """A bundled set by name, or a file/folder by path (.ts, .npz, .csv/.tsv/.txt, audio folder)."""
    p = Path(source)
    if p.is_dir():
        return load_audio_folder(p, audio)
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".ts":
            return load_ts(p, test)
        if suffix == ".npz":
            if test is not None:
                raise ValueError("a .npz file carries its own split (X_test/y_test or split); drop test=")
            return load_npz(p, allow_pickle=allow_pickle)
        if suffix in (".csv", ".tsv", ".txt"):
            return load_csv(p, test)
        raise ValueError(f"{p}: unsupported file type {suffix!r}; use .ts, .npz, .csv/.tsv or a folder of audio")
    if os.sep in str(source) or p.suffix:
        raise ValueError(f"{source} does not exist")
    return load_classification(str(source), extract_path=extract_path)


def _stratified(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): per class ``round(fraction * n_c)`` held out, at least 1 when the class has 2 or more
    members, and always at least 1 kept; classes shuffled with one seeded generator."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == c)[0])
        n = len(idx)
        k = min(max(int(round(fraction * n)), 1 if n >= 2 else 0), n - 1)
        held.append(idx[:k])
        keep.append(idx[k:])
    keep, held = np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))
    if len(held) == 0:
        raise ValueError("the split would be empty: every class has a single series; use more data or no split")
    return keep, held


def train_val_split(data: ClassificationData, fraction: float = 0.2, seed: int = 0) -> ClassificationData:
    """Take a stratified, seeded validation set from the training set (the test set is untouched).

    The normalisation statistics are recomputed on the remaining training series, so neither the validation nor the
    test series inform them.
    """
    if data.train is None:
        raise ValueError(f"{data.name}: no training split to take a validation set from")
    keep, held = _stratified(data.train.labels, fraction, seed)
    return replace(data, train=data.train.subset(keep), val=data.train.subset(held), _stats=None)


def train_test_split(data: ClassificationData, fraction: float = 0.25, seed: int = 0) -> ClassificationData:
    """For data without a test set (a single user file): a stratified, seeded test set from the training set."""
    if data.test is not None:
        raise ValueError(f"{data.name} already has a test set; use train_val_split for a validation set")
    if data.train is None:
        raise ValueError(f"{data.name}: no training split to split")
    keep, held = _stratified(data.train.labels, fraction, seed)
    return replace(data, train=data.train.subset(keep), test=data.train.subset(held), _stats=None)

"""Classification baselines behind one interface: MiniRocket (aeon), a Transformer encoder, bidirectional LSTM/GRU.

Every baseline has ``name``, ``fit(data) -> dict`` and ``predict(data, split="test") -> labels (N,)``, and reads
the same :class:`~xlstmkit.data.classification.ClassificationData` (normalised with the training split's per-channel
statistics), so an application command can run them on identical splits.

- :class:`MiniRocketBaseline`: aeon's ``MiniRocketClassifier`` (MiniRocket features + ridge regression with
  cross-validated regularisation). MiniRocket needs equal lengths, so series are right-padded with zeros (the channel
  mean after normalisation) to the longest series of any split in ``data`` (lengths only, no values, are read).
- :class:`NeuralBaseline`: :class:`TransformerClassifier`, or :class:`RNNClassifier` (LSTM or GRU), trained with
  :func:`xlstmkit.train.supervised.fit` (cross-entropy, early stopping on a stratified validation split of the training
  set, optional time budget). ``params=`` picks the width whose parameter count is within 5% of a target, so models
  are compared at matched size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.classification import ClassificationData, PaddedSeries, train_val_split
from ..extras import require
from ..train.supervised import FitConfig, fit, predict as _predict


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of h (B, S, D) over the real steps (mask (B, S) True); every row needs one real step."""
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class TransformerClassifier(nn.Module):
    """PyTorch's ``nn.TransformerEncoder`` over the steps of a (B, S, C) series.

    Linear input projection C -> d_model, learned position embeddings (``max_len`` positions, N(0, 0.02)), pre-norm
    encoder layers (GELU, feed-forward width ``d_ff``, default ``4 * d_model``) with the padding masked out of
    attention, a final LayerNorm, mean pooling over the real steps, a linear head to the classes.
    """

    def __init__(self, n_channels: int, n_classes: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 d_ff: int | None = None, dropout: float = 0.1, max_len: int = 512):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be a multiple of n_heads {n_heads}")
        self.max_len = max_len
        self.inp = nn.Linear(n_channels, d_model)
        self.pos = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff or 4 * d_model, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = x.shape[1]
        if s > self.max_len:
            raise ValueError(f"series of {s} steps exceed max_len={self.max_len}; build the model with a larger max_len")
        h = self.inp(x) + self.pos[:s]
        h = self.encoder(h, src_key_padding_mask=~mask)
        return self.head(_masked_mean(self.norm(h), mask))


class RNNClassifier(nn.Module):
    """A bidirectional ``nn.LSTM`` or ``nn.GRU`` over packed (unpadded) sequences; the head reads the final hidden
    state of both directions of the last layer (the forward pass ends at each series' last real step, the backward
    pass at its first)."""

    def __init__(self, n_channels: int, n_classes: int, hidden: int = 64, n_layers: int = 2, kind: str = "lstm",
                 dropout: float = 0.1, bidirectional: bool = True):
        super().__init__()
        cls = {"lstm": nn.LSTM, "gru": nn.GRU}.get(kind)
        if cls is None:
            raise ValueError(f"kind must be 'lstm' or 'gru', got {kind!r}")
        self.kind, self.dirs = kind, 2 if bidirectional else 1
        self.rnn = cls(n_channels, hidden, n_layers, batch_first=True, bidirectional=bidirectional,
                       dropout=dropout if n_layers > 1 else 0.0)
        self.head = nn.Linear(self.dirs * hidden, n_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, h = self.rnn(packed)
        if self.kind == "lstm":
            h = h[0]
        last = h[-self.dirs:]  # (dirs, B, hidden) of the last layer
        return self.head(last.transpose(0, 1).reshape(x.shape[0], -1))


_MODELS = {"transformer": TransformerClassifier, "lstm": RNNClassifier, "gru": RNNClassifier}


def build(kind: str, n_channels: int, n_classes: int, **kw) -> nn.Module:
    """A model by kind (``transformer``, ``lstm``, ``gru``) with its keyword arguments."""
    if kind not in _MODELS:
        raise ValueError(f"kind must be one of {sorted(_MODELS)}, got {kind!r}")
    if kind != "transformer":
        kw = {**kw, "kind": kind}
    return _MODELS[kind](n_channels, n_classes, **kw)


def _bisect(n, target: int, lo: int = 1) -> int:
    """The k >= lo whose n(k) (increasing in k) is closest to target."""
    hi = lo
    while n(hi) < target:
        lo, hi = hi, hi * 2
        if hi > 1 << 20:
            raise ValueError(f"no width reaches {target} parameters")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if n(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda k: abs(n(k) - target))


def width_for_params(kind: str, target: int, n_channels: int, n_classes: int, tolerance: float = 0.05,
                     **kw) -> dict:
    """Model keyword arguments whose parameter count is within ``tolerance`` (5%) of ``target``.

    LSTM/GRU: ``{"hidden": h}``, the hidden size with the closest count. Transformer: ``{"d_model": d, "d_ff": f}``:
    ``d_model`` steps in multiples of ``n_heads``, which is too coarse to land within 5% on its own, so the largest
    ``d_model`` whose model (with ``d_ff = 4 d_model``) stays at or below the target is taken, then ``d_ff`` (which
    adds parameters one row at a time) is set to close the gap. Other settings (layers, heads, max_len, ...) are held
    at ``kw``. Raises when even the closest is further than the tolerance (change the depth instead).
    """
    if target < 1:
        raise ValueError(f"target must be >= 1 parameters, got {target}")

    def count(**arch) -> int:
        with torch.device("meta"):
            return count_params(build(kind, n_channels, n_classes, **kw, **arch))

    if kind == "transformer":
        heads = kw.get("n_heads", 4)
        k = _bisect(lambda k: count(d_model=k * heads), target)
        if count(d_model=k * heads) > target and k > 1:
            k -= 1
        d = k * heads
        arch = {"d_model": d, "d_ff": _bisect(lambda f: count(d_model=d, d_ff=f), target)}
    else:
        arch = {"hidden": _bisect(lambda h: count(hidden=h), target)}
    got = count(**arch)
    if abs(got - target) > tolerance * target:
        raise ValueError(f"closest {kind} has {got} parameters ({arch}), more than {tolerance:.0%} from {target}; "
                         "change the depth or heads")
    return arch


# --------------------------------------------------------------------------------------------------------------------
# the uniform interface


class MiniRocketBaseline:
    """aeon's MiniRocketClassifier on the normalised, zero-padded series."""

    name = "minirocket"

    def __init__(self, n_kernels: int = 10000, seed: int = 0, n_jobs: int = 1):
        self.n_kernels, self.seed, self.n_jobs = n_kernels, seed, n_jobs
        self._clf = None
        self._length = None

    def _array(self, data: ClassificationData, split: str) -> np.ndarray:
        p = data.to_padded(split, length=self._length)
        return p.x.numpy().transpose(0, 2, 1).astype(np.float64)  # (N, C, L) as aeon takes it

    def fit(self, data: ClassificationData) -> dict:
        conv = require("aeon.classification.convolution_based", "timeseries", "the MiniRocket baseline")
        parts = [getattr(data, k) for k in ("train", "val", "test") if getattr(data, k) is not None]
        self._length = max(9, max(int(p.lengths.max()) for p in parts))  # MiniRocket's kernels span 9 steps
        start = time.perf_counter()
        self._clf = conv.MiniRocketClassifier(n_kernels=self.n_kernels, random_state=self.seed, n_jobs=self.n_jobs)
        self._clf.fit(self._array(data, "train"), data.train.labels)
        return {"seconds": time.perf_counter() - start, "length": self._length}

    def predict(self, data: ClassificationData, split: str = "test") -> np.ndarray:
        if self._clf is None:
            raise RuntimeError("fit the baseline first")
        return np.asarray(self._clf.predict(self._array(data, split)), dtype=np.int64)


@dataclass
class NeuralBaseline:
    """A Transformer, LSTM or GRU classifier trained with :func:`xlstmkit.train.supervised.fit`.

    ``width`` fixes the size; ``params`` instead picks the width within 5% of that many parameters. Without a
    validation split in ``data``, ``val_fraction`` of the training set (stratified, seeded) becomes one.
    """

    kind: str = "transformer"
    width: int | None = None
    params: int | None = None
    model_kw: dict = field(default_factory=dict)
    config: FitConfig = field(default_factory=FitConfig)
    val_fraction: float = 0.2
    model: nn.Module | None = None
    result: object = None

    def __post_init__(self) -> None:
        if self.kind not in _MODELS:
            raise ValueError(f"kind must be one of {sorted(_MODELS)}, got {self.kind!r}")
        if self.width is not None and self.params is not None:
            raise ValueError("give width or params, not both")

    @property
    def name(self) -> str:
        return self.kind

    def fit(self, data: ClassificationData) -> dict:
        if data.val is None:
            data = train_val_split(data, self.val_fraction, self.config.seed)
        kw = dict(self.model_kw)
        if self.kind == "transformer":
            longest = max(int(getattr(data, k).lengths.max()) for k in ("train", "val", "test")
                          if getattr(data, k) is not None)
            kw.setdefault("max_len", max(longest, 16))
        wname = "d_model" if self.kind == "transformer" else "hidden"
        if self.params is not None:
            arch = width_for_params(self.kind, self.params, data.n_channels, data.n_classes, **kw)
        else:
            arch = {wname: self.width or 64}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self.model = build(self.kind, data.n_channels, data.n_classes, **kw, **arch)
        self._stats = data.stats
        train, val = data.to_padded("train"), data.to_padded("val")
        bs = self.config.batch_size
        self.result = fit(self.model, F.cross_entropy, lambda rng: train.batches(bs, rng),
                          lambda: val.batches(256), self.config)
        r = self.result
        return {"params": count_params(self.model), **arch, "epochs": r.epochs, "steps": r.steps,
                "seconds": r.seconds, "best_epoch": r.best_epoch, "best_val_loss": r.best_val_loss,
                "stopped": r.stopped}

    def predict_logits(self, data: ClassificationData, split: str = "test") -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("fit the baseline first")
        part = data.split(split)
        from ..data.classification import pad_series

        p: PaddedSeries = pad_series(part.series, part.labels, stats=self._stats)
        return _predict(self.model, p.batches(256), self.config.device)

    def predict(self, data: ClassificationData, split: str = "test") -> np.ndarray:
        return self.predict_logits(data, split).argmax(-1).numpy()


def make(name: str, **kw):
    """A baseline by name: ``minirocket``, ``transformer``, ``lstm`` or ``gru`` (keyword arguments passed on)."""
    if name == "minirocket":
        return MiniRocketBaseline(**kw)
    if name in _MODELS:
        return NeuralBaseline(kind=name, **kw)
    raise ValueError(f"unknown classification baseline {name!r}; choose minirocket, transformer, lstm or gru")


BASELINES = ("minirocket", "transformer", "lstm", "gru")

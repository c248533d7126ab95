"""`xLSTMForecaster`: probabilistic forecasting with an xLSTM backbone, one global model over many series.

    model = xLSTMForecaster(ForecasterConfig(horizon=6, context_length=24, patch_size=2))
    q = model(context, mask)                        # (B, H, Q) quantiles in the series' own units
    q = model.forecast(context, mask, horizon=18)   # longer than trained: rolled out on sampled paths
    model, result = fit(train_df, ForecasterConfig(horizon=6), FitConfig(max_steps=2000))
    fc = predict(model, train_df, horizon=6, freq="YS")   # unique_id, ds, point, q0.1, ..., q0.9

**The computation** (context x of length L, observed mask o; x may hold NaN where o is False):

1. *Instance scaling.* Per row, over the observed points: ``loc = mean(x)``, ``scale = std(x)`` (population), a
   zero scale becomes ``|loc| + 1e-5``, a row without observations gets loc 0 and scale 1 (TiRex's scaler).
   The network sees ``(x - loc) / scale`` and its output quantiles are mapped back by ``q * scale + loc``, so a
   forecast of ``a x + b`` is ``a`` times the forecast of x plus b (a > 0): every series, whatever its level and
   unit, looks alike to the one global model.
2. *Patching.* The context is left-padded (missing) to a multiple of the patch size P and cut into N = L / P
   non-overlapping patches; each patch becomes one token ``[P scaled values, missing -> 0 || P observed flags]``
   (2P features, the TiRex input), embedded by a residual MLP (``ResidualMLP``) to the model width E. The mask
   features let the model tell a missing value from a zero; missing values are never interpolated.
3. *Backbone.* An ``xLSTMBlockStack`` (mLSTM blocks for capacity, sLSTM blocks for state tracking, the pattern
   from ``block_pattern``) runs causally over the tokens. Leading tokens without any observation (left padding
   of a short series, or a series that starts late) are masked out with the blocks' ``mask=``: they change no
   state, so a short series is forecast exactly as if it had been given alone. Patches without observations
   *inside* the context are kept as tokens (their mask features are all 0): the model learns what a gap means and
   the time axis stays aligned.
4. *Quantile head.* A residual MLP maps the last token's output to H x Q numbers, turned into quantiles that are
   ordered by construction: the median is free and the others step away from it by softplus increments,
   ``q_{k+1} = q_k + softplus(r_{k+1})`` above and ``q_{k-1} = q_k - softplus(r_{k-1})`` below. The increments start
   near the spacing of a standard normal's quantiles, so an untrained model predicts N(median, 1) in scaled units.
   After training, one factor ``spread`` on all distances from the median is fitted on the validation windows by
   the pinball loss (:meth:`xLSTMForecaster.calibrate`): small data makes the network over-confident.
5. *Loss.* The pinball loss ``max(q (y - y_q), (q - 1)(y - y_q))`` averaged over levels and observed target
   points, in scaled units (i.e. divided by each row's scale), so each series counts alike.

The point forecast is the median (0.5 is always among the levels; deciles by default). Multivariate series are
handled channel-independently: each channel is one series of the global model (``unique_id`` per channel).

**Horizons longer than the trained one** are rolled out on sampled paths (``forecast(horizon=...)``): the first H
steps are the model's quantiles; then ``num_samples`` paths are drawn, each from one random level u ~ U(0, 1) per
chunk (the quantile function interpolated linearly between the levels, extrapolated linearly beyond the outer ones),
appended to the context, and the model forecasts the next H steps of every path; the quantiles of later chunks are
the empirical quantiles over the paths. Sampling paths (rather than feeding back the median) carries the uncertainty
of the early steps into the later ones; the median path alone would give later intervals that are far too narrow.
A path keeps one level for a whole chunk, so it is smooth (a random level per step would give zig-zag contexts the
model never saw in training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import FrozenConfig, check_dropout, check_int, check_positive_int, xLSTMConfig
from ..nn.block_stack import xLSTMBlockStack

DECILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SCALE_EPS = 1e-5
CONTEXT_HORIZONS = 4  # default context: this many horizons (ForecasterConfig.for_horizon)
TOKENS = 16  # default number of patches the context is cut into
MIN_CONTEXT = 2  # default shortest training context (points)


# --------------------------------------------------------------------------------------------------------------------
# pieces shared with TiRex (models/tirex.py)


def instance_scale(x: Tensor, observed: Tensor, eps: float = SCALE_EPS) -> tuple[Tensor, Tensor]:
    """(loc, scale), each (B, 1): the mean and population standard deviation of the observed points of every row of
    x (B, L); a zero scale becomes |loc| + eps, a row without observations gets (0, 1)."""
    obs = observed.to(x.dtype)
    n = obs.sum(-1, keepdim=True)
    xs = torch.where(observed, x, torch.zeros((), dtype=x.dtype))
    loc = xs.sum(-1, keepdim=True) / n.clamp(min=1)
    dev = torch.where(observed, x - loc, torch.zeros((), dtype=x.dtype))
    scale = (dev.square().sum(-1, keepdim=True) / n.clamp(min=1)).sqrt()
    scale = torch.where(n == 0, torch.ones_like(scale), scale)
    scale = torch.where(scale == 0, loc.abs() + eps, scale)
    return loc, scale


def patch_tokens(scaled: Tensor, observed: Tensor, patch_size: int) -> Tensor:
    """(B, L) scaled values and observed flags -> (B, N, 2P) tokens ``[values, missing -> 0 || flags]``, after
    left-padding L to a multiple of P with missing points."""
    B, L = scaled.shape
    pad = (-L) % patch_size
    if pad:
        scaled = F.pad(scaled, (pad, 0))
        observed = F.pad(observed, (pad, 0), value=False)
    vals = torch.where(observed, scaled, torch.zeros((), dtype=scaled.dtype))
    return torch.cat([vals.view(B, -1, patch_size), observed.to(scaled.dtype).view(B, -1, patch_size)], dim=-1)


class ResidualMLP(nn.Module):
    """x -> Linear(ReLU(Linear(x))) + Linear(x): the patch embedding and output head of TiRex (and of our
    forecaster). The linear skip lets it start close to a linear map; the hidden layer adds non-linearity."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.hidden_layer = nn.Linear(in_dim, hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, out_dim)
        self.residual_layer = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.output_layer(F.relu(self.hidden_layer(x))) + self.residual_layer(x)


# --------------------------------------------------------------------------------------------------------------------
# quantiles


def check_quantiles(quantiles: Sequence[float]) -> tuple[float, ...]:
    """Sorted distinct levels in (0, 1), with 0.5 added when missing (the median is the point forecast)."""
    try:
        qs = sorted({float(q) for q in quantiles})
    except (TypeError, ValueError):
        raise ValueError(f"quantiles must be numbers in (0, 1), got {quantiles!r}") from None
    if not qs or any(not (0.0 < q < 1.0) or not math.isfinite(q) for q in qs):
        raise ValueError(f"quantiles must be levels strictly between 0 and 1, got {list(quantiles)}")
    if not any(abs(q - 0.5) < 1e-12 for q in qs):
        qs = sorted(qs + [0.5])
    return tuple(qs)


def quantile_loss(q_hat: Tensor, y: Tensor, quantiles: Sequence[float] | Tensor, mask: Tensor | None = None,
                  weight: Tensor | None = None) -> Tensor:
    """The pinball loss: mean over levels and over the (observed) points of ``max(q (y - y_q), (q - 1)(y - y_q))``.

    q_hat (B, H, Q), y (B, H), mask (B, H) bool (True = observed; missing points are excluded), weight (B, 1) or
    (B, H) multiplies each point's loss (the forecaster passes 1 / scale, i.e. the loss in scaled units). Returns a
    scalar (0 when no point is observed).
    """
    qs = torch.as_tensor(quantiles, dtype=q_hat.dtype, device=q_hat.device)
    diff = y.unsqueeze(-1) - q_hat
    per = torch.maximum(qs * diff, (qs - 1.0) * diff).mean(-1)  # (B, H)
    if weight is not None:
        per = per * weight
    if mask is None:
        return per.mean()
    m = mask.to(per.dtype)
    per = torch.where(mask, per, torch.zeros((), dtype=per.dtype))  # a NaN target under the mask does not leak
    return per.sum() / m.sum().clamp(min=1.0)


def interpolate_quantiles(levels: Tensor, values: Tensor, u: Tensor) -> Tensor:
    """Values of the quantile function at levels u, from its values at ``levels`` (Q,): piecewise linear in between,
    linear extrapolation beyond the outer levels with the slope of the outer segments.

    values (..., Q) ordered along the last axis; u broadcastable to values[..., 0]. Returns values[..., 0]'s shape.
    With a single level the function is constant.
    """
    Q = levels.numel()
    if Q == 1:
        return values[..., 0].expand(torch.broadcast_shapes(values.shape[:-1], u.shape))
    u = u.to(values.dtype)
    shape = torch.broadcast_shapes(values.shape[:-1], u.shape)
    values, u = values.expand(*shape, Q), u.expand(shape)
    idx = torch.searchsorted(levels.contiguous(), u.contiguous(), right=True).clamp(1, Q - 1)  # segment [idx-1, idx]
    lo_l, hi_l = levels[idx - 1], levels[idx]
    lo_v = values.gather(-1, (idx - 1).unsqueeze(-1)).squeeze(-1)
    hi_v = values.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
    return lo_v + (u - lo_l) / (hi_l - lo_l) * (hi_v - lo_v)


# --------------------------------------------------------------------------------------------------------------------
# config


def _help(text: str, **kw) -> dict:
    return {"help": text, **kw}


@dataclass(frozen=True)
class ForecasterConfig(FrozenConfig):
    """The forecaster's architecture (frozen, validated). Fields carry their help text (the CLI flags come from them).

    The default is the configuration chosen once for every dataset (docs/forecasting.md says how it was chosen, on
    validation windows only).
    """

    horizon: int = field(default=12, metadata=_help("steps forecast in one pass (the trained horizon)"))
    context_length: int = field(default=64, metadata=_help("context points the model reads"))
    patch_size: int = field(default=4, metadata=_help("points per input token"))
    quantiles: tuple[float, ...] = field(default=DECILES, metadata=_help(
        "quantile levels (0.5 is always added: the median is the point forecast)", flag=False))
    embedding_dim: int = field(default=64, metadata=_help("model width E"))
    num_blocks: int = field(default=2, metadata=_help("xLSTM blocks"))
    block_pattern: str = field(default="xLSTM[1:1]", metadata=_help(
        "mLSTM:sLSTM ratio in the paper's notation, e.g. xLSTM[1:1], xLSTM[1:0] (mLSTM only), xLSTM[0:1]"))
    num_heads: int = field(default=4, metadata=_help("heads of the mLSTM and sLSTM cells"))
    embed_hidden: int = field(default=128, metadata=_help("hidden width of the patch embedding MLP"))
    head_hidden: int = field(default=128, metadata=_help("hidden width of the quantile head MLP"))
    conv_kernel: int = field(default=4, metadata=_help("causal conv kernel inside the mLSTM blocks"))
    slstm_conv_kernel: int = field(default=0, metadata=_help("causal conv kernel inside the sLSTM blocks (0: none)"))
    dropout: float = field(default=0.0, metadata=_help("dropout in the blocks"))

    def __post_init__(self) -> None:
        for name in ("horizon", "context_length", "patch_size", "embedding_dim", "num_blocks", "num_heads",
                     "embed_hidden", "head_hidden", "conv_kernel"):
            check_positive_int(self, name)
        check_int(self, "slstm_conv_kernel", 0, " (0 disables the sLSTM convolution)")
        check_dropout(self, "dropout")
        object.__setattr__(self, "quantiles", check_quantiles(self.quantiles))
        if self.patch_size > self.context_length:
            raise ValueError(f"patch_size ({self.patch_size}) must not exceed context_length ({self.context_length})")
        self.backbone_config()  # the block pattern and head sizes are checked there

    @classmethod
    def for_horizon(cls, horizon: int, **changes) -> "ForecasterConfig":
        """The default configuration for a horizon H, chosen once for every dataset: a context of
        ``CONTEXT_HORIZONS * H`` points read in ``TOKENS`` patches (docs/forecasting.md); ``changes`` override."""
        L = changes.pop("context_length", None) or max(CONTEXT_HORIZONS * int(horizon), 8)
        P = changes.pop("patch_size", None) or max(1, -(-L // TOKENS))
        return cls(horizon=int(horizon), context_length=int(L), patch_size=int(P), **changes)

    @property
    def num_tokens(self) -> int:
        return -(-self.context_length // self.patch_size)

    @property
    def median_index(self) -> int:
        return self.quantiles.index(0.5)

    def backbone_config(self) -> xLSTMConfig:
        """The block stack's config (the xLSTM paper's blocks, causal)."""
        return xLSTMConfig(vocab_size=1, embedding_dim=self.embedding_dim, num_blocks=self.num_blocks,
                           block_pattern=self.block_pattern, mlstm_num_heads=self.num_heads,
                           slstm_num_heads=self.num_heads, mlstm_conv_kernel=self.conv_kernel,
                           slstm_conv_kernel=self.slstm_conv_kernel, dropout=self.dropout)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["quantiles"] = list(self.quantiles)
        return d


# --------------------------------------------------------------------------------------------------------------------
# the model


def _normal_ppf(p: float) -> float:
    return math.sqrt(2.0) * torch.erfinv(torch.tensor(2.0 * p - 1.0, dtype=torch.float64)).item()


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class xLSTMForecaster(nn.Module):
    """context (B, L) [, mask (B, L)] -> quantiles (B, H, Q) in the units of the context; see the module docstring."""

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        if not isinstance(config, ForecasterConfig):
            raise TypeError(f"config must be a ForecasterConfig, got {type(config).__name__}")
        self.config = cfg = config
        P, E, Q = cfg.patch_size, cfg.embedding_dim, len(cfg.quantiles)
        self.embedding = ResidualMLP(2 * P, cfg.embed_hidden, E)
        self.backbone = xLSTMBlockStack(cfg.backbone_config())
        self.head = ResidualMLP(E, cfg.head_hidden, cfg.horizon * Q)
        # offsets of the increments so that softplus(offset) is the spacing of N(0, 1) quantiles at these levels
        z = [_normal_ppf(q) for q in cfg.quantiles]
        m = cfg.median_index
        offs = [0.0] * Q
        for k in range(Q):
            if k != m:
                gap = abs(z[k] - z[k + 1 if k < m else k - 1])
                offs[k] = _inverse_softplus(max(gap, 1e-3))
        self.register_buffer("increment_offset", torch.tensor(offs), persistent=False)
        self.register_buffer("levels", torch.tensor(cfg.quantiles), persistent=False)
        # the interval spread set by `calibrate` on validation windows (1 = the head's own quantiles)
        self.register_buffer("spread", torch.ones(()))

    # -- the pieces --------------------------------------------------------------------------------------------------
    def _inputs(self, context: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        if not isinstance(context, Tensor) or context.dim() != 2:
            raise ValueError(f"context must be a (B, L) tensor, got "
                             f"{tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__}")
        x = context.to(self.embedding.residual_layer.weight.dtype)
        observed = torch.isfinite(x)
        if mask is not None:
            if tuple(mask.shape) != tuple(context.shape):
                raise ValueError(f"mask must have the context's shape {tuple(context.shape)}, got {tuple(mask.shape)}")
            observed = observed & mask.to(torch.bool)
        L = self.config.context_length
        if x.shape[1] > L:
            x, observed = x[:, -L:], observed[:, -L:]
        elif x.shape[1] < L:
            pad = L - x.shape[1]
            x, observed = F.pad(x, (pad, 0)), F.pad(observed, (pad, 0), value=False)
        return torch.where(observed, x, torch.zeros((), dtype=x.dtype)), observed

    def ordered(self, raw: Tensor) -> Tensor:
        """(..., Q) unconstrained -> (..., Q) non-decreasing quantiles (module docstring, step 4)."""
        m = self.config.median_index
        inc = F.softplus(raw + self.increment_offset)
        med = raw[..., m:m + 1]
        up = med + self.spread * inc[..., m + 1:].cumsum(-1)
        down = med - self.spread * inc[..., :m].flip(-1).cumsum(-1).flip(-1)
        return torch.cat([down, med, up], dim=-1)

    @torch.no_grad()
    def calibrate(self, context: Tensor, mask: Tensor | None, target: Tensor, target_mask: Tensor | None,
                  grid: Tensor | None = None) -> float:
        """Set ``spread``, the factor on every quantile's distance from the median, to the value that minimises the
        pinball loss on the given (validation) windows, and return it.

        Why: a network trained to its best validation loss on few series is often over-confident (its intervals too
        narrow); one factor fitted on held-out windows with the pinball loss (a proper scoring rule, so it rewards
        calibration and sharpness together) repairs that without touching the median. The grid spans 0.5 to 4.
        """
        was = self.training
        self.eval()
        try:
            self.spread.fill_(1.0)
            q, loc, scale = self.forward_scaled(context, mask)
            y = (target.to(q.dtype) - loc) / scale
            med = q[..., self.config.median_index:self.config.median_index + 1]
            grid = torch.exp(torch.linspace(math.log(0.5), math.log(4.0), 43)) if grid is None else grid
            losses = torch.stack([quantile_loss(med + a * (q - med), y, self.levels, target_mask) for a in grid])
            best = float(grid[int(torch.argmin(losses))])
            self.spread.fill_(best)
            return best
        finally:
            self.train(was)

    def forward_scaled(self, context: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(quantiles in scaled units (B, H, Q), loc (B, 1), scale (B, 1))."""
        cfg = self.config
        x, observed = self._inputs(context, mask)
        loc, scale = instance_scale(x, observed)
        tokens = patch_tokens((x - loc) / scale, observed, cfg.patch_size)  # (B, N, 2P)
        token_obs = tokens[..., cfg.patch_size:].amax(-1) > 0  # (B, N): the patch holds an observation
        real = token_obs.to(torch.int8).cummax(dim=1).values.to(torch.bool)  # from the first observed patch on
        h = self.embedding(tokens)
        h, _ = self.backbone(h, mask=None if bool(real.all()) else real)
        raw = self.head(h[:, -1]).view(-1, cfg.horizon, len(cfg.quantiles))
        return self.ordered(raw), loc, scale

    def forward(self, context: Tensor, mask: Tensor | None = None) -> Tensor:
        """Quantiles (B, H, Q) of the next H points, in the context's units (levels ``config.quantiles``)."""
        q, loc, scale = self.forward_scaled(context, mask)
        return q * scale.unsqueeze(-1) + loc.unsqueeze(-1)

    def loss(self, context: Tensor, mask: Tensor | None, target: Tensor, target_mask: Tensor | None = None) -> Tensor:
        """The training loss: pinball in scaled units over the observed target points."""
        q, loc, scale = self.forward_scaled(context, mask)
        y = (target.to(q.dtype) - loc) / scale
        return quantile_loss(q, y, self.levels, target_mask)

    # -- forecasting -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def forecast(self, context: Tensor, mask: Tensor | None = None, horizon: int | None = None,
                 num_samples: int = 200, seed: int = 0) -> Tensor:
        """Quantiles (B, horizon, Q); beyond the trained horizon rolled out on ``num_samples`` sampled paths per
        series (module docstring). Eval mode for the call; ``seed`` makes the paths reproducible."""
        cfg = self.config
        horizon = cfg.horizon if horizon is None else int(horizon)
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        was = self.training
        self.eval()
        try:
            first = self(context, mask)
            if horizon <= cfg.horizon:
                return first[:, :horizon]
            B = first.shape[0]
            x, observed = self._inputs(context, mask)
            gen = torch.Generator(device="cpu").manual_seed(seed)
            x = x.repeat_interleave(num_samples, 0)
            observed = observed.repeat_interleave(num_samples, 0)
            q = first.repeat_interleave(num_samples, 0)  # (B S, H, Q): the current chunk of every path
            chunks, done = [first], cfg.horizon
            while done < horizon:
                u = torch.rand(q.shape[0], 1, generator=gen).to(q.device)  # one level per path and chunk
                path = interpolate_quantiles(self.levels, q, u)  # (B S, H)
                x = torch.cat([x, path], 1)[:, -cfg.context_length:]
                observed = torch.cat([observed, torch.ones_like(path, dtype=torch.bool)], 1)[:, -cfg.context_length:]
                q = self(x, observed)  # the next chunk of every path
                draws = interpolate_quantiles(self.levels, q, torch.rand(q.shape[:2], generator=gen).to(q.device))
                draws = draws.view(B, num_samples, cfg.horizon)
                chunks.append(torch.quantile(draws, self.levels.to(draws.dtype), dim=1).permute(1, 2, 0))
                done += cfg.horizon
            return torch.cat(chunks, 1)[:, :horizon]
        finally:
            self.train(was)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# --------------------------------------------------------------------------------------------------------------------
# training and forecasting long-format data (the high-level API; pandas and the trainer are imported on use)


class _Scaled(nn.Module):
    """The training view of a forecaster: ``(context, mask) -> (scaled quantiles, loc, scale)``, so that the
    trainer's ``loss_fn(output, (target, target_mask))`` can compute the loss in scaled units."""

    def __init__(self, model: xLSTMForecaster) -> None:
        super().__init__()
        self.model = model

    def forward(self, context: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.model.forward_scaled(context, mask)


def scaled_pinball(output: tuple[Tensor, Tensor, Tensor], target: tuple[Tensor, Tensor], levels: Tensor) -> Tensor:
    q, loc, scale = output
    y, y_mask = target
    return quantile_loss(q, (y.to(q.dtype) - loc) / scale, levels, y_mask)


@dataclass
class TrainingData:
    """What :func:`fit` trained on: the window sampler, whether a validation window was held out, and why not."""

    sampler: object
    validation: bool
    note: str = ""


def training_windows(train_df, config: ForecasterConfig, min_context: int | None = None) -> TrainingData:
    """The window sampler :func:`fit` uses: contexts of ``config.context_length``, targets of ``config.horizon``,
    cutoffs from ``min_context`` (default 2: contexts of two points already teach something on short series such as
    M1's, and were better on its validation windows than a horizon's worth) on, and the last window
    before the test window of every series held out for validation. When no series is long enough for both (e.g.
    36 monthly points and a horizon of 12), training falls back to using that window too, without validation."""
    from ..data.forecasting import WindowSampler

    mc = MIN_CONTEXT if min_context is None else int(min_context)
    sampler = WindowSampler(train_df, config.context_length, config.horizon, min_context=mc)
    if sampler.n_windows > 0:
        return TrainingData(sampler, True)
    mc = min(mc, max(1, int(sampler.lengths.max()) - config.horizon))
    sampler = WindowSampler(train_df, config.context_length, config.horizon, min_context=mc,
                            hold_out_validation=False)
    if sampler.n_windows == 0:
        raise ValueError(f"no training windows: every series has at most {int(sampler.lengths.max())} training "
                         f"points, too few for a horizon of {config.horizon}; shorten the horizon")
    return TrainingData(sampler, False, f"series too short to hold out a validation window of {config.horizon} "
                                        "points: trained on every window, without early stopping")


def fit(train_df, config: ForecasterConfig, fit_config=None, *, steps_per_epoch: int = 100,
        min_context: int | None = None, on_epoch=None, model: xLSTMForecaster | None = None, validation=None,
        calibrate: bool = True):
    """Train a forecaster (a new one from ``config``, or ``model``) as one global model over every series of
    ``train_df`` (long format: unique_id, ds, y; NaN = missing). Returns ``(model, FitResult)``.

    Uses :func:`xlstmkit.train.supervised.fit` (AdamW, warm-up, clipping, time budget): an "epoch" is
    ``steps_per_epoch`` batches of windows drawn uniformly over all (series, cutoff) pairs; after each, the loss on
    the validation windows (the last window before the test window of every series) decides early stopping and
    which weights are kept. ``fit_config`` is a :class:`xlstmkit.train.supervised.FitConfig` (default: 2000 steps of
    64 windows, lr 1e-3 with 50 warm-up steps, patience 10 epochs). The result's ``note`` says when the series
    were too short to hold out validation windows (see :func:`training_windows`).

    ``validation=(context, context_mask, target, target_mask)`` gives the validation windows instead; then every
    window of ``train_df`` is used for training (the caller keeps the two apart).

    With ``calibrate`` (default) the interval spread is then fitted on the validation windows
    (:meth:`xLSTMForecaster.calibrate`); without validation windows it stays 1.
    """
    from ..data.forecasting import WindowSampler
    from ..train.supervised import FitConfig, fit as supervised_fit

    fit_config = fit_config or FitConfig(max_epochs=10_000, max_steps=2000, batch_size=64, lr=1e-3, warmup_steps=50,
                                         patience=10)
    if validation is None:
        data = training_windows(train_df, config, min_context)
    else:
        mc = MIN_CONTEXT if min_context is None else int(min_context)
        data = TrainingData(WindowSampler(train_df, config.context_length, config.horizon, min_context=mc,
                                          hold_out_validation=False), True)
        if data.sampler.n_windows == 0:
            raise ValueError("no training windows: the training series are shorter than min_context + horizon")
    if model is None:
        with torch.random.fork_rng():
            torch.manual_seed(fit_config.seed)
            model = xLSTMForecaster(config)
    sampler, bs = data.sampler, fit_config.batch_size

    def train_batches(rng):
        return sampler.batches(bs, steps_per_epoch, rng)

    val = None
    if data.validation:
        if validation is None:
            w = sampler.validation()
            validation = (w.context, w.context_mask, w.target, w.target_mask)
        c, cm, t, tm = validation
        val_list = [((c[i:i + 1024], cm[i:i + 1024]), (t[i:i + 1024], tm[i:i + 1024])) for i in range(0, len(c), 1024)]

        def val():
            return iter(val_list)

    levels = model.levels
    model.spread.fill_(1.0)
    result = supervised_fit(_Scaled(model), lambda out, tgt: scaled_pinball(out, tgt, levels), train_batches, val,
                            fit_config, on_epoch=on_epoch)
    result.note = data.note  # type: ignore[attr-defined]
    if data.validation and calibrate:
        model.calibrate(*validation)
    return model, result


def future_times(last, horizon: int, freq):
    """The ``horizon`` time stamps after ``last`` on the grid of ``freq`` (an int step index when ``last`` is)."""
    import numpy as np

    if isinstance(last, (int, np.integer)):
        return np.arange(int(last) + 1, int(last) + 1 + horizon, dtype=np.int64)
    import pandas as pd

    return pd.date_range(last, periods=horizon + 1, freq=freq)[1:]


@torch.no_grad()
def predict(model: xLSTMForecaster, train_df, horizon: int | None = None, freq=None, *, num_samples: int = 200,
            seed: int = 0, batch_size: int = 1024):
    """Forecasts of the ``horizon`` steps after every series of ``train_df``: a frame ``unique_id, ds, point,
    q0.1, ..., q0.9`` (the point forecast is the median), the layout of :mod:`xlstmkit.baselines.forecasting`."""
    import numpy as np
    import pandas as pd

    from ..baselines.forecasting import quantile_column
    from ..data.forecasting import WindowSampler

    cfg = model.config
    horizon = cfg.horizon if horizon is None else int(horizon)
    sampler = WindowSampler(train_df, cfg.context_length, 1)
    ctx = sampler.forecast_context()
    if (ctx.context_mask.sum(1) == 0).any():
        i = int(torch.nonzero(ctx.context_mask.sum(1) == 0)[0, 0])
        raise ValueError(f"series {sampler.ids[i]!r} has no observed value in its last {cfg.context_length} points; "
                         "drop it or give a longer context")
    parts = [model.forecast(ctx.context[i:i + batch_size], ctx.context_mask[i:i + batch_size], horizon,
                            num_samples=num_samples, seed=seed + i) for i in range(0, len(ctx), batch_size)]
    q = torch.cat(parts).double().numpy()  # (N, H, Q)
    last = train_df.groupby("unique_id", sort=False)["ds"].last()
    if freq is None and not pd.api.types.is_integer_dtype(train_df["ds"]):
        raise ValueError("freq is needed to date the forecasts of datetime series")
    ids = sampler.ids
    ds = np.concatenate([np.asarray(future_times(last.loc[u], horizon, freq)) for u in ids])
    out = pd.DataFrame({"unique_id": np.repeat(ids, horizon), "ds": ds})
    out["point"] = q[..., cfg.median_index].reshape(-1)
    for k, lv in enumerate(cfg.quantiles):
        out[quantile_column(lv)] = q[..., k].reshape(-1)
    return out


__all__ = ["DECILES", "ForecasterConfig", "ResidualMLP", "check_quantiles", "fit", "future_times", "instance_scale",
           "interpolate_quantiles", "patch_tokens", "predict", "quantile_loss", "training_windows",
           "xLSTMForecaster"]

"""TiRex (NX-AI, 2025): a 35M-parameter zero-shot forecaster built from sLSTM blocks, on xlstmkit's own layers.

    model = load_tirex("model.ckpt")                  # xlstmkit.interop.tirex: the published checkpoint layout
    quantiles, median = model.forecast(context, prediction_length=64)     # (B, 64, 9), (B, 64)

**The architecture** (docs/forecasting.md; reference/applications.md section 2):

1. The context is cut to its last ``train_ctx_len`` (2048) points and left-padded with missing values (NaN) to
   that length: the model always reads 64 tokens of 32 points.
2. Instance scaling over that window (``instance_scale``: nan-aware mean and population std, a zero std becomes
   |mean| + 1e-5).
3. Each patch of 32 points becomes ``[scaled values, NaN -> 0 || observed flags]`` (64 features), embedded by a
   residual MLP 64 -> 2048 -> 512 (``ResidualMLP``, shared with xlstmkit's own forecaster).
4. 12 blocks ``x = x + sLSTM(RMSNorm(x))``, ``x = x + SwiGLU(RMSNorm(x))``: the sLSTM layer is xlstmkit's
   ``SLSTMLayer`` without convolution (head-wise gate maps, exponential input gate, sigmoid forget gate, per-head
   norm with the residual ``1 + w`` scale), run by the native sLSTM time loop; the SwiGLU FFN is
   ``GatedFFN(activation="silu")`` of width round_up(2.6667 * 512, 64) = 1408; RMSNorm eps 1e-6.
5. A final RMSNorm and a residual MLP 512 -> 2048 -> 9 x 32 give, for the token after the last one, 32 future
   points at 9 quantile levels (quantile-major), mapped back by ``q * scale + loc``.

**Longer horizons.** As in the ``tirex-ts`` package: after each pass a patch of missing values is appended to the
context and the model runs again on the (shifted) window; ``max_accelerated_rollout_steps = k`` appends k - 1
missing tokens in one pass and reads k patches at once. Predictions are never fed back: the model was trained with
contiguous patch masking to read "missing" as "to be forecast". The "mean" is the 0.5 quantile.

Only the sLSTM forget gate differs by construction: TiRex clamps the forget pre-activation at 15 before the
log-sigmoid; the op does not. ``logsigmoid(f)`` for f > 15 lies within 3.1e-7 of ``logsigmoid(15)``, below the float32
resolution of the accumulated ``log f + m`` it enters, so the two agree to float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..config import FrozenConfig, check_positive_float, check_positive_int, round_up, xLSTMConfig
from ..nn.ffn import GatedFFN
from ..nn.norms import RMSNorm
from ..nn.slstm_block import SLSTMBlockState, SLSTMLayer
from .forecaster import DECILES, ResidualMLP, check_quantiles, instance_scale, patch_tokens


@dataclass(frozen=True)
class TiRexConfig(FrozenConfig):
    """TiRex's hyper-parameters; the defaults are the published 35M model's (35,291,200 parameters)."""

    patch_size: int = 32
    quantiles: tuple[float, ...] = DECILES
    embedding_dim: int = 512
    num_blocks: int = 12
    num_heads: int = 4
    input_ff_dim: int = 2048
    ffn_proj_factor: float = 2.6667
    train_ctx_len: int = 2048
    norm_eps: float = 1e-6
    group_norm_eps: float = 1e-5
    fused: bool = field(default=True, metadata={"help": "the sLSTM layer's fused step (same function)"})

    def __post_init__(self) -> None:
        for name in ("patch_size", "embedding_dim", "num_blocks", "num_heads", "input_ff_dim", "train_ctx_len"):
            check_positive_int(self, name)
        for name in ("ffn_proj_factor", "norm_eps", "group_norm_eps"):
            check_positive_float(self, name)
        object.__setattr__(self, "quantiles", tuple(float(q) for q in self.quantiles))
        check_quantiles(self.quantiles)
        if 0.5 not in self.quantiles:
            raise ValueError(f"TiRex's quantiles must include 0.5 (its point forecast), got {list(self.quantiles)}")
        if self.embedding_dim % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide embedding_dim ({self.embedding_dim})")
        if self.train_ctx_len % self.patch_size:
            raise ValueError(f"train_ctx_len ({self.train_ctx_len}) must be a multiple of patch_size "
                             f"({self.patch_size})")

    @property
    def ffn_dim(self) -> int:
        return round_up(self.embedding_dim * self.ffn_proj_factor, 64)

    def slstm_config(self) -> xLSTMConfig:
        """The xLSTMConfig of the sLSTM layers: no convolution, sigmoid forget gate, group-norm eps, no dropout."""
        return xLSTMConfig(vocab_size=1, embedding_dim=self.embedding_dim, num_blocks=self.num_blocks,
                           slstm_at="all", slstm_num_heads=self.num_heads, slstm_conv_kernel=0,
                           norm_eps=self.group_norm_eps, forget_gate="sigmoid", dropout=0.0, fused=self.fused)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["quantiles"] = list(self.quantiles)
        return d


class TiRexBlock(nn.Module):
    """x + sLSTM(RMSNorm(x)), then x + SwiGLU(RMSNorm(x))."""

    def __init__(self, cfg: TiRexConfig, block_idx: int) -> None:
        super().__init__()
        E = cfg.embedding_dim
        self.norm = RMSNorm(E, eps=cfg.norm_eps)
        self.layer = SLSTMLayer(cfg.slstm_config(), block_idx)
        self.ffn_norm = RMSNorm(E, eps=cfg.norm_eps)
        self.ffn = GatedFFN(E, cfg.ffn_dim, bias=False, activation="silu")

    def forward(self, x: Tensor, state: SLSTMBlockState | None = None) -> tuple[Tensor, SLSTMBlockState]:
        y, state = self.layer(self.norm(x), state)
        x = x + y
        return x + self.ffn(self.ffn_norm(x)), state


class TiRex(nn.Module):
    """TiRex on xlstmkit's layers. ``forecast(context, prediction_length)`` as in ``tirex-ts``; see the module
    docstring. Parameter names follow TiRex's where the layers are the same (``input_patch_embedding``, ``blocks``,
    ``out_norm``, ``output_patch_embedding``); the loader maps the rest."""

    def __init__(self, config: TiRexConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or TiRexConfig()
        if not isinstance(cfg, TiRexConfig):
            raise TypeError(f"config must be a TiRexConfig, got {type(cfg).__name__}")
        P, E, Q = cfg.patch_size, cfg.embedding_dim, len(cfg.quantiles)
        self.input_patch_embedding = ResidualMLP(2 * P, cfg.input_ff_dim, E)
        self.blocks = nn.ModuleList(TiRexBlock(cfg, i) for i in range(cfg.num_blocks))
        self.out_norm = RMSNorm(E, eps=cfg.norm_eps)
        self.output_patch_embedding = ResidualMLP(E, cfg.input_ff_dim, Q * P)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward_tokens(self, tokens: Tensor, last: int = 1, reuse_padding: bool = True) -> Tensor:
        """tokens (B, N, 2P) -> the scaled quantile predictions of the patches after the last ``last`` tokens,
        (B, Q, last, P). The output MLP runs on those tokens only (the others' outputs are not needed).

        ``reuse_padding``: a row's leading tokens that hold no observation (the NaN left padding of a short context)
        are all the same token, so every block's state after k of them is the same for every series. It is
        computed once per k (batch 1) and the row's remaining tokens start from it: the same function (the
        padding still passes through the blocks, as in TiRex), without recomputing the padding for every row.
        """
        B, N, _ = tokens.shape
        lead = (tokens[..., self.config.patch_size:] == 0).all(-1).to(torch.int8).cumprod(1).sum(1)  # (B,)
        lead = lead.clamp(max=max(N - last, 0))
        if not reuse_padding or not bool(lead.any()):
            return self._run(tokens, None, last)
        out = tokens.new_empty(B, len(self.config.quantiles), last, self.config.patch_size)
        states, done = None, 0
        pad = self.input_patch_embedding(tokens.new_zeros(1, 1, tokens.shape[-1]))  # (1, 1, E)
        for k in sorted(set(lead.tolist())):
            if k > done:  # advance the padding state from `done` to k tokens (batch 1)
                x = pad.expand(1, k - done, -1)
                new = []
                for i, block in enumerate(self.blocks):
                    x, st = block(x, None if states is None else states[i])
                    new.append(st)
                states, done = new, k
            rows = torch.nonzero(lead == k)[:, 0]
            init = None if k == 0 else [type(st)(st.conv.expand(len(rows), *st.conv.shape[1:]),
                                                 type(st.cell)(*(t.expand(len(rows), *t.shape[1:]).contiguous()
                                                                 for t in st.cell))) for st in states]
            out[rows] = self._run(tokens[rows, k:], init, last)
        return out

    def _run(self, tokens: Tensor, states, last: int) -> Tensor:
        x = self.input_patch_embedding(tokens)
        for i, block in enumerate(self.blocks):
            x, _ = block(x, None if states is None else states[i])
        x = self.out_norm(x[:, -last:])
        out = self.output_patch_embedding(x)  # (B, last, Q * P), quantile-major
        B = out.shape[0]
        return out.view(B, last, len(self.config.quantiles), self.config.patch_size).transpose(1, 2)

    def _window(self, context: Tensor) -> Tensor:
        L = self.config.train_ctx_len
        if context.shape[1] >= L:
            return context[:, -L:]
        pad = torch.full((context.shape[0], L - context.shape[1]), float("nan"), dtype=context.dtype,
                         device=context.device)
        return torch.cat([pad, context], dim=1)

    def _predict_patches(self, context: Tensor, k: int) -> Tensor:
        """One pass: (B, Q, k * P) quantiles of the next k patches, in the context's units."""
        P = self.config.patch_size
        x = self._window(context)
        observed = ~torch.isnan(x)
        x0 = torch.where(observed, x, torch.zeros((), dtype=x.dtype))
        loc, scale = instance_scale(x0, observed)
        tokens = patch_tokens((x0 - loc) / scale, observed, P)
        if k > 1:  # k - 1 missing tokens: values 0, flags 0
            tokens = torch.cat([tokens, tokens.new_zeros(tokens.shape[0], k - 1, 2 * P)], dim=1)
        q = self.forward_tokens(tokens, last=k)  # (B, Q, k, P)
        B, Q = q.shape[:2]
        return q.reshape(B, Q, k * P) * scale.unsqueeze(1) + loc.unsqueeze(1)

    @torch.no_grad()
    def forecast(self, context, prediction_length: int | None = None, max_accelerated_rollout_steps: int = 1
                 ) -> tuple[Tensor, Tensor]:
        """(quantiles (B, H, Q), median (B, H)) for the next ``prediction_length`` points (default one patch).

        ``context``: a tensor or array (T,) or (B, T) (NaN = missing), or a list of 1-D series of any lengths
        (left-padded with NaN). Float32 arithmetic; the sLSTM recurrence runs in xlstmkit's native loop."""
        cfg = self.config
        ctx = _as_batch(context)
        H = cfg.patch_size if prediction_length is None else int(prediction_length)
        if H < 1:
            raise ValueError(f"prediction_length must be >= 1, got {prediction_length}")
        k_max = int(max_accelerated_rollout_steps)
        if k_max < 1:
            raise ValueError(f"max_accelerated_rollout_steps must be >= 1, got {max_accelerated_rollout_steps}")
        device = self.input_patch_embedding.hidden_layer.weight.device
        ctx = ctx.to(device=device, dtype=torch.float32)
        was = self.training
        self.eval()
        try:
            remaining = -(-H // cfg.patch_size)
            parts = []
            while remaining > 0:
                k = min(remaining, k_max)
                pred = self._predict_patches(ctx, k)
                parts.append(pred)
                remaining -= k
                if remaining > 0:
                    ctx = torch.cat([ctx, torch.full_like(pred[:, 0], float("nan"))], dim=1)
        finally:
            self.train(was)
        q = torch.cat(parts, dim=-1)[..., :H].transpose(1, 2).contiguous()  # (B, H, Q)
        return q, q[..., cfg.quantiles.index(0.5)]


def _as_batch(context) -> Tensor:
    """(B, T) float32 from a tensor/array (T,) or (B, T) or a list of 1-D series (left-padded with NaN)."""
    if isinstance(context, (list, tuple)):
        rows = [torch.as_tensor(r, dtype=torch.float32).reshape(-1) for r in context]
        if not rows:
            raise ValueError("context is an empty list; give at least one series")
        T = max(len(r) for r in rows)
        out = torch.full((len(rows), T), float("nan"))
        for i, r in enumerate(rows):
            if len(r):
                out[i, T - len(r):] = r
        return out
    t = torch.as_tensor(context, dtype=torch.float32)
    if t.dim() == 1:
        t = t[None]
    if t.dim() != 2 or t.shape[1] < 1:
        raise ValueError(f"context must be (T,) or (B, T) with T >= 1, got shape {tuple(t.shape)}")
    return t


__all__ = ["TiRex", "TiRexBlock", "TiRexConfig"]

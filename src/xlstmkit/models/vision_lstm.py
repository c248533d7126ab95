"""Vision-LSTM (ViL, Alkin et al. 2024): an image classifier (or dense feature extractor) made of mLSTM blocks that
read the patch grid row by row, alternately from the top-left and from the bottom-right corner (docs/vision.md).

    patches  x = PatchEmbed(image) + PosEmbed          # (B, h, w, d): Conv2d with kernel = stride = patch size
    tokens   x = flatten(x)                            # (B, S, d), S = h * w, row-major; no class token
    pairs    x = x + DropPath(L_tl(LN(x)))             # block 1 of a pair: top-left first
             x = x + DropPath(flip(L_br(LN(flip(x))))) # block 2: the sequence reversed (bottom-right first)
    head     x = LN(x) -> pool -> LN -> Linear         # bilateral pooling: first and last token

Each L is the mLSTM layer of the xLSTM paper (`xlstmkit.nn.MLSTMLayer`: up-projection to 2 d, convolution, block-
diagonal q/k/v, 4 mLSTM heads, learnable skip, SiLU output gate, down-projection) with Vision-LSTM's options: the
convolution is a depthwise 3 x 3 2-D convolution over the patch grid (v2) or the causal 1-D one with kernel 4 (v1),
and every projection and norm has a bias (v2). Every LayerNorm inside the blocks stores its scale as 1 + w.

Two versions (`version=`): 2 (the second paper version, "VisionLSTM2", the default) and 1 (the first: causal 1-D
convolution, bilateral average pooling, no biases). Both come with the published initialisation (below) and the
extra norm of the published checkpoints (`legacy_norm=True`): v2 normalises the pooled vector again with a plain
LayerNorm; v1 has a (1 + w) LayerNorm before the pooling and a plain one after it.

    model = VisionLSTM(vil_config("vil-t", num_classes=10, image_size=32, patch_size=4))
    logits = model(images)                        # (B, C, H, W) -> (B, num_classes)
    grid = model.features(images)                 # (B, d, h, w): the patch grid after the blocks (dense tasks)

Initialisation (as published): patch embedding xavier-uniform as a Linear map, bias 0; position embedding
trunc-normal std 0.02 (interpolated bicubically for another grid); up-projection and q/k/v N(0, sqrt(2 / (5 d)));
down-projection N(0, 2 / sqrt(d)) (`proj_down_init="original"`; "depth" divides by 2 * depth as the xLSTM LM does);
forget-gate bias linspace(3, 6), input-gate bias N(0, 0.1), gate weights 0; skip 1; head trunc-normal std 2e-5.

The mLSTM runs in any of its three forms; they compute the same function. `config.form` is used in training (and
whenever gradients are recorded), `config.inference_form` without gradients; benchmarks/vision_results.md has the
measurements behind the defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import FORMS, FrozenConfig, check_bool, check_choice, check_dropout, check_int, check_positive_int, \
    xLSTMConfig
from ..nn.conv import GridConv2d
from ..nn.mlstm_block import MLSTMLayer
from ..nn.norms import LayerNorm

POOLINGS = ("bilateral_flatten", "bilateral_avg", "to_image", "none")
CONV_KINDS = ("2d", "causal1d")
DIRECTIONS = ("rowwise_from_top_left", "rowwise_from_bot_right")


def _pair(value: Any, name: str) -> tuple[int, int]:
    """An int or a pair of ints -> (a, b), both positive; ValueError otherwise."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        a, b = value
    elif isinstance(value, int) and not isinstance(value, bool):
        a = b = value
    else:
        raise ValueError(f"{name} must be an integer or a pair of integers (height, width), got {value!r}")
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must hold positive integers, got {value!r}")
    return int(a), int(b)


@dataclass(frozen=True)
class VisionLSTMConfig(FrozenConfig):
    """A Vision-LSTM, validated at construction. Fields left at None take the published value of `version`:

    | field            | v2 (VisionLSTM2)    | v1 (VisionLSTM)  |
    |------------------|---------------------|------------------|
    | pooling          | "bilateral_flatten" | "bilateral_avg"  |
    | conv_kind        | "2d"                | "causal1d"       |
    | conv_kernel_size | 3                   | 4                |
    | proj_bias        | True                | False            |
    | norm_bias        | True                | False            |

    `depth` counts block pairs (one pair = two mLSTM blocks, one per direction), so depth 12 has 24 mLSTM blocks,
    like the published ViL-T/S/B. `pooling` "to_image" or "none" makes a feature extractor (num_classes None):
    the output is the patch grid (B, d, h, w) or the tokens (B, S, d). Image and patch sizes are an int (square) or
    (height, width); the image size must be a multiple of the patch size. `image_size` fixes the size of the
    position embedding; other sizes are accepted at run time (the embedding is interpolated).
    """

    dim: int = 192
    depth: int = 12
    image_size: Any = 224
    patch_size: Any = 16
    in_channels: int = 3
    num_classes: int | None = 1000
    version: int = 2
    pooling: str | None = None
    conv_kind: str | None = None
    conv_kernel_size: int | None = None
    proj_bias: bool | None = None
    norm_bias: bool | None = None
    legacy_norm: bool = True
    expansion: int = 2
    qkv_block_size: int = 4
    num_heads: int = 4
    drop_path_rate: float = 0.0
    drop_path_decay: bool = False
    proj_down_init: str = "original"
    form: str = "chunkwise"
    inference_form: str = "chunkwise"
    chunk_size: int = 64
    fused: bool = True

    def __post_init__(self) -> None:
        if self.version not in (1, 2) or isinstance(self.version, bool):
            raise ValueError(f"version must be 1 or 2, got {self.version!r}")
        v2 = self.version == 2
        defaults = {"pooling": "bilateral_flatten" if v2 else "bilateral_avg", "conv_kind": "2d" if v2 else "causal1d",
                    "proj_bias": v2, "norm_bias": v2}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.conv_kernel_size is None:
            object.__setattr__(self, "conv_kernel_size", 3 if self.conv_kind == "2d" else 4)
        object.__setattr__(self, "image_size", _pair(self.image_size, "image_size"))
        object.__setattr__(self, "patch_size", _pair(self.patch_size, "patch_size"))
        for name in ("dim", "depth", "in_channels", "expansion", "qkv_block_size", "num_heads", "chunk_size",
                     "conv_kernel_size"):
            check_positive_int(self, name)
        for name in ("legacy_norm", "drop_path_decay", "fused", "proj_bias", "norm_bias"):
            check_bool(self, name)
        check_choice(self, "pooling", POOLINGS)
        check_choice(self, "conv_kind", CONV_KINDS)
        check_choice(self, "proj_down_init", ("original", "depth"))
        check_choice(self, "form", FORMS)
        check_choice(self, "inference_form", FORMS)
        check_dropout(self, "drop_path_rate")
        if self.conv_kind == "2d" and self.conv_kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel_size must be odd for the 2-D convolution (the grid keeps its size), got "
                             f"{self.conv_kernel_size}")
        if self.features_only:
            if self.num_classes is not None:
                raise ValueError(f"pooling {self.pooling!r} makes a feature extractor: set num_classes to None (or "
                                 f"choose pooling 'bilateral_flatten' or 'bilateral_avg' for a classifier)")
        else:
            check_int(self, "num_classes", 1, " (or None with pooling 'to_image' or 'none')")
        for axis, (size, patch) in enumerate(zip(self.image_size, self.patch_size)):
            if size % patch:
                raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size} "
                                 f"({('height', 'width')[axis]}): resize the images or choose another patch size")
        inner = self.inner_dim
        if inner % self.num_heads or inner % self.qkv_block_size:
            raise ValueError(f"num_heads ({self.num_heads}) and qkv_block_size ({self.qkv_block_size}) must divide "
                             f"the inner width expansion * dim = {inner}")

    # -- derived sizes: one place ---------------------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        """(h, w): the patch grid of an image of `image_size`."""
        return self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1]

    @property
    def inner_dim(self) -> int:
        return self.expansion * self.dim

    @property
    def features_only(self) -> bool:
        return self.pooling in ("to_image", "none")

    @property
    def head_dim(self) -> int:
        """Width of the pooled vector: 2 d for bilateral_flatten (first and last token side by side), else d."""
        return 2 * self.dim if self.pooling == "bilateral_flatten" else self.dim

    def layer_config(self) -> xLSTMConfig:
        """The mLSTM layer's settings as an xLSTMConfig (what `nn.MLSTMLayer` reads)."""
        return xLSTMConfig(embedding_dim=self.dim, num_blocks=2 * self.depth if self.proj_down_init == "depth" else 1,
                           mlstm_num_heads=self.num_heads, mlstm_proj_factor=float(self.expansion),
                           qkv_proj_blocksize=self.qkv_block_size, round_up_to=1,
                           mlstm_conv_kernel=self.conv_kernel_size if self.conv_kind == "causal1d" else 1,
                           chunk_size=self.chunk_size, mlstm_eps=1e-6, norm_eps=1e-5, bias=self.proj_bias,
                           fused=self.fused)


# name -> fields; the ImageNet presets are VisionLSTM2 at 224 px, patch 16, 1000 classes (their parameter counts are
# the published 6.39M, 23.40M, 89.26M; tests/test_vision_model.py checks them). The small ones are for CPU runs on
# small data sets (docs/vision.md says how they were chosen).
VIL_PRESETS: dict[str, dict[str, Any]] = {
    "vil-t": dict(dim=192, depth=12),
    "vil-s": dict(dim=384, depth=12, drop_path_rate=0.05),
    "vil-b": dict(dim=768, depth=12, drop_path_rate=0.2),
    "vil-micro": dict(dim=64, depth=2),
    "vil-mini": dict(dim=96, depth=3),
}


def vil_config(preset: str = "vil-t", **overrides: Any) -> VisionLSTMConfig:
    """The config of a preset (`VIL_PRESETS`) with fields overridden, e.g. vil_config("vil-t", num_classes=10)."""
    if preset not in VIL_PRESETS:
        raise ValueError(f"unknown Vision-LSTM preset {preset!r}; choose one of {', '.join(VIL_PRESETS)}")
    return VisionLSTMConfig(**{**VIL_PRESETS[preset], **overrides})


# -- the pieces ----------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Non-overlapping patches as vectors: a Conv2d with kernel = stride = patch size, (B, C, H, W) -> (B, h, w, d).
    Initialised as a Linear map of the flattened patch (xavier-uniform over (d, C * ph * pw)), bias 0."""

    def __init__(self, in_channels: int, dim: int, patch_size: tuple[int, int]) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        w = self.proj.weight
        with torch.no_grad():
            w.copy_(nn.init.xavier_uniform_(torch.empty(w.shape[0], w[0].numel())).view_as(w))
        nn.init.zeros_(self.proj.bias)

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != self.proj.in_channels:
            raise ValueError(f"images must have shape (B, {self.proj.in_channels}, H, W), got {tuple(images.shape)}")
        H, W = images.shape[-2:]
        ph, pw = self.patch_size
        if H % ph or W % pw:
            raise ValueError(f"image size {H} x {W} is not a multiple of the patch size {ph} x {pw}: resize or crop "
                             f"the images")
        return self.proj(images).permute(0, 2, 3, 1)  # (B, h, w, d)


def interpolate_pos_embed(embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """A position embedding (1, h, w, d) resampled bicubically to (1, h', w', d) (as the published model does when
    the resolution changes: F.interpolate, mode "bicubic", align_corners False)."""
    if tuple(embed.shape[1:3]) == tuple(grid):
        return embed
    out = F.interpolate(embed.permute(0, 3, 1, 2).float(), size=tuple(grid), mode="bicubic", align_corners=False)
    return out.to(embed.dtype).permute(0, 2, 3, 1)


class PosEmbed2d(nn.Module):
    """A learnable position embedding per grid cell, (1, h, w, d), added to the patches; interpolated for another
    grid (another image size). Trunc-normal std 0.02 at the start; no weight decay (its name has "embed")."""

    def __init__(self, grid: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.embed = nn.Parameter(torch.zeros(1, *grid, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.embed, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return x + interpolate_pos_embed(self.embed, tuple(x.shape[1:3]))


class DropPath(nn.Module):
    """Stochastic depth on a residual branch: x + path(x), where in training a random subset of the samples skips
    the branch. As published: exactly max(1, int(B * (1 - p))) samples (drawn without replacement) go through the
    branch and their update is scaled by B / kept, so the expected update is the full one; the others are not
    computed at all (the saving is the point). Identity wrapper (x + path(x)) at p = 0 or in eval mode."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: Tensor, path: Callable[[Tensor], Tensor]) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x + path(x)
        B = x.shape[0]
        keep = max(int(B * (1.0 - self.drop_prob)), 1)
        idx = torch.randperm(B, device=x.device)[:keep]
        update = path(x[idx]).to(x.dtype)
        return torch.index_add(x.flatten(1), 0, idx, update.flatten(1), alpha=B / keep).view_as(x)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class ViLBlock(nn.Module):
    """x + DropPath(L(LN(x))) in one traversal direction. "rowwise_from_bot_right" reverses the token order before
    the layer and restores it after, so the layer reads the grid from the bottom-right corner. With the 2-D
    convolution the reversed sequence is the grid turned by 180 degrees (same h x w)."""

    def __init__(self, cfg: VisionLSTMConfig, direction: str, drop_path: float = 0.0) -> None:
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.direction = direction
        self.reverse = direction == "rowwise_from_bot_right"
        self.norm = LayerNorm(cfg.dim, eps=1e-5, bias=cfg.norm_bias)
        conv = GridConv2d(cfg.inner_dim, cfg.conv_kernel_size, bias=True) if cfg.conv_kind == "2d" else None
        self.layer = MLSTMLayer(cfg.layer_config(), 0, conv=conv, norm_bias=cfg.norm_bias)
        self.drop_path = DropPath(drop_path)

    def _path(self, x: Tensor, form: str) -> Tensor:
        if self.reverse:
            x = x.flip(1)
        y, _ = self.layer(self.norm(x), None, form)
        return y.flip(1) if self.reverse else y

    def forward(self, x: Tensor, grid: tuple[int, int], form: str) -> Tensor:
        """x (B, S, d) in row-major grid order, grid (h, w) -> (B, S, d)."""
        if isinstance(self.layer.conv, GridConv2d):
            self.layer.conv.grid = grid
        return self.drop_path(x, lambda t: self._path(t, form))


class ViLBlockPair(nn.Module):
    """Two ViL blocks: top-left first, then bottom-right first (one "block" of depth, as in ViT-T/S/B)."""

    def __init__(self, cfg: VisionLSTMConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        self.rowwise_from_top_left = ViLBlock(cfg, "rowwise_from_top_left", drop_path)
        self.rowwise_from_bot_right = ViLBlock(cfg, "rowwise_from_bot_right", drop_path)

    def forward(self, x: Tensor, grid: tuple[int, int], form: str) -> Tensor:
        return self.rowwise_from_bot_right(self.rowwise_from_top_left(x, grid, form), grid, form)


def bilateral_pool(x: Tensor, mode: str) -> Tensor:
    """x (B, S, d) -> the first and the last token: side by side (B, 2 d) for "bilateral_flatten", their mean
    (B, d) for "bilateral_avg". The first token is where the bottom-right traversal ends and the last where the
    top-left one ends: together they have seen the whole image in both directions."""
    if mode == "bilateral_flatten":
        return torch.cat([x[:, 0], x[:, -1]], dim=-1)
    if mode == "bilateral_avg":
        return (x[:, 0] + x[:, -1]) / 2
    raise ValueError(f"bilateral pooling mode must be 'bilateral_flatten' or 'bilateral_avg', got {mode!r}")


# -- the model -----------------------------------------------------------------------------------------------------


class VisionLSTM(nn.Module):
    """Vision-LSTM v2 (or v1 with `version=1`); see the module docstring. forward(images (B, C, H, W)) gives logits
    (B, num_classes), or for a feature extractor the patch grid (B, d, h, w) ("to_image") or tokens (B, S, d)."""

    def __init__(self, config: VisionLSTMConfig) -> None:
        super().__init__()
        if not isinstance(config, VisionLSTMConfig):
            raise TypeError(f"config must be a VisionLSTMConfig, got {type(config).__name__}")
        self.config = cfg = config
        self.patch_embed = PatchEmbed(cfg.in_channels, cfg.dim, cfg.patch_size)
        self.pos_embed = PosEmbed2d(cfg.grid, cfg.dim)
        rates = (torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist() if cfg.drop_path_decay
                 else [cfg.drop_path_rate] * cfg.depth)
        self.blocks = nn.ModuleList(ViLBlockPair(cfg, r) for r in rates)
        v2, legacy = cfg.version == 2, cfg.legacy_norm
        # before pooling: v2 always ((1 + w), bias, eps 1e-6); v1 only as its legacy norm ((1 + w), no bias)
        self.norm = (LayerNorm(cfg.dim, eps=1e-6, bias=cfg.norm_bias) if v2
                     else LayerNorm(cfg.dim, eps=1e-5, bias=False) if legacy else nn.Identity())
        # after pooling: a plain LayerNorm (weight 1, bias 0); v2 only as its legacy norm, v1 always (eps 1e-6)
        norm_dim = cfg.head_dim if not cfg.features_only else cfg.dim
        self.head_norm = (LayerNorm(norm_dim, eps=1e-5, bias=True, residual_weight=False) if v2 and legacy
                          else LayerNorm(norm_dim, eps=1e-6, bias=True, residual_weight=False) if not v2
                          else nn.Identity())
        self.head = None if cfg.features_only else nn.Linear(cfg.head_dim, cfg.num_classes)
        if self.head is not None:
            nn.init.trunc_normal_(self.head.weight, std=2e-5)
            nn.init.zeros_(self.head.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameter names the published recipe does not decay (timm's convention)."""
        return {"pos_embed.embed"}

    def _form(self, form: str | None) -> str:
        if form is not None:
            return form
        return self.config.form if torch.is_grad_enabled() else self.config.inference_form

    def tokens(self, images: Tensor, form: str | None = None) -> tuple[Tensor, tuple[int, int]]:
        """images (B, C, H, W) -> the tokens after the last block, (B, S, d), and the grid (h, w)."""
        x = self.pos_embed(self.patch_embed(images))  # (B, h, w, d)
        B, h, w, d = x.shape
        x = x.reshape(B, h * w, d)
        form = self._form(form)
        for pair in self.blocks:
            x = pair(x, (h, w), form)
        return self.norm(x), (h, w)

    def features(self, images: Tensor, to_image: bool = True, form: str | None = None) -> Tensor:
        """The patch grid after the blocks and the pre-pooling norm: (B, d, h, w), or tokens (B, S, d) with
        to_image=False. For dense tasks (segmentation, detection) with any model, classifier or not."""
        x, (h, w) = self.tokens(images, form)
        if self.config.features_only:
            x = self.head_norm(x)
        return x.transpose(1, 2).reshape(x.shape[0], -1, h, w) if to_image else x

    def forward(self, images: Tensor, form: str | None = None) -> Tensor:
        """images (B, C, H, W) -> logits (B, num_classes) (classifier) or features (feature extractor). `form`
        overrides the mLSTM form (default: config.form with gradients, config.inference_form without)."""
        cfg = self.config
        if cfg.features_only:
            return self.features(images, to_image=cfg.pooling == "to_image", form=form)
        x, _ = self.tokens(images, form)
        return self.head(self.head_norm(bilateral_pool(x, cfg.pooling)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["VisionLSTMConfig", "VisionLSTM", "VIL_PRESETS", "vil_config", "PatchEmbed", "PosEmbed2d", "DropPath",
           "ViLBlock", "ViLBlockPair", "bilateral_pool", "interpolate_pos_embed", "count_parameters", "POOLINGS"]

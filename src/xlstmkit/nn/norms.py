"""Normalisation layers: LayerNorm, RMSNorm and the head-wise LayerNorm, with one rule for their learned scale.

Every norm here computes `normalise(x) * scale + bias` (bias optional). Two conventions for the scale are in use and
both are supported by one parameter, `residual_weight`:

- residual (the NeurIPS xLSTM): the stored weight w starts at 0 and the scale is (1 + w). Weight decay then pulls the
  scale towards 1, not towards 0.
- plain (xLSTM-7B, transformers' layout): the stored weight w starts at 1 and is the scale itself.

`force_float32` computes the normalisation (the reduction) in float32 and casts back to the input dtype before the
scale, as the 7B model does for bf16 weights. Without it the scale is fused into the normalisation kernel where torch
has one. See docs/blocks.md for where each norm sits in the blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _reduced(norm_fn, x: Tensor, force_float32: bool, *args) -> Tensor:
    """norm_fn(x, *args), in float32 and cast back to x's dtype when force_float32 (else in x's dtype, or in the
    dtype autocast gives the norm)."""
    return norm_fn(x.float(), *args).to(x.dtype) if force_float32 else norm_fn(x, *args)


class _ScaledNorm(nn.Module):
    """The shared part: weight (and optional bias) of `num_features` channels, the scale rule, the float32 option."""

    def __init__(self, num_features: int, eps: float, bias: bool, residual_weight: bool, force_float32: bool) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.residual_weight, self.force_float32 = residual_weight, force_float32
        self.weight = nn.Parameter(torch.empty(num_features))
        self.bias = nn.Parameter(torch.empty(num_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Scale 1 at the start: w = 0 for the residual weight, w = 1 for the plain one; bias 0."""
        nn.init.zeros_(self.weight) if self.residual_weight else nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def scale(self) -> Tensor:
        """The effective scale: 1 + w (residual weight) or w (plain weight)."""
        return 1.0 + self.weight if self.residual_weight else self.weight

    def _affine(self, y: Tensor) -> Tensor:
        """y * scale (+ bias), y a fresh normalised tensor: scaled in place when no autograd graph is recorded and
        the dtypes agree (a fresh buffer of several MB costs page faults that can exceed the arithmetic)."""
        scale = self.scale()
        if not torch.is_grad_enabled() and y.dtype == scale.dtype:
            y = y.mul_(scale)
            return y if self.bias is None else y.add_(self.bias)
        y = y * scale
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, bias={self.bias is not None}, "
                f"residual_weight={self.residual_weight}, force_float32={self.force_float32}")


class LayerNorm(_ScaledNorm):
    """LayerNorm over the last dimension: (x - mean) / sqrt(var + eps) * scale (+ bias). Residual weight by default
    (the NeurIPS blocks), bias off in the paper's models."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = False, *, residual_weight: bool = True,
                 force_float32: bool = False) -> None:
        super().__init__(dim, eps, bias, residual_weight, force_float32)

    def forward(self, x: Tensor) -> Tensor:
        if not self.force_float32:  # one fused kernel, scale and bias included
            return F.layer_norm(x, (x.shape[-1],), self.scale(), self.bias, self.eps)
        return self._affine(_reduced(F.layer_norm, x, True, (x.shape[-1],), None, None, self.eps))


class RMSNorm(_ScaledNorm):
    """x / sqrt(mean(x^2) + eps) * scale (+ bias): the 7B model's pre-norm. Plain weight and a float32 reduction by
    default (xLSTM-7B; a pre-norm LayerNorm diverged in its 1.4B ablation)."""

    def __init__(self, dim: int, eps: float = 1e-6, bias: bool = False, *, residual_weight: bool = False,
                 force_float32: bool = True) -> None:
        super().__init__(dim, eps, bias, residual_weight, force_float32)

    def forward(self, x: Tensor) -> Tensor:
        if not self.force_float32 and self.bias is None and x.dtype == self.weight.dtype:
            return F.rms_norm(x, (x.shape[-1],), self.scale(), self.eps)  # one fused kernel, scale included
        # F.rms_norm: one fused pass forward and backward (the composite x * rsqrt(mean(x^2) + eps) takes several)
        return self._affine(_reduced(F.rms_norm, x, self.force_float32, (x.shape[-1],), None, self.eps))


class MultiHeadLayerNorm(_ScaledNorm):
    """Head-wise LayerNorm (a GroupNorm with one group per head): x (..., NH, DH) is normalised over each head's DH
    channels separately (no mixing across heads), flattened to (..., NH * DH) and scaled per channel. Residual weight
    by default (NeurIPS blocks); the 7B block uses the plain one."""

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-5, bias: bool = False, *,
                 residual_weight: bool = True, force_float32: bool = False) -> None:
        self.num_heads, self.head_dim = num_heads, head_dim
        super().__init__(num_heads * head_dim, eps, bias, residual_weight, force_float32)

    def forward(self, x: Tensor) -> Tensor:
        # F.layer_norm over each head without an affine part (fused; a var/mean composite is several times slower)
        y = _reduced(F.layer_norm, x, self.force_float32, (self.head_dim,), None, None, self.eps)
        return self._affine(y.flatten(-2))

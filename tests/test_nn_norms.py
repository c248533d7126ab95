"""The norms of nn/norms.py against their formulas: LayerNorm, RMSNorm and the head-wise LayerNorm, each with the
residual (1 + w) and the plain w scale, with and without bias, with the float32 reduction for low-precision inputs."""

from __future__ import annotations

import pytest
import torch

from xlstmkit.nn.norms import LayerNorm, MultiHeadLayerNorm, RMSNorm


def layer_norm(x, eps):
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)


def rms_norm(x, eps):
    return x / torch.sqrt(x.square().mean(-1, keepdim=True) + eps)


def build(kind: str, residual: bool, bias: bool, force_float32: bool = False):
    kw = dict(bias=bias, residual_weight=residual, force_float32=force_float32)
    if kind == "layer":
        return LayerNorm(12, eps=1e-5, **kw), lambda x: layer_norm(x, 1e-5)
    if kind == "rms":
        return RMSNorm(12, eps=1e-6, **kw), lambda x: rms_norm(x, 1e-6)
    return MultiHeadLayerNorm(3, 4, eps=1e-5, **kw), lambda x: layer_norm(x, 1e-5).flatten(-2)


def shaped_input(kind: str, dtype=torch.float64) -> torch.Tensor:
    shape = (2, 5, 3, 4) if kind == "heads" else (2, 5, 12)
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(dtype) * 3 + 1


@pytest.mark.parametrize("kind", ["layer", "rms", "heads"])
@pytest.mark.parametrize("residual", [True, False], ids=["residual", "plain"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("force_float32", [False, True])
def test_norm_matches_its_formula_and_starts_at_scale_one(kind, residual, bias, force_float32):
    norm, formula = build(kind, residual, bias, force_float32)
    norm = norm.double()
    assert torch.equal(norm.scale(), torch.ones(12, dtype=torch.float64)), "scale 1 at init"
    assert torch.equal(norm.weight, torch.full((12,), 0.0 if residual else 1.0, dtype=torch.float64))
    with torch.no_grad():
        norm.weight.normal_()
        if bias:
            norm.bias.normal_()
    x = shaped_input(kind)
    scale = 1 + norm.weight if residual else norm.weight
    expected = formula(x) * scale + (norm.bias if bias else 0)
    tol = 1e-5 if force_float32 else 1e-12  # force_float32 reduces a float64 input in float32
    torch.testing.assert_close(norm(x), expected, rtol=tol, atol=tol)
    with torch.no_grad():  # without autograd the scale is applied in place: same numbers, input untouched
        x_before = x.clone()
        torch.testing.assert_close(norm(x), expected, rtol=tol, atol=tol)
        assert torch.equal(x, x_before)


@pytest.mark.parametrize("kind", ["layer", "rms", "heads"])
def test_float32_reduction_for_bf16_inputs(kind):
    """force_float32 normalises a bf16 input in float32 and casts back before the scale: the result is the float32
    normalisation rounded once to bf16, then scaled."""
    norm, formula = build(kind, residual=False, bias=False, force_float32=True)
    x = shaped_input(kind, torch.bfloat16)
    y = norm(x)
    assert y.dtype == torch.float32  # bf16 normalised values times the float32 scale
    expected = formula(x.double()).to(torch.bfloat16).float()
    torch.testing.assert_close(y, expected, rtol=2**-8, atol=1e-6)  # one bf16 rounding


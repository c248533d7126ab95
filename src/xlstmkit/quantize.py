"""Lower-precision weights for serving: bfloat16 weights, and int8 weight-only quantisation with one scale per output
channel (docs/inference.md, "Weights").

    from xlstmkit.quantize import quantize_
    quantize_(model, "int8")        # large nn.Linear layers -> Int8Linear (in place); states stay float32
    quantize_(model, "bf16")        # every parameter in bfloat16 (model.to(torch.bfloat16)); states stay float32
    tokens = model.generate(prompt, 100)   # the native decoders read the int8 / bf16 weights directly

What the weights mean. bf16: each weight rounded to the nearest bfloat16 (8 bits of mantissa). int8: for output row
o, s_o = max_i |W[o, i]| / 127 and q[o, i] = round(W[o, i] / s_o) in [-127, 127]; the layer computes
x @ (q * s)^T. In both, the native decoders (ops/native/decode.c) widen each weight to float32 as they load it and
accumulate in float32, and every recurrent state stays float32: only the weights' storage (and the bytes a token
has to read) shrinks, by 2x and 4x.

Which layers: `Int8Linear` replaces the nn.Linear layers with at least `min_weights` weights (default 2**14): the
up- and down-projections, the feed-forward layers and the output head, which hold almost all of a model's bytes.
The gate projections of the paper's model (a few rows), its head-wise 4 x 4 maps, the convolutions, norms and the
sLSTM's recurrent matrices stay in float32: they are small, and the gates and the recurrence are where rounding
would accumulate over time. A head tied to the embedding is left alone (its matrix is also the embedding).

On the PyTorch path (the reference and the fallback, and the prefill) an `Int8Linear` computes with its weight
dequantised on the fly (`weight` is a property that returns q * s in float32), so every code path that reads
`layer.weight` works unchanged and computes exactly the function the native decoder computes, to the order of
the additions. No maintained PyTorch path does weight-only int8 on a CPU without extra packages
(torch.ao's dynamic quantisation also quantises the activations, which costs accuracy; torchao is an extra
dependency), so the int8 arithmetic is xlstmkit's own kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WEIGHT_DTYPES = ("float32", "bf16", "int8")
_ALIASES = {"bfloat16": "bf16", "fp32": "float32", "float": "float32"}


class Int8Linear(nn.Module):
    """y = x @ (qweight * scale[:, None])^T + bias: an nn.Linear whose weight is stored as int8 with one float32
    scale per output row (symmetric, 127 levels each side). `weight` returns the dequantised float32 matrix, so code
    that reads `.weight` works as with the nn.Linear it replaces."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """The int8 form of `linear` (its weight quantised per output row; its bias kept in float32)."""
        w = linear.weight.detach().float()
        q, scale = quantize_rows(w)
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device=w.device)
        with torch.no_grad():
            new.qweight.copy_(q)
            new.scale.copy_(scale)
            if linear.bias is not None:
                new.bias.copy_(linear.bias.detach().float())
        return new

    @property
    def weight(self) -> Tensor:
        """The dequantised weight (out_features, in_features), float32 (a new tensor on every access)."""
        return self.qweight.float() * self.scale[:, None]

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        bias = self.bias
        if x.dtype != w.dtype:
            w = w.to(x.dtype)
            bias = None if bias is None else bias.to(x.dtype)
        return F.linear(x, w, bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_rows(w: Tensor) -> tuple[Tensor, Tensor]:
    """w (O, I) float -> (q (O, I) int8, scale (O,) float32) with w ~= q * scale[:, None]: scale = max|w_row| / 127
    (1 for an all-zero row), q = round(w / scale) (half to even), which lies in [-127, 127]. Non-finite weights are
    a ValueError (a scale cannot represent them)."""
    if not torch.isfinite(w).all():
        raise ValueError("cannot quantise a weight matrix that holds inf or NaN")
    w = w.float()
    amax = w.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def normalise_weight_dtype(dtype: str) -> str:
    """'float32', 'bf16' or 'int8' from a user's spelling (bfloat16 = bf16); ValueError otherwise."""
    name = _ALIASES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if name not in WEIGHT_DTYPES:
        raise ValueError(f"weight dtype must be one of {WEIGHT_DTYPES} (or 'bfloat16'), got {dtype!r}")
    return name


def quantize_(model: nn.Module, dtype: str, *, min_weights: int = 2**14) -> nn.Module:
    """Convert `model`'s weights for serving, in place, and return it: "int8" replaces every nn.Linear with at least
    `min_weights` weights by an `Int8Linear` (per-output-channel scales); "bf16" casts every parameter to bfloat16;
    "float32" casts every parameter to float32. Recurrent states stay float32 in every case. Cached decoding
    weights are rebuilt on the next step (they are keyed by the parameters)."""
    name = normalise_weight_dtype(dtype)
    if name == "float32":
        return model.float()
    if name == "bf16":
        return model.to(torch.bfloat16)
    tied = _tied_weights(model)
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if (type(child) is nn.Linear and child.weight.numel() >= min_weights
                    and id(child.weight) not in tied):
                setattr(parent, child_name, Int8Linear.from_linear(child))
    clear = getattr(model, "clear_decode_cache", None)
    if clear is not None:
        clear()
    return model


def _tied_weights(model: nn.Module) -> set[int]:
    """ids of parameters that more than one module holds (a head tied to the embedding)."""
    seen: dict[int, int] = {}
    for m in model.modules():
        for p in m._parameters.values():
            if p is not None:
                seen[id(p)] = seen.get(id(p), 0) + 1
    return {k for k, n in seen.items() if n > 1}


def weight_bytes(model: nn.Module) -> int:
    """The bytes of every parameter and buffer: what a token's pass over the weights reads, at most."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


__all__ = ["Int8Linear", "WEIGHT_DTYPES", "normalise_weight_dtype", "quantize_", "quantize_rows", "weight_bytes"]

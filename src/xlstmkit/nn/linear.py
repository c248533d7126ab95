"""Block-diagonal ("head-wise") linear map: the input is split into NH groups, each mapped by its own matrix.

Why the compute path below: with tiny blocks (the paper's mLSTM uses 4 x 4 blocks, 128 of them) a batched matmul
with one batch entry per head is dominated by layout copies and by the matrix library's per-block overhead, not by
arithmetic. Grouping g neighbouring heads into one dense (g*DIN, g*DOUT) block-diagonal matrix multiplies a few zeros
(g times the FLOPs of the true map, still negligible) but gives blocks of ~16 columns that the library handles well:
forward plus backward of the 128 x (4 x 4) map over 2048 rows takes a third of the per-head time (fp32 3.9 vs
12 ms, bf16 2.6 vs 7.1 ms, one thread). The dense group matrix is built per call from the stored weight, and the
backward pass returns the gradient of the stored (NH, DOUT, DIN) weight: the parameter layout never changes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Dense group width (columns of one group block) to aim for: wide enough for the matmul library, narrow enough that
# the zeros of the block-diagonal group matrix cost little.
GROUP_WIDTH = 16
# Below this many rows (decode steps, short prompts) the per-call cost of building group matrices is not repaid.
GROUP_MIN_ROWS = 64


def group_size(num_heads: int, block_in: int, block_out: int) -> int:
    """How many heads to merge into one dense block: the largest divisor g of num_heads with
    g * max(block_in, block_out) <= GROUP_WIDTH (1 when the blocks are already that wide)."""
    width = max(block_in, block_out)
    best = 1
    for g in range(1, num_heads + 1):
        if g * width > GROUP_WIDTH:
            break
        if num_heads % g == 0:
            best = g
    return best


def grouped_block_diag(weight: Tensor, g: int) -> Tensor:
    """weight (NH, DOUT, DIN) -> (NH/g, g*DIN, g*DOUT): g neighbouring heads' transposed blocks on the diagonal of
    one dense matrix per group, zeros elsewhere (differentiable; its gradient keeps only the diagonal blocks)."""
    if g == 1:
        return weight.transpose(1, 2)  # a view: no copy per call (the decode path)
    NH, DOUT, DIN = weight.shape
    G = NH // g
    wt = weight.view(G, g, DOUT, DIN).transpose(-1, -2)  # (G, g, DIN, DOUT)
    eye = torch.eye(g, dtype=weight.dtype, device=weight.device)
    return (wt[:, :, :, None, :] * eye[None, :, None, :, None]).reshape(G, g * DIN, g * DOUT)  # (G, g, DIN, g, DOUT)


def _group_major(t: Tensor, G: int) -> Tensor:
    """t (N, G*d) -> (G, N, d). Half-precision batched matmuls want contiguous operands (given a strided batch the
    library copies it itself, several times slower); single and double precision ones read the strided view at
    full speed, and a copy would only cost time (measured: fp32 fwd+bwd 3.9 ms strided vs 5.1 ms copied)."""
    N, C = t.shape
    tg = t.reshape(N, G, C // G).transpose(0, 1)
    return tg.contiguous() if t.element_size() < 4 else tg


def _grouped_matmul(x2: Tensor, wg: Tensor, bias: Tensor | None) -> Tensor:
    """x2 (N, G*gDIN), wg (G, gDIN, gDOUT), bias (G*gDOUT,) or None -> y (N, G*gDOUT)."""
    N = x2.shape[0]
    G, gDIN, gDOUT = wg.shape
    xg = _group_major(x2, G)
    if bias is None:
        y = torch.bmm(xg, wg)  # (G, N, gDOUT)
    else:
        y = torch.baddbmm(bias.view(G, 1, gDOUT), xg, wg)
    return y.transpose(0, 1).reshape(N, G * gDOUT)


def _diagonal_blocks(gwg: Tensor, g: int) -> Tensor:
    """The inverse of grouped_block_diag on a gradient: (G, g*DIN, g*DOUT) -> (NH, DOUT, DIN), the diagonal blocks."""
    G, gDIN, gDOUT = gwg.shape
    DIN, DOUT = gDIN // g, gDOUT // g
    blocks = torch.diagonal(gwg.view(G, g, DIN, g, DOUT), dim1=1, dim2=3)  # (G, DIN, DOUT, g)
    return blocks.permute(0, 3, 2, 1).reshape(G * g, DOUT, DIN)


class _HeadwiseMatmul(torch.autograd.Function):
    """y = x2 @ blockdiag(weight)^T + bias with explicit gradients, so that every batched matmul of the backward
    pass gets the operand layout its dtype runs fastest with (see _group_major; autograd's backward of the strided
    forward hands bf16 matmuls strided batches: 4.0 vs 2.6 ms fwd+bwd at 2048 x 128 heads of 4 x 4), and the weight
    gradient is read off the diagonal blocks of the group gradient (no identity-mask backward)."""

    @staticmethod
    def forward(ctx, x2: Tensor, weight: Tensor, bias: Tensor | None, g: int) -> Tensor:
        wg = grouped_block_diag(weight, g)  # (G, g*DIN, g*DOUT)
        y = _grouped_matmul(x2, wg, bias)
        ctx.save_for_backward(x2, wg)  # x2, not its grouped copy (half precision): no extra activation memory
        ctx.g = g
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        x2, wg = ctx.saved_tensors
        G, gDIN, gDOUT = wg.shape
        N = x2.shape[0]
        gyg = _group_major(gy, G)  # (G, N, gDOUT)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.bmm(gyg, wg.transpose(1, 2)).transpose(0, 1).reshape(N, G * gDIN)
        if ctx.needs_input_grad[1]:
            xg = _group_major(x2, G)  # (G, N, gDIN)
            gw = _diagonal_blocks(torch.bmm(xg.transpose(1, 2), gyg), ctx.g)
        if ctx.needs_input_grad[2]:
            gb = gy.sum(0)
        return gx, gw, gb, None


def headwise_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (..., NH*DIN), weight (NH, DOUT, DIN) (one nn.Linear-layout matrix per head), bias (NH*DOUT,) or None ->
    (..., NH*DOUT). Under autocast the map runs in the autocast dtype, like nn.Linear (bias included)."""
    NH, DOUT, DIN = weight.shape
    if x.shape[-1] != NH * DIN:
        raise ValueError(f"x must have last dimension {NH * DIN} (num_heads * block input size), got {tuple(x.shape)}")
    lead = x.shape[:-1]
    N = x.numel() // (NH * DIN) if x.dim() != 2 else x.shape[0]
    if N < GROUP_MIN_ROWS:  # few rows (a decode step): one plain batched matmul per head, the fewest calls
        xh = x.reshape(NH, 1, DIN) if N == 1 else x.reshape(N, NH, DIN).transpose(0, 1)  # (NH, N, DIN)
        if bias is None:
            y = torch.bmm(xh, weight.transpose(1, 2))  # (NH, N, DOUT); autocast and autograd as for any bmm
        else:
            y = torch.baddbmm(bias.view(NH, 1, DOUT), xh, weight.transpose(1, 2))
        return (y if N == 1 else y.transpose(0, 1)).reshape(*lead, NH * DOUT)
    x2 = x.reshape(N, NH * DIN)
    g = group_size(NH, DIN, DOUT)
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):  # cast as autocast casts nn.Linear's arguments, then compute as is
        dtype = torch.get_autocast_dtype(device_type)
        x2, weight, bias = (t if t is None or t.dtype == torch.float64 else t.to(dtype) for t in (x2, weight, bias))
        with torch.autocast(device_type, enabled=False):
            return _headwise(x2, weight, bias, g).view(*lead, NH * DOUT)
    return _headwise(x2, weight, bias, g).view(*lead, NH * DOUT)


def _headwise(x2: Tensor, weight: Tensor, bias: Tensor | None, g: int) -> Tensor:
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x2, weight, bias)):
        return _HeadwiseMatmul.apply(x2, weight, bias, g)
    return _grouped_matmul(x2, grouped_block_diag(weight, g), bias)


def headwise_linear_stack(xs: list[Tensor], layers: list[HeadwiseLinear]) -> Tensor:
    """Several head-wise maps of one shape applied to their inputs in one batched matmul: xs[j] (N, NH*DIN) ->
    (L, N, NH*DOUT), row j = layers[j](xs[j]). For a few rows (a decode step), where the calls, not the arithmetic,
    cost the time; the result's rows are also cat[...] along the features when N == 1 (a view, no copy)."""
    if len(xs) != len(layers) or not layers:
        raise ValueError(f"xs and layers must be non-empty and of one length, got {len(xs)} and {len(layers)}")
    NH, DOUT, DIN = layers[0].weight.shape
    L, N = len(layers), xs[0].shape[0]
    w = torch.stack([m.weight for m in layers]).view(L * NH, DOUT, DIN)
    x = torch.stack(xs)  # (L, N, NH*DIN)
    xh = x.view(L * NH, 1, DIN) if N == 1 else x.view(L, N, NH, DIN).transpose(1, 2).reshape(L * NH, N, DIN)
    biases = [m.bias for m in layers]
    if all(b is None for b in biases):
        y = torch.bmm(xh, w.transpose(1, 2))  # (L*NH, N, DOUT)
    elif all(b is not None for b in biases):
        y = torch.baddbmm(torch.stack(biases).view(L * NH, 1, DOUT), xh, w.transpose(1, 2))
    else:
        raise ValueError("layers must all have a bias or all have none")
    if N == 1:
        return y.view(L, 1, NH * DOUT)
    return y.view(L, NH, N, DOUT).transpose(1, 2).reshape(L, N, NH * DOUT)


class HeadwiseLinear(nn.Module):
    """x (..., NH * DIN) -> (..., NH * DOUT) with weight (NH, DOUT, DIN) (one nn.Linear-layout matrix per head)."""

    def __init__(self, in_features: int, out_features: int, num_heads: int, bias: bool = False) -> None:
        super().__init__()
        if in_features % num_heads or out_features % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide in_features ({in_features}) and out_features "
                             f"({out_features})")
        self.num_heads = num_heads
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(num_heads, out_features // num_heads, in_features // num_heads))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.normal_(self.weight, std=in_features**-0.5)

    def forward(self, x: Tensor) -> Tensor:
        return headwise_linear(x, self.weight, self.bias)

    def compose(self, m: Tensor) -> Tensor:
        """The matrix of x -> (self(x) - bias) @ m: m (out_features, K) -> (in_features, K), i.e. W_blockdiag^T @ m.
        Lets a later linear map be folded into this one (cheap: parameter-sized, no rows of data)."""
        NH, DOUT, DIN = self.weight.shape
        if m.dim() != 2 or m.shape[0] != NH * DOUT:
            raise ValueError(f"m must have shape ({NH * DOUT}, K), got {tuple(m.shape)}")
        return torch.bmm(self.weight.transpose(1, 2), m.reshape(NH, DOUT, -1)).reshape(NH * DIN, -1)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, num_heads={self.num_heads}, "
                f"bias={self.bias is not None}")

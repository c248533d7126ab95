"""Block-diagonal ("head-wise") linear map: the input is split into NH groups, each mapped by its own matrix.

Why the compute path below: with tiny blocks (the paper's mLSTM uses 4 x 4 blocks, 128 of them) a batched matmul
with one batch entry per head is dominated by layout copies and by the matrix library's per-block overhead, not by
arithmetic. Grouping g neighbouring heads into one dense (g*DIN, g*DOUT) block-diagonal matrix multiplies a few zeros
(g times the FLOPs of the true map, still negligible) but gives blocks of ~16 columns that the library handles well:
forward plus backward of the 128 x (4 x 4) map over 2048 rows takes a third of the per-head time (fp32 3.9 vs
12 ms, bf16 2.6 vs 7.1 ms, one thread). The dense group matrix is built per call from the stored weight, and the
backward pass returns the gradient of the stored (NH, DOUT, DIN) weight: the parameter layout never changes.
Several maps of one input (the mLSTM's q and k) share one such call (`headwise_linear_shared`); several maps of
different inputs at a decode step share one per-head batched matmul (`headwise_linear_stack`).
"""

from __future__ import annotations

import contextlib

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


def _grouped_weight(weights: tuple[Tensor, ...], g: int) -> Tensor:
    """The maps' group matrices side by side: (G, g*DIN, n * g*DOUT)."""
    wgs = [grouped_block_diag(w, g) for w in weights]
    return wgs[0] if len(wgs) == 1 else torch.cat(wgs, dim=2)


def _grouped_bias(biases: tuple[Tensor, ...], G: int) -> Tensor:
    """The maps' biases in the layout of the grouped output: (G, 1, n * gDOUT)."""
    bs = [b.view(G, 1, -1) for b in biases]
    return bs[0] if len(bs) == 1 else torch.cat(bs, dim=2)


def _grouped_matmul(x2: Tensor, wg: Tensor, bias: Tensor | None, n: int) -> tuple[Tensor, ...]:
    """x2 (N, G*gDIN), wg (G, gDIN, n*gDOUT), bias (G, 1, n*gDOUT) or None -> n outputs (N, G*gDOUT)."""
    N = x2.shape[0]
    G = wg.shape[0]
    gDOUT = wg.shape[2] // n
    xg = _group_major(x2, G)
    y = torch.bmm(xg, wg) if bias is None else torch.baddbmm(bias, xg, wg)  # (G, N, n*gDOUT)
    return tuple(y[..., j * gDOUT:(j + 1) * gDOUT].transpose(0, 1).reshape(N, G * gDOUT) for j in range(n))


def _diagonal_blocks(gwg: Tensor, g: int) -> Tensor:
    """The inverse of grouped_block_diag on a gradient: (G, g*DIN, g*DOUT) -> (NH, DOUT, DIN), the diagonal blocks."""
    G, gDIN, gDOUT = gwg.shape
    DIN, DOUT = gDIN // g, gDOUT // g
    blocks = torch.diagonal(gwg.view(G, g, DIN, g, DOUT), dim1=1, dim2=3)  # (G, DIN, DOUT, g)
    return blocks.permute(0, 3, 2, 1).reshape(G * g, DOUT, DIN)


class _HeadwiseMatmul(torch.autograd.Function):
    """ys[j] = x2 @ blockdiag(weights[j])^T + biases[j] for n maps of one input, in one batched matmul, with
    explicit gradients: every batched matmul of the backward pass gets the operand layout its dtype runs fastest
    with (see _group_major; autograd's backward of the strided forward hands bf16 matmuls strided batches: 4.0 vs
    2.6 ms fwd+bwd at 2048 x 128 heads of 4 x 4), the maps share one input-gradient matmul (no gradient sum), and
    the weight gradients are read off the diagonal blocks of the group gradient. Arguments after x2: g, n, the n
    weights, then the n biases (all None or all tensors)."""

    @staticmethod
    def forward(ctx, x2: Tensor, g: int, n: int, *params: Tensor | None) -> Tensor | tuple[Tensor, ...]:
        weights, biases = params[:n], params[n:]
        wg = _grouped_weight(weights, g)  # (G, g*DIN, n*g*DOUT)
        bias = None if biases[0] is None else _grouped_bias(biases, wg.shape[0])
        ys = _grouped_matmul(x2, wg, bias, n)
        ctx.save_for_backward(x2, wg)  # x2, not its grouped copy (half precision): no extra activation memory
        ctx.g, ctx.n = g, n
        return ys[0] if n == 1 else ys

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *gys: Tensor | None) -> tuple[Tensor | None, ...]:
        x2, wg = ctx.saved_tensors
        g, n = ctx.g, ctx.n
        G, gDIN, gDOUT = wg.shape[0], wg.shape[1], wg.shape[2] // n
        N = x2.shape[0]
        gys = [torch.zeros(N, G * gDOUT, dtype=wg.dtype, device=wg.device) if gy is None else gy for gy in gys]
        gy_all = gys[0] if n == 1 else torch.cat([gy.view(N, G, gDOUT) for gy in gys], dim=2).view(N, -1)
        gyg = _group_major(gy_all, G)  # (G, N, n*gDOUT)
        needs = ctx.needs_input_grad
        gx = None
        if needs[0]:
            gx = torch.bmm(gyg, wg.transpose(1, 2)).transpose(0, 1).reshape(N, G * gDIN)
        gws = [None] * n
        if any(needs[3:3 + n]):
            gwg = torch.bmm(_group_major(x2, G).transpose(1, 2), gyg)  # (G, gDIN, n*gDOUT)
            gws = [_diagonal_blocks(gwg[..., j * gDOUT:(j + 1) * gDOUT], g) if needs[3 + j] else None
                   for j in range(n)]
        gbs = [gy.sum(0) if needs[3 + n + j] else None for j, gy in enumerate(gys)]
        return (gx, None, None, *gws, *gbs)


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
    return _headwise_grouped(x, (weight,), (bias,))[0]


def headwise_linear_shared(x: Tensor, layers: list[HeadwiseLinear]) -> list[Tensor]:
    """[layer(x) for layer in layers] for head-wise maps of one shape on one input, as one batched matmul over the
    concatenated group matrices (forward and backward): measured 7.1 vs 9.3 ms fp32, 2.6 vs 3.9 ms bf16 for the
    mLSTM's q and k (2048 rows, 128 heads of 4 x 4, fwd+bwd)."""
    shapes = {tuple(m.weight.shape) for m in layers}
    if not layers or len(shapes) != 1 or len({m.bias is None for m in layers}) != 1:
        raise ValueError("layers must be a non-empty list of HeadwiseLinear of one shape, all with or all without bias")
    NH, DOUT, DIN = layers[0].weight.shape
    if x.shape[-1] != NH * DIN:
        raise ValueError(f"x must have last dimension {NH * DIN} (num_heads * block input size), got {tuple(x.shape)}")
    if x.numel() // (NH * DIN) < GROUP_MIN_ROWS:
        return [m(x) for m in layers]
    return _headwise_grouped(x, tuple(m.weight for m in layers), tuple(m.bias for m in layers))


def _headwise_grouped(x: Tensor, weights: tuple[Tensor, ...], biases: tuple[Tensor | None, ...]) -> list[Tensor]:
    """The grouped path for at least GROUP_MIN_ROWS rows: autocast casts, then the Function (with autograd) or
    its forward (without)."""
    NH, DOUT, DIN = weights[0].shape
    lead = x.shape[:-1]
    x2 = x.reshape(-1, NH * DIN)
    g, n = group_size(NH, DIN, DOUT), len(weights)
    params = (*weights, *biases)
    device_type = x.device.type
    autocast = torch.is_autocast_enabled(device_type)
    if autocast:  # cast as autocast casts nn.Linear's arguments, then compute as is
        dtype = torch.get_autocast_dtype(device_type)
        x2, *params = (t if t is None or t.dtype == torch.float64 else t.to(dtype) for t in (x2, *params))
    with torch.autocast(device_type, enabled=False) if autocast else contextlib.nullcontext():
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x2, *params)):
            ys = _HeadwiseMatmul.apply(x2, g, n, *params)
            ys = (ys,) if n == 1 else ys
        else:
            wg = _grouped_weight(tuple(params[:n]), g)
            bias = None if params[n] is None else _grouped_bias(tuple(params[n:]), wg.shape[0])
            ys = _grouped_matmul(x2, wg, bias, n)
    return [y.view(*lead, NH * DOUT) for y in ys]


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

"""Depthwise causal 1-D convolution that carries its last inputs as state, so a sequence fed in pieces gives the
same output as fed whole."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalConv1d(nn.Module):
    """y_t = b + sum_{j<K} w_j * x_{t-K+1+j}, per channel. x (B, S, D); state (B, K-1, D) holds the K-1 previous
    inputs (zeros at the start of a sequence)."""

    def __init__(self, dim: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        self.dim, self.kernel_size = dim, kernel_size
        self.weight = nn.Parameter(torch.empty(dim, 1, kernel_size))  # (D, 1, K): nn.Conv1d's depthwise layout
        self.bias = nn.Parameter(torch.empty(dim)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the default init of nn.Conv1d for a depthwise kernel: U(-1/sqrt(K), 1/sqrt(K))
        bound = self.kernel_size**-0.5
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def zero_state(self, batch_size: int, dtype=None, device=None) -> Tensor:
        return torch.zeros(batch_size, self.kernel_size - 1, self.dim, dtype=dtype, device=device)

    def step(self, x: Tensor, state: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One time step, x (B, D) and state (B, K-1, D) -> y (B, D), new state (in x's dtype): a weighted sum over
        the window [state, x] (the same numbers as forward on a length-1 sequence). With mask (B,) bool, rows where
        it is False are padding: their state is kept as it was (and their y is 0)."""
        dt = x.dtype
        window = torch.cat([_as(state, dt), x.unsqueeze(1)], dim=1)  # (B, K, D)
        y = torch.linalg.vecdot(window, _as(self.weight, dt).squeeze(1).t(), dim=1)  # (B, D)
        if self.bias is not None:
            y = y + _as(self.bias, dt)
        if mask is None:
            return y, window[:, 1:]
        return y * mask.unsqueeze(-1), torch.where(mask.view(-1, 1, 1), window[:, 1:], _as(state, dt))

    def forward(self, x: Tensor, state: Tensor | None = None, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, S, D) -> y (B, S, D), new state (B, K-1, D) (the last K-1 inputs, in x's dtype).

        mask (B, S) bool, True at real steps: the convolution skips the padding. At a real step the window holds that
        row's previous K-1 real inputs (the state counts as real inputs before the sequence), the new state is the
        last K-1 real inputs, and y is 0 at padded steps. Computed by moving each row's real inputs to the front
        (a stable sort of the positions), convolving that packed sequence and gathering the outputs back."""
        B = x.shape[0]
        if state is None:
            state = self.zero_state(B, x.dtype, x.device)
        xs = torch.cat([_as(state, x.dtype), x], dim=1)  # (B, K-1+S, D)
        w = _as(self.weight, x.dtype).squeeze(1).t()  # (K, D)
        b = None if self.bias is None else _as(self.bias, x.dtype)
        if mask is None:
            return _ShiftedConv.apply(xs, w, b), xs[:, xs.shape[1] - (self.kernel_size - 1):]
        return _masked_conv(xs, w, b, mask)


def _as(t: Tensor, dtype: torch.dtype) -> Tensor:
    """t in `dtype` (a same-dtype `.to` is still an operator call, which the one-token step cannot afford)."""
    return t if t.dtype == dtype else t.to(dtype)


def _masked_conv(xs: Tensor, w: Tensor, b: Tensor | None, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The causal convolution of each row's real inputs only. xs (B, K-1+S, D) = [state, x], w (K, D), mask (B, S)
    bool -> y (B, S, D) (0 at padded steps), new state (B, K-1, D)."""
    B, L, D = xs.shape
    K = w.shape[0]
    real = torch.cat([mask.new_ones(B, K - 1), mask], dim=1)  # (B, L): the state's K-1 entries are real inputs
    order = torch.argsort((~real).to(torch.uint8), dim=1, stable=True)  # real positions first, in time order
    packed = xs.gather(1, order.unsqueeze(-1).expand(B, L, D))  # (B, L, D): row b's real inputs, then its pads
    y_packed = _ShiftedConv.apply(packed, w, b)  # (B, S, D): y_packed[:, r] has the window of real inputs r..r+K-1
    rank = real.long().cumsum(1)[:, K - 1:] - K  # (B, S): index in y_packed of each real step
    y = y_packed.gather(1, rank.clamp_min(0).unsqueeze(-1).expand(B, -1, D)) * mask.unsqueeze(-1).to(xs.dtype)
    n_real = rank[:, -1:] + K  # (B, 1): real inputs in the row, state included (>= K-1)
    last = n_real - (K - 1) + torch.arange(K - 1, device=xs.device)  # (B, K-1): the last K-1 real inputs
    return y, packed.gather(1, last.unsqueeze(-1).expand(B, K - 1, D))


class _ShiftedConv(torch.autograd.Function):
    """y[:, t] = b + sum_j w[j] * xs[:, t + j] over a left-padded input xs (B, K-1+S, D), w (K, D), b (D,) or None.

    K shifted multiply-adds in the (B, S, D) layout: on a CPU about 2-3x faster, forward and backward, than F.conv1d,
    which needs (B, D, S) and a transposed copy on the way in and out. The backward accumulates the input gradient
    in place in one buffer (autograd through the K slices would zero-fill and add K full-size buffers)."""

    @staticmethod
    def forward(ctx, xs: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        K = w.shape[0]
        S = xs.shape[1] - K + 1
        y = xs[:, :S] * w[0] if b is None else torch.addcmul(b, xs[:, :S], w[0])
        for j in range(1, K):
            y.addcmul_(xs[:, j:j + S], w[j])
        ctx.save_for_backward(xs, w)
        ctx.has_bias = b is not None
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        xs, w = ctx.saved_tensors
        K, S = w.shape[0], dy.shape[1]
        dxs = torch.zeros_like(xs)
        dw = torch.empty_like(w)
        for j in range(K):
            dxs[:, j:j + S].addcmul_(dy, w[j])
            dw[j] = (dy * xs[:, j:j + S]).sum((0, 1))
        return dxs, dw, dy.sum((0, 1)) if ctx.has_bias else None


class GridConv2d(nn.Module):
    """Depthwise 2-D convolution over a sequence that is a row-major flattened grid (Vision-LSTM's patch grid):
    x (B, S, D) with S = H * W is read as an image (B, D, H, W), convolved per channel with a K x K kernel
    (K odd, zero padding K // 2, so the grid keeps its size) and flattened back:

        y[b, r * W + c, d] = bias[d] + sum_{i, j < K} w[d, 0, i, j] * x[b, (r + i - K//2) * W + (c + j - K//2), d]

    The grid (H, W) is set by the model before each call (`self.grid`); None means a square grid. It has the
    interface of `CausalConv1d` (`forward(x, state, mask) -> (y, state)`), so `MLSTMLayer(conv=GridConv2d(...))`
    runs it in place of the causal convolution. It is not causal and carries no state (the returned state is empty,
    (B, 0, D)); masks are not supported. A sequence traversed backwards (x.flip(1)) is the grid turned by 180
    degrees: the convolution then sees the turned image, which is what Vision-LSTM's second block of a pair does.

    Parameters in nn.Conv2d's depthwise layout, weight (D, 1, K, K), with its default initialisation."""

    def __init__(self, dim: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive integer (the grid keeps its size), got "
                             f"{kernel_size}")
        self.dim, self.kernel_size = dim, kernel_size
        self.weight = nn.Parameter(torch.empty(dim, 1, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(dim)) if bias else None
        self.grid: tuple[int, int] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Conv2d's default for a depthwise kernel: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = K * K
        bound = 1.0 / self.kernel_size
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def zero_state(self, batch_size: int, dtype=None, device=None) -> Tensor:
        return torch.zeros(batch_size, 0, self.dim, dtype=dtype, device=device)

    def grid_shape(self, seq_len: int) -> tuple[int, int]:
        """(H, W) of the grid for a sequence of `seq_len` positions: `self.grid`, else the square one."""
        if self.grid is not None:
            H, W = self.grid
        else:
            H = W = int(round(seq_len ** 0.5))
        if H * W != seq_len:
            raise ValueError(f"GridConv2d: a sequence of {seq_len} positions is not a {H} x {W} grid; set .grid = "
                             f"(H, W) to the patch grid of the input")
        return H, W

    def forward(self, x: Tensor, state: Tensor | None = None, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, S, D) -> y (B, S, D), empty state (B, 0, D)."""
        if mask is not None:
            raise ValueError("GridConv2d does not take a mask: every position of the grid is real")
        B, S, D = x.shape
        H, W = self.grid_shape(S)
        w = _as(self.weight, x.dtype)
        b = None if self.bias is None else _as(self.bias, x.dtype)
        # (B, H, W, D) viewed as NCHW is channels-last in memory: the convolution reads and returns that layout
        # without a transposed copy, and the flattened result is a view of it
        img = x.reshape(B, H, W, D).permute(0, 3, 1, 2)
        y = F.conv2d(img, w, b, padding=self.kernel_size // 2, groups=D)
        return y.permute(0, 2, 3, 1).reshape(B, S, D), x.new_zeros(B, 0, D)

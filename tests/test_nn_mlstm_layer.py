"""The fast paths of the paper's mLSTM layer compute what the plain formulas compute: the grouped head-wise
projection (forward, gradients, autocast dtypes), the gates folded through the q, k, v projections, the fused
forward and fused step against the layer's plain ones (values and gradients, float64 and bf16 autocast), and the
one-token `step` against the sequence forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import xlstmkit.nn.linear as linear_mod
from xlstmkit import xLSTMConfig
from xlstmkit.nn.linear import (HeadwiseLinear, group_size, grouped_block_diag, headwise_linear,
                                 headwise_linear_shared, headwise_linear_stack)
from xlstmkit.nn.mlstm_block import MLSTMBlock, MLSTMLayer


def naive_headwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """One matmul per head, in a Python loop: the definition of the block-diagonal map."""
    NH, DOUT, DIN = weight.shape
    outs = [x[..., h * DIN:(h + 1) * DIN] @ weight[h].t() for h in range(NH)]
    y = torch.cat(outs, dim=-1)
    return y if bias is None else y + bias


# (num_heads, block_in, block_out): the paper's 4 x 4 blocks, non-powers of two, rectangular, one wide head
SHAPES = [(32, 4, 4), (6, 3, 3), (10, 5, 3), (4, 2, 7), (2, 24, 24)]


@pytest.mark.parametrize("NH,DIN,DOUT", SHAPES)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 7, 150])  # 150 >= GROUP_MIN_ROWS: the grouped path
def test_headwise_matches_per_head_reference_forward_and_gradients(NH, DIN, DOUT, bias, rows):
    gen = torch.Generator().manual_seed(NH * 100 + DIN * 10 + DOUT + rows)
    x = torch.randn(rows, 1, NH * DIN, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(NH, DOUT, DIN, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(NH * DOUT, generator=gen, dtype=torch.float64, requires_grad=True) if bias else None
    gy = torch.randn(rows, 1, NH * DOUT, generator=gen, dtype=torch.float64)
    inputs = [t for t in (x, w, b) if t is not None]

    y = headwise_linear(x, w, b)
    grads = torch.autograd.grad(y, inputs, gy)
    y_ref = naive_headwise(x, w, b)
    grads_ref = torch.autograd.grad(y_ref, inputs, gy)
    assert y.shape == (rows, 1, NH * DOUT)
    torch.testing.assert_close(y, y_ref)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("NH,DIN,DOUT", [(8, 4, 4), (6, 3, 2), (3, 5, 5)])
@pytest.mark.parametrize("bias", [False, True])
def test_headwise_gradcheck_grouped_and_per_head(NH, DIN, DOUT, bias, monkeypatch):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(5, NH * DIN, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(NH, DOUT, DIN, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(NH * DOUT, generator=gen, dtype=torch.float64, requires_grad=True) if bias else None
    for min_rows in (1, 10**9):  # every row count grouped / never grouped
        monkeypatch.setattr(linear_mod, "GROUP_MIN_ROWS", min_rows)
        assert torch.autograd.gradcheck(headwise_linear, (x, w, b))


def test_group_size_and_grouped_block_diag():
    assert group_size(128, 4, 4) == 4  # 4 heads of 4 columns: 16-wide groups
    assert group_size(6, 3, 3) == 3  # the largest divisor of 6 with g * 3 <= 16
    assert group_size(7, 3, 3) == 1  # 7 is prime: no grouping fits
    assert group_size(4, 64, 64) == 1
    w = torch.randn(6, 2, 3)
    wg = grouped_block_diag(w, 3)  # (2, 9, 6)
    assert wg.shape == (2, 9, 6)
    for h in range(6):
        grp, j = divmod(h, 3)
        torch.testing.assert_close(wg[grp, 3 * j:3 * j + 3, 2 * j:2 * j + 2], w[h].t())
    off_diagonal = wg.clone()
    for j in range(3):
        off_diagonal[:, 3 * j:3 * j + 3, 2 * j:2 * j + 2] = 0
    assert (off_diagonal == 0).all()


@pytest.mark.parametrize("rows", [1, 200])
@pytest.mark.parametrize("bias", [False, True])
def test_headwise_autocast_dtypes_like_nn_linear(rows, bias):
    """Under bf16 autocast: output in bf16 like nn.Linear's, float32 gradients for float32 parameters and input,
    and the values of the float32 map to bf16 accuracy."""
    torch.manual_seed(0)
    hw = HeadwiseLinear(64, 64, 16, bias=bias)
    if bias:
        torch.nn.init.normal_(hw.bias)
    ref = torch.nn.Linear(64, 64, bias=bias)
    x = torch.randn(rows, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = hw(x)
        y_ref = ref(x)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and hw.weight.grad.dtype == torch.float32
    if bias:
        assert hw.bias.grad.dtype == torch.float32
    exact = naive_headwise(x.detach(), hw.weight.detach(), None if hw.bias is None else hw.bias.detach())
    torch.testing.assert_close(y.float(), exact, rtol=2e-2, atol=2e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():  # the no-grad path too
        assert hw(x).dtype == torch.bfloat16


def test_headwise_bad_input_and_compose():
    hw = HeadwiseLinear(12, 6, 3)
    with pytest.raises(ValueError, match="last dimension 12"):
        hw(torch.randn(2, 10))
    with pytest.raises(ValueError, match="m must have shape"):
        hw.compose(torch.randn(5, 2))
    m = torch.randn(6, 2, dtype=torch.float64)
    hw = hw.double()
    x = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(x @ hw.compose(m), hw(x) @ m)  # compose folds a later map into this one


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("bias", [False, True])
def test_headwise_linear_stack_equals_separate_calls(rows, bias):
    torch.manual_seed(1)
    layers = [HeadwiseLinear(12, 6, 3, bias=bias) for _ in range(3)]
    if bias:
        for m in layers:
            torch.nn.init.normal_(m.bias)
    xs = [torch.randn(rows, 12) for _ in range(3)]
    y = headwise_linear_stack(xs, layers)
    assert y.shape == (3, rows, 6)
    for j in range(3):
        torch.testing.assert_close(y[j], naive_headwise(xs[j], layers[j].weight, layers[j].bias))
    with pytest.raises(ValueError, match="all have a bias or all have none"):
        headwise_linear_stack(xs[:2], [HeadwiseLinear(12, 6, 3, bias=True), HeadwiseLinear(12, 6, 3)])
    with pytest.raises(ValueError, match="one length"):
        headwise_linear_stack(xs, layers[:2])


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [5, 100])
def test_headwise_linear_shared_equals_separate_maps(bias, rows, monkeypatch):
    """q and k from one input in one call: outputs and all gradients of the separate maps, also when only one
    output is used; float64 gradcheck through the grouped path."""
    torch.manual_seed(2)
    layers = [HeadwiseLinear(30, 18, 6, bias=bias).double() for _ in range(3)]
    if bias:
        for m in layers:
            torch.nn.init.normal_(m.bias)
    x = torch.randn(rows, 30, dtype=torch.float64, requires_grad=True)
    ys = headwise_linear_shared(x, layers)
    ys_ref = [naive_headwise(x, m.weight, m.bias) for m in layers]
    params = [x, *(p for m in layers for p in m.parameters())]
    for used in (slice(0, 3), slice(1, 2)):  # all outputs, and only the middle one
        loss = sum((y * torch.arange(y.numel(), dtype=y.dtype).view_as(y)).sum() for y in ys[used])
        loss_ref = sum((y * torch.arange(y.numel(), dtype=y.dtype).view_as(y)).sum() for y in ys_ref[used])
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        grads_ref = torch.autograd.grad(loss_ref, params, retain_graph=True, allow_unused=True)
        for g, g_ref in zip(grads, grads_ref):
            if g_ref is None:
                assert g is None or (g == 0).all()
            else:
                torch.testing.assert_close(g, g_ref)
    for y, y_ref in zip(ys, ys_ref):
        torch.testing.assert_close(y, y_ref)
    monkeypatch.setattr(linear_mod, "GROUP_MIN_ROWS", 1)
    ws = [m.weight for m in layers[:2]]
    small = torch.randn(4, 30, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w0, w1: headwise_linear_shared_fn(x, w0, w1, layers[:2]),
                                    (small, ws[0].detach().requires_grad_(), ws[1].detach().requires_grad_()))
    with pytest.raises(ValueError, match="one shape"):
        headwise_linear_shared(x, [layers[0], HeadwiseLinear(30, 12, 6).double()])


def headwise_linear_shared_fn(x, w0, w1, layers):
    """headwise_linear_shared with the weights given as arguments (for gradcheck): same modules, weights swapped in."""
    saved = [m.weight for m in layers]
    try:
        for m, w in zip(layers, (w0, w1)):
            m._parameters["weight"] = w
        return tuple(headwise_linear_shared(x, layers))
    finally:
        for m, w in zip(layers, saved):
            m._parameters["weight"] = w


def small_config(**overrides) -> xLSTMConfig:
    # inner dim 64: 16 head-wise blocks of 4 (grouped 4 at a time on long inputs), 2 mLSTM heads of 32
    base = dict(vocab_size=11, embedding_dim=32, num_blocks=1, mlstm_num_heads=2, chunk_size=8)
    return xLSTMConfig(**{**base, **overrides})


def perturbed_layer(dtype=torch.float64, **overrides) -> MLSTMLayer:
    """A layer whose zero-initialised weights (gates, norms) are perturbed so every term contributes."""
    torch.manual_seed(0)
    layer = MLSTMLayer(small_config(**overrides), 0).to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("bias", [False, True])
def test_folded_gates_equal_gate_linears_on_concatenated_qkv(bias):
    layer = perturbed_layer(bias=bias)
    x_c, x_in = torch.randn(3, 5, layer.inner, dtype=torch.float64), torch.randn(3, 5, layer.inner, dtype=torch.float64)
    qkv = torch.cat([layer.q_proj(x_c), layer.k_proj(x_c), layer.v_proj(x_in)], dim=-1)
    expected = torch.cat([layer.igate(qkv), layer.fgate(qkv)], dim=-1)  # (3, 5, 2 NH)
    torch.testing.assert_close(layer._gates(x_c, x_in), expected)


def reference_layer_forward(layer: MLSTMLayer, x: torch.Tensor) -> torch.Tensor:
    """The block's equations written plainly (module docstring of nn/mlstm_block.py), recurrent form."""
    B, S, _ = x.shape
    NH, DH = layer.num_heads, layer.head_dim
    x_in, z = layer.proj_up(x).split(layer.inner, dim=-1)
    x_c = F.silu(layer.conv(x_in)[0])
    q, k, v = (naive_headwise(t, p.weight, p.bias) for t, p in
               ((x_c, layer.q_proj), (x_c, layer.k_proj), (x_in, layer.v_proj)))
    qkv = torch.cat([q, k, v], dim=-1)
    i, f = layer.igate(qkv), layer.fgate(qkv)
    from xlstmkit.ops.mlstm import mlstm_recurrent

    def heads(t):
        return t.view(B, S, NH, DH).transpose(1, 2)

    h = mlstm_recurrent(heads(q), heads(k), heads(v), i.transpose(1, 2), f.transpose(1, 2), eps=layer.cfg.mlstm_eps)
    h = layer.outnorm(h.transpose(1, 2)) + layer.learnable_skip * x_c
    return layer.proj_down(h * F.silu(z))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("S", [5, 70])  # 70 rows: the grouped head-wise path
def test_layer_forward_and_gradients_match_plain_equations(bias, S):
    layer = perturbed_layer(bias=bias)
    x = torch.randn(1, S, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(S))
    y, _ = layer(x)
    y_ref = reference_layer_forward(layer, x)
    torch.testing.assert_close(y, y_ref)
    params = list(layer.parameters())
    grads = torch.autograd.grad(y.square().sum(), params)
    grads_ref = torch.autograd.grad(y_ref.square().sum(), params)
    for (name, _), g, g_ref in zip(layer.named_parameters(), grads, grads_ref):
        torch.testing.assert_close(g, g_ref, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("bias", [False, True])
def test_step_matches_forward(bias):
    """Tokens fed one at a time through step give the outputs and the final state of one forward call."""
    block = MLSTMBlock(small_config(bias=bias), 0).double()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = torch.randn(2, 9, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y_seq, state_seq = block(x)
    state = block.zero_state(2)
    state = type(state)(state.conv.double(), type(state.cell)(*(t.double() for t in state.cell)))
    outs = []
    for t in range(x.shape[1]):
        y_t, state = block.step(x[:, t], state)
        outs.append(y_t)
    torch.testing.assert_close(torch.stack(outs, dim=1), y_seq)
    torch.testing.assert_close(state.conv, state_seq.conv)
    for a, b in zip(state.cell, state_seq.cell):
        torch.testing.assert_close(a, b)


def test_layer_under_bf16_autocast_close_to_float32_with_float32_gradients():
    layer = perturbed_layer(dtype=torch.float32)
    x = torch.randn(2, 80, 32, generator=torch.Generator().manual_seed(3))
    y32, _ = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16, state = layer(x)
    assert state.cell.C.dtype == torch.float32
    y16.float().square().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in layer.parameters())
    err = (y16.float() - y32).norm() / y32.norm()
    assert err < 0.05, f"relative error {err:.3g} of the bf16 layer"


def state_like(state, dtype):
    return torch.utils._pytree.tree_map(lambda t: t.to(dtype), state)


def random_state(layer: MLSTMLayer, B: int, dtype=torch.float64, seed: int = 0):
    """A non-trivial incoming state (conv inputs, C, n, m) with the layer's shapes."""
    g = torch.Generator().manual_seed(seed)
    z = layer.zero_state(B)
    conv = torch.randn(z.conv.shape, generator=g, dtype=dtype)
    C, n = (torch.randn(t.shape, generator=g, dtype=dtype) * 0.3 for t in z.cell[:2])
    m = torch.randn(z.cell.m.shape, generator=g, dtype=dtype)
    return type(z)(conv, type(z.cell)(C, n, m))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("S", [1, 7, 70])  # 70 rows: the grouped head-wise path
def test_fused_forward_equals_plain_forward_values_and_gradients(bias, S):
    """forward_fused (folded gate maps, shared q/k matmul, norm + skip fused) computes the plain forward: outputs,
    states and the gradients of parameters, input and incoming state, from a given state, in float64."""
    layer = perturbed_layer(bias=bias)
    x = torch.randn(2, S, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(S), requires_grad=True)
    state = torch.utils._pytree.tree_map(lambda t: t.requires_grad_(), random_state(layer, 2))
    inputs = [x, state.conv, state.cell.C, state.cell.n, *layer.parameters()]
    runs = []
    for fused in (False, True):
        layer.fused = fused
        y, st = layer(x, state)
        loss = y.square().sum() + sum((t * 0.3).sum() for t in (st.conv, *st.cell[:2]))
        runs.append((y, st, torch.autograd.grad(loss, inputs)))
    (y0, st0, g0), (y1, st1, g1) = runs
    torch.testing.assert_close(y1, y0)
    for a, b in zip(torch.utils._pytree.tree_leaves(st1), torch.utils._pytree.tree_leaves(st0)):
        torch.testing.assert_close(a, b)
    names = ["x", "conv state", "C", "n"] + [n for n, _ in layer.named_parameters()]
    for name, a, b in zip(names, g1, g0):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")


def test_fused_forward_under_bf16_autocast_is_as_close_to_float32_as_the_plain_one():
    """Under bf16 autocast both variants keep float32 states and float32 parameter gradients, their outputs lie
    within bf16 rounding of the float32 result, and the fused variant's errors (outputs and every gradient) are no
    larger than the plain variant's (bf16 moves the gradients of q and k by up to ~30 % on this perturbed layer, in
    both variants alike)."""
    layer = perturbed_layer(dtype=torch.float32)
    x = torch.randn(2, 80, 32, generator=torch.Generator().manual_seed(5))
    layer.fused = False
    y32, _ = layer(x)
    g32 = torch.autograd.grad(y32.square().sum(), list(layer.parameters()))
    y32 = y32.detach()
    outs, grads = [], []
    for fused in (False, True):
        layer.fused = fused
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, state = layer(x)
        assert state.cell.C.dtype == torch.float32 and state.conv.dtype == torch.float32
        g = torch.autograd.grad(y.float().square().sum(), list(layer.parameters()))
        assert all(t.dtype == torch.float32 for t in g)
        outs.append(y.detach().float())
        grads.append(g)
    err = [float((y - y32).norm() / y32.norm()) for y in outs]
    assert err[0] < 0.05 and err[1] <= 1.5 * err[0] + 0.005, err
    for (name, _), a, b, ref in zip(layer.named_parameters(), *grads, g32):
        scale = ref.norm().clamp_min(1e-6)
        ea, eb = float((a - ref).norm() / scale), float((b - ref).norm() / scale)
        assert ea < 0.5 and eb <= 1.5 * ea + 0.02, (name, ea, eb)


@pytest.mark.parametrize("bias", [False, True])
def test_fused_step_equals_plain_step_and_plain_step_has_the_forward_gradients(bias):
    """step_fused (stacked q/k/v matmul, gates on it, one group_norm) gives the plain step's outputs and states; the
    plain step under autograd gives the sequence forward's gradients."""
    layer = perturbed_layer(bias=bias)
    x = torch.randn(3, 6, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    start = random_state(layer, 3, seed=1)
    with torch.no_grad():
        runs = []
        for fused in (False, True):
            layer.fused = fused
            state, ys = start, []
            for t in range(x.shape[1]):
                y, state = layer.step(x[:, t], state)
                ys.append(y)
            runs.append((torch.stack(ys, 1), state))
    torch.testing.assert_close(runs[1][0], runs[0][0])
    for a, b in zip(torch.utils._pytree.tree_leaves(runs[1][1]), torch.utils._pytree.tree_leaves(runs[0][1])):
        torch.testing.assert_close(a, b)
    layer.fused = False
    params = list(layer.parameters())
    state, loss = start, 0.0
    for t in range(x.shape[1]):
        y, state = layer.step(x[:, t], state)
        loss = loss + y.square().sum()
    g_step = torch.autograd.grad(loss, params)
    y_seq, _ = layer(x, start, "recurrent")
    g_seq = torch.autograd.grad(y_seq.square().sum(), params)
    for (name, _), a, b in zip(layer.named_parameters(), g_step, g_seq):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")


def test_plain_step_runs_a_bf16_model_and_under_autocast():
    """The plain step serves what the fused one does not take (bf16 weights with float32 states, autocast): close to
    the float32 forward, states kept in float32."""
    layer = perturbed_layer(dtype=torch.float32)
    x = torch.randn(2, 4, 32, generator=torch.Generator().manual_seed(7))
    ref, _ = layer(x)
    layer16 = perturbed_layer(dtype=torch.float32).to(torch.bfloat16)
    for model, ctx in ((layer16, torch.autocast("cpu", enabled=False)), (layer, torch.autocast("cpu", torch.bfloat16))):
        state, ys = model.zero_state(2), []
        with ctx:
            for t in range(4):
                y, state = model.step(x[:, t].to(next(model.parameters()).dtype), state)
                ys.append(y.float())
        assert state.conv.dtype == torch.float32 and state.cell.C.dtype == torch.float32
        assert (torch.stack(ys, 1) - ref).norm() / ref.norm() < 0.05

"""Vision-LSTM (xlstmkit.models.vision_lstm) against an independent reference of the published equations, and the
nn options it adds (GridConv2d, a bias on the mLSTM layer's head norm)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xlstmkit.config import xLSTMConfig
from xlstmkit.models.vision_lstm import (VisionLSTM, VisionLSTMConfig, bilateral_pool, count_parameters,
                                         interpolate_pos_embed, vil_config)
from xlstmkit.nn.conv import GridConv2d
from xlstmkit.nn.mlstm_block import MLSTMLayer

# -- an independent reference: the published forward pass written from its equations, on plain tensors --------------


# The published parallel form stabilises row t with m_t = max_s log D[t, s]; xlstmkit's forms also count the empty
# initial state (m_0 = 0, so the candidate sum_{r<=t} log f_r), as the recurrence does. The two differ only in the
# eps of the normaliser, by at most eps = 1e-6 relative (docs/vision.md). EXACT = True gives xlstmkit's convention.
EXACT = {"m0": True}


def ref_mlstm(q, k, v, i, f, eps=1e-6):
    """Stabilised parallel mLSTM: q, k, v (B, NH, S, DH), i, f (B, NH, S)."""
    S, DH = q.shape[-2], q.shape[-1]
    cs = torch.cumsum(F.logsigmoid(f), -1)
    logd = cs[..., :, None] - cs[..., None, :] + i[..., None, :]  # log D[t, s] = sum_{r=s+1..t} log f_r + i_s
    logd = logd.masked_fill(~torch.ones(S, S, dtype=torch.bool).tril(), -math.inf)
    m = logd.max(-1, keepdim=True).values
    if EXACT["m0"]:
        m = torch.maximum(m, cs[..., None])
    c = (q @ k.transpose(-1, -2) / math.sqrt(DH)) * torch.exp(logd - m)
    n = torch.maximum(c.sum(-1, keepdim=True).abs(), torch.exp(-m))
    return (c / (n + eps)) @ v


def ref_layer(p, x, grid, conv_kind, num_heads):
    """One ViL layer from a dict of published parameter names (without the "layer." prefix); x (B, S, d)."""
    B, S, _ = x.shape
    inner = p["proj_up.weight"].shape[0] // 2
    up = F.linear(x, p["proj_up.weight"], p.get("proj_up.bias"))
    xm, z = up[..., :inner], up[..., inner:]
    if conv_kind == "2d":
        h, w = grid
        img = xm.reshape(B, h, w, inner).permute(0, 3, 1, 2)
        K = p["conv.weight"].shape[-1]
        c = F.conv2d(img, p["conv.weight"], p["conv.bias"], padding=K // 2, groups=inner)
        c = c.permute(0, 2, 3, 1).reshape(B, S, inner)
    else:
        K = p["conv.weight"].shape[-1]
        c = F.conv1d(F.pad(xm.transpose(1, 2), (K - 1, 0)), p["conv.weight"], p["conv.bias"], groups=inner)
        c = c.transpose(1, 2)
    a = F.silu(c)

    def blockdiag(t, name):
        W = p[f"{name}.weight"]  # (heads, out, in)
        y = torch.einsum("bshd,hod->bsho", t.reshape(B, S, W.shape[0], W.shape[2]), W).reshape(B, S, -1)
        return y + p[f"{name}.bias"] if f"{name}.bias" in p else y

    q, k, v = blockdiag(a, "q_proj"), blockdiag(a, "k_proj"), blockdiag(xm, "v_proj")
    qkv = torch.cat([q, k, v], -1)
    ig = F.linear(qkv, p["mlstm_cell.igate.weight"], p["mlstm_cell.igate.bias"]).transpose(1, 2)
    fg = F.linear(qkv, p["mlstm_cell.fgate.weight"], p["mlstm_cell.fgate.bias"]).transpose(1, 2)

    def heads(t):
        return t.reshape(B, S, num_heads, -1).transpose(1, 2)

    hh = ref_mlstm(heads(q), heads(k), heads(v), ig, fg).transpose(1, 2)  # (B, S, NH, DH)
    mu, var = hh.mean(-1, keepdim=True), hh.var(-1, unbiased=False, keepdim=True)
    hn = ((hh - mu) / torch.sqrt(var + 1e-5)).reshape(B, S, inner) * (1 + p["mlstm_cell.outnorm.weight"])
    if "mlstm_cell.outnorm.bias" in p:
        hn = hn + p["mlstm_cell.outnorm.bias"]
    out = (hn + p["learnable_skip"] * a) * F.silu(z)
    return F.linear(out, p["proj_down.weight"], p.get("proj_down.bias"))


def ref_ln(x, w, b, eps, residual):
    y = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
    y = y * ((1 + w) if residual else w)
    return y if b is None else y + b


def sub(sd, prefix):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def ref_vil2(sd, images, patch, num_heads=4, conv_kind="2d", pooling="bilateral_flatten"):
    """VisionLSTM2 from its published state dict (names of vision_lstm2.py)."""
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    x = x.permute(0, 2, 3, 1)
    B, h, w, d = x.shape
    pe = sd["pos_embed.embed"]
    if tuple(pe.shape[1:3]) != (h, w):
        pe = F.interpolate(pe.permute(0, 3, 1, 2), size=(h, w), mode="bicubic").permute(0, 2, 3, 1)
    x = (x + pe).reshape(B, h * w, d)
    rev = torch.arange(h * w - 1, -1, -1)  # the bottom-right-first order, by hand
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        for direction in ("rowwise_from_top_left", "rowwise_from_bot_right"):
            p = sub(sd, f"blocks.{i}.{direction}.")
            t = ref_ln(x, p["norm.weight"], p.get("norm.bias"), 1e-5, True)
            if direction.endswith("bot_right"):
                x = x + ref_layer(sub(p, "layer."), t[:, rev], (h, w), conv_kind, num_heads)[:, rev]
            else:
                x = x + ref_layer(sub(p, "layer."), t, (h, w), conv_kind, num_heads)
    x = ref_ln(x, sd["norm.weight"], sd.get("norm.bias"), 1e-6, True)
    pooled = torch.cat([x[:, 0], x[:, -1]], -1) if pooling == "bilateral_flatten" else (x[:, 0] + x[:, -1]) / 2
    if "legacy_norm.weight" in sd:
        pooled = ref_ln(pooled, sd["legacy_norm.weight"], sd["legacy_norm.bias"], 1e-5, False)
    return F.linear(pooled, sd["head.weight"], sd["head.bias"])


def published_names(model: VisionLSTM) -> dict[str, torch.Tensor]:
    """The model's state dict under VisionLSTM2's names (the inverse of the converter's renaming, by hand)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("head_norm."):
            k = "legacy_norm." + k[len("head_norm."):]
        for part in ("igate", "fgate", "outnorm"):
            k = k.replace(f".layer.{part}.", f".layer.mlstm_cell.{part}.")
        out[k] = v
    return out


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter random (norm weights and gate weights included, which start at 0), scaled to keep the
    activations moderate."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * 0.3)


def small(**kw) -> VisionLSTMConfig:
    base = dict(dim=16, depth=2, image_size=(12, 8), patch_size=4, in_channels=2, num_classes=5)
    return VisionLSTMConfig(**{**base, **kw})


# -- the tests ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset,published", [("vil-t", 6.39e6), ("vil-s", 23.40e6), ("vil-b", 89.26e6)])
def test_preset_parameter_counts_match_the_published_ones_within_half_a_percent(preset, published):
    with torch.device("meta"):
        model = VisionLSTM(vil_config(preset))
    cfg = model.config
    assert (cfg.image_size, cfg.patch_size, cfg.num_classes, cfg.depth) == ((224, 224), (16, 16), 1000, 12)
    assert abs(count_parameters(model) / published - 1) < 0.005


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
def test_v2_forward_equals_the_independent_reference_of_the_published_equations(form, monkeypatch):
    torch.manual_seed(0)
    model = VisionLSTM(small(chunk_size=5)).double()
    randomise(model)
    images = torch.randn(3, 2, 12, 8, dtype=torch.float64)
    ref = ref_vil2(published_names(model), images, (4, 4))
    out = model(images, form=form)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    # the published stabiliser (without m_0) moves the output by no more than the eps bound
    monkeypatch.setitem(EXACT, "m0", False)
    published = ref_vil2(published_names(model), images, (4, 4))
    assert (out - published).abs().max() <= 1e-5 * published.abs().max()


def test_v1_forward_equals_the_reference_with_causal_conv_average_pooling_and_no_biases():
    torch.manual_seed(0)
    model = VisionLSTM(small(version=1, legacy_norm=True)).double()
    cfg = model.config
    assert (cfg.conv_kind, cfg.conv_kernel_size, cfg.pooling, cfg.proj_bias, cfg.norm_bias) == (
        "causal1d", 4, "bilateral_avg", False, False)
    assert not any(k.endswith("proj_up.bias") or k.endswith("layer.outnorm.bias") for k in model.state_dict())
    randomise(model)
    images = torch.randn(2, 2, 12, 8, dtype=torch.float64)
    sd = published_names(model)  # v1's norms: "norm" (1 + w) before pooling, "legacy_norm" (plain) after it
    torch.testing.assert_close(model(images), ref_vil1(sd, images, (4, 4)), rtol=1e-9, atol=1e-9)


def ref_vil1(sd, images, patch, depth=2):
    """VisionLSTM (v1) on names of the xlstmkit layout under published cell names (`published_names`): causal 1-D
    convolution, no biases, the (1 + w) norm "norm" (eps 1e-5, no bias) before bilateral averaging, the plain norm
    "legacy_norm" (eps 1e-6) after it."""
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    x = x.permute(0, 2, 3, 1)
    B, h, w, d = x.shape
    x = (x + sd["pos_embed.embed"]).reshape(B, h * w, d)
    rev = torch.arange(h * w - 1, -1, -1)
    for i in range(depth):
        for direction in ("rowwise_from_top_left", "rowwise_from_bot_right"):
            p = sub(sd, f"blocks.{i}.{direction}.")
            t = ref_ln(x, p["norm.weight"], None, 1e-5, True)
            if direction.endswith("bot_right"):
                x = x + ref_layer(sub(p, "layer."), t[:, rev], (h, w), "causal1d", 4)[:, rev]
            else:
                x = x + ref_layer(sub(p, "layer."), t, (h, w), "causal1d", 4)
    x = ref_ln(x, sd["norm.weight"], None, 1e-5, True)
    pooled = ref_ln((x[:, 0] + x[:, -1]) / 2, sd["legacy_norm.weight"], sd["legacy_norm.bias"], 1e-6, False)
    return F.linear(pooled, sd["head.weight"], sd["head.bias"])


def test_bottom_right_block_is_the_top_left_block_on_the_hand_reversed_sequence():
    torch.manual_seed(0)
    model = VisionLSTM(small()).double()
    randomise(model)
    pair = model.blocks[0]
    tl, br = pair.rowwise_from_top_left, pair.rowwise_from_bot_right
    br.load_state_dict(tl.state_dict())  # the same weights in both directions
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    rev = torch.tensor([5, 4, 3, 2, 1, 0])
    expected = tl(x[:, rev], (3, 2), "parallel")[:, rev]
    torch.testing.assert_close(br(x, (3, 2), "parallel"), expected, rtol=1e-12, atol=1e-12)
    # and the directions do differ: a top-left block reads the image in another order
    assert not torch.allclose(tl(x, (3, 2), "parallel"), expected)


def test_bilateral_pooling_takes_the_first_and_last_token():
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    torch.testing.assert_close(bilateral_pool(x, "bilateral_flatten"), torch.cat([x[:, 0], x[:, 3]], -1))
    torch.testing.assert_close(bilateral_pool(x, "bilateral_avg"), (x[:, 0] + x[:, 3]) / 2)
    with pytest.raises(ValueError, match="bilateral"):
        bilateral_pool(x, "mean")


def test_features_mode_returns_the_patch_grid_and_matches_the_classifier_trunk():
    torch.manual_seed(0)
    grid_model = VisionLSTM(small(pooling="to_image", num_classes=None))
    tokens_model = VisionLSTM(small(pooling="none", num_classes=None))
    tokens_model.load_state_dict(grid_model.state_dict())
    images = torch.randn(2, 2, 12, 8)
    grid = grid_model(images)
    tokens = tokens_model(images)
    assert grid.shape == (2, 16, 3, 2) and tokens.shape == (2, 6, 16)
    torch.testing.assert_close(grid, tokens.transpose(1, 2).reshape(2, 16, 3, 2))
    # a classifier's `features` is the grid its head pools from: first and last token
    clf = VisionLSTM(small())
    feats = clf.features(images, to_image=False)
    logits = clf.head(clf.head_norm(torch.cat([feats[:, 0], feats[:, -1]], -1)))
    torch.testing.assert_close(logits, clf(images))


def test_any_grid_channels_and_non_square_images_and_interpolated_positions():
    torch.manual_seed(0)
    model = VisionLSTM(small(in_channels=1, image_size=(8, 12), patch_size=(2, 4)))
    assert model.config.grid == (4, 3)
    assert model(torch.randn(2, 1, 8, 12)).shape == (2, 5)
    # another image size: the position embedding is resampled bicubically to the new grid
    assert model(torch.randn(1, 1, 16, 8)).shape == (1, 5)
    pe = model.pos_embed.embed
    new = interpolate_pos_embed(pe, (8, 2))
    torch.testing.assert_close(new, F.interpolate(pe.permute(0, 3, 1, 2), size=(8, 2), mode="bicubic",
                                                  align_corners=False).permute(0, 2, 3, 1))
    assert interpolate_pos_embed(pe, (4, 3)) is pe


def test_forms_agree_in_values_and_gradients():
    torch.manual_seed(0)
    model = VisionLSTM(small(chunk_size=4)).double()
    randomise(model, seed=1)
    images = torch.randn(2, 2, 12, 8, dtype=torch.float64)
    grads = {}
    for form in ("parallel", "chunkwise", "recurrent"):
        model.zero_grad()
        out = model(images, form=form)
        out.square().sum().backward()
        grads[form] = (out.detach(), [p.grad.clone() for p in model.parameters()])
    for form in ("chunkwise", "recurrent"):
        torch.testing.assert_close(grads[form][0], grads["parallel"][0], rtol=1e-9, atol=1e-9)
        for a, b in zip(grads[form][1], grads["parallel"][1]):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_inference_uses_inference_form_and_training_uses_form(monkeypatch):
    import xlstmkit.nn.mlstm_block as mb

    seen = []
    real = mb.mlstm
    monkeypatch.setattr(mb, "mlstm", lambda *a, **kw: seen.append(kw["form"]) or real(*a, **kw))
    model = VisionLSTM(small(depth=1, form="parallel", inference_form="recurrent"))
    images = torch.randn(1, 2, 12, 8)
    model(images).sum().backward()
    with torch.no_grad():
        model(images)
    assert seen == ["parallel", "parallel", "recurrent", "recurrent"]


def test_published_initialisation():
    torch.manual_seed(0)
    model = VisionLSTM(vil_config("vil-micro", num_classes=10, image_size=32, patch_size=4))
    layer = model.blocks[0].rowwise_from_top_left.layer
    d = 64
    assert torch.equal(layer.fgate.bias, torch.linspace(3.0, 6.0, 4))
    assert layer.fgate.weight.abs().max() == 0 and layer.igate.weight.abs().max() == 0
    assert torch.equal(layer.learnable_skip, torch.ones(128))
    assert abs(layer.proj_up.weight.std().item() / math.sqrt(2 / (5 * d)) - 1) < 0.05
    assert abs(layer.proj_down.weight.std().item() / (2 / math.sqrt(d)) - 1) < 0.05  # "original": 1 block
    # torch's trunc_normal_ (as published) cuts at +-2 absolute, so with std 2e-5 nothing is cut
    assert abs(model.head.weight.std().item() / 2e-5 - 1) < 0.15 and model.head.bias.abs().max() == 0
    assert model.blocks[0].rowwise_from_top_left.norm.weight.abs().max() == 0  # stored w of the (1 + w) scale
    deep = VisionLSTM(vil_config("vil-micro", num_classes=10, image_size=32, patch_size=4, proj_down_init="depth"))
    w = deep.blocks[0].rowwise_from_top_left.layer.proj_down.weight
    assert abs(w.std().item() / (2 / 4 / math.sqrt(d)) - 1) < 0.05  # n = 2 * depth = 4


def test_drop_path_skips_whole_samples_and_rescales_the_kept_ones():
    from xlstmkit.models.vision_lstm import DropPath

    torch.manual_seed(0)
    dp = DropPath(0.5).train()
    x = torch.randn(8, 3, 2)
    y = dp(x, lambda t: torch.ones_like(t))
    changed = (y != x).flatten(1).any(1)
    assert int(changed.sum()) == 4  # max(1, int(8 * 0.5)) samples go through the branch
    torch.testing.assert_close((y - x)[changed], torch.full_like(x[changed], 2.0))  # scaled by B / kept
    dp.eval()
    torch.testing.assert_close(dp(x, lambda t: t * 2), 3 * x)


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        VisionLSTMConfig(image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="num_classes to None"):
        VisionLSTMConfig(pooling="to_image")
    with pytest.raises(ValueError, match="odd"):
        VisionLSTMConfig(conv_kernel_size=4)
    with pytest.raises(ValueError, match="version"):
        VisionLSTMConfig(version=3)
    with pytest.raises(ValueError, match="unknown Vision-LSTM preset"):
        vil_config("vil-xl")
    model = VisionLSTM(small())
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        model(torch.randn(1, 2, 10, 8))
    with pytest.raises(ValueError, match="images must have shape"):
        model(torch.randn(1, 3, 12, 8))
    cfg = small()
    assert VisionLSTMConfig.from_dict(cfg.to_dict()) == cfg


# -- the nn options -----------------------------------------------------------------------------------------------


def test_grid_conv_is_a_depthwise_conv2d_on_the_row_major_grid_and_sees_a_reversed_sequence_turned():
    torch.manual_seed(0)
    conv = GridConv2d(6, 3).double()
    conv.grid = (4, 5)
    x = torch.randn(2, 20, 6, dtype=torch.float64)
    img = x.view(2, 4, 5, 6).permute(0, 3, 1, 2)
    ref = F.conv2d(img, conv.weight, conv.bias, padding=1, groups=6).permute(0, 2, 3, 1).reshape(2, 20, 6)
    y, state = conv(x)
    torch.testing.assert_close(y, ref)
    assert state.shape == (2, 0, 6)
    turned = F.conv2d(img.flip(-1, -2), conv.weight, conv.bias, padding=1, groups=6)
    torch.testing.assert_close(conv(x.flip(1))[0], turned.permute(0, 2, 3, 1).reshape(2, 20, 6))
    with pytest.raises(ValueError, match="grid"):
        GridConv2d(6, 3)(torch.randn(1, 7, 6))
    with pytest.raises(ValueError, match="odd"):
        GridConv2d(6, 2)


@pytest.mark.parametrize("S", [5, 70])  # 70 rows: the grouped head-wise path
def test_layer_norm_bias_option_fused_equals_plain_and_step_equals_forward(S):
    cfg = xLSTMConfig(embedding_dim=16, num_blocks=1, mlstm_num_heads=4, bias=True)
    torch.manual_seed(0)
    layer = MLSTMLayer(cfg, 0, norm_bias=True).double()
    randomise(layer)
    assert layer.outnorm.bias is not None
    x = torch.randn(2, S, 16, dtype=torch.float64)
    layer.fused = True
    fused, _ = layer(x)
    layer.fused = False
    plain, _ = layer(x)
    torch.testing.assert_close(fused, plain, rtol=1e-10, atol=1e-10)
    state = layer.zero_state(2)
    layer.fused = True
    y0, _ = layer.step(x[:, 0], state)
    layer.fused = False
    y1, _ = layer.step(x[:, 0], state)
    torch.testing.assert_close(y0, plain[:, 0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y1, plain[:, 0], rtol=1e-10, atol=1e-10)


def test_layer_defaults_are_unchanged_by_the_options():
    cfg = xLSTMConfig(embedding_dim=16, num_blocks=1)
    torch.manual_seed(0)
    a = MLSTMLayer(cfg, 0)
    torch.manual_seed(0)
    b = MLSTMLayer(cfg, 0, conv=None, norm_bias=False)
    assert a.outnorm.bias is None and type(a.conv).__name__ == "CausalConv1d"
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)

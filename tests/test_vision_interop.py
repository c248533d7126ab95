"""The published Vision-LSTM checkpoint layouts -> xlstmkit (interop/vision_lstm.py), on state dicts built here with
the published key names and shapes (no download), held to an independent reference of the published forward pass."""

from __future__ import annotations

import pathlib
import pickle

import pytest
import torch
import torch.nn.functional as F
from test_vision_model import EXACT, ref_layer, ref_ln, ref_vil2, sub

from xlstmkit.interop.vision_lstm import convert_state_dict, detect_layout, load_vision_lstm, read_checkpoint

DIRS = ("rowwise_from_top_left", "rowwise_from_bot_right")


def _r(g, *shape, scale=0.3):
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def published_v2(dim=16, depth=2, patch=4, grid=(3, 2), channels=3, classes=7, legacy=True, seed=0):
    """A VisionLSTM2 state dict with the published names and shapes (applications.md section 1)."""
    g = torch.Generator().manual_seed(seed)
    inner = 2 * dim
    sd = {"patch_embed.proj.weight": _r(g, dim, channels, patch, patch), "patch_embed.proj.bias": _r(g, dim),
          "pos_embed.embed": _r(g, 1, *grid, dim)}
    for i in range(depth):
        for d in DIRS:
            p = f"blocks.{i}.{d}."
            sd |= {p + "norm.weight": _r(g, dim), p + "norm.bias": _r(g, dim),
                   p + "layer.proj_up.weight": _r(g, 2 * inner, dim), p + "layer.proj_up.bias": _r(g, 2 * inner),
                   p + "layer.conv.weight": _r(g, inner, 1, 3, 3), p + "layer.conv.bias": _r(g, inner),
                   p + "layer.mlstm_cell.igate.weight": _r(g, 4, 3 * inner, scale=0.05),
                   p + "layer.mlstm_cell.igate.bias": _r(g, 4),
                   p + "layer.mlstm_cell.fgate.weight": _r(g, 4, 3 * inner, scale=0.05),
                   p + "layer.mlstm_cell.fgate.bias": _r(g, 4) + 3,
                   p + "layer.mlstm_cell.outnorm.weight": _r(g, inner),
                   p + "layer.mlstm_cell.outnorm.bias": _r(g, inner),
                   p + "layer.learnable_skip": _r(g, inner) + 1,
                   p + "layer.proj_down.weight": _r(g, dim, inner), p + "layer.proj_down.bias": _r(g, dim)}
            for name in ("q_proj", "k_proj", "v_proj"):
                sd |= {p + f"layer.{name}.weight": _r(g, inner // 4, 4, 4), p + f"layer.{name}.bias": _r(g, inner)}
    sd |= {"norm.weight": _r(g, dim), "norm.bias": _r(g, dim), "head.weight": _r(g, classes, 2 * dim),
           "head.bias": _r(g, classes)}
    if legacy:
        sd |= {"legacy_norm.weight": _r(g, 2 * dim) + 1, "legacy_norm.bias": _r(g, 2 * dim)}
    return sd


def published_v1(dim=16, blocks=4, patch=4, grid=(3, 2), channels=3, classes=7, seed=0):
    """A VisionLSTM (v1) state dict with the published names: single blocks, conv1d.conv, no biases except the
    convolution's, `legacy_norm` ((1 + w), before pooling) and `norm` (plain, after it)."""
    g = torch.Generator().manual_seed(seed)
    inner = 2 * dim
    sd = {"patch_embed.proj.weight": _r(g, dim, channels, patch, patch), "patch_embed.proj.bias": _r(g, dim),
          "pos_embed.embed": _r(g, 1, *grid, dim)}
    for j in range(blocks):
        p = f"blocks.{j}."
        sd |= {p + "norm.weight": _r(g, dim), p + "layer.proj_up.weight": _r(g, 2 * inner, dim),
               p + "layer.conv1d.conv.weight": _r(g, inner, 1, 4), p + "layer.conv1d.conv.bias": _r(g, inner),
               p + "layer.mlstm_cell.igate.weight": _r(g, 4, 3 * inner, scale=0.05),
               p + "layer.mlstm_cell.igate.bias": _r(g, 4),
               p + "layer.mlstm_cell.fgate.weight": _r(g, 4, 3 * inner, scale=0.05),
               p + "layer.mlstm_cell.fgate.bias": _r(g, 4) + 3,
               p + "layer.mlstm_cell.outnorm.weight": _r(g, inner), p + "layer.learnable_skip": _r(g, inner) + 1,
               p + "layer.proj_down.weight": _r(g, dim, inner)}
        for name in ("q_proj", "k_proj", "v_proj"):
            sd[p + f"layer.{name}.weight"] = _r(g, inner // 4, 4, 4)
    sd |= {"legacy_norm.weight": _r(g, dim), "norm.weight": _r(g, dim) + 1, "norm.bias": _r(g, dim),
           "head.weight": _r(g, classes, dim), "head.bias": _r(g, classes)}
    return sd


def ref_v1_published(sd, images, patch=4):
    """VisionLSTM (v1) on its own published names: 24-style single blocks alternating directions (even j from the
    top left), causal 1-D convolution, legacy_norm -> bilateral average -> norm -> head."""
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    x = x.permute(0, 2, 3, 1)
    B, h, w, d = x.shape
    x = (x + sd["pos_embed.embed"]).reshape(B, h * w, d)
    rev = torch.arange(h * w - 1, -1, -1)
    blocks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for j in range(blocks):
        p = sub(sd, f"blocks.{j}.")
        layer = {("conv." + k[len("conv1d.conv."):] if k.startswith("conv1d.conv.") else k): v
                 for k, v in sub(p, "layer.").items()}
        t = ref_ln(x, p["norm.weight"], None, 1e-5, True)
        if j % 2:
            x = x + ref_layer(layer, t[:, rev], (h, w), "causal1d", 4)[:, rev]
        else:
            x = x + ref_layer(layer, t, (h, w), "causal1d", 4)
    x = ref_ln(x, sd["legacy_norm.weight"], None, 1e-5, True)
    pooled = ref_ln((x[:, 0] + x[:, -1]) / 2, sd["norm.weight"], sd["norm.bias"], 1e-6, False)
    return F.linear(pooled, sd["head.weight"], sd["head.bias"])


def raw_from_v2(sd):
    """The training-checkpoint names of a VisionLSTM2 state dict, by the hub loader's renaming rules read backwards:
    blocks.{i}.{dir}.layer -> blocks.{2i + dir}.xlstm (conv -> conv1d), .norm -> .xlstm_norm, norm ->
    post_blocks_norm, legacy_norm -> head.0, head -> head.1."""
    out = {}
    for k, v in sd.items():
        if k.startswith("blocks."):
            _, i, d, rest = k.split(".", 3)
            j = 2 * int(i) + DIRS.index(d)
            rest = rest.replace("layer.conv.", "layer.conv1d.").replace("layer.", "xlstm.", 1)
            rest = "xlstm_norm." + rest[len("norm."):] if rest.startswith("norm.") else rest
            k = f"blocks.{j}.{rest}"
        elif k.startswith("norm."):
            k = "post_blocks_norm." + k[len("norm."):]
        elif k.startswith("legacy_norm."):
            k = "head.0." + k[len("legacy_norm."):]
        elif k.startswith("head."):
            k = "head.1." + k[len("head."):]
        out[k] = v
    return out


@pytest.fixture(autouse=True)
def published_stabiliser(monkeypatch):
    """The reference uses the published stabiliser (no m_0); xlstmkit then agrees to the eps bound (1e-6 relative)."""
    monkeypatch.setitem(EXACT, "m0", False)


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


def test_vil2_layout_converts_to_a_model_that_computes_the_published_forward():
    sd = published_v2()
    assert detect_layout(sd) == "vil2"
    cfg, state = convert_state_dict(sd)
    assert (cfg.version, cfg.dim, cfg.depth, cfg.grid, cfg.patch_size, cfg.in_channels, cfg.num_classes) == (
        2, 16, 2, (3, 2), (4, 4), 3, 7)
    assert (cfg.conv_kind, cfg.pooling, cfg.proj_bias, cfg.norm_bias, cfg.legacy_norm) == (
        "2d", "bilateral_flatten", True, True, True)
    model = load_vision_lstm(sd).double()
    images = torch.randn(2, 3, 12, 8, dtype=torch.float64)
    close(model(images), ref_vil2(sd, images, (4, 4)))
    # no weight is changed on the way: every (1 + w) norm keeps its stored w
    assert torch.equal(model.blocks[1].rowwise_from_bot_right.layer.outnorm.weight,
                       sd["blocks.1.rowwise_from_bot_right.layer.mlstm_cell.outnorm.weight"].float().double())
    assert torch.equal(model.head_norm.weight, sd["legacy_norm.weight"].float().double())


def test_vil2_without_legacy_norm():
    sd = published_v2(legacy=False)
    model = load_vision_lstm(sd).double()
    assert not model.config.legacy_norm
    images = torch.randn(1, 3, 12, 8, dtype=torch.float64)
    close(model(images), ref_vil2(sd, images, (4, 4)))


def test_vil1_layout_pairs_single_blocks_and_maps_its_two_norms():
    sd = published_v1()
    assert detect_layout(sd) == "vil1"
    model = load_vision_lstm(sd).double()
    cfg = model.config
    assert (cfg.version, cfg.depth, cfg.conv_kind, cfg.conv_kernel_size, cfg.pooling, cfg.proj_bias) == (
        1, 2, "causal1d", 4, "bilateral_avg", False)
    images = torch.randn(2, 3, 12, 8, dtype=torch.float64)
    close(model(images), ref_v1_published(sd, images))


def test_raw_training_checkpoint_names_convert_like_the_module_names():
    sd = published_v2()
    raw = raw_from_v2(sd)
    assert detect_layout(raw) == "raw"
    cfg_a, a = convert_state_dict(sd)
    cfg_b, b = convert_state_dict(raw)
    assert cfg_a == cfg_b and sorted(a) == sorted(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_file_is_read_without_unpickling_code(tmp_path):
    sd = published_v2()
    path = tmp_path / "vil2_tiny16.th"
    torch.save({"state_dict": sd, "epoch": 800, "ctor_kwargs": {"dim": 16}}, path)
    loaded = read_checkpoint(path)
    assert sorted(loaded) == sorted(sd)
    model = load_vision_lstm(path)
    assert model.config.dim == 16 and not model.training
    target = tmp_path / "pwned"

    class Evil:  # unpickling it would create `target`
        def __reduce__(self):
            return (pathlib.Path.touch, (target,))

    evil = tmp_path / "evil.th"
    evil.write_bytes(pickle.dumps({"state_dict": {"x": Evil()}}, protocol=2))
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        read_checkpoint(evil)
    assert not target.exists()


def test_new_image_size_interpolates_positions_and_new_classes_get_a_fresh_head():
    sd = published_v2()
    model = load_vision_lstm(sd, image_size=(16, 16), num_classes=3).double()
    assert model.config.grid == (4, 4) and model.head.weight.shape == (3, 32)
    expected = F.interpolate(sd["pos_embed.embed"].permute(0, 3, 1, 2), size=(4, 4), mode="bicubic",
                             align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(model.pos_embed.embed, expected)
    base = load_vision_lstm(sd).double()
    images = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    # the trunk is the checkpoint's (the original model interpolates the same way at run time)
    torch.testing.assert_close(model.features(images), base.features(images))


def test_not_a_vision_lstm_state_dict_is_a_one_line_error():
    with pytest.raises(ValueError, match="not a Vision-LSTM state dict"):
        detect_layout({"encoder.weight": torch.zeros(2)})
    sd = published_v2()
    del sd["pos_embed.embed"]
    with pytest.raises(ValueError, match="lacks 'pos_embed.embed'"):
        convert_state_dict(sd)

"""Published Vision-LSTM weights (NX-AI/vision-lstm) as an `xlstmkit.models.VisionLSTM`.

    model = load_vision_lstm("vil2_tiny16_e800_in1k.th")                 # a downloaded checkpoint file
    model = load_vision_lstm(state_dict, num_classes=10, image_size=64)  # new head, interpolated positions
    config, state = convert_state_dict(state_dict)                      # the parts

Four published layouts are read (`detect_layout`), and xlstmkit's own:

- "vil2": the state dict of the `VisionLSTM2` module (what `torch.hub.load("nx-ai/vision-lstm", "vil2-tiny")`
  returns): `blocks.{i}.{rowwise_from_top_left|rowwise_from_bot_right}.{norm, layer.{proj_up, q_proj, k_proj,
  v_proj, conv, mlstm_cell.{igate, fgate, outnorm}, learnable_skip, proj_down}}`, `patch_embed.proj`,
  `pos_embed.embed`, `norm`, `legacy_norm`, `head`;
- "vil1": the `VisionLSTM` (v1) module: 2 * depth single blocks `blocks.{j}.{norm, layer.{..., conv1d.conv,
  mlstm_cell...}}` alternating top-left (even j) and bottom-right (odd j), `legacy_norm` (a (1 + w) LayerNorm
  before pooling), `norm` (a plain LayerNorm after pooling), `head`;
- "raw": a training checkpoint (`.th`, the tensors under "state_dict"), as the hub loader renames it:
  `blocks.{j}.xlstm.*` -> layer j, `blocks.{j}.xlstm_norm` -> its norm, `conv1d` -> `conv`, `post_blocks_norm` ->
  the norm before pooling, `head.0` -> the norm after pooling, `head.1` -> the head. Whether it is v1 or v2 is read
  from the convolution's shape (4-D: the 2-D convolution of v2).

xlstmkit's layout differs from "vil2" in three names only: the mLSTM cell's gates and norm sit directly in the layer
(`layer.igate`, not `layer.mlstm_cell.igate`), and the plain LayerNorm after pooling is `head_norm` (v2's
`legacy_norm`, v1's `norm`); v1's (1 + w) `legacy_norm` is xlstmkit's `norm`. Both store every (1 + w) norm's w, so
no weight is changed: the norms map to norms of the same parameterisation. The architecture (width, depth, patch and
image size, channels, classes, convolution, biases, pooling, legacy norm) is read from the tensors' shapes.

What could be verified here (no network): the key names and shapes as documented from the published source
(NX-AI/vision-lstm, `vision_lstm2.py`, `vision_lstm.py`, `hubconf.py`; see docs/vision.md), and that the converted
model computes the published equations on a state dict built with those names (tests/test_vision_interop.py holds it
to an independent reference). Not verified: the published checkpoint files themselves (they were not downloaded),
so in particular the raw-checkpoint key names, which come from the hub loader's renaming rules, not from a file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..models.vision_lstm import DIRECTIONS, VisionLSTM, VisionLSTMConfig, interpolate_pos_embed

LAYOUTS = ("xlstmkit", "vil2", "vil1", "raw")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def detect_layout(sd: dict[str, Tensor]) -> str:
    """Which of LAYOUTS a state dict has (ValueError if none)."""
    keys = list(sd)
    if any(".xlstm." in k or k.startswith("post_blocks_norm.") or k.startswith("head.0.") for k in keys):
        return "raw"
    if any(".mlstm_cell." in k for k in keys):
        if any(k.startswith("blocks.0.rowwise_from_top_left.") for k in keys):
            return "vil2"
        if any(k.startswith("blocks.0.layer.") for k in keys):
            return "vil1"
    if any(k.startswith("blocks.0.rowwise_from_top_left.layer.igate.") for k in keys):
        return "xlstmkit"
    sample = ", ".join(keys[:4])
    raise ValueError(f"not a Vision-LSTM state dict (keys start {sample}...): expected the layout of NX-AI/vision-lstm "
                     f"(VisionLSTM2 or VisionLSTM) or of xlstmkit")


def _pair_key(j: int, rest: str) -> str:
    return f"blocks.{j // 2}.{DIRECTIONS[j % 2]}.{rest}"


def _from_single_blocks(key: str) -> str:
    """blocks.{j}.rest (v1 / raw: one block per direction) -> blocks.{j // 2}.{direction}.rest."""
    m = _BLOCK.match(key)
    return _pair_key(int(m.group(1)), key[m.end():]) if m else key


def _cell(key: str) -> str:
    return key.replace(".mlstm_cell.", ".")


def to_xlstmkit(sd: dict[str, Tensor], layout: str | None = None) -> tuple[dict[str, Tensor], int]:
    """(state dict in xlstmkit's names, version) for a state dict in any of LAYOUTS; tensors are not copied."""
    layout = layout or detect_layout(sd)
    if layout == "xlstmkit":
        conv = next((v for k, v in sd.items() if k.endswith(".layer.conv.weight")), None)
        return dict(sd), 2 if conv is not None and conv.dim() == 4 else 1
    out: dict[str, Tensor] = {}
    if layout == "vil2":
        for k, v in sd.items():
            out["head_norm." + k[len("legacy_norm."):] if k.startswith("legacy_norm.") else _cell(k)] = v
        return out, 2
    if layout == "vil1":
        for k, v in sd.items():
            if k.startswith("legacy_norm."):
                k = "norm." + k[len("legacy_norm."):]
            elif k.startswith("norm."):
                k = "head_norm." + k[len("norm."):]
            else:
                k = _cell(_from_single_blocks(k)).replace(".conv1d.conv.", ".conv.").replace(".conv1d.", ".conv.")
            out[k] = v
        return out, 1
    if layout == "raw":
        conv = [v for k, v in sd.items() if re.search(r"\.conv1d\.(conv\.)?weight$", k) or k.endswith(".conv.weight")]
        version = 2 if conv and conv[0].dim() == 4 else 1
        for k, v in sd.items():
            k = k.replace(".xlstm.", ".layer.")
            if k.startswith("xlstm."):
                k = k[len("xlstm."):]
            k = k.replace(".xlstm_norm.", ".norm.")
            if k.startswith("post_blocks_norm."):
                k = "norm." + k[len("post_blocks_norm."):]
            elif k.startswith("head.0."):
                k = "head_norm." + k[len("head.0."):]
            elif k.startswith("head.1."):
                k = "head." + k[len("head.1."):]
            else:
                k = _cell(_from_single_blocks(k)).replace(".conv1d.conv.", ".conv.").replace(".conv1d.", ".conv.")
            out[k] = v
        return out, version
    raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")


def config_from_state_dict(sd: dict[str, Tensor], version: int, **overrides: Any) -> VisionLSTMConfig:
    """The VisionLSTMConfig whose parameters have the shapes of `sd` (xlstmkit names), with `overrides` applied
    (fields that change no shape, or image_size / num_classes: see `convert_state_dict`)."""
    def need(key: str) -> Tensor:
        if key not in sd:
            raise ValueError(f"the state dict lacks {key!r}: is it a complete Vision-LSTM checkpoint?")
        return sd[key]

    pe = need("patch_embed.proj.weight")  # (d, C, ph, pw)
    dim, channels, patch = pe.shape[0], pe.shape[1], tuple(pe.shape[2:])
    grid = tuple(need("pos_embed.embed").shape[1:3])
    depth = 1 + max(int(m.group(1)) for k in sd if (m := _BLOCK.match(k)))
    prefix = "blocks.0.rowwise_from_top_left."
    inner = need(prefix + "layer.proj_up.weight").shape[0] // 2
    conv = need(prefix + "layer.conv.weight")
    fields: dict[str, Any] = dict(
        dim=dim, depth=depth, in_channels=channels, patch_size=patch,
        image_size=(grid[0] * patch[0], grid[1] * patch[1]), version=version, expansion=inner // dim,
        qkv_block_size=need(prefix + "layer.q_proj.weight").shape[-1],
        num_heads=need(prefix + "layer.igate.weight").shape[0],
        conv_kind="2d" if conv.dim() == 4 else "causal1d", conv_kernel_size=conv.shape[-1],
        proj_bias=prefix + "layer.proj_up.bias" in sd, norm_bias=prefix + "norm.bias" in sd,
        legacy_norm=("head_norm.weight" in sd) if version == 2 else ("norm.weight" in sd))
    if "head.weight" in sd:
        fields["num_classes"] = sd["head.weight"].shape[0]
        fields["pooling"] = "bilateral_flatten" if sd["head.weight"].shape[1] == 2 * dim else "bilateral_avg"
    else:
        fields["num_classes"], fields["pooling"] = None, "to_image"
    if inner % dim:
        raise ValueError(f"the up-projection width {2 * inner} is not an even multiple of the width {dim}")
    return VisionLSTMConfig(**{**fields, **overrides})


def convert_state_dict(sd: dict[str, Tensor], layout: str | None = None,
                       **overrides: Any) -> tuple[VisionLSTMConfig, dict[str, Tensor]]:
    """(config, state dict) of an xlstmkit VisionLSTM from a published (or xlstmkit) state dict.

    overrides: any VisionLSTMConfig field. `image_size` other than the checkpoint's interpolates the position
    embedding bicubically (as the published model does); `num_classes` other than the checkpoint's drops the head
    (and, when its width changes, the norm after pooling), which the new model initialises afresh (fine-tuning on
    another label set). Fields that would change other shapes are refused by the shape check of `load_state_dict`.
    """
    state, version = to_xlstmkit(sd, layout)
    base = config_from_state_dict(state, version)
    cfg = config_from_state_dict(state, version, **overrides)
    if cfg.grid != base.grid:
        state["pos_embed.embed"] = interpolate_pos_embed(state["pos_embed.embed"], cfg.grid)
    if cfg.num_classes != base.num_classes or cfg.pooling != base.pooling:
        for k in [k for k in state if k.startswith("head.")]:
            del state[k]
        if cfg.head_dim != base.head_dim or cfg.features_only != base.features_only:
            for k in [k for k in state if k.startswith("head_norm.")]:
                del state[k]
    return cfg, state


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint file: a published `.th`/`.pth` file (read with torch.load(weights_only=True), so
    nothing but tensors and plain containers is unpickled; the tensors under "state_dict" when present) or a
    safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"cannot read checkpoint {path} as a torch weights file ({first[:200]})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"checkpoint {path} holds no state dict of tensors")
    return obj


def load_vision_lstm(source: str | Path | dict[str, Tensor], layout: str | None = None,
                     **overrides: Any) -> VisionLSTM:
    """A VisionLSTM with the weights of a published checkpoint (file or state dict), in eval mode; overrides as in
    `convert_state_dict`. Parameters the checkpoint does not hold (a new head) keep their initialisation."""
    sd = read_checkpoint(source) if isinstance(source, (str, Path)) else source
    cfg, state = convert_state_dict(sd, layout, **overrides)
    model = VisionLSTM(cfg)
    expected = model.state_dict()
    fresh = {k for k in expected if k.startswith(("head.", "head_norm."))} - set(state)
    missing = sorted(set(expected) - set(state) - fresh)
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(p for p in (f"missing {missing[:3]}" if missing else "",
                                       f"unexpected {unexpected[:3]}" if unexpected else "",
                                       f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the model "
                                       f"{tuple(expected[wrong[0]].shape)}" if wrong else "") if p)
        raise ValueError(f"the checkpoint does not fit a Vision-LSTM of the config it implies ({detail})")
    model.load_state_dict(state, strict=False)
    return model.eval()


__all__ = ["LAYOUTS", "detect_layout", "to_xlstmkit", "config_from_state_dict", "convert_state_dict",
           "read_checkpoint", "load_vision_lstm"]

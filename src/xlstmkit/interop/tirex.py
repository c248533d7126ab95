"""TiRex checkpoints (NX-AI's ``model.ckpt``, the ``tirex-ts`` layout) as :class:`xlstmkit.models.tirex.TiRex`.

    model = load_tirex("model.ckpt")          # a local file: nothing is downloaded
    q, median = model.forecast(series, prediction_length=48)

**The file** is a PyTorch Lightning checkpoint: ``hyper_parameters = {"model_config": {...}, "train_ctx_len": N}``
with ``model_config`` holding ``input_patch_size``, ``output_patch_size``, ``quantiles``, ``input_ff_dim`` and
``block_kwargs`` (``embedding_dim``, ``num_heads``, ``num_blocks``, ``ffn_proj_factor``), and a ``state_dict`` whose
keys may carry a ``block_stack.`` prefix (``tirex-ts`` strips it on load, so do we). It is read with
``torch.load(weights_only=True)``: tensors and plain containers only, no code from the file is run.

**The layout differences this loader handles:**

- *Key names.* ``blocks.i.norm_slstm`` -> ``blocks.i.norm``, ``slstm_layer.*`` -> ``layer.*``,
  ``slstm_cell._recurrent_kernel_`` -> ``layer.recurrent``, ``slstm_cell._bias_`` -> ``layer.bias``,
  ``group_norm`` -> ``layer.outnorm``, ``norm_ffn`` -> ``ffn_norm``.
- *The gate-slot order.* TiRex concatenates its head-wise gate maps as ``[fgate, igate, zgate, ogate]`` and its cell
  reads slot 0 as the input gate and slot 1 as the forget gate (as ``forward()`` of NX-AI/xlstm's
  ``blocks/slstm/layer.py`` does). So the module *named* ``fgate`` computes the input gate: it goes to our ``igate``,
  and ``igate`` to our ``fgate``. The recurrent kernel and the bias are stored per slot, so they need no swap.
- *The head-major bias.* ``_bias_`` (NH * 4 * DH) is stored as (NH, 4, DH), which is our layout already (TiRex's
  torch cell permutes it to gate-major itself); it is copied as is. The recurrent kernel (NH, DH, 4 * DH) maps a
  head's h to its four gate slots, as ours.
- *The 1 + w norm weights.* The per-head group norm stores w and scales by 1 + w, which is our
  ``MultiHeadLayerNorm``'s residual weight: copied as is. The RMSNorms store the plain scale (start 1): ours too.
- *The SwiGLU.* ``ffn.proj_up_gate`` and ``ffn.proj_up`` become the two halves of our ``ffn.proj_up`` (gate first).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..models.tirex import TiRex, TiRexConfig

PREFIX = "block_stack."


def config_from_hparams(hparams: dict) -> TiRexConfig:
    """The TiRexConfig of a checkpoint's ``hyper_parameters`` (``{"model_config": {...}, "train_ctx_len": N}``)."""
    if not isinstance(hparams, dict) or "model_config" not in hparams:
        raise ValueError("not a TiRex checkpoint: hyper_parameters has no 'model_config' (expected NX-AI's "
                         "model.ckpt layout)")
    mc = hparams["model_config"]
    blocks = mc.get("block_kwargs", {})
    if mc.get("input_patch_size") != mc.get("output_patch_size"):
        raise ValueError(f"TiRex checkpoint with input_patch_size {mc.get('input_patch_size')} != output_patch_size "
                         f"{mc.get('output_patch_size')}: not supported (the published model uses 32 for both)")
    try:
        return TiRexConfig(patch_size=int(mc["input_patch_size"]), quantiles=tuple(float(q) for q in mc["quantiles"]),
                           embedding_dim=int(blocks["embedding_dim"]), num_blocks=int(blocks["num_blocks"]),
                           num_heads=int(blocks["num_heads"]), input_ff_dim=int(mc["input_ff_dim"]),
                           ffn_proj_factor=float(blocks.get("ffn_proj_factor", 2.6667)),
                           train_ctx_len=int(hparams.get("train_ctx_len") or mc.get("train_ctx_len") or 2048))
    except KeyError as exc:
        raise ValueError(f"TiRex checkpoint: model_config lacks {exc.args[0]!r}") from None


def convert_state_dict(state: dict[str, torch.Tensor], config: TiRexConfig) -> dict[str, torch.Tensor]:
    """TiRex's parameter names and layouts -> :class:`TiRex`'s (module docstring)."""
    state = {(k[len(PREFIX):] if k.startswith(PREFIX) else k): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in state:
            raise ValueError(f"TiRex checkpoint lacks {key!r} (is it a TiRex checkpoint of this configuration?)")
        used.add(key)
        return state[key]

    for part in ("input_patch_embedding", "output_patch_embedding"):
        for layer in ("hidden_layer", "output_layer", "residual_layer"):
            for p in ("weight", "bias"):
                out[f"{part}.{layer}.{p}"] = take(f"{part}.{layer}.{p}")
    out["out_norm.weight"] = take("out_norm.weight")
    for i in range(config.num_blocks):
        src, dst = f"blocks.{i}.", f"blocks.{i}."
        out[dst + "norm.weight"] = take(src + "norm_slstm.weight")
        out[dst + "ffn_norm.weight"] = take(src + "norm_ffn.weight")
        # the slot swap: the module named fgate fills slot 0, which the cell reads as the input gate
        out[dst + "layer.igate.weight"] = take(src + "slstm_layer.fgate.weight")
        out[dst + "layer.fgate.weight"] = take(src + "slstm_layer.igate.weight")
        out[dst + "layer.zgate.weight"] = take(src + "slstm_layer.zgate.weight")
        out[dst + "layer.ogate.weight"] = take(src + "slstm_layer.ogate.weight")
        out[dst + "layer.recurrent"] = take(src + "slstm_layer.slstm_cell._recurrent_kernel_")
        out[dst + "layer.bias"] = take(src + "slstm_layer.slstm_cell._bias_")  # (NH, 4, DH) flat: our layout
        out[dst + "layer.outnorm.weight"] = take(src + "slstm_layer.group_norm.weight")  # 1 + w in both
        out[dst + "ffn.proj_up.weight"] = torch.cat([take(src + "ffn.proj_up_gate.weight"),
                                                     take(src + "ffn.proj_up.weight")], dim=0)
        out[dst + "ffn.proj_down.weight"] = take(src + "ffn.proj_down.weight")
    extra = sorted(set(state) - used)
    if extra:
        raise ValueError(f"TiRex checkpoint has {len(extra)} unexpected entries (first: {extra[0]!r}); is it a TiRex "
                         f"checkpoint with {config.num_blocks} blocks?")
    return out


def from_state_dict(state: dict[str, torch.Tensor], config: TiRexConfig) -> TiRex:
    """A :class:`TiRex` with the weights of a TiRex state dict (``tirex-ts`` names)."""
    model = TiRex(config)
    converted = convert_state_dict(state, config)
    own = model.state_dict()
    for k, v in converted.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"TiRex checkpoint: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)} for "
                             "the configuration in its hyper_parameters")
    model.load_state_dict({k: v.to(torch.float32) for k, v in converted.items()})
    return model.eval()


def load_tirex(path: str | os.PathLike) -> TiRex:
    """Read a local TiRex checkpoint (``model.ckpt``) as a :class:`TiRex` on the CPU, in float32, eval mode."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"TiRex checkpoint {path} does not exist or is not a file; download NX-AI/TiRex's "
                         "model.ckpt once and pass its path")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file or a pickle with code in it
        raise ValueError(f"cannot read {path} as a TiRex checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ValueError(f"{path} is not a TiRex (Lightning) checkpoint: it lacks 'state_dict' or 'hyper_parameters'")
    return from_state_dict(ckpt["state_dict"], config_from_hparams(ckpt["hyper_parameters"]))


__all__ = ["config_from_hparams", "convert_state_dict", "from_state_dict", "load_tirex"]

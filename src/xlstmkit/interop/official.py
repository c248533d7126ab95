"""Conversion from the official NX-AI `xlstm` package (the NeurIPS-paper blocks) to xlstmkit.

    from xlstm import xLSTMLMModel              # the official model, with its weights
    from xlstmkit.interop.official import from_official
    ours = from_official(official_model)        # an xLSTMLM computing the same logits
    ours = from_official(official_model.xlstm_block_stack)   # or just the block stack, as our xLSTMBlockStack

Why: the official package is the reference the paper's numbers were produced with. Converting its models lets a user
bring a trained official model to xlstmkit (any sequence length, state in and out, no CUDA build for the sLSTM), and
lets our tests use it as the judge of our numerics.

What is converted: mLSTM blocks and sLSTM blocks (either backend: the sLSTM recurrent kernel and bias are read through
the cell's own backend-independent layout), any `slstm_at`, tied or untied embeddings, the post-blocks norm, dropout
settings and `bias=True` (xlstmkit's `bias=True` adds biases in a few more places than the official code; those
extra biases are set to zero, which computes the same function).

What is refused, all at once in one `ValueError` that lists every problem (nothing is converted silently when the
official model computes something xlstmkit cannot): sLSTM `function="lstm"`, the sLSTM gradient/forward clipping and
gradient-cut options and compiler `constants`, non-default sLSTM tensor layouts (`input_shape`, `output_shape`),
sLSTM blocks without a feed-forward, feed-forward activations other than GeLU or types other than "ffn_gated",
dropout rates that differ between the layers, norms with biases or different eps values, head counts or block sizes
that differ between blocks of one kind, convolutions with channel mixing or without bias.

Options that only matter for initialisation or optimisation (`bias_init` is mapped, `recurrent_weight_init`,
`weight_decay_on_embedding`, the CUDA kernel dtypes, `batch_size`) do not change the function computed and are not
errors: the converted model gets the official weights. `context_length` is dropped: xlstmkit has no length limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..config import xLSTMConfig
from ..models.xlstm_lm import xLSTMLM
from ..nn.block_stack import xLSTMBlockStack

__all__ = ["from_official", "config_from_official", "OfficialConversionError"]


class OfficialConversionError(ValueError):
    """The official model uses options xlstmkit cannot reproduce; `problems` lists every one of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(dict.fromkeys(problems))  # each problem once, even if several blocks have it
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"cannot convert this official xlstm model; {len(self.problems)} unsupported "
                         f"option(s):\n{lines}")


def _import_xlstm():
    try:
        import xlstm  # noqa: F401
        from xlstm.blocks.mlstm.layer import mLSTMLayer
        from xlstm.blocks.slstm.layer import sLSTMLayer
        from xlstm.xlstm_block_stack import xLSTMBlockStack as OfficialStack
        from xlstm.xlstm_lm_model import xLSTMLMModel
    except ImportError as exc:  # pragma: no cover - the package is a test dependency
        raise ImportError("from_official needs the official `xlstm` package (pip install xlstm)") from exc
    return xLSTMLMModel, OfficialStack, mLSTMLayer, sLSTMLayer


# ----------------------------------------------------------------------------------------------------------------------
# reading the configuration


@dataclass
class _Plan:
    """What the inspection of an official model found: our config fields and the problems."""

    fields: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    inner_dim: int | None = None  # the official mLSTM inner (up-projected) dimension
    ffn_dim: int | None = None  # the official feed-forward hidden dimension
    round_multiples: set[int] = field(default_factory=set)

    def agree(self, name: str, values: list[Any], what: str) -> Any:
        """The single value all blocks share; a problem (and the first value) if they differ."""
        distinct = []
        for v in values:
            if v not in distinct:
                distinct.append(v)
        if len(distinct) > 1:
            self.problems.append(f"{what} differs between blocks ({distinct}); xlstmkit uses one {name} per block "
                                 f"kind")
        return distinct[0] if distinct else None


def _split(model: nn.Module):
    """(official stack, official LM or None), or a TypeError for anything else."""
    xLSTMLMModel, OfficialStack, *_ = _import_xlstm()
    if isinstance(model, xLSTMLMModel):
        return model.xlstm_block_stack, model
    if isinstance(model, OfficialStack):
        return model, None
    raise TypeError(f"model must be an official xlstm.xLSTMLMModel or xlstm.xLSTMBlockStack, got "
                    f"{type(model).__module__}.{type(model).__name__}")


def _norm_eps(plan: _Plan, name: str, norm: nn.Module, eps_values: list[float]) -> None:
    if norm is None or isinstance(norm, nn.Identity):
        return
    eps_values.append(float(norm.eps))
    if getattr(norm, "bias", None) is not None:
        plan.problems.append(f"{name} has a bias; xlstmkit's norms are bias-free unless bias=True everywhere")


def _inspect_conv(plan: _Plan, name: str, conv_module: nn.Module | None) -> None:
    if conv_module is None:
        return
    c = conv_module.config
    if c.channel_mixing:
        plan.problems.append(f"{name}: channel_mixing=True (xlstmkit's causal convolution is depthwise)")
    if not c.causal_conv_bias:
        plan.problems.append(f"{name}: causal_conv_bias=False (xlstmkit's causal convolution has a bias)")
    if c.conv1d_kwargs:
        plan.problems.append(f"{name}: conv1d_kwargs={c.conv1d_kwargs!r} are not supported")


def _inspect(model: nn.Module) -> tuple[nn.Module, nn.Module | None, _Plan]:
    stack, lm = _split(model)
    _, _, mLSTMLayer, sLSTMLayer = _import_xlstm()
    plan = _Plan()
    scfg = stack.config
    E = int(scfg.embedding_dim)
    blocks = list(stack.blocks)
    kinds = []
    for idx, block in enumerate(blocks):
        if isinstance(block.xlstm, mLSTMLayer):
            kinds.append("m")
        elif isinstance(block.xlstm, sLSTMLayer):
            kinds.append("s")
        else:
            raise TypeError(f"block {idx} holds a {type(block.xlstm).__name__}, neither an mLSTM nor an sLSTM layer")
    m_blocks = [b for b, k in zip(blocks, kinds) if k == "m"]
    s_blocks = [b for b, k in zip(blocks, kinds) if k == "s"]
    eps_values: list[float] = []
    dropouts: list[float] = [float(scfg.dropout)]
    has_bias = bool(scfg.bias)

    for i, b in enumerate(blocks):
        _norm_eps(plan, f"block {i} pre-norm", b.xlstm_norm, eps_values)
        if b.ffn_norm is not None:
            _norm_eps(plan, f"block {i} feed-forward norm", b.ffn_norm, eps_values)
    _norm_eps(plan, "post-blocks norm", stack.post_blocks_norm, eps_values)

    # mLSTM layers
    if m_blocks:
        cfgs = [b.xlstm.config for b in m_blocks]
        plan.fields["mlstm_num_heads"] = plan.agree("mlstm_num_heads", [c.num_heads for c in cfgs],
                                                    "mLSTM num_heads")
        plan.fields["qkv_proj_blocksize"] = plan.agree("qkv_proj_blocksize", [c.qkv_proj_blocksize for c in cfgs],
                                                       "mLSTM qkv_proj_blocksize")
        k = plan.agree("mlstm_conv_kernel", [c.conv1d_kernel_size for c in cfgs], "mLSTM conv1d_kernel_size")
        if k is not None and k < 1:
            plan.problems.append("mLSTM conv1d_kernel_size=0 (xlstmkit's mLSTM block needs its convolution)")
        plan.fields["mlstm_conv_kernel"] = k
        plan.fields["mlstm_proj_factor"] = plan.agree("mlstm_proj_factor", [c.proj_factor for c in cfgs],
                                                      "mLSTM proj_factor")
        plan.inner_dim = plan.agree("inner dimension", [c._inner_embedding_dim for c in cfgs], "mLSTM inner dim")
        plan.round_multiples |= {c.round_proj_up_to_multiple_of for c in cfgs if c.round_proj_up_dim_up}
        if not all(c.round_proj_up_dim_up for c in cfgs):
            plan.round_multiples.add(-1)  # rounding down: only the exact-size fallback reproduces it
        dropouts += [float(c.dropout) for c in cfgs]
        has_bias |= any(bool(c.bias) for c in cfgs)
        for i, b in zip([i for i, k in enumerate(kinds) if k == "m"], m_blocks):
            _inspect_conv(plan, f"block {i} mLSTM conv1d", b.xlstm.conv1d if b.xlstm.conv1d.conv is not None
                          else None)
            _norm_eps(plan, f"block {i} mLSTM cell outnorm", b.xlstm.mlstm_cell.outnorm, eps_values)

    # sLSTM layers
    if s_blocks:
        cfgs = [b.xlstm.config for b in s_blocks]
        plan.fields["slstm_num_heads"] = plan.agree("slstm_num_heads", [c.num_heads for c in cfgs],
                                                    "sLSTM num_heads")
        plan.fields["slstm_conv_kernel"] = plan.agree("slstm_conv_kernel", [c.conv1d_kernel_size for c in cfgs],
                                                      "sLSTM conv1d_kernel_size")
        plan.fields["slstm_bias_init"] = plan.agree("slstm_bias_init", [c.bias_init for c in cfgs],
                                                    "sLSTM bias_init")
        for c in cfgs:
            if c.function != "slstm":
                plan.problems.append(f"sLSTM function={c.function!r} (xlstmkit implements 'slstm' only)")
            if c.num_gates != 4:
                plan.problems.append(f"sLSTM num_gates={c.num_gates} (xlstmkit's sLSTM has the 4 gates i, f, z, o)")
            if c.backend not in ("vanilla", "cuda"):
                plan.problems.append(f"sLSTM backend={c.backend!r} is unknown")
            if c.gradient_recurrent_cut:
                plan.problems.append("sLSTM gradient_recurrent_cut=True (changes the backward; not implemented)")
            if c.gradient_recurrent_clipval is not None:
                plan.problems.append(f"sLSTM gradient_recurrent_clipval={c.gradient_recurrent_clipval} (changes the "
                                     f"backward, and the CUDA forward; not implemented)")
            if c.forward_clipval is not None:
                plan.problems.append(f"sLSTM forward_clipval={c.forward_clipval} (asks for clipping of the "
                                     f"forward, which xlstmkit does not do; xlstm 2.0.6 itself ignores the field)")
            if c.constants:
                plan.problems.append(f"sLSTM constants={c.constants!r} (kernel compile constants; not supported)")
            if c.input_shape != "BSGNH":
                plan.problems.append(f"sLSTM input_shape={c.input_shape!r} (only the layer's own 'BSGNH')")
            if c.output_shape != "BNSH":
                plan.problems.append(f"sLSTM output_shape={c.output_shape!r} (only the layer's own 'BNSH')")
        if plan.fields["slstm_bias_init"] not in (None, "powerlaw_blockdependent", "small_init", "standard",
                                                  "zeros"):
            plan.problems.append(f"sLSTM bias_init={plan.fields['slstm_bias_init']!r} is unknown")
        dropouts += [float(c.dropout) for c in cfgs]
        s_idx = [i for i, k in enumerate(kinds) if k == "s"]
        for i, b in zip(s_idx, s_blocks):
            _inspect_conv(plan, f"block {i} sLSTM conv1d", getattr(b.xlstm, "conv1d", None))
            _norm_eps(plan, f"block {i} sLSTM group_norm", b.xlstm.group_norm, eps_values)
        ffns = [b.ffn for b in s_blocks]
        if any(f is None for f in ffns):
            plan.problems.append("sLSTM blocks without a feed-forward (feedforward=None); xlstmkit's sLSTM block "
                                 "always has its gated FFN")
        fcfgs = [f.config for f in ffns if f is not None]
        if fcfgs:
            for fc in fcfgs:
                if fc.act_fn != "gelu":
                    plan.problems.append(f"feed-forward act_fn={fc.act_fn!r} (xlstmkit's gated FFN uses 'gelu')")
                if fc.ff_type != "ffn_gated":
                    plan.problems.append(f"feed-forward ff_type={fc.ff_type!r} (only 'ffn_gated')")
            plan.fields["ffn_proj_factor"] = plan.agree("ffn_proj_factor", [fc.proj_factor for fc in fcfgs],
                                                        "feed-forward proj_factor")
            plan.ffn_dim = plan.agree("ffn dim", [fc._proj_up_dim for fc in fcfgs], "feed-forward dim")
            plan.round_multiples |= {fc.round_proj_up_to_multiple_of for fc in fcfgs if fc.round_proj_up_dim_up}
            if not all(fc.round_proj_up_dim_up for fc in fcfgs):
                plan.round_multiples.add(-1)
            dropouts += [float(fc.dropout) for fc in fcfgs]
            has_bias |= any(bool(fc.bias) for fc in fcfgs)

    for size, what in ((plan.inner_dim, "mLSTM inner dimension"), (plan.ffn_dim, "feed-forward dimension")):
        if size is not None and size < 1:
            plan.problems.append(f"the {what} is {size} (proj_factor rounded down to 0); xlstmkit needs >= 1")
    # whole model
    distinct_dropout = sorted(set(dropouts))
    if len(distinct_dropout) > 1:
        plan.problems.append(f"dropout rates differ between the stack, the layers and the feed-forward "
                             f"({distinct_dropout}); xlstmkit uses one dropout rate (set FeedForwardConfig.dropout "
                             f"to the stack's dropout, or all to 0 for inference)")
    distinct_eps = sorted(set(eps_values))
    if len(distinct_eps) > 1:
        plan.problems.append(f"norm eps values differ ({distinct_eps}); xlstmkit uses one norm_eps")
    plan.fields.update(
        embedding_dim=E,
        num_blocks=len(blocks),
        slstm_at=tuple(i for i, k in enumerate(kinds) if k == "s"),
        dropout=distinct_dropout[0],
        bias=has_bias,
        norm_eps=distinct_eps[0] if distinct_eps else 1e-5,
        add_post_blocks_norm=not isinstance(stack.post_blocks_norm, nn.Identity),
        forget_gate="sigmoid",  # the official mLSTM and sLSTM use the sigmoid forget gate (in log space), only
    )
    if lm is not None:
        plan.fields.update(
            vocab_size=int(lm.config.vocab_size),
            tie_weights=lm.lm_head.weight is lm.token_embedding.weight,
            embedding_dropout=not isinstance(lm.emb_dropout, nn.Identity),
        )
        if lm.lm_head.bias is not None:
            plan.problems.append("lm_head has a bias (xlstmkit's head is bias-free)")
        if lm.token_embedding.padding_idx is not None or lm.token_embedding.max_norm is not None:
            plan.problems.append("token_embedding uses padding_idx or max_norm (not supported)")
    # drop fields of block kinds the model does not have (keep our defaults for those)
    plan.fields = {k: v for k, v in plan.fields.items() if v is not None}
    return stack, lm, plan


def _sizes_config(plan: _Plan, extra: dict[str, Any]) -> xLSTMConfig:
    """Our config, with proj factors and rounding that give exactly the official inner and feed-forward sizes.

    First the official factors and rounding multiple as they are (the common case, and the readable config); if
    that does not reproduce the sizes (rounding down, different multiples for mLSTM and FFN), the factors are set
    to the exact sizes and the multiple to one that divides both."""
    fields = {**plan.fields, **extra}
    multiples = plan.round_multiples
    if len(multiples) == 1 and -1 not in multiples:
        try:
            cfg = xLSTMConfig(**fields, round_up_to=next(iter(multiples)))
        except ValueError:
            cfg = None
        if cfg is not None and _sizes_match(cfg, plan):
            return cfg
    sizes = [s for s in (plan.inner_dim, plan.ffn_dim) if s is not None]
    multiple = math.gcd(*sizes) if sizes else 64
    E = fields["embedding_dim"]
    exact = dict(fields, round_up_to=multiple)
    # any x in (size - multiple, size] rounds up to size: aim at the middle, away from float rounding at the ends
    if plan.inner_dim is not None:
        exact["mlstm_proj_factor"] = (plan.inner_dim - multiple / 2) / E
    if plan.ffn_dim is not None:
        exact["ffn_proj_factor"] = (plan.ffn_dim - multiple / 2) / E
    cfg = xLSTMConfig(**exact)
    if not _sizes_match(cfg, plan):  # cannot happen by the arithmetic above; never return a wrong-sized model
        raise RuntimeError(f"could not reproduce the official sizes (inner {plan.inner_dim}, ffn {plan.ffn_dim}); "
                           f"got {cfg.mlstm_inner_dim}, {cfg.ffn_dim}")
    return cfg


def _sizes_match(cfg: xLSTMConfig, plan: _Plan) -> bool:
    return (plan.inner_dim is None or cfg.mlstm_inner_dim == plan.inner_dim) and (
        plan.ffn_dim is None or cfg.ffn_dim == plan.ffn_dim)


def config_from_official(model: nn.Module, *, mlstm_form: str = "chunkwise", chunk_size: int = 64) -> xLSTMConfig:
    """The `xLSTMConfig` of the xlstmkit model that computes what an official `xLSTMLMModel` or `xLSTMBlockStack`
    computes. `mlstm_form` and `chunk_size` are xlstmkit's own choices (the official model is parallel-only).
    Raises `OfficialConversionError` (a ValueError) listing every unsupported official option."""
    _, _, plan = _inspect(model)
    if plan.problems:
        raise OfficialConversionError(plan.problems)
    return _sizes_config(plan, {"mlstm_form": mlstm_form, "chunk_size": chunk_size})


# ----------------------------------------------------------------------------------------------------------------------
# copying the weights

def _norm_weight(norm: nn.Module) -> Tensor:
    """An official LayerNorm's effective scale, as xlstmkit's residual weight w (scale = 1 + w)."""
    if norm.weight is None:
        return torch.zeros(norm.ndim)
    w = norm.weight.detach()
    return w if norm.residual_weight else w - 1.0


def _weight_map(stack: nn.Module, lm: nn.Module | None, ours: nn.Module, prefix: str, off_prefix: str
                ) -> tuple[dict[str, Tensor], set[str]]:
    """Our state-dict entries, built from the official model, and the official state-dict keys they consumed."""
    _, _, mLSTMLayer, _ = _import_xlstm()
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    off_sd = dict((lm if lm is not None else stack).named_parameters(remove_duplicate=False))

    def take(off_key: str, transform: Callable[[Tensor], Tensor] = lambda t: t) -> Tensor:
        used.add(off_key)
        return transform(off_sd[off_key].detach())

    def linear(off: str, our: str) -> None:
        """weight (and bias, if the official module has one) of a linear or head-wise linear map."""
        out[f"{our}.weight"] = take(f"{off}.weight")
        if f"{off}.bias" in off_sd:
            out[f"{our}.bias"] = take(f"{off}.bias")

    def norm(module: nn.Module, off: str, our: str) -> None:
        if module.weight is not None:
            used.add(f"{off}.weight")
        out[f"{our}.weight"] = _norm_weight(module)

    sp = f"{prefix}stack." if lm is not None else prefix
    for i, block in enumerate(stack.blocks):
        off, our = f"{off_prefix}blocks.{i}", f"{sp}blocks.{i}"
        norm(block.xlstm_norm, f"{off}.xlstm_norm", f"{our}.norm")
        layer, ol, yl = block.xlstm, f"{off}.xlstm", f"{our}.layer"
        if isinstance(layer, mLSTMLayer):
            for name in ("proj_up", "q_proj", "k_proj", "v_proj", "proj_down"):
                linear(f"{ol}.{name}", f"{yl}.{name}")
            linear(f"{ol}.conv1d.conv", f"{yl}.conv")
            linear(f"{ol}.mlstm_cell.igate", f"{yl}.igate")
            linear(f"{ol}.mlstm_cell.fgate", f"{yl}.fgate")
            norm(layer.mlstm_cell.outnorm, f"{ol}.mlstm_cell.outnorm", f"{yl}.outnorm")
            out[f"{yl}.learnable_skip"] = take(f"{ol}.learnable_skip")
        else:
            if getattr(layer, "conv1d", None) is not None:
                linear(f"{ol}.conv1d.conv", f"{yl}.conv")
            # the official layer feeds its `fgate` projection to the cell's input gate and `igate` to the forget
            # gate (the names are swapped in its code); map by the role in the cell
            linear(f"{ol}.fgate", f"{yl}.igate")
            linear(f"{ol}.igate", f"{yl}.fgate")
            linear(f"{ol}.zgate", f"{yl}.zgate")
            linear(f"{ol}.ogate", f"{yl}.ogate")
            cell = layer.slstm_cell
            NH, DH = cell.config.num_heads, cell.config.head_dim
            # read through the cell's backend-independent ("external") layouts: R (NH, DH_in, 4, DH_out) with gate
            # order i, f, z, o; bias (NH, 4, DH). Ours: R (NH, DH_in, 4 * DH_out), bias flat (NH, 4, DH).
            out[f"{yl}.recurrent"] = take(f"{ol}.slstm_cell._recurrent_kernel_",
                                          lambda t: cell._recurrent_kernel_int2ext(t).reshape(NH, DH, 4 * DH))
            out[f"{yl}.bias"] = take(f"{ol}.slstm_cell._bias_", lambda t: cell._bias_int2ext(t).reshape(-1))
            norm(layer.group_norm, f"{ol}.group_norm", f"{yl}.outnorm")
            norm(block.ffn_norm, f"{off}.ffn_norm", f"{our}.ffn_norm")
            linear(f"{off}.ffn.proj_up", f"{our}.ffn.proj_up")
            linear(f"{off}.ffn.proj_down", f"{our}.ffn.proj_down")
    if not isinstance(stack.post_blocks_norm, nn.Identity):
        norm(stack.post_blocks_norm, f"{off_prefix}post_blocks_norm", f"{sp}post_norm")
    if lm is not None:
        out[f"{prefix}embedding.weight"] = take("token_embedding.weight")
        out[f"{prefix}head.weight"] = take("lm_head.weight")

    # xlstmkit's bias=True also gives biases to places the official code keeps bias-free (norms, the FFN when only
    # the stack has bias, ...): zero biases there compute the same function
    ours_sd = ours.state_dict()
    for key, value in ours_sd.items():
        if key not in out and _is_extra_bias(key):
            out[key] = torch.zeros_like(value)
    leftovers_official = sorted(set(off_sd) - used)
    missing_ours = sorted(set(ours_sd) - set(out))
    unexpected = sorted(set(out) - set(ours_sd))
    errors = []
    if leftovers_official:
        errors.append(f"official tensors not mapped: {leftovers_official}")
    if missing_ours:
        errors.append(f"xlstmkit tensors not filled: {missing_ours}")
    if unexpected:
        errors.append(f"mapped to tensors xlstmkit does not have: {unexpected}")
    for key in set(out) & set(ours_sd):
        if tuple(out[key].shape) != tuple(ours_sd[key].shape):
            errors.append(f"{key}: official shape {tuple(out[key].shape)} != xlstmkit {tuple(ours_sd[key].shape)}")
    if errors:
        raise RuntimeError("official -> xlstmkit weight mapping is incomplete (a bug in the converter):\n  "
                           + "\n  ".join(errors))
    return out, used


_EXTRA_BIAS_OWNERS = ("norm.bias", "ffn.proj_up.bias", "ffn.proj_down.bias", "proj_up.bias", "proj_down.bias",
                      "q_proj.bias", "k_proj.bias", "v_proj.bias", "post_norm.bias")


def _is_extra_bias(key: str) -> bool:
    """Biases xlstmkit's bias=True adds that the official model may lack; they are filled with zeros."""
    return key.endswith(_EXTRA_BIAS_OWNERS)


def from_official(model: nn.Module, *, mlstm_form: str = "chunkwise", chunk_size: int = 64
                  ) -> xLSTMLM | xLSTMBlockStack:
    """An official `xlstm.xLSTMLMModel` as an `xLSTMLM`, or an official `xlstm.xLSTMBlockStack` as our
    `xLSTMBlockStack`, with the same weights and the same outputs.

    The result is on the official model's device and in its dtype, and in the same train/eval mode. `mlstm_form`
    and `chunk_size` choose how our mLSTM is computed (every form computes the same function). Raises
    `OfficialConversionError` (a ValueError) listing every official option xlstmkit cannot reproduce, and
    TypeError for something that is not an official model.
    """
    stack, lm, plan = _inspect(model)
    if plan.problems:
        raise OfficialConversionError(plan.problems)
    cfg = _sizes_config(plan, {"mlstm_form": mlstm_form, "chunk_size": chunk_size})
    ours: nn.Module = xLSTMLM(cfg) if lm is not None else xLSTMBlockStack(cfg)
    state, _ = _weight_map(stack, lm, ours, prefix="", off_prefix="xlstm_block_stack." if lm is not None else "")
    ref = next(model.parameters())
    dtype = ref.dtype if ref.dtype.is_floating_point else torch.float32
    ours = ours.to(device=ref.device, dtype=dtype)
    with torch.no_grad():
        ours_sd = ours.state_dict()
        ours.load_state_dict({k: v.to(device=ours_sd[k].device, dtype=ours_sd[k].dtype) for k, v in state.items()},
                             strict=True)
    ours.train(model.training)
    return ours

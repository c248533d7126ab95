"""Hugging Face xLSTM checkpoints (NX-AI/xLSTM-7b and anything `transformers.xLSTMForCausalLM` writes) <-> `xLSTMLarge`.

A checkpoint folder holds `config.json` (transformers' `xLSTMConfig` keys) and the weights as `model.safetensors`, or
as shards listed in `model.safetensors.index.json`. `load` accepts three tensor namings:

    transformers   backbone.embeddings.weight, backbone.blocks.{i}.mlstm_layer.q.weight, ..., lm_head.weight
    official       embedding.weight, backbone.blocks.{i}...            (NX-AI `xlstm.xlstm_large`)
    fused          ...mlstm_layer.qkv_opreact, ...mlstm_layer.ifgate_preact, ...ffn.proj_up_gate_z (weight_mode="fused")

`generation_config.json`, when present, gives the special token ids (as in transformers, it wins over config.json),
so a loaded model's `generate` stops at the checkpoint's `eos_token_id` by default.

Loading allocates no second copy of the weights: the model is built on the meta device (no memory, no init), and
every parameter is then assigned a tensor read from the memory-mapped safetensors file (zero-copy when no dtype cast
is asked for; one tensor at a time otherwise). Before anything is read, the folder is checked completely and every
problem (missing, unexpected or wrongly shaped tensors, a config that disagrees with the weights) is reported in
one ValueError (a `CheckpointError` listing them); a file that cannot be parsed at all (bad JSON, a damaged
safetensors header, a wrong type where a number belongs) is a one-line ValueError naming the file.

`save` writes the transformers layout (`model_type: "xlstm"`, `xLSTMForCausalLM`, native CPU kernels, single weight
mode), sharded with an index when `max_shard_size` is given, each file written atomically, and the tokenizer
files when a tokenizer is given.
`state_to_transformers` / `state_from_transformers` convert recurrent states to and from its `xLSTMCache.rnn_state`;
`load_tokenizer` reads the folder's `tokenizer.json`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from xlstmkit.models.xlstm_large import xLSTMLarge, xLSTMLargeConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
TOKENIZER_NAME = "tokenizer.json"
GENERATION_CONFIG_NAME = "generation_config.json"
MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit on a header

# transformers' xLSTMConfig key -> xLSTMLargeConfig field (same name unless listed in _ALIASES)
_SAME_KEYS = ("vocab_size", "num_heads", "use_bias", "norm_eps", "norm_reduction_force_float32", "add_out_norm",
              "qk_dim_factor", "v_dim_factor", "gate_soft_cap", "output_logit_soft_cap", "ffn_proj_factor",
              "ffn_round_up_to_multiple_of", "chunk_size", "eps", "pad_token_id", "bos_token_id", "eos_token_id")
_ALIASES = {"embedding_dim": ("hidden_size", "embedding_dim"), "num_blocks": ("num_hidden_layers", "num_blocks")}

_DTYPES = {"float32": torch.float32, "float": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
           "half": torch.float16, "float64": torch.float64}


class CheckpointError(ValueError):
    """A checkpoint folder that does not describe one consistent xLSTM-Large model; `problems` lists every issue."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s) with this xLSTM checkpoint:\n{lines}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


@contextmanager
def _reading(file: Path) -> Iterator[None]:
    """Turn whatever parsing a damaged file raises (JSONDecodeError, KeyError, TypeError, AttributeError,
    MemoryError, UnicodeDecodeError, safetensors' errors, ...) into one ValueError line naming the file."""
    try:
        yield
    except (FileNotFoundError, CheckpointError):
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to parse the file is the file's problem
        raise ValueError(f"{file} is damaged or not in the expected format ({_one_line(exc)})") from None


def _read_json(file: Path) -> Any:
    with _reading(file):
        return json.loads(file.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------------------------------------------
# config


def config_from_hf(d: dict[str, Any], problems: list[str] | None = None) -> xLSTMLargeConfig:
    """An `xLSTMLargeConfig` from a transformers `xLSTMConfig` dict (or an official xlstm_large config dict).

    Aliases `hidden_size`/`embedding_dim` and `num_hidden_layers`/`num_blocks` are accepted; when both are given
    they must agree. Missing keys take transformers' defaults (= xLSTM-7B). Contradictions are appended to
    `problems` when a list is passed (so `load` can report them with the weight problems), raised otherwise.
    """
    own = problems is None
    problems = [] if own else problems
    if d.get("model_type", "xlstm") != "xlstm":
        problems.append(f"config model_type is {d.get('model_type')!r}, expected 'xlstm'")
    kwargs: dict[str, Any] = {k: d[k] for k in _SAME_KEYS if k in d}
    if isinstance(kwargs.get("eos_token_id"), list):  # generation configs may list several; keep the first
        kwargs["eos_token_id"] = kwargs["eos_token_id"][0] if kwargs["eos_token_id"] else None
    for field, keys in _ALIASES.items():
        given = {k: d[k] for k in keys if d.get(k) is not None}
        if len({json.dumps(v, sort_keys=True) for v in given.values()}) > 1:
            problems.append(f"config gives {given}: these aliases must agree")
        if given:
            kwargs[field] = next(iter(given.values()))
    if d.get("tie_word_embeddings"):
        problems.append("config has tie_word_embeddings=true; xLSTM-Large has an untied lm_head")
    defaults = xLSTMLargeConfig()
    try:
        config = xLSTMLargeConfig(**kwargs)
    except (TypeError, ValueError) as err:
        problems.append(f"config is invalid: {err}")
        config = defaults
    if own and problems:
        raise ValueError("; ".join(problems))
    return config


def config_to_hf(config: xLSTMLargeConfig, dtype: torch.dtype) -> dict[str, Any]:
    """The config.json transformers' `xLSTMConfig` reads, with its native (CPU-capable) kernels."""
    return {
        "architectures": ["xLSTMForCausalLM"],
        "model_type": "xlstm",
        "vocab_size": config.vocab_size,
        "hidden_size": config.embedding_dim,
        "embedding_dim": config.embedding_dim,
        "num_hidden_layers": config.num_blocks,
        "num_blocks": config.num_blocks,
        "num_heads": config.num_heads,
        "use_bias": config.use_bias,
        "norm_reduction_force_float32": config.norm_reduction_force_float32,
        "tie_word_embeddings": False,
        "add_out_norm": config.add_out_norm,
        "norm_eps": config.norm_eps,
        "qk_dim_factor": config.qk_dim_factor,
        "v_dim_factor": config.v_dim_factor,
        "chunkwise_kernel": "chunkwise--native_autograd",
        "sequence_kernel": "native_sequence__native",
        "step_kernel": "native",
        "mode": "inference",
        "chunk_size": config.chunk_size,
        "return_last_states": True,
        "autocast_kernel_dtype": "bfloat16",
        "eps": config.eps,
        "inference_state_dtype": "float32",
        "ffn_proj_factor": config.ffn_proj_factor,
        "ffn_round_up_to_multiple_of": config.ffn_round_up_to_multiple_of,
        "gate_soft_cap": config.gate_soft_cap,
        "output_logit_soft_cap": config.output_logit_soft_cap,
        "weight_mode": "single",
        "use_cache": True,
        "pad_token_id": config.pad_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "max_inference_chunksize": 16384,
        "dtype": str(dtype).removeprefix("torch."),
    }


def _read_config(path: Path, problems: list[str]) -> tuple[xLSTMLargeConfig, dict[str, Any]]:
    file = path / CONFIG_NAME
    if not file.is_file():
        yaml_file = path / "config.yaml"  # the official xlstm_large from_pretrained layout
        if yaml_file.is_file():
            import yaml

            with _reading(yaml_file):
                raw = yaml.safe_load(yaml_file.read_text(encoding="utf-8")) or {}
            if not isinstance(raw, dict):
                raise ValueError(f"{yaml_file} must hold a mapping, got {type(raw).__name__}")
            for key in ("embedding_dim", "num_heads", "num_blocks", "vocab_size"):  # no defaults in xlstm_large
                if key not in raw:
                    problems.append(f"{yaml_file.name} has no {key}")
            return config_from_hf({"ffn_proj_factor": 2.6667, **raw}, problems), raw  # xlstm_large's default
        raise FileNotFoundError(f"{path} has no {CONFIG_NAME}: not a Hugging Face model folder")
    raw = _read_json(file)
    if not isinstance(raw, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(raw).__name__}")
    generation = path / GENERATION_CONFIG_NAME
    if generation.is_file():  # transformers takes the special tokens of generation from here first
        gen = _read_json(generation)
        if not isinstance(gen, dict):
            raise ValueError(f"{generation} must hold a JSON object, got {type(gen).__name__}")
        raw = {**raw, **{k: gen[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in gen}}
    return config_from_hf(raw, problems), raw


# ----------------------------------------------------------------------------------------------------------------------
# tensor names


@dataclass
class _Source:
    """Where one parameter of ours comes from: a tensor of a file, or rows [start, stop) of it (fused weights)."""

    file: str
    name: str
    rows: tuple[int, int] | None = None


_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_FUSED = {  # fused name -> the single names it splits into, in row order (sizes filled in per config)
    "mlstm_layer.qkv_opreact": ("mlstm_layer.q", "mlstm_layer.k", "mlstm_layer.v", "mlstm_layer.ogate_preact"),
    "mlstm_layer.ifgate_preact": ("mlstm_layer.igate_preact", "mlstm_layer.fgate_preact"),
    "ffn.proj_up_gate_z": ("ffn.proj_up_gate", "ffn.proj_up"),
}


def _canonical(name: str) -> str:
    """A checkpoint tensor name in our (official xlstm_large-like, flat) naming."""
    if name.startswith("model."):
        name = name[len("model."):]
    if name in ("backbone.embeddings.weight", "backbone.embedding.weight", "embeddings.weight"):
        return "embedding.weight"
    if name.startswith("backbone."):
        return name[len("backbone."):]
    return name


def _fused_sizes(config: xLSTMLargeConfig, fused: str) -> tuple[int, ...]:
    c = config
    return {"mlstm_layer.qkv_opreact": (c.qk_dim, c.qk_dim, c.v_dim, c.v_dim),
            "mlstm_layer.ifgate_preact": (c.num_heads, c.num_heads),
            "ffn.proj_up_gate_z": (c.ffn_dim, c.ffn_dim)}[fused]


def _to_hf_name(name: str) -> str:
    """Our parameter name -> transformers' (what `save` writes)."""
    if name == "embedding.weight":
        return "backbone.embeddings.weight"
    if name.startswith(("blocks.", "out_norm.")):
        return "backbone." + name
    return name


# ----------------------------------------------------------------------------------------------------------------------
# load


def _weight_files(path: Path) -> list[str]:
    index = path / INDEX_NAME
    if index.is_file():
        data = _read_json(index)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no 'weight_map'")
        if not all(isinstance(f, str) and f and Path(f).name == f for f in weight_map.values()):
            raise ValueError(f"{index}: every 'weight_map' value must be a file name in the folder")
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} lists shard(s) that do not exist: {missing}")
        return files
    if (path / WEIGHTS_NAME).is_file():
        return [WEIGHTS_NAME]
    found = sorted(p.name for p in path.glob("*.safetensors"))  # e.g. the official model_{n}.safetensors shards
    if not found:
        raise FileNotFoundError(f"{path} has no {WEIGHTS_NAME}, {INDEX_NAME} or other *.safetensors file")
    return found


def _plan(
    config: xLSTMLargeConfig,
    stored: dict[str, tuple[str, tuple[int, ...]]],  # checkpoint name -> (file, shape)
    expected: dict[str, tuple[int, ...]],  # our name -> shape
    raw_config: dict[str, Any],
    problems: list[str],
) -> dict[str, _Source]:
    """Map every parameter of ours to its source, appending every inconsistency to `problems`."""
    plan: dict[str, _Source] = {}
    shapes: dict[str, tuple[int, ...]] = {}  # our name -> shape found in the checkpoint
    origin: dict[str, str] = {}  # our name -> checkpoint name (for messages)
    for ck_name, (file, shape) in stored.items():
        name = _canonical(ck_name)
        m = _BLOCK.match(name)
        sub, suffix = (m.group(2).rsplit(".", 1) if m else (None, None))
        if m and sub in _FUSED:
            sizes = _fused_sizes(config, sub)
            if not shape or shape[0] != sum(sizes):
                problems.append(f"{ck_name} has shape {list(shape)}, expected {sum(sizes)} rows "
                                f"(fused {' + '.join(map(str, sizes))})")
                continue
            start = 0
            for part, rows in zip(_FUSED[sub], sizes):
                ours = f"blocks.{m.group(1)}.{part}.{suffix}"
                plan[ours] = _Source(file, ck_name, (start, start + rows))
                shapes[ours], origin[ours] = (rows, *shape[1:]), ck_name
                start += rows
            continue
        if name in plan:
            problems.append(f"{ck_name} duplicates {origin[name]} (both map to {name})")
            continue
        plan[name], shapes[name], origin[name] = _Source(file, ck_name), shape, ck_name

    _config_vs_weights(config, raw_config, stored, problems)
    for name in sorted(set(plan) - set(expected), key=_natural):
        problems.append(f"unexpected tensor {origin[name]} {list(shapes[name])}")
    for name in sorted(set(expected) - set(plan), key=_natural):
        problems.append(f"missing tensor {_to_hf_name(name)} {list(expected[name])}")
    for name in sorted(set(expected) & set(plan), key=_natural):
        if tuple(shapes[name]) != tuple(expected[name]):
            problems.append(f"{origin[name]} has shape {list(shapes[name])}, the config implies {list(expected[name])}")
    return plan


def _config_vs_weights(config: xLSTMLargeConfig, raw: dict[str, Any], stored: dict[str, tuple[str, tuple[int, ...]]],
                       problems: list[str]) -> None:
    """Plain-words disagreements between config.json and the weights (on top of the per-tensor shape list)."""
    by_name = {_canonical(k): shape for k, (_, shape) in stored.items()}
    emb = by_name.get("embedding.weight")
    if emb is not None and len(emb) == 2:
        if emb[0] != config.vocab_size:
            problems.append(f"config vocab_size={config.vocab_size} but the embedding has {emb[0]} rows")
        if emb[1] != config.embedding_dim:
            problems.append(f"config hidden_size={config.embedding_dim} but the embedding has {emb[1]} columns")
    head = by_name.get("lm_head.weight")
    if head is not None and len(head) == 2 and head[0] != config.vocab_size:
        problems.append(f"config vocab_size={config.vocab_size} but lm_head.weight has {head[0]} rows")
    blocks = {int(m.group(1)) for n in by_name if (m := _BLOCK.match(n))}
    if blocks and max(blocks) + 1 != config.num_blocks:
        problems.append(f"config num_hidden_layers={config.num_blocks} but the weights hold "
                        f"{max(blocks) + 1} blocks (indices {min(blocks)}..{max(blocks)})")
    gate = by_name.get("blocks.0.mlstm_layer.igate_preact.weight")
    if gate is not None and gate[0] != config.num_heads:
        problems.append(f"config num_heads={config.num_heads} but the input gate has {gate[0]} outputs (one per head)")
    if raw.get("weight_mode", "single") not in ("single", "fused"):
        problems.append(f"config weight_mode={raw.get('weight_mode')!r}, expected 'single' or 'fused'")


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.removeprefix("torch.")]
    raise TypeError(f"dtype must be a torch.dtype, one of {sorted(_DTYPES)} or None (as stored), got {dtype!r}")


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


@dataclass
class _StoredTensor:
    """One tensor of a safetensors file, from its header: enough to validate it and to read its bytes alone."""

    file: Path
    data_start: int  # byte offset of the file's data section
    dtype: str
    shape: tuple[int, ...]
    offsets: tuple[int, int]  # [begin, end) within the data section


def _read_header(file: Path) -> tuple[dict[str, _StoredTensor], list[str]]:
    """The tensors a safetensors file holds (name -> where and what), without reading any tensor data. Every entry
    is checked (dtype, shape, offsets inside the file and matching the shape), so that reading cannot fail later."""
    problems: list[str] = []
    size = os.path.getsize(file)
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            return {}, [f"{file.name} is not a safetensors file (too short)"]
        n = int.from_bytes(head, "little")
        if n > size - 8 or n > MAX_HEADER_BYTES:
            return {}, [f"{file.name} is not a safetensors file (bad header length)"]
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeError):
            return {}, [f"{file.name} is not a safetensors file (header is not JSON)"]
    if not isinstance(header, dict):
        return {}, [f"{file.name} is not a safetensors file (header is not a JSON object)"]
    data_size = size - 8 - n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        shape = info.get("shape") if isinstance(info, dict) else None
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        dtype = info.get("dtype") if isinstance(info, dict) else None
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape)
                and isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_size):
            problems.append(f"{name} in {file.name} has a damaged header entry {str(info)[:120]}")
            continue
        if dtype not in _ST_DTYPES:
            problems.append(f"{name} in {file.name} has dtype {dtype}, expected one of {sorted(_ST_DTYPES)}")
            continue
        numel = 1
        for d in shape:
            numel *= d
        if offsets[1] - offsets[0] != numel * _ST_DTYPES[dtype].itemsize:
            problems.append(f"{name} in {file.name}: its byte range does not match shape {shape} of {dtype}")
            continue
        out[name] = _StoredTensor(file, 8 + n, dtype, tuple(shape), tuple(offsets))
    return out, problems


def _read_tensor(t: _StoredTensor, rows: tuple[int, int] | None) -> torch.Tensor:
    """Read one tensor (or a block of its rows) from disk into fresh memory: peak = this tensor only."""
    begin, end = t.offsets
    shape = t.shape
    if rows is not None:
        row_bytes = (end - begin) // shape[0]
        begin, end = begin + rows[0] * row_bytes, begin + rows[1] * row_bytes
        shape = (rows[1] - rows[0], *shape[1:])
    buf = bytearray(end - begin)
    with open(t.file, "rb") as f:
        f.seek(t.data_start + begin)
        if f.readinto(buf) != len(buf):
            raise ValueError(f"{t.file} is truncated")
    if not buf:
        return torch.empty(shape, dtype=_ST_DTYPES[t.dtype])
    return torch.frombuffer(buf, dtype=torch.uint8).view(_ST_DTYPES[t.dtype]).reshape(shape)


def load(path: str | os.PathLike, dtype: torch.dtype | str | None = None,
         device: torch.device | str | None = None, mmap: bool = True) -> xLSTMLarge:
    """The `xLSTMLarge` stored in a Hugging Face xLSTM folder, in eval mode.

    dtype: cast every tensor to it (None keeps the stored dtype); device: where the parameters live (default CPU).
    The model is built on the meta device and its parameters are assigned the checkpoint's tensors, so no second
    copy of the weights is ever made. With `mmap` (default) and no cast, on CPU, the parameters are copy-on-write
    memory maps of the files (zero copy, paged in on first use; the files must not be modified in place while the
    model lives: `save` replaces files atomically, which is safe). Otherwise each tensor is read on its own, cast
    and moved, so the peak is the result plus one tensor as stored.

    Raises one `ValueError` (a `CheckpointError`, with `.problems`) listing every inconsistency found, or a
    one-line `ValueError` naming a file that cannot be parsed at all.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"path must be a model folder, {path} is not a directory")
    dtype = _as_dtype(dtype)
    device = torch.device("cpu" if device is None else device)
    problems: list[str] = []
    config, raw_config = _read_config(path, problems)
    files = _weight_files(path)

    with torch.device("meta"):
        model = xLSTMLarge(config)
    expected = {n: tuple(t.shape) for n, t in model.state_dict().items()}

    tensors: dict[str, _StoredTensor] = {}
    for f in files:
        with _reading(path / f):
            found, bad = _read_header(path / f)
        problems += bad
        for name, t in found.items():
            if name in tensors:
                problems.append(f"tensor {name} is stored twice ({tensors[name].file.name} and {f})")
            else:
                tensors[name] = t
    stored = {name: (t.file.name, t.shape) for name, t in tensors.items()}
    plan = _plan(config, stored, expected, raw_config, problems)
    if problems:
        raise CheckpointError(path, problems)

    handles: dict[str, Any] = {}
    state: dict[str, torch.Tensor] = {}
    for name, src in plan.items():
        info = tensors[src.name]
        stored_dtype = _ST_DTYPES[info.dtype]
        with _reading(path / src.file):
            if mmap and src.rows is None and device.type == "cpu" and dtype in (None, stored_dtype):
                if src.file not in handles:
                    handles[src.file] = safe_open(str(path / src.file), framework="pt", device="cpu")
                state[name] = handles[src.file].get_tensor(src.name)  # copy-on-write memory map: no copy
                continue
            t = _read_tensor(info, src.rows)
        state[name] = t.to(device=device, dtype=dtype or stored_dtype)
        del t
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------------
# save


def _parse_size(size: int | str) -> int:
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    if isinstance(size, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", size, flags=re.IGNORECASE)
        if m:
            unit = (m.group(2) or "B").upper()
            mult = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}[unit]
            value = int(float(m.group(1)) * mult)
            if value > 0:
                return value
    raise ValueError(f"max_shard_size must be a positive int (bytes) or a string like '500MB' / '5GB', got {size!r}")


def _atomic_write(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(model: xLSTMLarge, path: str | os.PathLike, max_shard_size: int | str | None = None,
         tokenizer=None) -> None:
    """Write `model` as a folder `transformers.xLSTMForCausalLM.from_pretrained(path)` loads (and `load` reads back).

    max_shard_size: None writes one `model.safetensors`; an int (bytes) or "500MB"-style string writes shards
    `model-0000k-of-0000n.safetensors` and `model.safetensors.index.json`. Files from an earlier save in a different
    layout are removed so the folder is unambiguous. tokenizer: an xlstmkit tokenizer or a transformers tokenizer,
    written as `tokenizer.json` + `tokenizer_config.json` for `AutoTokenizer` (its special tokens named after the
    config's bos/eos/pad ids); None writes none.
    """
    if not isinstance(model, xLSTMLarge):
        raise TypeError(f"model must be an xLSTMLarge, got {type(model).__name__}")
    if not model.config.add_out_norm:
        raise ValueError("transformers always applies the final out_norm; a model with add_out_norm=False cannot be "
                         "saved in its format")
    limit = None if max_shard_size is None else _parse_size(max_shard_size)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    tensors = {_to_hf_name(n): t.detach().to("cpu").contiguous() for n, t in model.state_dict().items()}
    dtypes = {t.dtype for t in tensors.values()}
    main_dtype = model.lm_head.weight.dtype if len(dtypes) > 1 else dtypes.pop()

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(tensors, key=_natural):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if limit is not None and shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes

    written = set()
    meta = {"format": "pt"}
    if limit is None:
        _atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(shards[0], tmp, metadata=meta))
        written.add(WEIGHTS_NAME)
    else:
        weight_map = {}
        for k, shard in enumerate(shards):
            fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            _atomic_write(path / fname, lambda tmp, s=shard: save_file(s, tmp, metadata=meta))
            weight_map.update({n: fname for n in shard})
            written.add(fname)
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        _atomic_write(path / INDEX_NAME, lambda tmp: Path(tmp).write_text(json.dumps(index, indent=2) + "\n"))
        written.add(INDEX_NAME)
    for stale in [path / INDEX_NAME, path / WEIGHTS_NAME, *path.glob("model-*-of-*.safetensors")]:
        if stale.name not in written and stale.is_file():
            stale.unlink()
    cfg = config_to_hf(model.config, main_dtype)
    _atomic_write(path / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=2) + "\n"))
    if tokenizer is not None:
        from .pretrained import save_tokenizer, special_token_ids

        save_tokenizer(tokenizer, path, special_token_ids(model))


# ----------------------------------------------------------------------------------------------------------------------
# recurrent state <-> transformers' xLSTMCache.rnn_state


def state_to_transformers(state, config: xLSTMLargeConfig) -> dict[int, tuple[torch.Tensor, ...]]:
    """Our per-block `MLSTMState`s as transformers' `xLSTMCache.rnn_state` {block: (C, n, m (B, NH, 1))}.

    transformers scales the queries by DQK**-0.5 where our ops scale the keys, so its C and n are ours times
    sqrt(DQK); m is the same. (Its cache uses rounded-up head sizes; this conversion gives the layer's real ones.)
    """
    scale = config.qk_head_dim ** 0.5
    return {b: (st.C * scale, st.n * scale, st.m.unsqueeze(-1)) for b, st in enumerate(state)}


def state_from_transformers(rnn_state: dict, config: xLSTMLargeConfig) -> tuple:
    """transformers' `xLSTMCache.rnn_state` as the state `xLSTMLarge.forward(state=...)` takes (float32)."""
    from xlstmkit.ops.mlstm import MLSTMState

    scale = config.qk_head_dim ** -0.5
    if len(rnn_state) != config.num_blocks:
        raise ValueError(f"rnn_state must hold {config.num_blocks} blocks, got {len(rnn_state)}")
    return tuple(MLSTMState(C.float() * scale, n.float() * scale, m.float().reshape(m.shape[0], -1))
                 for C, n, m in (rnn_state[b] for b in range(config.num_blocks)))


# ----------------------------------------------------------------------------------------------------------------------
# tokenizer


def has_tokenizer(path: str | os.PathLike) -> bool:
    """Whether the folder ships a `tokenizer.json` (the fast-tokenizer file of the Hugging Face hub)."""
    return (Path(path) / TOKENIZER_NAME).is_file()


def load_tokenizer(path: str | os.PathLike):
    """The folder's `tokenizer.json` as a `tokenizers.Tokenizer` (encode(text).ids, decode(ids))."""
    file = Path(path) / TOKENIZER_NAME
    if not file.is_file():
        raise FileNotFoundError(f"{path} has no {TOKENIZER_NAME}; pass token ids or a folder with a tokenizer")
    try:
        from tokenizers import Tokenizer
    except ImportError as err:  # pragma: no cover - tokenizers is in the hf/train extras
        raise ImportError("load_tokenizer needs the `tokenizers` package: pip install 'xlstmkit[hf]'") from err
    return Tokenizer.from_file(str(file))


__all__ = ["load", "save", "load_tokenizer", "has_tokenizer", "config_from_hf", "config_to_hf", "CheckpointError",
           "state_to_transformers", "state_from_transformers"]

"""Model folders in the Hugging Face layout for xlstmkit's own models (model_type "xlstmkit"), without transformers.

`xLSTMLM.save_pretrained(d)` and `xLSTMLM.from_pretrained(d)` are `save` and `load` here; they need only torch and
safetensors. The folder is the one `xLSTMKitForCausalLM.save_pretrained` writes, so transformers reads it too:

    config.json                 model_type "xlstmkit", architectures ["xLSTMKitForCausalLM"], family ("xlstm" |
                                "xlstm_large"), xlstmkit_config (the xlstmkit config dict), the fields transformers'
                                tools read (vocab_size, hidden_size, ...), special token ids, dtype, auto_map
    model.safetensors           "model." + the xlstmkit model's state-dict names (a tied head is stored once, as the
                                embedding, like transformers does)
    configuration_xlstmkit.py   two one-line modules that import xlstmkit's transformers classes from the installed
    modeling_xlstmkit.py        package (the targets of auto_map; see below)
    tokenizer.json, tokenizer_config.json   when a tokenizer is given (`xlstmkit.data.tokenizer.save_hf_tokenizer`),
    tokenization_xlstmkit.py    with, for tokenizers without special tokens, the BOS/EOS stand-ins of
                                `xlstmkit.interop.hf_tokenizer` (used with trust_remote_code=True)

Why the two small modules: `import xlstmkit` registers model_type "xlstmkit" with transformers' Auto classes, but
programs that never import xlstmkit (lm-evaluation-harness's CLI, `transformers` scripts, other people's code) only
read the folder. transformers' own mechanism for that is `auto_map` + `trust_remote_code=True`: it imports the named
modules from the folder. Ours contain no model code, only `from xlstmkit.interop.transformers import ...`, so the
code that runs is the installed, versioned xlstmkit (and importing it registers everything), not a copy frozen into
each folder; transformers refuses them with a clear "pip install xlstmkit" message when xlstmkit is missing. In a
program that has imported xlstmkit the registered classes are used and trust_remote_code is not needed.

Every file is written atomically; a malformed folder is one ValueError line naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "xlstmkit"
ARCHITECTURE = "xLSTMKitForCausalLM"
PREFIX = "model."
REMOTE_CODE = {
    "configuration_xlstmkit.py": ('"""Loads xlstmkit\'s transformers config from the installed package '
                                  '(pip install \'xlstmkit[hf]\')."""\n\n'
                                  "from xlstmkit.interop.hf_config import xLSTMKitConfig  # noqa: F401\n"),
    "modeling_xlstmkit.py": ('"""Loads xlstmkit\'s transformers model from the installed package '
                             '(pip install \'xlstmkit[hf]\')."""\n\n'
                             "from xlstmkit.interop.transformers import xLSTMKitForCausalLM  # noqa: F401\n"),
}
TOKENIZER_CODE = {
    "tokenization_xlstmkit.py": ('"""Loads xlstmkit\'s tokenizer class from the installed package '
                                '(pip install \'xlstmkit[hf]\')."""\n\n'
                                "from xlstmkit.interop.hf_tokenizer import xLSTMKitTokenizerFast  # noqa: F401\n"),
}
AUTO_MAP = {"AutoConfig": "configuration_xlstmkit.xLSTMKitConfig",
            "AutoModelForCausalLM": "modeling_xlstmkit.xLSTMKitForCausalLM"}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


FAMILIES = ("xlstm", "xlstm_large")


def family_config(family: str, config: dict[str, Any] | None):
    """The validated xlstmkit config object of a family from its dict (None: the family's defaults)."""
    if family == "xlstm":
        from ..config import xLSTMConfig as cls
    elif family == "xlstm_large":
        from ..models.xlstm_large.config import xLSTMLargeConfig as cls
    else:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if config is None:
        return cls()
    if not isinstance(config, dict):
        raise TypeError(f"xlstmkit_config must be a dict of {cls.__name__} fields, got {type(config).__name__}")
    return cls.from_dict(config)


def family_of(model: nn.Module) -> str:
    """"xlstm" for an `xLSTMLM`, "xlstm_large" for an `xLSTMLarge` (TypeError otherwise)."""
    from ..models.xlstm_lm import xLSTMLM

    if isinstance(model, xLSTMLM):
        return "xlstm"
    from ..models.xlstm_large import xLSTMLarge

    if isinstance(model, xLSTMLarge):
        return "xlstm_large"
    raise TypeError(f"model must be an xLSTMLM or xLSTMLarge, got {type(model).__name__}")


def special_token_ids(model: nn.Module) -> dict[str, int | None]:
    """bos/eos/pad ids of a model: the 7B config carries them; the paper's LM has none."""
    c = model.config
    return {k: getattr(c, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}


def config_dict(model: nn.Module, dtype: torch.dtype) -> dict[str, Any]:
    """config.json of an xlstmkit model folder (what `xLSTMKitConfig.to_dict()` holds, plus auto_map)."""
    from .. import __version__

    family, c = family_of(model), model.config
    return {"architectures": [ARCHITECTURE], "model_type": MODEL_TYPE, "auto_map": dict(AUTO_MAP),
            "family": family, "xlstmkit_config": c.to_dict(), "vocab_size": c.vocab_size,
            "hidden_size": c.embedding_dim, "num_hidden_layers": c.num_blocks,
            "tie_word_embeddings": bool(getattr(c, "tie_weights", False)), **special_token_ids(model),
            "use_cache": True, "dtype": str(dtype).removeprefix("torch."), "xlstmkit_version": __version__}


def write_json(path: Path, data: dict) -> None:
    from ..train.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def write_remote_code(path: str | os.PathLike) -> None:
    """The two import-only modules `auto_map` points at (see the module docstring)."""
    from ..train.checkpoint import atomic_write_bytes

    for name, text in REMOTE_CODE.items():
        atomic_write_bytes(Path(path) / name, text.encode("utf-8"))


def save_tokenizer(tokenizer, path: str | os.PathLike, ids: dict[str, int | None]) -> None:
    """An xlstmkit tokenizer (`xlstmkit.data.tokenizer`), the string "bytes", or a transformers tokenizer (anything
    with `save_pretrained`), written into the folder for `AutoTokenizer.from_pretrained`.

    An xlstmkit tokenizer without special tokens for bos and eos also gets `text_start_token_id` (the newline's id)
    and `text_end_token_id` (the NUL byte's) and an `auto_map` to `xLSTMKitTokenizerFast`, which reports them as
    BOS/EOS ids to tools that need them (lm-evaluation-harness) when the folder's code is trusted; see
    `xlstmkit.interop.hf_tokenizer`."""
    from ..data.tokenizer import ByteTokenizer, save_hf_tokenizer
    from ..train.checkpoint import atomic_write_bytes

    if isinstance(tokenizer, str) and tokenizer == "bytes":
        tokenizer = ByteTokenizer()
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(path))
        return
    config = save_hf_tokenizer(tokenizer, path, **ids)
    if "bos_token" in config or "eos_token" in config:
        return
    single = {text: tokenizer.encode(text) for text in ("\n", "\x00")}
    extra = {"text_start_token_id": single["\n"][0] if len(single["\n"]) == 1 else None,
             "text_end_token_id": single["\x00"][0] if len(single["\x00"]) == 1 else None,
             "auto_map": {"AutoTokenizer": [None, "tokenization_xlstmkit.xLSTMKitTokenizerFast"]}}
    save_hf_tokenizer(tokenizer, path, **ids, extra_config=extra)
    for name, text in TOKENIZER_CODE.items():
        atomic_write_bytes(Path(path) / name, text.encode("utf-8"))


def state_to_save(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors to write: each parameter once (a tied head is the embedding; transformers re-ties it)."""
    seen: set[int] = set()
    out = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in seen:
            continue
        seen.add(id(t))
        out[PREFIX + name] = t.detach()
    return out


def save(model: nn.Module, path: str | os.PathLike, tokenizer=None) -> None:
    """Write `model` (`xLSTMLM`, or `xLSTMLarge` in xlstmkit's layout) as a folder `load`, `xLSTMLM.from_pretrained`
    and, with transformers, `AutoModelForCausalLM.from_pretrained` read. `tokenizer`: see `save_tokenizer`
    (None writes none)."""
    from ..train.checkpoint import save_weights

    family_of(model)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = state_to_save(model)
    dtype = next(iter(tensors.values())).dtype  # the embedding's
    save_weights(path / WEIGHTS_NAME, tensors, metadata={"format": "pt"})
    write_json(path / CONFIG_NAME, config_dict(model, dtype))
    write_remote_code(path)
    if tokenizer is not None:
        save_tokenizer(tokenizer, path, special_token_ids(model))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def read_config(path: str | os.PathLike) -> tuple[str, Any, dict[str, Any]]:
    """(family, xlstmkit config object, the raw config.json dict) of an xlstmkit model folder."""
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"{path} has no {CONFIG_NAME}: not a model folder")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeError) as exc:
        raise ValueError(f"{file} is not valid JSON ({_one_line(exc)})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(raw).__name__}")
    if raw.get("model_type") != MODEL_TYPE:
        raise ValueError(f"{file} has model_type {raw.get('model_type')!r}, not {MODEL_TYPE!r}: not an xlstmkit model "
                         f"folder")
    family = raw.get("family", "xlstm")
    try:
        config = family_config(family, raw.get("xlstmkit_config"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{file}: {_one_line(exc)}") from None
    return family, config, raw


def is_xlstmkit_folder(path: str | os.PathLike) -> bool:
    """Whether the folder's config.json says model_type "xlstmkit"."""
    try:
        raw = json.loads((Path(path) / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeError):
        return False
    return isinstance(raw, dict) and raw.get("model_type") == MODEL_TYPE


def load(path: str | os.PathLike, dtype: torch.dtype | str | None = None,
         device: torch.device | str | None = None) -> nn.Module:
    """The `xLSTMLM` (or `xLSTMLarge`) of an xlstmkit model folder, in eval mode. dtype: cast to it (None keeps the
    stored one). Built on the meta device and given the file's tensors, so no second copy of the weights is made.
    Missing, unexpected or misshapen tensors and malformed files are one ValueError naming the file."""
    from safetensors import safe_open

    from ..train.build import build_model

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a model folder (no such directory)")
    if isinstance(dtype, str):
        if dtype.removeprefix("torch.") not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or a torch.dtype, got {dtype!r}")
        dtype = _DTYPES[dtype.removeprefix("torch.")]
    family, config, _ = read_config(path)
    file = path / WEIGHTS_NAME
    if not file.is_file():
        raise FileNotFoundError(f"{path} has no {WEIGHTS_NAME}")
    with torch.device("meta"):
        model = build_model({"family": family, **config.to_dict()})
    expected = {k: tuple(t.shape) for k, t in state_to_save(model).items()}  # PREFIX + name
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            names = set(f.keys())
            problems = [f"missing {sorted(set(expected) - names)[:3]}" if set(expected) - names else "",
                        f"unexpected {sorted(names - set(expected))[:3]}" if names - set(expected) else ""]
            state = {}
            for name in sorted(set(expected) & names):
                t = f.get_tensor(name)
                if tuple(t.shape) != expected[name]:
                    problems.append(f"{name} has shape {tuple(t.shape)}, the config implies {expected[name]}")
                    continue
                state[name[len(PREFIX):]] = t if dtype is None else t.to(dtype)
    except Exception as exc:  # noqa: BLE001 - OSError, safetensors' SafetensorError, MemoryError, ...: the file's fault
        raise ValueError(f"{file} is not a readable safetensors file ({_one_line(exc)})") from None
    problems = [p for p in problems if p]
    if problems:
        raise ValueError(f"{file} does not fit the config in {CONFIG_NAME}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=False, assign=True)
    retie(model)
    if device is not None:
        model = model.to(device)
    return model.eval()


def retie(model: nn.Module) -> None:
    """Point a tied head at the (newly assigned) embedding again: loading with assign=True replaces parameters."""
    if getattr(model.config, "tie_weights", False):
        model.head.weight = model.embedding.weight


__all__ = ["save", "load", "family_config", "FAMILIES", "read_config", "is_xlstmkit_folder", "config_dict", "write_remote_code", "save_tokenizer",
           "state_to_save", "special_token_ids", "family_of", "retie", "MODEL_TYPE", "ARCHITECTURE", "AUTO_MAP",
           "REMOTE_CODE", "TOKENIZER_CODE", "CONFIG_NAME", "WEIGHTS_NAME", "PREFIX"]

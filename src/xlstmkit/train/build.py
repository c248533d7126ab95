"""Model construction from a config dict, in one place: every trainer and loader builds models here, by family name.

`build_model({"family": "xlstm", **xLSTMConfig fields})` returns an `xLSTMLM`; the families are

    xlstm        the paper's xLSTM language model (`xLSTMConfig`, `xLSTMLM`), the default
    xlstm_large  the xLSTM-7B architecture (`xLSTMLargeConfig`, `xLSTMLarge`), for fine-tuning Hugging Face folders
    lstm, llama, mamba   the baselines of the synthetic tasks (`BaselineConfig`: vocab_size, dim, num_layers)

A family is registered with a config class (a dataclass with `from_dict` / `to_dict`) and a model class (or factory)
taking that config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ..config import FrozenConfig

_FAMILIES: dict[str, tuple[Callable[[], type], Callable[[], Callable[[Any], nn.Module]]]] = {}
DEFAULT_FAMILY = "xlstm"


def register_model_family(name: str, config_class: Callable[[], type],
                          model_class: Callable[[], Callable[[Any], nn.Module]]) -> None:
    """Register a family: two zero-argument callables returning its config class and its model class (or a
    factory taking the config); lazy, so that no family's imports are paid for until it is used."""
    _FAMILIES[name] = (config_class, model_class)


@dataclass(frozen=True)
class BaselineConfig(FrozenConfig):
    """The size of a baseline model of the synthetic tasks."""

    vocab_size: int = 256
    dim: int = 64
    num_layers: int = 2


def _xlstm() -> tuple[type, type]:
    from ..config import xLSTMConfig
    from ..models.xlstm_lm import xLSTMLM

    return xLSTMConfig, xLSTMLM


def _xlstm_large() -> tuple[type, type]:
    from ..models.xlstm_large import xLSTMLarge, xLSTMLargeConfig

    return xLSTMLargeConfig, xLSTMLarge


def _baseline(kind: str) -> Callable[[BaselineConfig], nn.Module]:
    def make(cfg: BaselineConfig) -> nn.Module:
        from ..models import baselines

        if kind == "lstm":
            return baselines.LSTMLM(cfg.vocab_size, cfg.dim, num_layers=cfg.num_layers)
        return getattr(baselines, kind)(cfg.vocab_size, cfg.dim, num_layers=cfg.num_layers)

    return make


register_model_family("xlstm", lambda: _xlstm()[0], lambda: _xlstm()[1])
register_model_family("xlstm_large", lambda: _xlstm_large()[0], lambda: _xlstm_large()[1])
for _kind in ("lstm", "llama", "mamba"):
    register_model_family(_kind, lambda: BaselineConfig, lambda k=_kind: _baseline(k))


def families() -> list[str]:
    return sorted(_FAMILIES)


def model_config_class(family: str = DEFAULT_FAMILY) -> type:
    if family not in _FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {families()}")
    return _FAMILIES[family][0]()


def build_model_config(model_cfg: dict[str, Any]) -> Any:
    """The validated config object of a model dict (without the 'family' key)."""
    d = dict(model_cfg)
    family = d.pop("family", DEFAULT_FAMILY)
    return model_config_class(family).from_dict(d)


def build_model(model_cfg: dict[str, Any]) -> nn.Module:
    """A freshly initialised model for a model dict: {"family": name (default "xlstm"), **config fields}."""
    family = model_cfg.get("family", DEFAULT_FAMILY)
    config = build_model_config(model_cfg)
    return _FAMILIES[family][1]()(config)


def model_dict(config: Any, family: str) -> dict[str, Any]:
    """The model dict of a config object (what config.json stores): {"family": family, **fields}."""
    return {"family": family, **config.to_dict()}


def config_field_names(family: str = DEFAULT_FAMILY) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(model_config_class(family)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""Model construction from a config dict, in one place, so that other model families can be added by name.

`build_model({"family": "xlstm", **xLSTMConfig fields})` returns an `xLSTMLM`. A family is registered with a config
class (a dataclass with `from_dict` / `to_dict`) and a model class taking that config.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

_FAMILIES: dict[str, tuple[Callable[[], type], Callable[[], type]]] = {}


def register_model_family(name: str, config_class: Callable[[], type], model_class: Callable[[], type]) -> None:
    """Register a family: two zero-argument callables returning its config class and model class (lazy imports)."""
    _FAMILIES[name] = (config_class, model_class)


def _xlstm_config() -> type:
    from ..config import xLSTMConfig

    return xLSTMConfig


def _xlstm_model() -> type:
    from ..models.xlstm_lm import xLSTMLM

    return xLSTMLM


register_model_family("xlstm", _xlstm_config, _xlstm_model)


def model_config_class(family: str = "xlstm") -> type:
    if family not in _FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(_FAMILIES)}")
    return _FAMILIES[family][0]()


def build_model_config(model_cfg: dict[str, Any]) -> Any:
    """The validated config object of a model dict (without the 'family' key)."""
    d = dict(model_cfg)
    family = d.pop("family", "xlstm")
    return model_config_class(family).from_dict(d)


def build_model(model_cfg: dict[str, Any]) -> nn.Module:
    """A freshly initialised model for a model dict: {"family": name (default "xlstm"), **config fields}."""
    family = model_cfg.get("family", "xlstm")
    config = build_model_config(model_cfg)
    return _FAMILIES[family][1]()(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""xLSTM Large: the xLSTM-7B architecture. `config.py` (xLSTMLargeConfig), `model.py` (the plain model and its
blocks), `decode.py` (the fused one-token step)."""

from __future__ import annotations

import warnings

from ...nn.norms import MultiHeadLayerNorm, RMSNorm
from .config import round_up_like_transformers, xLSTMLargeConfig
from .model import (fused_linear, soft_cap, xLSTMLarge, xLSTMLargeBlock, xLSTMLargeFFN,
                    xLSTMLargeMLSTMLayer)

# names before the module became a folder; their classes were renamed so that they do not collide with nn's
# (`mLSTMLayer` vs `nn.MLSTMLayer`)
_RENAMED = {"mLSTMLayer": "xLSTMLargeMLSTMLayer", "mLSTMBlock": "xLSTMLargeBlock", "FeedForward": "xLSTMLargeFFN"}


def __getattr__(name: str):
    if name in _RENAMED:
        warnings.warn(f"xlstmkit.models.xlstm_large.{name} is now {_RENAMED[name]}", DeprecationWarning, stacklevel=2)
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["xLSTMLargeConfig", "xLSTMLarge", "xLSTMLargeBlock", "xLSTMLargeMLSTMLayer", "xLSTMLargeFFN", "RMSNorm",
           "MultiHeadLayerNorm", "soft_cap", "round_up_like_transformers", "fused_linear"]

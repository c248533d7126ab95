"""Whole models: the paper's LM (`xlstm_lm.py`) and xLSTM-Large, the 7B architecture (the `xlstm_large/` folder),
the probabilistic forecaster (`forecaster.py`) and TiRex (`tirex.py`). The paper's LM, the forecaster and TiRex are
re-exported here; xLSTM-Large is imported on first use (`xlstmkit.models.xLSTMLarge`)."""

from .forecaster import ForecasterConfig, xLSTMForecaster
from .tirex import TiRex, TiRexConfig
from .xlstm_lm import xLSTMLM


def __getattr__(name: str):
    if name in ("xLSTMLarge", "xLSTMLargeConfig"):
        from . import xlstm_large

        return getattr(xlstm_large, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ForecasterConfig", "TiRex", "TiRexConfig", "xLSTMForecaster", "xLSTMLM", "xLSTMLarge", "xLSTMLargeConfig"]

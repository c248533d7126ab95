"""Whole models: the paper's LM (`xlstm_lm.py`), xLSTM-Large, the 7B architecture (the `xlstm_large/` folder), the
sequence backbone with its classification, regression and tagging heads (`sequence.py`), the probabilistic forecaster
(`forecaster.py`), TiRex (`tirex.py`) and Vision-LSTM (`vision_lstm.py`). All but xLSTM-Large and Vision-LSTM are
re-exported here; those two are imported on first use (`xlstmkit.models.xLSTMLarge`, `xlstmkit.models.VisionLSTM`)."""

from .forecaster import ForecasterConfig, xLSTMForecaster
from .sequence import SequenceBackbone, SequenceClassifier, SequenceConfig, SequenceRegressor, SequenceTagger
from .tirex import TiRex, TiRexConfig
from .xlstm_lm import xLSTMLM

_VISION = ("VisionLSTM", "VisionLSTMConfig", "vil_config", "VIL_PRESETS")


def __getattr__(name: str):
    if name in ("xLSTMLarge", "xLSTMLargeConfig"):
        from . import xlstm_large

        return getattr(xlstm_large, name)
    if name in _VISION:
        from . import vision_lstm

        return getattr(vision_lstm, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ForecasterConfig", "SequenceBackbone", "SequenceClassifier", "SequenceConfig", "SequenceRegressor",
           "SequenceTagger", "TiRex", "TiRexConfig", "xLSTMForecaster", "xLSTMLM", "xLSTMLarge", "xLSTMLargeConfig",
           *_VISION]

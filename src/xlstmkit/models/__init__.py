"""Whole models: the paper's LM (`xlstm_lm.py`), xLSTM-Large, the 7B architecture (the `xlstm_large/` folder), the
sequence backbone with its classification, regression and tagging heads (`sequence.py`) and Vision-LSTM
(`vision_lstm.py`). The paper's LM and the sequence models are re-exported here; xLSTM-Large and Vision-LSTM are
imported on first use (`xlstmkit.models.xLSTMLarge`, `xlstmkit.models.VisionLSTM`)."""
from .sequence import SequenceBackbone, SequenceClassifier, SequenceConfig, SequenceRegressor, SequenceTagger
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


__all__ = ["SequenceBackbone", "SequenceClassifier", "SequenceConfig", "SequenceRegressor", "SequenceTagger", "xLSTMLM",
           "xLSTMLarge", "xLSTMLargeConfig", *_VISION]

"""Whole models: the paper's LM (`xlstm_lm.py`) and xLSTM-Large, the 7B architecture (the `xlstm_large/` folder), and the
sequence backbone with its classification, regression and tagging heads (`sequence.py`).
The paper's LM is re-exported here; xLSTM-Large is imported on first use (`xlstmkit.models.xLSTMLarge`)."""

from .sequence import SequenceBackbone, SequenceClassifier, SequenceConfig, SequenceRegressor, SequenceTagger
from .xlstm_lm import xLSTMLM


def __getattr__(name: str):
    if name in ("xLSTMLarge", "xLSTMLargeConfig"):
        from . import xlstm_large

        return getattr(xlstm_large, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SequenceBackbone", "SequenceClassifier", "SequenceConfig", "SequenceRegressor", "SequenceTagger", "xLSTMLM",
           "xLSTMLarge", "xLSTMLargeConfig"]

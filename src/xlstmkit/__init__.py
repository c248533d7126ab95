"""xlstmkit: xLSTM (sLSTM and mLSTM) for PyTorch."""

from .config import xLSTMConfig
from .models.xlstm_lm import xLSTMLM

__version__ = "0.1.0"


def __getattr__(name: str):
    # xLSTMLarge lives in its own folder (models/xlstm_large/); imported on first use so `import xlstmkit` stays light
    if name in ("xLSTMLarge", "xLSTMLargeConfig"):
        from .models import xlstm_large

        return getattr(xlstm_large, name)
    raise AttributeError(f"module 'xlstmkit' has no attribute {name!r}")


__all__ = ["xLSTMConfig", "xLSTMLM", "xLSTMLarge", "xLSTMLargeConfig", "__version__"]

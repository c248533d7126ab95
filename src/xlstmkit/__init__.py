"""xlstmkit: xLSTM (sLSTM and mLSTM) for PyTorch."""

from .config import xLSTMConfig
from .interop import autoregister as _autoregister
from .models.xlstm_lm import xLSTMLM

__version__ = "0.1.0"

# transformers' AutoConfig / AutoModelForCausalLM learn model_type "xlstmkit" when transformers loads them (not now:
# that would import transformers; see xlstmkit/interop/autoregister.py)
_autoregister.install()


def __getattr__(name: str):
    # xLSTMLarge lives in its own folder (models/xlstm_large/); imported on first use so `import xlstmkit` stays light
    if name in ("xLSTMLarge", "xLSTMLargeConfig"):
        from .models import xlstm_large

        return getattr(xlstm_large, name)
    raise AttributeError(f"module 'xlstmkit' has no attribute {name!r}")


__all__ = ["xLSTMConfig", "xLSTMLM", "xLSTMLarge", "xLSTMLargeConfig", "__version__"]

"""Pure tensor functions: the mLSTM and sLSTM math, no modules, no config."""

from .mlstm import (
    MLSTM_FORMS,
    MLSTMState,
    mlstm,
    mlstm_chunkwise,
    mlstm_parallel,
    mlstm_recurrent,
    mlstm_reference,
    mlstm_step,
)
from .slstm import SLSTMState, slstm_reference, slstm_sequence, slstm_step

__all__ = [
    "MLSTM_FORMS",
    "MLSTMState",
    "SLSTMState",
    "mlstm",
    "mlstm_chunkwise",
    "mlstm_parallel",
    "mlstm_recurrent",
    "mlstm_reference",
    "mlstm_step",
    "slstm_reference",
    "slstm_sequence",
    "slstm_step",
]

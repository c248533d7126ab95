"""The mLSTM cell (matrix memory, covariance update) in computation forms that give the same function
(docs/mlstm.md):

    reference.py  mlstm_reference: the paper's stabilised recurrence in plain autograd, the definition
    parallel.py   mlstm_parallel: the quadratic form
    chunkwise.py  mlstm_chunkwise: the chunkwise form (training hot path, hand-written backward)
    step.py       mlstm_step (one token), mlstm_recurrent (step by step), the native inference step call site
    common.py     the state, validation, input preparation, the chunk-state summary

Shapes: q, k (B, NH, S, DQK); v (B, NH, S, DV); i, f (B, NH, S); mask (B, S). State C (B, NH, DQK, DV),
n (B, NH, DQK), m (B, NH), float32 (float64 for float64 inputs).
"""

from ..gates import log_forget, state_dtype
from .chunkwise import _Chunkwise, mlstm_chunkwise  # noqa: F401 (_Chunkwise: tests)
from .common import MLSTMState, zero_state
from .parallel import mlstm_parallel
from .reference import mlstm_reference
from .step import _mlstm_step_unchecked, _step_core, mlstm_recurrent, mlstm_step  # noqa: F401 (private: layers, tests)

MLSTM_FORMS = {"parallel": mlstm_parallel, "chunkwise": mlstm_chunkwise, "recurrent": mlstm_recurrent}


def mlstm(q, k, v, i, f, *, form: str = "chunkwise", chunk_size: int = 64, **kwargs):
    """Dispatch to one of the forms by name ('parallel', 'chunkwise', 'recurrent')."""
    if form not in MLSTM_FORMS:
        raise ValueError(f"form must be one of {sorted(MLSTM_FORMS)}, got {form!r}")
    if form == "chunkwise":
        kwargs["chunk_size"] = chunk_size
    return MLSTM_FORMS[form](q, k, v, i, f, **kwargs)


__all__ = [
    "MLSTMState",
    "MLSTM_FORMS",
    "mlstm",
    "mlstm_parallel",
    "mlstm_chunkwise",
    "mlstm_recurrent",
    "mlstm_reference",
    "mlstm_step",
    "zero_state",
    "log_forget",
    "state_dtype",
]

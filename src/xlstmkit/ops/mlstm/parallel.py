"""The parallel (quadratic) mLSTM form (docs/mlstm.md, "Parallel form"): every output from one S x S matrix of
log weights, log D_tj = i~_j + sum_{j<s<=t} log f_s, stabilised row by row, plus the initial state's weight.

That is exactly the chunkwise form's computation for one chunk that spans the whole sequence, so it runs the same
kernel (chunkwise._Chunkwise) with chunk length S: one implementation of the quadratic part and its backward, tested
against `mlstm_reference`. Memory O(S^2) per head: for short sequences, or as a check of the chunkwise form.
"""

from __future__ import annotations

from torch import Tensor

from ..gates import ForgetGate
from .chunkwise import run_chunks
from .common import MLSTMState, finish, prepare


def mlstm_parallel(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    *,
    initial_state: tuple[Tensor, Tensor, Tensor] | None = None,
    return_state: bool = False,
    eps: float = 1e-6,
    forget_gate: ForgetGate = "sigmoid",
    mask: Tensor | None = None,
) -> Tensor | tuple[Tensor, MLSTMState]:
    """Quadratic (S x S) form. Same arguments and result as `mlstm_chunkwise` (without chunk_size); runs in float32
    (float64 for float64 inputs), under autocast too."""
    qf, kf, vf, i_, logf, st = prepare(q, k, v, i, f, initial_state, forget_gate, eps, mask)
    h, st = run_chunks(qf, kf, vf, logf, i_, st, float(eps), qf.shape[2], None)
    return finish(h, v.dtype, st, return_state)

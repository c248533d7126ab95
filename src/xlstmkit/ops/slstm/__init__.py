"""The sLSTM cell: scalar memory, exponential gating, memory mixing within a head (docs/slstm.md).

One home per equation:

- cell.py: the state, the pointwise step (`slstm_pointwise`, the definition) and its derivative;
- reference.py: `slstm_reference`, the recurrence by its definition, a plain loop with autograd;
- sequence.py: `slstm_sequence`, the same function fast (hand-written backward, time loops in C or PyTorch);
- step.py: `slstm_step`, one validated step, over the unchecked core that decode loops call.

Shapes: gates (B, S, NH, 4, DH) in gate order (i, f, z, o); R (NH, DH, 4 DH); state (c, n, m, h), each
(B, NH, DH), float32 (float64 for float64 inputs); mask (B, S) bool, False at padding.
"""

from .cell import SLSTMState, slstm_pointwise, slstm_zero_state
from .reference import slstm_reference
from .sequence import slstm_sequence
from .step import _slstm_step_unchecked, slstm_step  # noqa: F401 -- the core, for layers' decode loops

__all__ = ["SLSTMState", "slstm_step", "slstm_sequence", "slstm_zero_state", "slstm_pointwise", "slstm_reference"]

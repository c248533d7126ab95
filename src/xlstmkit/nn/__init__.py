"""nn.Modules built on the ops: norms, causal conv, head-wise linear, gated FFN, mLSTM/sLSTM blocks, block stack
(docs/blocks.md); direction wrappers and the nn.LSTM-style sLSTM/mLSTM/xLSTM modules (docs/sequence.md)."""

from .block_stack import check_state, xLSTMBlockStack
from .conv import CausalConv1d
from .direction import Bidirectional, DirectionalStack, Reversal, Reversed, reverse_real
from .ffn import GatedFFN
from .linear import HeadwiseLinear
from .mlstm_block import MLSTMBlock, MLSTMBlockState, MLSTMLayer
from .norms import LayerNorm, MultiHeadLayerNorm, RMSNorm
from .rnn import mLSTM, sLSTM, xLSTM
from .slstm_block import SLSTMBlock, SLSTMBlockState, SLSTMLayer

__all__ = [
    "Bidirectional",
    "DirectionalStack",
    "Reversal",
    "Reversed",
    "mLSTM",
    "reverse_real",
    "sLSTM",
    "xLSTM",
    "CausalConv1d",
    "GatedFFN",
    "HeadwiseLinear",
    "LayerNorm",
    "MLSTMBlock",
    "MLSTMBlockState",
    "MLSTMLayer",
    "MultiHeadLayerNorm",
    "RMSNorm",
    "SLSTMBlock",
    "SLSTMBlockState",
    "SLSTMLayer",
    "check_state",
    "xLSTMBlockStack",
]

"""nn.Modules built on the ops: norms, causal conv, head-wise linear, gated FFN, mLSTM/sLSTM blocks, block stack
(docs/blocks.md)."""

from .block_stack import check_state, xLSTMBlockStack
from .conv import CausalConv1d
from .ffn import GatedFFN
from .linear import HeadwiseLinear
from .mlstm_block import MLSTMBlock, MLSTMBlockState, MLSTMLayer
from .norms import LayerNorm, MultiHeadLayerNorm, RMSNorm
from .slstm_block import SLSTMBlock, SLSTMBlockState, SLSTMLayer

__all__ = [
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

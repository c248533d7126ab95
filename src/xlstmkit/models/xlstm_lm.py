"""`xLSTMLM`: the xLSTM language model of the NeurIPS paper (embedding -> xLSTM block stack -> LayerNorm -> head).

    model = xLSTMLM(xLSTMConfig(vocab_size=256, embedding_dim=128, num_blocks=4, block_pattern="xLSTM[3:1]"))
    logits = model(input_ids)                                   # (B, S, V), any S >= 1
    logits, state = model(input_ids, return_state=True)         # carry `state` into the next call
    logits = model(input_ids, attention_mask=mask)              # padded batches: pads change no state
    logits, state = model.decode_step(tokens, state)            # one token per row, (B,) -> (B, V)
    tokens = model.generate(prompt_ids, max_new_tokens=100, temperature=0.8, top_k=50, seed=0)
    model.save_pretrained("out", tokenizer="bytes"); model = xLSTMLM.from_pretrained("out")   # Hugging Face folder

Feeding a sequence in pieces with the returned state gives the same logits as feeding it whole, in every mLSTM
computation form ("chunkwise" default, "parallel", "recurrent"; per call with `mlstm_form=`). `forward` is the
sequence path and `decode_step` the one-token path; generation chooses between them (prefill, then steps).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..config import xLSTMConfig
from ..generation import GenerationMixin, check_attention_mask, check_input_ids, check_tokens
from ..nn.block_stack import BlockState, xLSTMBlockStack
from ..nn.init import small_init_
from ..nn.weight_cache import clear_derived
from . import native_decode

State = tuple[BlockState, ...]


class xLSTMLM(GenerationMixin, nn.Module):
    def __init__(self, config: xLSTMConfig) -> None:
        super().__init__()
        if not isinstance(config, xLSTMConfig):
            raise TypeError(f"config must be an xLSTMConfig, got {type(config).__name__}")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.embedding_dropout = nn.Dropout(config.dropout) if config.embedding_dropout else nn.Identity()
        self.stack = xLSTMBlockStack(config)
        self.head = nn.Linear(config.embedding_dim, config.vocab_size, bias=False)
        if config.tie_weights:
            self.head.weight = self.embedding.weight
        self._init_embedding_and_head()

    def _init_embedding_and_head(self) -> None:
        small_init_(self.embedding.weight, self.config.embedding_dim)
        if not self.config.tie_weights:
            small_init_(self.head.weight, self.config.embedding_dim)

    def zero_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The empty state (what `state=None` means), e.g. to preallocate or to inspect sizes."""
        return self.stack.zero_state(batch_size, device)

    def forward(
        self,
        input_ids: Tensor,
        state: Sequence[BlockState] | None = None,
        return_state: bool = False,
        mlstm_form: str | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, State]:
        """input_ids (B, S) -> logits (B, S, vocab_size) [, state after the last step].

        attention_mask (B, S) of 0/1 (or bool), 1 at real tokens: padded positions (left, right or inside a row)
        leave every block's state as it was, so each row computes what it would alone; their logits are not
        meaningful. A state from another model configuration or batch size is a ValueError."""
        check_input_ids(input_ids, self.config.vocab_size)
        mask = check_attention_mask(attention_mask, input_ids)
        x = self.embedding_dropout(self.embedding(input_ids))
        x, new_state = self.stack(x, state, mlstm_form or self.config.mlstm_form, mask)
        logits = self.head(x)
        return (logits, new_state) if return_state else logits

    def decode_step(self, tokens: Tensor, state: Sequence[BlockState] | None = None, *,
                    reuse_state: bool = False) -> tuple[Tensor, State]:
        """One token per row, tokens (B,) -> logits (B, vocab_size), new state: the numbers of
        `forward(tokens[:, None], state, return_state=True)` through each block's one-token `step` (generation's hot
        path; shapes are checked, token values are bounds-checked).

        For inference on a CPU (no autograd graph to record, no autocast, no active dropout) the whole step is one
        native call (models/native_decode.py, docs/inference.md); it computes the same numbers to rounding and
        returns the state as a `NativeState` (the same tuple, its tensors views of one buffer). `reuse_state=True`
        lets that step overwrite `state` in place instead of returning a new one (generation's loop); otherwise the
        given state is never modified."""
        check_tokens(tokens)
        out = native_decode.lm_decode_step(self, tokens, state, reuse_state)
        if out is not None:
            return out
        x = self.embedding_dropout(self.embedding(tokens))  # (B, E)
        x, new_state = self.stack.step(x, state)
        return self.head(x), new_state

    def clear_decode_cache(self) -> None:
        """Forget the fused weights cached for `decode_step`. Needed only after editing parameters through
        `param.data`, which PyTorch hides from the version counters the cache checks (optimizer steps,
        `load_state_dict` and assigned parameters are noticed by themselves)."""
        clear_derived(self)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, path: str | os.PathLike, tokenizer=None) -> None:
        """Write a Hugging Face model folder: config.json (model_type "xlstmkit"), model.safetensors and the two
        import-only modules its auto_map names. `xLSTMLM.from_pretrained` reads it, and so does transformers'
        `AutoModelForCausalLM.from_pretrained` (after `import xlstmkit`, or with trust_remote_code=True) with the
        same logits. tokenizer: an xlstmkit tokenizer, "bytes" (the byte tokenizer), or a transformers tokenizer,
        written beside it for `AutoTokenizer`; None writes none. Needs only torch and safetensors
        (`xlstmkit.interop.pretrained`, docs/huggingface.md)."""
        from ..interop import pretrained

        pretrained.save(self, path, tokenizer=tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: torch.dtype | str | None = None,
                        device: torch.device | str | None = None) -> xLSTMLM:
        """The model of a folder written by `save_pretrained` (or by `xlstmkit export`, or by transformers'
        `xLSTMKitForCausalLM.save_pretrained`), in eval mode; dtype casts the weights (None: as stored)."""
        from ..interop import pretrained

        model = pretrained.load(path, dtype=dtype, device=device)
        if not isinstance(model, cls):
            raise ValueError(f"{path} holds an {type(model).__name__}, not an {cls.__name__}: load it with "
                             f"{type(model).__name__}.from_pretrained")
        return model

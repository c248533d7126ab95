"""`xLSTMLM`: the xLSTM language model of the NeurIPS paper (embedding -> xLSTM block stack -> LayerNorm -> head).

    model = xLSTMLM(xLSTMConfig(vocab_size=256, embedding_dim=128, num_blocks=4, block_pattern="xLSTM[3:1]"))
    logits = model(input_ids)                                   # (B, S, V), any S >= 1
    logits, state = model(input_ids, return_state=True)         # carry `state` into the next call
    tokens = model.generate(prompt_ids, max_new_tokens=100, temperature=0.8, top_k=50, seed=0)

Feeding a sequence in pieces with the returned state gives the same logits as feeding it whole, in every mLSTM
computation form ("chunkwise" default, "parallel", "recurrent"; per call with `mlstm_form=`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import xLSTMConfig
from ..generation import GenerationMixin, check_input_ids
from ..nn.block_stack import BlockState, xLSTMBlockStack
from ..nn.init import small_init_
from ..nn.weight_cache import clear_derived

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

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The empty state (what `state=None` means), e.g. to preallocate or to inspect sizes."""
        return self.stack.zero_state(batch_size, device)

    def forward(
        self,
        input_ids: Tensor,
        state: State | None = None,
        return_state: bool = False,
        mlstm_form: str | None = None,
    ) -> Tensor | tuple[Tensor, State]:
        """input_ids (B, S) -> logits (B, S, vocab_size) [, state after the last token]."""
        check_input_ids(input_ids, self.config.vocab_size)
        form = mlstm_form or self.config.mlstm_form
        if input_ids.shape[1] == 1 and form == "recurrent" and self._can_step():
            self.stack._check_state(state)
            logits, new_state = self.decode_step(input_ids[:, 0], state)
            logits = logits.unsqueeze(1)
        else:
            x = self.embedding_dropout(self.embedding(input_ids))
            x, new_state = self.stack(x, state, form)
            logits = self.head(x)
        return (logits, new_state) if return_state else logits

    def _can_step(self) -> bool:
        """Whether `decode_step` applies: a float32 model outside autocast (other dtypes take the general path,
        which converts the states)."""
        w = self.embedding.weight
        return w.dtype == torch.float32 and not torch.is_autocast_enabled(w.device.type)

    def decode_step(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One token per row, tokens (B,) -> logits (B, vocab_size), new state: the same numbers as
        `forward(tokens[:, None], state, return_state=True, mlstm_form="recurrent")` without the input checks and the
        sequence axis (generation's hot path; `stream` calls it once per token after validating its inputs once)."""
        if not self._can_step():
            logits, state = self(tokens[:, None], state=state, return_state=True, mlstm_form="recurrent")
            return logits[:, 0], state
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

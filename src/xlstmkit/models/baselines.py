"""Baseline sequence models for the synthetic tasks, behind one interface: `forward(input_ids (B, S)) -> logits
(B, S, V)`.

- `LSTMLM`: token embedding, `torch.nn.LSTM` (2 layers in the paper's formal-language runs), linear head.
- `llama(...)`, `mamba(...)`: `transformers`' LlamaForCausalLM and MambaForCausalLM, built from their configs and
  wrapped by `HFCausalLM`. Mamba runs transformers' pure-PyTorch path when the CUDA kernels are missing (e.g. on a
  CPU). `transformers` is imported only when one of them is built, with a clear error if it is not installed.

All models are causal, so a right-padded batch gives the same logits at the unpadded positions as the unpadded one.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import torch
from torch import nn


def _transformers() -> Any:
    try:
        module = importlib.import_module("transformers")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Llama and Mamba baselines need Hugging Face transformers: pip install 'transformers>=4.40'"
        ) from exc
    # transformers logs one warning per call about Mamba's missing CUDA kernels; its fallback is the intended path.
    for name in ("transformers", "transformers.models.mamba.modeling_mamba"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return module


def _check_sizes(vocab_size: int, dim: int, num_layers: int) -> None:
    for name, value in (("vocab_size", vocab_size), ("dim", dim), ("num_layers", num_layers)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class LSTMLM(nn.Module):
    """Embedding -> `num_layers`-layer torch.nn.LSTM (hidden size = dim) -> linear head to the vocabulary: the vanilla
    multi-layer LSTM (no residual connections, no norms), the first rung of the xLSTM paper's ablation ladder.

    `forward(input_ids, state=None, return_state=False)`: the state is nn.LSTM's (h, c), each (num_layers, B, dim);
    feeding a sequence in pieces with the returned state gives the logits of feeding it whole."""

    def __init__(self, vocab_size: int, dim: int, num_layers: int = 2) -> None:
        super().__init__()
        _check_sizes(vocab_size, dim, num_layers)
        self.embedding = nn.Embedding(vocab_size, dim)
        self.lstm = nn.LSTM(dim, dim, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(dim, vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None,
                return_state: bool = False):
        x = self.embedding(input_ids)
        if state is not None:
            state = tuple(s.to(x.dtype) for s in state)
        h, new_state = self.lstm(x, state)  # (B, S, dim)
        logits = self.head(h)  # (B, S, V)
        return (logits, new_state) if return_state else logits


class HFCausalLM(nn.Module):
    """A transformers *ForCausalLM model seen through the common interface (no cache, no attention mask)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits  # (B, S, V)


def llama(vocab_size: int, dim: int, num_layers: int = 2, head_dim: int | None = None,
          max_positions: int = 1 << 16) -> HFCausalLM:
    """A `num_layers`-layer Llama (RoPE, SwiGLU MLP of width ~8/3 dim, RMSNorm), untied head.

    Heads: dim // head_dim of them (at least one), lowered until they divide dim into even head sizes (RoPE rotates
    pairs of channels), so any even width works. `head_dim` defaults to 16 below width 128 (the synthetic tasks'
    small models) and to 64 from there on (the usual size of language models). `max_positions` only bounds RoPE's
    position table; the model is trained at whatever length it is given.
    """
    _check_sizes(vocab_size, dim, num_layers)
    if dim % 2:
        raise ValueError(f"the Llama baseline needs an even width (RoPE rotates pairs of channels), got {dim}")
    head_dim = head_dim or (16 if dim < 128 else 64)
    heads = max(1, dim // head_dim)
    while dim % heads or (dim // heads) % 2:
        heads -= 1
    tf = _transformers()
    config = tf.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=dim,
        intermediate_size=max(8, 8 * round(8 * dim / 3 / 8)),
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )
    return HFCausalLM(tf.LlamaForCausalLM(config))


def mamba(vocab_size: int, dim: int, num_layers: int = 2, state_size: int = 16) -> HFCausalLM:
    """A `num_layers`-layer Mamba (expand 2, conv 4, SSM state `state_size`), untied head.

    On a CPU transformers runs Mamba's selective scan in PyTorch, by default as a Python loop over the sequence;
    with the `mambapy` package installed (the `baselines` extra) it runs mamba.py's parallel scan instead
    (`use_mambapy`), still pure PyTorch and the same function (float32 outputs within 1e-6 of the loop), about twice
    as fast to train at the synthetic tasks' lengths. Without `mambapy` the loop runs, as before."""
    _check_sizes(vocab_size, dim, num_layers)
    tf = _transformers()
    import importlib.util

    config = tf.MambaConfig(
        use_mambapy=importlib.util.find_spec("mambapy") is not None,
        vocab_size=vocab_size,
        hidden_size=dim,
        num_hidden_layers=num_layers,
        state_size=state_size,
        expand=2,
        conv_kernel=4,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )
    return HFCausalLM(tf.MambaForCausalLM(config))


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (a tied weight counts once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())

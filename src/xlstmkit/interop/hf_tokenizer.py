"""`xLSTMKitTokenizerFast`: transformers' fast tokenizer with a start-of-text and an end-of-text id that are ordinary
tokens, for tokenizers without special tokens (xlstmkit's byte tokenizer and the BPE tokenizers it trains).

Why: some tools insist on a BOS or EOS id. lm-evaluation-harness scores a continuation of an empty context from its
"prefix token" (the tokenizer's BOS, else EOS) and adds the EOS text to every stop list of generative tasks; with
neither it fails. A byte tokenizer has no token to spare: its 256 ids are the 256 bytes, and the `tokenizers` library
can only add a special token under a new id (outside the model's vocabulary) or under the string of an existing
piece (which would then match that character wherever it occurs in a text, and decode without the byte-level
mapping). So exported folders declare no special token and instead name two ordinary tokens in
`tokenizer_config.json`: `text_start_token_id` (the newline, from which xlstmkit also starts an empty prompt) and
`text_end_token_id` (the NUL byte, which text does not contain: as a stop string it never stops anything, i.e. "no
end-of-text token"). This class reports them as `bos_token_id` / `eos_token_id` without making them special, so
encoding, decoding and `skip_special_tokens` are exactly those of the plain tokenizer.

It is used where the folder's code is trusted (`trust_remote_code=True`, through `auto_map` and the one-line module
`tokenization_xlstmkit.py` next to the tokenizer); without that, transformers loads the plain
`PreTrainedTokenizerFast` named in the same file, which has no BOS/EOS and the same ids.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast


class xLSTMKitTokenizerFast(PreTrainedTokenizerFast):
    """`PreTrainedTokenizerFast` whose `bos_token_id` / `eos_token_id` fall back to `text_start_token_id` /
    `text_end_token_id` of tokenizer_config.json (ordinary tokens, see the module docstring) when no special token
    is declared. (No `__init__` of its own: transformers then builds the backend from tokenizer.json as it is.)"""

    def _fallback(self, name: str) -> int | None:
        value = self.__dict__.get("init_kwargs", {}).get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def _declared(self, name: str) -> int | None:
        token = self.__dict__.get("_special_tokens_map", {}).get(name)
        return None if token is None else self.convert_tokens_to_ids(str(token))

    @property
    def bos_token_id(self) -> int | None:
        declared = self._declared("bos_token")
        return self._fallback("text_start_token_id") if declared is None else declared

    @property
    def eos_token_id(self) -> int | None:
        declared = self._declared("eos_token")
        return self._fallback("text_end_token_id") if declared is None else declared


__all__ = ["xLSTMKitTokenizerFast"]

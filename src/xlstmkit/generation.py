"""Sampling over recurrent state. Generation decides the path: the prompt is prefilled through the model's sequence
`forward` (chunkwise by default), then every new token goes through its one-token `decode_step`. Memory does not grow
with the number of generated tokens: the state has a fixed size and `stream` yields each token as it is made.

Works for any model with `forward(input_ids, state=None, return_state=True)` (and `attention_mask=` for padded
prompts) and `config.vocab_size`; models with `decode_step(tokens, state)` (xLSTMLM, xLSTMLarge) step through it, others through
`forward` on one token. Batched prompts of different lengths: left-pad them and pass `attention_mask`.
"""

from __future__ import annotations

import inspect
import math
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor


def check_input_ids(input_ids: object, vocab_size: int, name: str = "input_ids") -> None:
    """Token ids must be an integer tensor of shape (B, S) with values in [0, vocab_size)."""
    if not isinstance(input_ids, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids (torch.long), got dtype {input_ids.dtype}")
    if input_ids.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, seq_len), got shape {tuple(input_ids.shape)}")
    if input_ids.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one token per row (seq_len >= 1), got shape "
                         f"{tuple(input_ids.shape)}")
    if torch.compiler.is_compiling():
        return  # a value check would force a host sync and break the graph; the embedding still bounds-checks
    lo, hi = (int(t) for t in torch.aminmax(input_ids))  # one pass, one sync
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} holds token id {bad}, outside the vocabulary [0, {vocab_size}); check the tokenizer "
                         f"matches the model's vocab_size")


def check_tokens(tokens: object, name: str = "tokens") -> None:
    """One token per row for a decoding step: an integer tensor of shape (B,) (shape and dtype only: no sync)."""
    if not isinstance(tokens, Tensor) or tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of token ids, shape (batch,), got "
                        f"{type(tokens).__name__ if not isinstance(tokens, Tensor) else tokens.dtype}")
    if tokens.dim() != 1:
        raise ValueError(f"{name} must have shape (batch,) (one token per row), got shape {tuple(tokens.shape)}")


def check_attention_mask(attention_mask: object, input_ids: Tensor) -> Tensor | None:
    """attention_mask (B, S) of 0/1 (any integer, float or bool dtype), 1 = real token, 0 = padding, as a bool
    tensor on input_ids' device; None when it is None or marks every token real (the unmasked path is the fast
    one)."""
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor of 0/1 of shape (batch, seq_len), got "
                        f"{type(attention_mask).__name__}")
    if tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got "
                         f"{tuple(attention_mask.shape)}")
    mask = attention_mask.to(device=input_ids.device)
    if mask.dtype != torch.bool:
        if not torch.compiler.is_compiling() and bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token)")
        mask = mask != 0
    if not torch.compiler.is_compiling() and bool(mask.all()):
        return None
    return mask


def sampling_logits(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None) -> Tensor:
    """The logits sampling draws from, (B, V) float32: logits / temperature with the tokens outside the filters set to
    -inf. Applied in this order:

    - top_k: keep the k highest logits; tokens tied with the k-th are kept too (the set never depends on the order of
      the vocabulary), so more than k tokens can remain.
    - top_p (nucleus), on the distribution left by top_k: keep the smallest set of most probable tokens whose
      probability reaches top_p, i.e. a token is kept when the mass of the tokens before it (in decreasing order) is
      below top_p; tokens tied with the least probable kept one are kept too. The most probable token is always
      kept; top_p = 1 keeps every token.
    """
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        probs = torch.softmax(logits, dim=-1)
        sorted_probs = torch.sort(probs, dim=-1, descending=True).values
        kept = (sorted_probs.cumsum(-1) - sorted_probs) < top_p  # a prefix of the sorted tokens (the first is kept)
        smallest = sorted_probs.masked_fill(~kept, float("inf")).amin(dim=-1, keepdim=True)
        logits = logits.masked_fill(probs < smallest, float("-inf"))
    return logits


def draw_log_e(shape: Sequence[int], generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> Tensor:
    """log E for E ~ Exp(1) (float32), the noise of the Gumbel-max draw, as E = -log U with U uniform on [0, 1)
    (a uniform and two logarithms cost a third of torch's `exponential_` on a CPU). E is clamped to the finite
    normal numbers, so log E is finite: a logit of -inf stays -inf and never becomes NaN."""
    u = torch.empty(tuple(shape), dtype=torch.float32, device=device).uniform_(generator=generator)
    finfo = torch.finfo(torch.float32)
    return u.log_().neg_().clamp_(finfo.tiny, finfo.max).log_()


def sample_next(logits: Tensor, *, temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                generator: torch.Generator | None = None, log_e: Tensor | None = None) -> Tensor:
    """Choose one token per row from logits (B, V): greedy (argmax) when temperature == 0, else a draw from
    softmax(`sampling_logits(...)`), the tokens left by the top_k and top_p filters.

    The draw is the Gumbel-max rule: argmax(s - log E) with E ~ Exp(1) drawn per token is distributed as softmax(s),
    exactly, with no normalisation (tokens at -inf are never drawn). Four tensor operations instead of softmax and
    `multinomial`. `log_e` (B, V) gives the noise (`draw_log_e`); else it is drawn here from `generator`.
    This is the definition; generation chooses through `TokenChooser`, which computes the same in one native call."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    scores = sampling_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    if log_e is None:
        log_e = draw_log_e(scores.shape, generator, scores.device)
    return scores.sub_(log_e).argmax(dim=-1)


class TokenChooser:
    """Generation's token choice, step after step: `sample_next`'s rule, at a fraction of its cost per token.

    Right after a model's step the ten or so tensor operations of a draw cost 60-100 us on a CPU, 2.5-4x what they
    cost alone (benchmarks/sampling_overhead.py), against a whole step of 0.3-0.5 ms for the paper's models. So:
    - the noise log E is drawn for a block of steps at once (`block_steps`: 64 steps of one row of 256 tokens, fewer
      for larger batches and vocabularies, at most 2^18 numbers); the block size depends on the batch and the
      vocabulary only, so a longer generation with the same seed starts with the same tokens;
    - on a CPU with the native library, float32 logits and no top_p, the token is chosen by `choose_tokens`
      (ops/native/choose.h) in one call (greedy too: torch's argmax right after a step costs more than the call);
      otherwise by `sample_next` on the same noise (greedy: `argmax`). Both give the same token from
      the same logits (tests/test_sampling.py), so the path never changes what a seed generates.
    """

    BLOCK_NUMBERS = 1 << 18

    def __init__(self, *, temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None) -> None:
        self.temperature, self.top_k, self.top_p, self.generator = temperature, top_k, top_p, generator
        self.block: tuple[Tensor, ...] | None = None
        self.key: tuple = ()
        self.used = 0
        self.lib: object = False  # the native library, looked up on the first draw (None: not available)
        self.call = None  # ops.native.call, imported with it (not on every token)
        self.heap: Tensor | None = None

    @staticmethod
    def block_steps(batch: int, vocab: int) -> int:
        return max(1, min(64, TokenChooser.BLOCK_NUMBERS // max(1, batch * vocab)))

    def _log_e(self, logits: Tensor) -> Tensor:
        """This step's log E (B, V): the next row of the current block, or the first of a new one."""
        key = (logits.shape, logits.device)
        if self.block is None or self.used == len(self.block) or key != self.key:
            B, V = logits.shape
            self.block = draw_log_e((self.block_steps(B, V), B, V), self.generator, logits.device).unbind(0)
            self.key, self.used = key, 0
        self.used += 1
        return self.block[self.used - 1]

    def __call__(self, logits: Tensor) -> Tensor:
        """logits (B, V) -> tokens (B,) int64."""
        greedy = self.temperature == 0
        log_e = None if greedy else self._log_e(logits)
        if (greedy or self.top_p is None or self.top_p >= 1.0) and logits.dtype == torch.float32 and logits.is_cpu \
                and logits.dim() == 2 and logits.is_contiguous():
            if self.lib is False:
                from .ops import native

                self.lib, self.call = native.library(), native.call
            if self.lib is not None:
                B, V = logits.shape
                k = 0 if greedy or self.top_k is None or self.top_k >= V else self.top_k
                if self.heap is None or self.heap.numel() != k + 1:
                    self.heap = torch.empty(k + 1, dtype=torch.float32)
                out = torch.empty(B, dtype=torch.int64)
                self.call(self.lib, "choose_tokens", torch.float32, (B, V, k, float(self.temperature)),
                          (logits, log_e, self.heap, out))
                return out
        if greedy:
            return logits.argmax(dim=-1)
        return sample_next(logits, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, log_e=log_e)


def _check_sampling(max_new_tokens, temperature, top_k, top_p) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < math.inf:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")


class _CompiledStep:
    """A model's `decode_step` through torch.compile, falling back for good to the plain step, with a one-line
    warning, if compiling fails (no C++ compiler, an unsupported platform, ...). Holds no reference to the model."""

    def __init__(self, step: Callable) -> None:
        self.step = step  # the unbound function: step(model, tokens, state)
        self.compiled: Callable | None = None
        self.failed = False

    def __call__(self, model, tokens: Tensor, state):
        if not self.failed:
            try:
                if self.compiled is None:
                    self.compiled = torch.compile(self.step, dynamic=False)
                return self.compiled(model, tokens, state)
            except Exception as exc:  # noqa: BLE001 - any failure of the optional compiler means: run uncompiled
                self.failed = True
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                warnings.warn(f"compiling the decoding step failed ({type(exc).__name__}: {first}); generating "
                              "without compilation", RuntimeWarning, stacklevel=3)
        return self.step(model, tokens, state)


_COMPILED_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_decode_step(model) -> Callable[[Tensor, object], tuple[Tensor, object]]:
    """model.decode_step compiled with torch.compile (once per model, on first use; compiling takes tens of seconds),
    with a plain fallback if compilation fails."""
    entry = _COMPILED_STEPS.get(model)
    if entry is None:
        entry = _COMPILED_STEPS[model] = _CompiledStep(type(model).decode_step)
    return lambda tokens, state: entry(model, tokens, state)


def _last_real(logits: Tensor, mask: Tensor) -> Tensor:
    """logits (B, S, V) at each row's last real position (mask (B, S) bool, at least one True per row) -> (B, V)."""
    S = mask.shape[1]
    last = S - 1 - torch.flip(mask, dims=[1]).int().argmax(dim=1)  # (B,)
    return logits[torch.arange(logits.shape[0], device=logits.device), last]


def _takes_keyword(fn: Callable, name: str) -> bool:
    """Whether `fn` accepts the keyword argument `name` (explicitly or through **kwargs)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class GenerationMixin:
    """`generate` and `stream` for recurrent language models."""

    @torch.inference_mode()
    def stream(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop_tokens: Sequence[int] | None = None,
        pad_token: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        state=None,
        attention_mask: Tensor | None = None,
        compile: bool = False,
    ) -> Iterator[Tensor]:
        """Yield the next token of every row, (B,), one step at a time.

        The prompt goes through the model's sequence `forward` (the prefill), then each new token through its
        one-token `decode_step`. `attention_mask` (B, S) of 0/1 marks the real tokens of prompts of different
        lengths (left padding, as usual; right padding works too): each row continues as its prompt would alone.
        Rows that produced a stop token keep yielding `pad_token` (default: the first stop token) until all rows have
        stopped or max_new_tokens is reached. `seed` makes sampling reproducible (or pass a torch.Generator).
        `compile=True` runs the per-token step of models with a `decode_step` through torch.compile (opt-in: it
        needs a working C++ toolchain and tens of seconds to compile on first use, then each token costs about half;
        a failed compilation falls back to the plain step with a one-line warning; other models ignore it).
        """
        vocab = self.config.vocab_size
        check_input_ids(input_ids, vocab)
        _check_sampling(max_new_tokens, temperature, top_k, top_p)
        mask = check_attention_mask(attention_mask, input_ids)
        if mask is not None and not bool(mask.any(dim=1).all()):
            raise ValueError("attention_mask leaves a row without any real token: every prompt needs at least one")
        stops = torch.tensor(list(stop_tokens or []), dtype=torch.long, device=input_ids.device)
        if stops.numel() and (int(stops.min()) < 0 or int(stops.max()) >= vocab):
            raise ValueError(f"stop_tokens must be ids in [0, {vocab}), got {list(stop_tokens)}")
        if pad_token is not None and (isinstance(pad_token, bool) or not isinstance(pad_token, int)
                                      or not 0 <= pad_token < vocab):
            raise ValueError(f"pad_token must be an id in [0, {vocab}) or None, got {pad_token!r}")
        fill = pad_token if pad_token is not None else (int(stops[0]) if stops.numel() else 0)
        if generator is None and seed is not None:
            generator = torch.Generator(device=input_ids.device).manual_seed(seed)
        was_training = self.training
        self.eval()
        # models with a `decode_step(tokens (B,), state) -> (logits (B, V), state)` step through it; others through
        # forward on one token
        decode_step = getattr(self, "decode_step", None)
        # after its first step the loop owns the state: the model may then write each new state over the last
        # (`reuse_state`, the native decoders: no state buffer allocated or copied per token)
        # (only models whose decode_step takes the keyword: a user's model keeps the two-argument form)
        reuse = decode_step is not None and not compile and _takes_keyword(decode_step, "reuse_state")
        if compile and decode_step is not None:
            decode_step = compiled_decode_step(self)
        try:
            if decode_step is not None and input_ids.shape[1] == 1 and mask is None:
                logits, state = decode_step(input_ids[:, 0], state)  # a one-token prompt: one step
            else:
                if mask is None:
                    logits, state = self(input_ids, state=state, return_state=True)
                    logits = logits[:, -1]
                else:
                    logits, state = self(input_ids, state=state, return_state=True, attention_mask=mask)
                    logits = _last_real(logits, mask)
            finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            choose = TokenChooser(temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            for step in range(max_new_tokens):
                token = choose(logits)
                if stops.numel():
                    token = torch.where(finished, torch.full_like(token, fill), token)
                yield token
                if stops.numel():
                    finished = finished | torch.isin(token, stops)
                    if bool(finished.all()):
                        return
                if step + 1 < max_new_tokens:
                    if reuse:
                        logits, state = decode_step(token, state, reuse_state=step > 0)
                    elif decode_step is not None:
                        logits, state = decode_step(token, state)
                    else:
                        logits, state = self(token[:, None], state=state, return_state=True)
                        logits = logits[:, -1]
        finally:
            self.train(was_training)

    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        *,
        callback: Callable[[Tensor], None] | None = None,
        **kwargs,
    ) -> Tensor:
        """The prompt (padding included) followed by up to max_new_tokens generated tokens, (B, S + n).
        `callback(token (B,))` is called after every step (for streaming); other keyword arguments as in `stream`
        (`attention_mask` for padded prompts)."""
        out = [input_ids]
        for token in self.stream(input_ids, max_new_tokens, **kwargs):
            if callback is not None:
                callback(token)
            out.append(token[:, None])
        return torch.cat(out, dim=1)

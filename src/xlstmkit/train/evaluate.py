"""Evaluation of a language model on validation text: loss, bits per byte, perplexity, a unigram baseline on the
same tokens, and length extrapolation (loss at context lengths beyond the training length).

Two ways to score a text, chosen by what the model can do:

- **state carried** (models whose `forward` takes `state=` and `return_state=`: the xLSTM models, the LSTM): the
  validation text is cut into `streams` contiguous pieces (one per row of a batch) and each piece is fed in chunks of
  `seq_len` tokens, every chunk starting from the state the previous one ended in. Every token is predicted from all
  the text before it in its piece (tens of thousands of tokens, many whole files), as a recurrent model is used; only
  the first tokens of each piece start cold. The chunk length does not change the numbers, only the memory used.
- **windows** (everything else, and the length-extrapolation table): non-overlapping windows of `seq_len` tokens,
  each from an empty context, so a token is predicted from the 0 to seq_len - 1 tokens before it in its window.

bits per byte = loss (nats per token) x tokens / bytes / ln 2, where bytes counts the UTF-8 bytes the scored target
tokens stand for; it compares models with different tokenizers. The unigram baseline predicts every token with its
(add-one smoothed) frequency in the training text, ignoring context: a model that does not beat it learned nothing.
"""

from __future__ import annotations

import csv
import inspect
import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batches import eval_streams, eval_windows
from .checkpoint import atomic_write_bytes
from .core import autocast
from .distributed import DistInfo


@dataclass(frozen=True)
class EvalResult:
    """Validation metrics; `*_bpb` are bits per byte."""

    loss: float          # nats per token
    bpb: float
    perplexity: float    # per token
    tokens: int
    bytes: int
    unigram_loss: float
    unigram_bpb: float
    seq_len: int
    streams: int = 0     # > 0: state carried across this many contiguous pieces of the text (else: windows)

    @property
    def method(self) -> str:
        """How the tokens were scored, in words (printed with every result)."""
        if self.streams:
            per = self.tokens // self.streams
            return (f"state carried across {self.streams} contiguous pieces of {per:,} tokens, fed {self.seq_len} at "
                    f"a time: each token sees all the text before it in its piece")
        return f"non-overlapping windows of {self.seq_len} tokens, each from an empty context"

    def to_dict(self) -> dict:
        return {**asdict(self), "method": self.method}


def bits_per_byte(loss_nats_per_token: float, tokens: int, n_bytes: int) -> float:
    """Bits per UTF-8 byte of text from a per-token loss in nats."""
    if n_bytes <= 0:
        raise ValueError(f"n_bytes must be > 0, got {n_bytes}")
    return loss_nats_per_token * tokens / n_bytes / math.log(2)


def unigram_counts(train_tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(vocab,) float64 token counts of the training stream."""
    return torch.bincount(train_tokens, minlength=vocab_size)[:vocab_size].double()


def unigram_loss(counts: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean nats per token of predicting `targets` with add-one smoothed unigram probabilities from `counts`."""
    probs = (counts + 1.0) / (counts.sum() + counts.numel())
    return float(-probs.log()[targets.flatten()].mean())


@torch.no_grad()
def windows_loss(model: nn.Module, windows: torch.Tensor, *, batch_size: int, device: torch.device,
                 dtype: str = "float32", info: DistInfo | None = None,
                 progress: Callable[[int], None] | None = None) -> tuple[float, int]:
    """(summed nats, token count) of next-token prediction over windows (W, T + 1); each rank takes every
    world_size-th batch and the sums are all-reduced, so all ranks return the same totals."""
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    batches = list(range(0, windows.shape[0], batch_size))
    # every rank runs the same number of forward calls (FSDP needs it); surplus calls score nothing
    n_calls = math.ceil(len(batches) / info.world_size)
    try:
        for j in range(n_calls):
            k = j * info.world_size + info.rank
            start = batches[k] if k < len(batches) else batches[-1]
            batch = windows[start:start + batch_size].to(device)
            with autocast(device, dtype):
                logits = model(batch[:, :-1])  # (b, T, V)
            if k < len(batches):
                total += _nll_and_count(logits, batch[:, 1:])
            if progress is not None:
                progress(batch.shape[0] * (batch.shape[1] - 1))
    finally:
        model.train(was_training)
    return _all_reduced(total, info)


def accepts_state(model: nn.Module) -> bool:
    """Whether `model(input_ids, state=..., return_state=True)` returns (logits, state): a recurrent model whose
    state can be carried from one chunk of text to the next."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "state" in params and "return_state" in params


def _nll_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy in at least float32 (bf16 logits are upcast; a float64 model keeps float64)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")


def _nll_and_count(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(summed nats, token count) of one scored batch, as a float64 pair to add to a running total."""
    nll = _nll_sum(logits, targets)
    return torch.stack([nll.double(), torch.tensor(float(targets.numel()), device=nll.device, dtype=torch.float64)])


def _all_reduced(total: torch.Tensor, info: DistInfo) -> tuple[float, int]:
    """The (summed nats, token count) pair summed over the ranks of a torchrun job (every rank gets the totals)."""
    if info.distributed:
        import torch.distributed as dist

        dist.all_reduce(total)
    return float(total[0]), int(total[1])


@torch.no_grad()
def streams_loss(model: nn.Module, streams: torch.Tensor, *, chunk: int, device: torch.device,
                 dtype: str = "float32", info: DistInfo | None = None,
                 progress: Callable[[int], None] | None = None) -> tuple[float, int]:
    """(summed nats, token count) of next-token prediction along contiguous streams (R, L + 1), fed `chunk` tokens
    at a time with the state carried from chunk to chunk. Rank r of a torchrun job takes rows r, r + W, ...; every
    rank makes the same number of forward calls (FSDP needs it) and the sums are all-reduced."""
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    rows = streams[info.rank::info.world_size]
    scored = rows.shape[0] > 0
    if not scored:  # fewer streams than ranks: this rank repeats stream 0 and scores nothing
        rows = streams[:1]
    rows = rows.to(device)
    state = None
    length = rows.shape[1] - 1
    try:
        for start in range(0, length, chunk):
            piece = rows[:, start:start + chunk + 1]
            with autocast(device, dtype):
                logits, state = model(piece[:, :-1], state=state, return_state=True)  # (r, c, V)
            if scored:
                total += _nll_and_count(logits, piece[:, 1:])
            if progress is not None:
                progress(piece.shape[0] * (piece.shape[1] - 1))
    finally:
        model.train(was_training)
    return _all_reduced(total, info)


def evaluate(model: nn.Module, val_tokens: torch.Tensor, *, seq_len: int, max_tokens: int | None,
             byte_lengths: torch.Tensor, counts: torch.Tensor, batch_size: int = 16,
             device: torch.device = torch.device("cpu"), dtype: str = "float32",
             info: DistInfo | None = None, progress: Callable[[int], None] | None = None,
             carry_state: bool | None = None) -> EvalResult:
    """Loss, bits per byte and perplexity on up to `max_tokens` validation tokens, with the unigram baseline on the
    same target tokens.

    `carry_state` (default: whether the model can, `accepts_state`): score `batch_size` contiguous pieces spread over
    the whole validation text with the state carried along each (see the module docstring); otherwise windows of
    `seq_len` tokens spread over the whole text."""
    info = info or DistInfo()
    carry = accepts_state(model) if carry_state is None else carry_state
    if carry:
        n_streams = max(1, batch_size)
        n_streams = math.ceil(n_streams / info.world_size) * info.world_size  # every rank gets as many rows
        streams = eval_streams(val_tokens, n_streams, max_tokens)  # (R, L + 1)
        nll, n = streams_loss(model, streams, chunk=seq_len, device=device, dtype=dtype, info=info,
                              progress=progress)
        targets = streams[:, 1:]
    else:
        windows = eval_windows(val_tokens, seq_len, max_tokens)  # (W, T + 1)
        nll, n = windows_loss(model, windows, batch_size=batch_size, device=device, dtype=dtype, info=info,
                              progress=progress)
        targets = windows[:, 1:]
    n_bytes = int(byte_lengths[targets].sum())
    loss = nll / n
    uni = unigram_loss(counts, targets)
    return EvalResult(loss=loss, bpb=bits_per_byte(loss, n, n_bytes), perplexity=math.exp(min(loss, 700.0)),
                      tokens=n, bytes=n_bytes, unigram_loss=uni, unigram_bpb=bits_per_byte(uni, n, n_bytes),
                      seq_len=seq_len, streams=targets.shape[0] if carry else 0)


def length_extrapolation(model: nn.Module, val_tokens: torch.Tensor, lengths: list[int], *, max_tokens: int,
                         byte_lengths: torch.Tensor, counts: torch.Tensor, batch_size: int = 8,
                         device: torch.device = torch.device("cpu"), dtype: str = "float32",
                         progress: Callable[[int], None] | None = None) -> list[EvalResult]:
    """`evaluate` in windows of each context length (the same token budget per length; the context is what is
    measured, so no state is carried between windows; lengths longer than the validation text are skipped)."""
    results = []
    for length in lengths:
        if val_tokens.numel() < length + 1:
            continue
        per_batch = max(1, min(batch_size, max_tokens // length))
        results.append(evaluate(model, val_tokens, seq_len=length, max_tokens=max(max_tokens, length),
                                byte_lengths=byte_lengths, counts=counts, batch_size=per_batch, device=device,
                                dtype=dtype, progress=progress, carry_state=False))
    return results


def format_result(r: EvalResult, label: str = "validation") -> str:
    """A few aligned lines: how the text was scored, then the model next to the unigram baseline."""
    return (f"{label} ({r.tokens:,} tokens, {r.bytes:,} bytes; {r.method}):\n"
            f"  {'':10s} {'loss':>8s} {'bits/byte':>10s} {'perplexity':>11s}\n"
            f"  {'model':10s} {r.loss:8.4f} {r.bpb:10.4f} {r.perplexity:11.3f}\n"
            f"  {'unigram':10s} {r.unigram_loss:8.4f} {r.unigram_bpb:10.4f} {math.exp(r.unigram_loss):11.3f}")


def format_length_table(results: list[EvalResult], train_len: int | None = None) -> str:
    lines = [f"{'context':>8s} {'loss':>8s} {'bits/byte':>10s} {'perplexity':>11s} {'tokens':>9s}"]
    for r in results:
        mark = "  (training length)" if r.seq_len == train_len else ""
        lines.append(f"{r.seq_len:8d} {r.loss:8.4f} {r.bpb:10.4f} {r.perplexity:11.3f} {r.tokens:9d}{mark}")
    return "\n".join(lines)


def write_length_table(results: list[EvalResult], path: str | Path) -> None:
    """The length-extrapolation table as CSV, written atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["context", "loss", "bits_per_byte", "perplexity", "tokens", "bytes"])
    for r in results:
        w.writerow([r.seq_len, f"{r.loss:.6f}", f"{r.bpb:.6f}", f"{r.perplexity:.4f}", r.tokens, r.bytes])
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def plot_lengths(results: list[EvalResult], path: str | Path, train_len: int | None = None) -> bool:
    """Bits per byte against context length as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r.seq_len for r in results], [r.bpb for r in results], marker="o", label="model")
    ax.plot([r.seq_len for r in results], [r.unigram_bpb for r in results], ls="--", color="grey", label="unigram")
    if train_len:
        ax.axvline(train_len, color="red", ls=":", label=f"training length {train_len}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("validation bits per byte")
    ax.set_title("Length extrapolation")
    ax.legend()
    fig.tight_layout()
    from .metrics import save_figure

    save_figure(fig, path)
    plt.close(fig)
    return True

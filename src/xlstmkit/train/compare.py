"""`xlstmkit compare`: several language models trained on the same data, tokenizer, batches and time budget, at
matched parameter counts, one after another in one process on the same threads (docs/compare.md).

The protocol, in the order it runs:

1. **One size.** The reference is xLSTM[7:1] at a size preset's width and depth (`--size`, the presets of
   `xlstmkit train`). Its parameter count is the budget; every other model gets the width whose count is closest to
   it (`match_width`, counted on the meta device: nothing is allocated), and the match must be within
   `PARAM_TOLERANCE` (5 %) or the comparison refuses to start.
2. **One data set.** The text is read and tokenized once; every model trains on the same token stream, and the
   batch of step s is a function of (seed, s) only (`data.batches.WindowSampler`), so every model sees the same
   batches in the same order. Each run records a SHA-256 of the tokens it was fed, step by step
   (`ModelResult.batch_sha256`: the hash after 2^k steps and at the end), so that is checked, not assumed.
3. **One budget.** Each model trains for the same training time (`--budget`; step time only: the periodic
   evaluations that draw the curves are not counted), with AdamW and the preset's learning rate, a linear warm-up
   over the preset's warm-up steps and a cosine decay that follows the fraction of the budget used
   (`BudgetSchedule`), so every model ends its decay when its time is up, however fast it steps.
4. **One core.** Each model is an `LMTrainer` (the trainer of `xlstmkit train`: setup, fit, finish), with the
   comparison's data handed in instead of loaded, so a model folder under `--out` looks like a run folder.
5. **One yardstick.** Validation bits per byte on the held-out files, in windows of the training context for every
   model (`evaluate(carry_state=False)`), on the same tokens; the recurrent models are also scored with their state
   carried across the text (the `xlstmkit train` report), and every model at `extrapolation` x its training
   context (the paper's Figure 7).

`run_comparison` returns the results and writes results.json, results.md, curves.png (validation bits per byte
against training time and against tokens), extrapolation.png/.csv and, for `--ladder`, the table beside the paper's
ordering (`ladder_table`).
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import FrozenConfig, parse_block_pattern
from . import distributed as D
from .build import build_model, count_parameters, register_model_family
from .checkpoint import atomic_write_bytes
from .config import RunConfig, TrainConfig, build_run_config, parse_duration
from .evaluate import EvalResult, accepts_state, evaluate, length_extrapolation
from .loop import LMTrainer
from .optim import build_optimizer

PARAM_TOLERANCE = 0.05  # every model's parameter count within 5 % of the reference's

# -- the models ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One model of a comparison: `name` (the table's row), `family` and how its model dict is built at a width."""

    name: str
    label: str
    kind: str                 # xlstm | lstm_blocks | llama | mamba | lstm | official
    pattern: str | None = None
    layers: str = "blocks"    # "blocks": as many layers as the reference has blocks; "2": two (the LSTM LM)
    lstm_ffn: bool = False


ENTRIES: dict[str, Entry] = {e.name: e for e in (
    Entry("xlstm[7:1]", "xLSTM[7:1]", "xlstm", "xLSTM[7:1]"),
    Entry("xlstm[1:0]", "xLSTM[1:0]", "xlstm", "xLSTM[1:0]"),
    Entry("xlstm[0:1]", "xLSTM[0:1]", "xlstm", "xLSTM[0:1]"),
    Entry("llama", "Llama (transformers)", "llama"),
    Entry("mamba", "Mamba (transformers, pure-torch path)", "mamba"),
    Entry("lstm", "LSTM (torch.nn.LSTM, 2 layers)", "lstm", layers="2"),
    Entry("official", "xLSTM[7:1] (official xlstm package)", "official", "xLSTM[7:1]"),
    # the rungs of the ablation ladder (`LADDER`) that are not models of the comparison
    Entry("lstm-vanilla", "vanilla multi-layer LSTM", "lstm"),
    Entry("lstm-resnet", "LSTM + ResNet backbone", "lstm_blocks"),
    Entry("lstm-resnet-up", "LSTM + ResNet + up-projection backbone", "lstm_blocks", lstm_ffn=True),
)}
COMPARE_MODELS = ("xlstm[7:1]", "xlstm[1:0]", "xlstm[0:1]", "llama", "mamba", "lstm", "official")
REFERENCE = "xlstm[7:1]"

# The xLSTM paper's ablation (Table 2, top; 15B tokens, ~400M parameters): each rung adds one change to the one
# above it. (name, modification, the paper's validation perplexity); xLSTM[1:0] is not a rung of that table: it is
# xLSTM[7:1] without its sLSTM block, i.e. without memory mixing (Table 1: 13.43 vs 13.48).
LADDER: tuple[tuple[str, str, float | None], ...] = (
    ("lstm-vanilla", "vanilla multi-layer LSTM", 2417.86),
    ("lstm-resnet", "+ ResNet backbone (residual blocks, pre-LayerNorm)", 35.46),
    ("lstm-resnet-up", "+ up-projection backbone (gated GeLU feed-forward after each LSTM)", 26.01),
    ("xlstm[0:1]", "+ exponential gating (sLSTM blocks: xLSTM[0:1])", 17.70),
    ("xlstm[7:1]", "+ matrix memory (mLSTM blocks: xLSTM[7:1])", 13.48),
    ("xlstm[1:0]", "- memory mixing (no sLSTM block: xLSTM[1:0]; Table 1)", 13.43),
)


def canonical_name(name: str) -> str:
    key = name.strip().lower().replace(" ", "")
    key = {"xlstm71": "xlstm[7:1]", "xlstm10": "xlstm[1:0]", "xlstm01": "xlstm[0:1]"}.get(key, key)
    if key not in ENTRIES:
        raise ValueError(f"unknown model {name!r}; choose from: {', '.join(ENTRIES)}")
    return key


def official_available() -> bool:
    """Whether the official `xlstm` package can be imported (it is optional)."""
    import importlib.util

    if importlib.util.find_spec("xlstm") is None:
        return False
    try:
        import xlstm  # noqa: F401
    except Exception:  # an installed but broken package (e.g. missing its own dependencies) counts as absent
        return False
    return True


@dataclass(frozen=True)
class OfficialConfig(FrozenConfig):
    """The official package's xLSTMLMModel at the sizes xlstmkit's config calls by the same names (family
    "xlstm_official"). `context_length` is the longest sequence it accepts (its mLSTM keeps a causal mask that big)."""

    vocab_size: int = 256
    embedding_dim: int = 128
    num_blocks: int = 4
    slstm_at: tuple[int, ...] = ()
    num_heads: int = 4
    conv_kernel: int = 4
    context_length: int = 4096

    def __post_init__(self) -> None:
        object.__setattr__(self, "slstm_at", tuple(self.slstm_at))


def _official_model(cfg: OfficialConfig) -> nn.Module:
    from ..extras import require

    require("xlstm", "bench", "the official xLSTM package's model in the comparison")
    from xlstm import (FeedForwardConfig, mLSTMBlockConfig, mLSTMLayerConfig, sLSTMBlockConfig, sLSTMLayerConfig,
                       xLSTMLMModel, xLSTMLMModelConfig)

    config = xLSTMLMModelConfig(
        vocab_size=cfg.vocab_size, embedding_dim=cfg.embedding_dim, num_blocks=cfg.num_blocks,
        context_length=cfg.context_length, slstm_at=list(cfg.slstm_at),
        mlstm_block=mLSTMBlockConfig(mlstm=mLSTMLayerConfig(num_heads=cfg.num_heads,
                                                            conv1d_kernel_size=cfg.conv_kernel)),
        slstm_block=sLSTMBlockConfig(slstm=sLSTMLayerConfig(backend="vanilla", num_heads=cfg.num_heads,
                                                            conv1d_kernel_size=cfg.conv_kernel),
                                     feedforward=FeedForwardConfig(proj_factor=1.3, act_fn="gelu")),
    )
    model = xLSTMLMModel(config)
    model.reset_parameters()
    return model


register_model_family("xlstm_official", lambda: OfficialConfig, lambda: _official_model)


def slstm_positions(pattern: str, blocks: int) -> tuple[int, ...]:
    """The sLSTM block indices of the ratio `pattern` ("xLSTM[a:b]") at `blocks` blocks, with at least one sLSTM block
    when b > 0. The config's rule rounds the ratio (`parse_block_pattern`), and at the default depth of 4 blocks 7:1
    rounds to no sLSTM block at all: xLSTM[7:1] would be the very model of xLSTM[1:0] (it was, in a first 10-minute
    comparison). A model that mixes memories has to keep its sLSTM block, so a pattern that names one gets one, at
    the position the rule gives a single block (the middle)."""
    return parse_block_pattern(pattern, blocks, at_least_one=True)


def model_dict(entry: Entry, width: int, reference: dict[str, Any], vocab_size: int,
               context: int) -> dict[str, Any]:
    """The `train.build` model dict of `entry` at `width`, with the reference's depth, heads and kernels (the sLSTM
    blocks of the entry's ratio at that depth by `slstm_positions`). `context` is the longest sequence the model must
    accept (for the official package's causal mask)."""
    blocks = int(reference.get("num_blocks", 4))
    if entry.kind in ("xlstm", "lstm_blocks"):
        d = {k: v for k, v in reference.items() if k not in ("block_pattern", "slstm_at", "lstm_at", "lstm_ffn")}
        d.update(family="xlstm", vocab_size=vocab_size, embedding_dim=width)
        if entry.kind == "xlstm":
            at = slstm_positions(entry.pattern, blocks)
            if at == parse_block_pattern(entry.pattern, blocks):
                d["block_pattern"] = entry.pattern
            else:  # the ratio rounded its only sLSTM block away: name the block
                d["slstm_at"] = list(at)
        else:
            d.update(lstm_at="all", lstm_ffn=entry.lstm_ffn)
        return d
    if entry.kind == "official":
        return {"family": "xlstm_official", "vocab_size": vocab_size, "embedding_dim": width, "num_blocks": blocks,
                "slstm_at": list(slstm_positions(entry.pattern, blocks)),
                "num_heads": int(reference.get("mlstm_num_heads", 4)),
                "conv_kernel": int(reference.get("mlstm_conv_kernel", 4)), "context_length": context}
    layers = 2 if entry.layers == "2" else blocks
    return {"family": entry.kind, "vocab_size": vocab_size, "dim": width, "num_layers": layers}


def parameter_count(model_cfg: dict[str, Any]) -> int:
    """Parameters of a model dict, counted on the meta device (no memory, no initialisation)."""
    with torch.device("meta"):
        return count_parameters(build_model(model_cfg))


def _width_step(entry: Entry, reference: dict[str, Any]) -> int:
    """Widths must split into heads (xLSTM: the sLSTM heads and the q/k/v blocks; Llama: heads of 16 or 64)."""
    if entry.kind in ("xlstm", "official", "lstm_blocks"):
        return math.lcm(int(reference.get("slstm_num_heads", 4)), int(reference.get("mlstm_num_heads", 4)))
    return 4 if entry.kind == "lstm" else 8


def match_width(entry: Entry, budget: int, reference: dict[str, Any], vocab_size: int, context: int,
                tolerance: float = PARAM_TOLERANCE) -> tuple[dict[str, Any], int]:
    """The model dict of `entry` whose parameter count is closest to `budget`, and that count.

    xLSTM widths move the inner and feed-forward widths in steps of `round_up_to` (64 in the paper's configs), which
    can be too coarse for a small model; when the closest width misses by more than half the tolerance, finer
    roundings (16, then 8) are tried too, and the closest of all is kept (the model dict records the rounding)."""
    best = _search_width(entry, budget, reference, vocab_size, context)
    if entry.kind in ("llama", "mamba", "lstm") and abs(best[1] - budget) > tolerance / 2 * budget:
        width = best[0]["dim"]  # between two coarse steps: every width there (any width works for these)
        for w in range(max(1, width - _width_step(entry, reference) + 1), width + _width_step(entry, reference)):
            d = model_dict(entry, w, reference, vocab_size, context)
            try:
                n = parameter_count(d)
            except ValueError:  # e.g. an odd width for Llama
                continue
            if abs(n - budget) < abs(best[1] - budget):
                best = (d, n)
    if entry.kind in ("xlstm", "lstm_blocks") and abs(best[1] - budget) > tolerance / 2 * budget:
        for multiple in (16, 8):
            if multiple < int(reference.get("round_up_to", 64)):
                finer = _search_width(entry, budget, {**reference, "round_up_to": multiple}, vocab_size, context)
                if abs(finer[1] - budget) < abs(best[1] - budget):
                    best = finer
    return best


def _search_width(entry: Entry, budget: int, reference: dict[str, Any], vocab_size: int, context: int,
                  max_width: int = 8192) -> tuple[dict[str, Any], int]:
    """Counts grow with the width: bisection for the first width (a multiple of the entry's step) over the budget,
    then the closer of it and the one below."""
    step = _width_step(entry, reference)
    counts: dict[int, tuple[dict[str, Any], int] | None] = {}

    def count(k: int) -> tuple[dict[str, Any], int] | None:
        if k not in counts:
            d = model_dict(entry, k * step, reference, vocab_size, context)
            try:
                counts[k] = (d, parameter_count(d))
            except ValueError:  # a width the config refuses
                counts[k] = None
        return counts[k]

    lo, hi = 1, max_width // step  # invariant: the first k over the budget lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        c = count(mid)
        if c is not None and c[1] > budget:
            hi = mid
        else:
            lo = mid + 1
    found = [c for c in (count(lo - 1) if lo > 1 else None, count(lo)) if c is not None]
    if not found:
        raise ValueError(f"no width of {entry.name} gives a model near {budget:,} parameters")
    return min(found, key=lambda c: abs(c[1] - budget))


def matched_models(names: Sequence[str], reference: dict[str, Any], vocab_size: int, context: int,
                   tolerance: float = PARAM_TOLERANCE) -> list[tuple[Entry, dict[str, Any], int]]:
    """(entry, model dict, parameter count) of every model, each matched to the reference xLSTM[7:1]'s count; a
    ValueError names a model that cannot be matched within `tolerance`."""
    ref_entry = ENTRIES[REFERENCE]
    ref = model_dict(ref_entry, int(reference.get("embedding_dim", 128)), reference, vocab_size, context)
    budget = parameter_count(ref)
    out = []
    for name in names:
        entry = ENTRIES[canonical_name(name)]
        d, n = (ref, budget) if entry.name == REFERENCE else match_width(entry, budget, reference, vocab_size,
                                                                          context, tolerance)
        if abs(n - budget) > tolerance * budget:
            raise ValueError(f"{entry.name}: the closest width gives {n:,} parameters, more than "
                             f"{tolerance:.0%} away from the reference's {budget:,}")
        out.append((entry, d, n))
    return out


# -- the schedule --------------------------------------------------------------------------------------------------


class BudgetSchedule:
    """The learning rate as a function of the step (warm-up) and of the training time used (decay):

        lr = lr_peak * min(1, (s + 1) / W) * (r + (1 - r) (1 + cos(pi p)) / 2),   p = min(1, t / budget)

    `t` is the training time so far (`elapsed()`); without a budget, p = s / max_steps (the step-based cosine).
    A model that steps slowly gets the same shape of schedule as a fast one, compressed into fewer steps: the fair
    way to spend one time budget. Has `step()` and `state_dict()` like a torch scheduler."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, elapsed: Callable[[], float]) -> None:
        self.optimizer, self.elapsed = optimizer, elapsed
        self.lr, self.warmup, self.min_ratio = cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio
        self.budget, self.max_steps = cfg.time_budget, cfg.total_steps
        self.last_epoch = 0
        self._apply()

    def factor(self) -> float:
        s = self.last_epoch
        warm = min(1.0, (s + 1) / self.warmup) if self.warmup else 1.0
        p = min(1.0, self.elapsed() / self.budget) if self.budget else min(1.0, s / max(1, self.max_steps))
        return warm * (self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p)))

    def _apply(self) -> None:
        lr = self.lr * self.factor()
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch}


# -- the data, shared by every model -------------------------------------------------------------------------------


@dataclass
class SharedData:
    """The comparison's text, tokenized once."""

    tokenizer: Any
    train_tokens: torch.Tensor
    val_tokens: torch.Tensor
    train_doc_starts: torch.Tensor
    counts: torch.Tensor
    byte_lengths: torch.Tensor
    description: str
    fingerprint: str


def load_shared_data(cfg: TrainConfig, out: Path | None = None) -> SharedData:
    """The corpus of `cfg.data` (the standard library by default), its tokenizer (bytes, or a BPE trained on the
    training text and saved to `out`), the two token streams and the training documents' offsets."""
    from ..data.text import encode_documents, load_corpus
    from ..data.tokenizer import BPETokenizer, ByteTokenizer, token_byte_lengths
    from .evaluate import unigram_counts

    corpus = load_corpus(cfg.data, val_fraction=cfg.val_fraction, max_files=cfg.max_files, text_field=cfg.text_field)
    if cfg.tokenizer == "bytes":
        tokenizer = ByteTokenizer()
    else:
        tokenizer = BPETokenizer.train([corpus.train_text], vocab_size=cfg.bpe_vocab_size)
        if out is not None:
            tokenizer.save(out)
    train_tokens, train_starts = encode_documents(tokenizer, corpus.train_docs)
    val_tokens, _ = encode_documents(tokenizer, corpus.val_docs)
    if val_tokens.numel() < 16 * cfg.seq_len + 1:
        raise ValueError(f"the validation text has {val_tokens.numel()} tokens, fewer than 16 x seq_len + 1 = "
                         f"{16 * cfg.seq_len + 1} (the longest extrapolation window): use more data or a shorter "
                         f"--seq-len")
    return SharedData(tokenizer=tokenizer, train_tokens=train_tokens, val_tokens=val_tokens,
                      train_doc_starts=train_starts, counts=unigram_counts(train_tokens, tokenizer.vocab_size),
                      byte_lengths=token_byte_lengths(tokenizer), description=corpus.description,
                      fingerprint=hashlib.sha256(train_tokens.to(torch.int32).numpy().tobytes()).hexdigest()[:16])


# -- one model -----------------------------------------------------------------------------------------------------


class CompareTrainer(LMTrainer):
    """`LMTrainer` with the comparison's data handed in, the budget schedule, validation in windows of the training
    context (the same for every model), validation at fixed fractions of the budget for the curves, a hash of every
    batch, and no checkpoints (a comparison is run whole)."""

    def __init__(self, run: RunConfig, run_dir: Path, data: SharedData, *, eval_points: int, pack_documents: bool,
                 schedule: str, eval_windows: bool, progress: bool, print_fn: Callable[[str], None]) -> None:
        super().__init__(run, run_dir, D.DistInfo(device=D.pick_device(run.train.device)), resume=False,
                         extend=False, progress=progress, print_fn=print_fn)
        self.data, self.eval_points, self.pack = data, eval_points, pack_documents
        self.schedule_kind, self.eval_windows = schedule, eval_windows
        self.curve: list[dict[str, float]] = []
        self.hasher = hashlib.sha256()
        self.hashes: dict[str, str] = {}

    def _load_data(self) -> None:
        d = self.data
        self.corpus_description, self.tokenizer = d.description, d.tokenizer
        self.train_tokens, self.val_tokens = d.train_tokens, d.val_tokens
        self.counts, self.byte_lengths, self.fingerprint = d.counts, d.byte_lengths, d.fingerprint

    def _build_optimizer(self) -> None:
        if self.schedule_kind == "steps":
            return super()._build_optimizer()
        self.optimizer = build_optimizer(self.raw, self.cfg)
        self.scheduler = BudgetSchedule(self.optimizer, self.cfg, lambda: self.train_seconds)

    def setup(self) -> None:
        super().setup()
        if self.pack:
            from ..data.batches import WindowSampler

            cfg = self.cfg
            self.sampler = WindowSampler(self.train_tokens, cfg.batch_size, cfg.seq_len, cfg.seed, cfg.grad_accum,
                                         doc_starts=self.data.train_doc_starts)
        budget = self.cfg.time_budget
        self.next_eval = budget / self.eval_points if (budget and self.eval_points) else math.inf

    def should_stop(self, step: int) -> str | None:
        budget = self.cfg.time_budget  # training time only: the evaluations for the curves do not count
        if budget is not None and step > self.start_step and self.train_seconds + self.step_time > budget:
            return "time_budget"
        return None

    def train_one_step(self, step: int):
        for j in range(self.cfg.grad_accum):
            self.hasher.update(self.sampler.micro_batch(step, j).to(torch.int32).numpy().tobytes())
        if (step + 1) & step == 0:  # after 1, 2, 4, 8, ... steps
            self.hashes[str(step + 1)] = self.hasher.hexdigest()[:16]
        return super().train_one_step(step)

    def after_step(self, step: int, stats) -> None:
        super().after_step(step, stats)
        if self.train_seconds >= self.next_eval:
            res = self.validate(self.cfg.eval_tokens)
            self.curve.append({"step": step, "tokens": self.tokens_seen, "seconds": round(self.train_seconds, 3),
                               "val_bpb": res.bpb})
            self.next_eval += self.cfg.time_budget / self.eval_points

    def validate(self, max_tokens: int) -> EvalResult:
        cfg = self.cfg
        return evaluate(self.raw, self.val_tokens, seq_len=cfg.seq_len, max_tokens=max_tokens,
                        byte_lengths=self.byte_lengths, counts=self.counts, batch_size=max(1, cfg.batch_size // 2),
                        device=self.info.device, dtype=cfg.dtype, carry_state=False if self.eval_windows else None)

    def checkpoint(self) -> None:
        self.last_saved = self.step


def _rss_mb(key: str) -> float | None:
    """VmRSS / VmHWM of this process in MB (Linux), else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc's malloc_trim), so that the RSS before the
    next model is not the previous model's high-water mark."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: clear_refs 5), so the next peak is this model's."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class ModelResult:
    """One row of the comparison."""

    name: str
    label: str
    model: dict[str, Any]
    parameters: int
    steps: int
    tokens: int
    train_seconds: float
    tokens_per_s: float
    val_bpb: float
    val_loss: float
    stopped_by: str
    batch_sha256: dict[str, str]
    peak_rss_mb: float | None
    peak_over_start_mb: float | None
    curve: list[dict[str, float]] = field(default_factory=list)
    carried_bpb: float | None = None
    extrapolation: dict[str, float] = field(default_factory=dict)   # context -> bits per byte (windows)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def train_one(entry: Entry, model_cfg: dict[str, Any], train_cfg: TrainConfig, data: SharedData, out: Path, *,
              preset: str | None, eval_points: int, pack_documents: bool, schedule: str, extrapolation: Sequence[int],
              extrapolation_tokens: int, progress: bool, say: Callable[[str], None],
              eval_windows: bool = True) -> ModelResult:
    """Train and evaluate one model of a comparison in its own folder `out / name`. `eval_windows=False` scores the
    final validation as `xlstmkit train` does (the state carried, where the model has one)."""
    run_dir = out / entry.name.replace("[", "").replace("]", "").replace(":", "-")
    run = RunConfig(model=model_cfg, train=train_cfg, preset=preset)
    _release_memory()
    start_rss = _rss_mb("VmRSS")
    can_reset = _reset_peak_rss()
    torch.manual_seed(train_cfg.seed)
    trainer = CompareTrainer(run, run_dir, data, eval_points=eval_points, pack_documents=pack_documents,
                             schedule=schedule, eval_windows=eval_windows, progress=progress, print_fn=say)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer.setup()
    trainer.fit()
    result = trainer.finish()
    if result.final is None:  # Ctrl-C: stop the whole comparison (what finished is already written)
        raise KeyboardInterrupt
    peak = _rss_mb("VmHWM") if can_reset else None
    trainer.hashes["final"] = trainer.hasher.hexdigest()[:16]
    model = trainer.raw
    carried = None
    if not eval_windows and result.final.streams:
        carried = result.final.bpb
    elif accepts_state(model):
        carried = evaluate(model, data.val_tokens, seq_len=train_cfg.seq_len, max_tokens=train_cfg.final_eval_tokens,
                           byte_lengths=data.byte_lengths, counts=data.counts,
                           batch_size=max(1, train_cfg.batch_size // 2), device=trainer.info.device,
                           dtype=train_cfg.dtype, carry_state=True).bpb
    lengths = [train_cfg.seq_len * k for k in extrapolation if k > 1]
    extra = {str(train_cfg.seq_len): result.final.bpb}
    if lengths:
        rows = length_extrapolation(model, data.val_tokens, lengths, max_tokens=extrapolation_tokens,
                                    byte_lengths=data.byte_lengths, counts=data.counts, batch_size=4,
                                    device=trainer.info.device, dtype=train_cfg.dtype)
        extra.update({str(r.seq_len): r.bpb for r in rows})
    res = ModelResult(
        name=entry.name, label=entry.label, model=model_cfg, parameters=trainer.n_params, steps=result.step,
        tokens=result.tokens, train_seconds=round(result.train_seconds, 2),
        tokens_per_s=round(result.tokens / max(result.train_seconds, 1e-9), 1), val_bpb=result.final.bpb,
        val_loss=result.final.loss, stopped_by=result.stopped_by, batch_sha256=dict(trainer.hashes),
        peak_rss_mb=None if peak is None else round(peak, 1),
        peak_over_start_mb=None if (peak is None or start_rss is None) else round(peak - start_rss, 1),
        curve=trainer.curve + [{"step": result.step, "tokens": result.tokens,
                                "seconds": round(result.train_seconds, 3), "val_bpb": result.final.bpb}],
        carried_bpb=carried, extrapolation=extra)
    del trainer, model
    _release_memory()
    return res


# -- a whole comparison --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareConfig:
    """What `xlstmkit compare` runs (its flags)."""

    models: tuple[str, ...] = COMPARE_MODELS
    ladder: bool = False
    budget: float | None = 600.0
    size: str | None = None                  # a preset of `xlstmkit train` (None: its default)
    data: str | None = None
    max_files: int | None = None
    max_steps: int | None = None             # a step limit (tests, smoke runs); the budget still applies
    lr: float | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    threads: int | None = None
    dtype: str | None = None
    device: str | None = None
    seed: int = 0
    eval_points: int = 10
    eval_tokens: int | None = None
    final_eval_tokens: int | None = None
    extrapolation: tuple[int, ...] = (4, 16)
    extrapolation_tokens: int = 65536
    pack_documents: bool = False
    schedule: str = "budget"                 # budget (cosine over the time budget) | steps (over max_steps)
    sets: tuple[str, ...] = ()               # --set KEY=VALUE for the reference size or the training fields

    def __post_init__(self) -> None:
        object.__setattr__(self, "budget", parse_duration(self.budget))
        names = tuple(canonical_name(m) for m in (self.models or ()))
        if not names and not self.ladder:
            raise ValueError("give at least one model (--models), or --ladder")
        if len(set(names)) != len(names):
            raise ValueError(f"a model is named twice in {list(self.models)}")
        object.__setattr__(self, "models", names)
        if self.budget is None and self.max_steps is None:
            raise ValueError("give a --budget (e.g. 10m) or --max-steps: a comparison needs a limit")
        if self.eval_points < 0:
            raise ValueError(f"eval_points must be >= 0, got {self.eval_points}")
        if any((not isinstance(k, int)) or k < 1 for k in self.extrapolation):
            raise ValueError(f"extrapolation factors must be positive integers, got {self.extrapolation}")
        if self.schedule not in ("budget", "steps"):
            raise ValueError(f"schedule must be budget or steps, got {self.schedule!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in LADDER) if self.ladder else self.models


def comparison_run_config(cc: CompareConfig) -> RunConfig:
    """The size preset with the comparison's overrides; a long step horizon when only the budget limits."""
    overrides = {"data": cc.data, "max_files": cc.max_files, "lr": cc.lr, "seq_len": cc.seq_len,
                 "batch_size": cc.batch_size, "threads": cc.threads, "dtype": cc.dtype, "device": cc.device,
                 "seed": cc.seed, "eval_tokens": cc.eval_tokens, "final_eval_tokens": cc.final_eval_tokens}
    run = build_run_config(cc.size, None, list(cc.sets), overrides)
    train = run.train.to_dict()
    train.update(time_budget=cc.budget, max_steps=cc.max_steps or 10_000_000, eval_every=0, checkpoint_every=0,
                 sample_tokens=0, lr_decay_steps=None, max_tokens=None, init_from=None,
                 log_every=train.get("log_every") or (50 if cc.max_steps is None else max(1, cc.max_steps // 10)))
    return RunConfig(model=run.model, train=TrainConfig.from_dict(train), preset=run.preset)


def run_comparison(cc: CompareConfig, out: str | Path, *, progress: bool = True,
                   say: Callable[[str], None] = print) -> list[ModelResult]:
    """Every model of `cc` (or the ladder's rungs) on one data set, one budget, one thread count; writes the tables
    and plots into `out` (see the module docstring)."""
    from .. import runs

    out = runs.prepare_dir(out, "--out")
    lock = runs.RunLock(out, runs.command_line()).acquire()
    try:
        return _run(cc, out, progress, say)
    finally:
        lock.release()


def _run(cc: CompareConfig, out: Path, progress: bool, say: Callable[[str], None]) -> list[ModelResult]:
    run = comparison_run_config(cc)
    cfg = run.train
    names = [n for n in cc.names if n != "official" or official_available()]
    skipped = [n for n in cc.names if n not in names]
    previous = D.set_threads(cfg.threads)
    try:
        data = load_shared_data(cfg, out)
        context = cfg.seq_len * max((1, *cc.extrapolation))
        models = matched_models(names, run.model, data.tokenizer.vocab_size, context)
        say(f"xlstmkit compare: {len(models)} models at {models[0][2]:,} parameters (+-{PARAM_TOLERANCE:.0%}), "
            f"{data.description}; {data.train_tokens.numel():,} training / {data.val_tokens.numel():,} validation "
            f"tokens; batch {cfg.batch_size} x {cfg.seq_len}, lr {cfg.lr:g}, {cfg.dtype}, "
            f"{torch.get_num_threads()} threads; budget "
            f"{'none' if cfg.time_budget is None else f'{cfg.time_budget:.0f} s'} of training per model"
            + (f"; skipped (not installed): {', '.join(skipped)}" if skipped else ""))
        meta = {"command": " ".join(["xlstmkit", *sys.argv[1:]]), "config": dataclasses.asdict(cc),
                "train": cfg.to_dict(), "reference": run.model, "threads": torch.get_num_threads(),
                "torch": torch.__version__, "corpus": data.description, "skipped": skipped,
                "load_average_start": _loadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        results: list[ModelResult] = []
        for entry, model_cfg, n in models:
            say(f"\n== {entry.label}: {n:,} parameters ==")
            res = train_one(entry, model_cfg, cfg, data, out, preset=run.preset, eval_points=cc.eval_points,
                            pack_documents=cc.pack_documents, schedule=cc.schedule, extrapolation=cc.extrapolation,
                            extrapolation_tokens=cc.extrapolation_tokens, progress=progress, say=say)
            results.append(res)
            write_outputs(results, meta, out, cc.ladder)
        meta["load_average_end"] = _loadavg()
        write_outputs(results, meta, out, cc.ladder)
        say("\n" + results_table(results))
        if cc.ladder:
            say("\n" + ladder_table(results))
        say(f"\nwrote {out / 'results.md'}, results.json, curves.png, extrapolation.png")
        return results
    finally:
        torch.set_num_threads(previous)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# -- tables and plots ----------------------------------------------------------------------------------------------


def results_table(results: Sequence[ModelResult]) -> str:
    """The comparison as a markdown table."""
    contexts = sorted({int(c) for r in results for c in r.extrapolation}, key=int)
    head = ["model", "parameters", "steps", "tokens", "tokens/s", "val bits/byte", "state carried"]
    base = contexts[0] if contexts else 1
    head += [f"at {c} ({c // base}x)" for c in contexts[1:]] + ["peak RSS, MB (+ over start)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r.label, f"{r.parameters:,}", f"{r.steps:,}", f"{r.tokens:,}", f"{r.tokens_per_s:,.0f}",
                 f"{r.val_bpb:.3f}", "" if r.carried_bpb is None else f"{r.carried_bpb:.3f}"]
        cells += [_fmt(r.extrapolation.get(str(c))) for c in contexts[1:]]
        cells.append("" if r.peak_rss_mb is None else f"{r.peak_rss_mb:,.0f} (+{r.peak_over_start_mb:,.0f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def ladder_table(results: Sequence[ModelResult]) -> str:
    """The ladder's rungs: this run's bits per byte beside the paper's perplexity, and whether each rung improves on
    the one above it here as it does in the paper."""
    by = {r.name: r for r in results}
    lines = ["| rung | modification | paper ppl (Table 2) | paper: better than the rung above? | val bits/byte here "
             "| here: better than the rung above? |", "|---|---|---|---|---|---|"]
    prev_paper = prev_here = None
    for i, (name, what, ppl) in enumerate(LADDER):
        r = by.get(name)
        here = None if r is None else r.val_bpb
        paper_better = "" if prev_paper is None or ppl is None else ("yes" if ppl < prev_paper else "no")
        here_better = ""
        if here is not None and prev_here is not None:
            here_better = f"{'yes' if here < prev_here else 'no'} ({here - prev_here:+.3f})"
        lines.append(f"| {i} | {what} | {'' if ppl is None else f'{ppl:g}'} | {paper_better} | {_fmt(here)} "
                     f"| {here_better} |")
        if name != "xlstm[1:0]":  # the last line compares with xLSTM[7:1], the rung above it
            prev_paper, prev_here = ppl, here
    return "\n".join(lines)


def write_outputs(results: Sequence[ModelResult], meta: dict[str, Any], out: Path, ladder: bool) -> None:
    """results.json, results.md, curves.png and extrapolation.png/.csv (rewritten after every model)."""
    payload = {**meta, "results": [r.to_dict() for r in results]}
    atomic_write_bytes(out / "results.json", (json.dumps(payload, indent=1) + "\n").encode("utf-8"))
    md = [f"Command: `{meta.get('command', '')}`", "",
          f"{meta.get('corpus', '')}; {meta.get('threads')} threads; torch {meta.get('torch')}; load average at the "
          f"start {meta.get('load_average_start')}, at the end {meta.get('load_average_end')}", "",
          results_table(results)]
    if ladder:
        md += ["", ladder_table(results)]
    atomic_write_bytes(out / "results.md", ("\n".join(md) + "\n").encode("utf-8"))
    rows = ["model,context,bits_per_byte"] + [f"{r.name},{c},{v:.6f}" for r in results
                                              for c, v in sorted(r.extrapolation.items(), key=lambda kv: int(kv[0]))]
    atomic_write_bytes(out / "extrapolation.csv", ("\n".join(rows) + "\n").encode("utf-8"))
    plot_curves(results, out / "curves.png")
    plot_extrapolation(results, out / "extrapolation.png")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_curves(results: Sequence[ModelResult], path: Path) -> bool:
    """Validation bits per byte against training time and against training tokens, one line per model."""
    plt = _pyplot()
    if plt is None:
        return False
    from .metrics import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in results:
        xs = [p["seconds"] for p in r.curve]
        axes[0].plot(xs, [p["val_bpb"] for p in r.curve], marker=".", label=r.label)
        axes[1].plot([p["tokens"] for p in r.curve], [p["val_bpb"] for p in r.curve], marker=".", label=r.label)
    axes[0].set_xlabel("training time (s)")
    axes[1].set_xlabel("training tokens")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("validation bits per byte")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True


def plot_extrapolation(results: Sequence[ModelResult], path: Path) -> bool:
    """Validation bits per byte against the context length (windows), one line per model."""
    plt = _pyplot()
    if plt is None:
        return False
    from .metrics import save_figure

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for r in results:
        pts = sorted((int(c), v) for c, v in r.extrapolation.items())
        ax.plot([c for c, _ in pts], [v for _, v in pts], marker="o", label=r.label)
    if results and results[0].extrapolation:
        ax.axvline(min(int(c) for c in results[0].extrapolation), color="grey", ls=":", label="training context")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("validation bits per byte")
    ax.set_title("Length extrapolation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True

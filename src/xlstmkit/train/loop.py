"""`xlstmkit train`: train a language model, in three steps (`LMTrainer.setup`, `fit`, `finish`).

setup   lock the run folder; data and tokenizer; model (fresh, or `init_from` a run or Hugging Face folder);
        AdamW with decay groups and the warm-up + cosine schedule (`optim.py`); on resume, the newest good
        checkpoint (model, optimiser, schedule, random states); config.json; the metrics log
fit     optimiser steps (`core.train_step`: accumulation, clipping, bf16 autocast), each logged to metrics.csv, with
        periodic validation and checkpoints, until max_steps, the time budget or Ctrl-C
finish  final checkpoint and weights, evaluation against the unigram baseline, loss plot, a sample, results.json

Resume guarantees (also in docs/training.md):
- bitwise: the batches of step s depend only on (seed, s) and every random state (torch CPU/CUDA, Python) is in the
  checkpoint, so a run stopped at any step (kill, time budget, Ctrl-C) and resumed with the same config ends with
  exactly the parameters of an uninterrupted run, dropout included (same machine, device, thread count and torch).
- the schedule's horizon (`decay_steps`: lr_decay_steps, else max_steps lowered by max_tokens) may not change on
  resume unless asked (`extend=True`, `--extend`): then the warm-up stays and the cosine decays over the new horizon
  from the resumed step on (the rate jumps to the new schedule's value there; not bitwise equal to any single run).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import runs
from ..data.batches import WindowSampler
from ..data.text import load_corpus
from ..data.tokenizer import BPETokenizer, ByteTokenizer, Tokenizer, encode_to_tensor, \
    load_hf_tokenizer, load_tokenizer, sample_text, save_hf_tokenizer, token_byte_lengths, tokenizer_info
from . import distributed as D
from .build import build_model, build_model_config, count_parameters
from .checkpoint import CheckpointError, atomic_write_bytes, list_checkpoints, load_latest_checkpoint, \
    save_checkpoint, save_weights, set_rng_state
from .config import RunConfig, check_resume
from .core import GracefulStop, Progress, clock, fit, train_step, unwrap
from .evaluate import EvalResult, evaluate, format_result, unigram_counts
from .metrics import MetricsLog, check_logger, plot_loss_curve
from .optim import build_optimizer, build_scheduler, sync_lr

__all__ = ["train", "TrainResult", "LMTrainer", "sample_text"]


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    run_dir: Path
    step: int
    tokens: int
    train_seconds: float
    final: EvalResult | None = None
    sample: str = ""
    stopped_by: str = "max_steps"      # max_steps | time_budget | interrupted
    resumed_from: int | None = None
    history: list[dict] = field(default_factory=list)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_sd: dict, optim_sd: dict) -> None:
    """Load full (unsharded) model and optimiser states, as read from a checkpoint by every rank, into a plain, DDP
    or FSDP-sharded model: each rank cuts its own shard out of the full tensors (no communication needed)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    def local(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if isinstance(like, DTensor):
            return distribute_tensor(full.to(like.dtype), like.device_mesh, like.placements, src_data_rank=None)
        return full.to(device=like.device, dtype=like.dtype)

    current = model.state_dict()
    model.load_state_dict({k: local(model_sd[k], v) for k, v in current.items()})
    name_of = {id(p): n for n, p in model.named_parameters()}
    state, groups, idx = {}, [], 0
    if len(optim_sd["param_groups"]) != len(optimizer.param_groups):
        raise CheckpointError("the checkpoint's optimiser has a different number of parameter groups")
    for saved, group in zip(optim_sd["param_groups"], optimizer.param_groups):
        ids = []
        for p in group["params"]:
            entry = optim_sd["state"].get(name_of[id(p)])
            if entry:
                state[idx] = {k: (local(v, p) if torch.is_tensor(v) and v.shape == p.shape else v)
                              for k, v in entry.items()}
            ids.append(idx)
            idx += 1
        groups.append({**{k: v for k, v in saved.items() if k != "params"}, "params": ids})
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _version() -> str:
    from .. import __version__

    return __version__


@dataclass
class _Source:
    """The weights a fine-tuning run starts from (`init_from`)."""

    model: dict[str, Any]            # the source's model dict (family + fields, vocab_size included)
    state: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    kind: str                        # "run" | "hf"
    weights: str


def load_init_source(path: str, warn: Callable[[str], None] | None = None) -> _Source:
    """The model dict, weights and tokenizer of a run folder or a Hugging Face xLSTM folder (for `init_from`)."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"--init-from {folder}: no such folder (give a run folder or a Hugging Face xLSTM "
                                f"folder)")
    if runs.is_hf_dir(folder):
        from ..interop.pretrained import family_of

        model = runs.load_hf_model(folder, dtype=torch.float32, mmap=False)
        model_dict = {"family": family_of(model), **model.config.to_dict()}
        return _Source(model=model_dict, state=model.state_dict(), tokenizer=load_hf_tokenizer(folder), kind="hf",
                       weights=str(folder))
    if not runs.is_run_dir(folder):
        raise ValueError(f"--init-from {folder}: neither a run folder of `xlstmkit train` nor a Hugging Face xLSTM "
                         f"folder (no usable config.json)")
    loaded = runs.load_model(folder, warn=warn, flag="--init-from")
    model_dict = {**loaded.run.model, "vocab_size": loaded.model.config.vocab_size}
    return _Source(model=model_dict, state=loaded.model.state_dict(), tokenizer=loaded.tokenizer, kind="run",
                   weights=loaded.source)


class LMTrainer:
    """One training run of a language model; see the module docstring for its three steps."""

    def __init__(self, run: RunConfig, run_dir: Path, info: D.DistInfo, *, resume: bool, extend: bool,
                 progress: bool, print_fn: Callable[[str], None]) -> None:
        self.run, self.cfg, self.run_dir, self.info = run, run.train, run_dir, info
        self.resume, self.extend, self.progress = resume, extend, progress
        self.say = print_fn if info.is_main else (lambda *_: None)
        self.echo = print_fn is print
        self.warn = _log if info.is_main else None
        self.history: list[dict] = []
        self.start_step = self.step = 0
        self.tokens_seen, self.train_seconds, self.resumed_from = 0, 0.0, None
        self.last_saved = -1
        self.source: _Source | None = None

    # -- set-up ----------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        self.t_setup = time.time()
        self._check_folder()
        self._load_data()
        self._build_model()
        self._build_optimizer()
        if self.resume:
            self._restore()
        self._write_run_files()
        cfg, info = self.cfg, self.info
        self.sampler = WindowSampler(self.train_tokens, cfg.batch_size, cfg.seq_len, cfg.seed, cfg.grad_accum,
                                     info.rank, info.world_size)
        self.metrics = MetricsLog(self.run_dir, info.is_main, self.resumed_from if self.resume else None, cfg.logger,
                                  run_config=self.run.to_dict())
        self.say(f"xlstmkit train: {self.n_params / 1e6:.2f}M parameters, {self.tokenizer.kind} tokenizer "
                 f"({self.tokenizer.vocab_size} tokens), {self.corpus_description}; {self.train_tokens.numel():,} "
                 f"training / {self.val_tokens.numel():,} validation tokens; {cfg.total_steps} steps x "
                 f"{cfg.tokens_per_step:,} tokens; {info.world_size} process(es) on {info.device}"
                 f"{f' ({torch.get_num_threads()} threads each)' if info.device.type == 'cpu' else ''}; "
                 f"run folder {self.run_dir}")
        if self.resumed_from is not None:
            self.say(f"resuming {self.run_dir} from {self.resumed_path.name} (step {self.start_step})")

    def _check_folder(self) -> None:
        """Resume: the config may change only where resuming allows it. New run: the folder must not hold one."""
        run_dir = self.run_dir
        has_run = bool(list_checkpoints(run_dir)) or (run_dir / runs.WEIGHTS_FILE).exists()
        if self.resume:
            saved, self.saved_extra = RunConfig.load(run_dir / runs.CONFIG_FILE)
            check_resume(saved, self.run, self.extend)
            self.model_cfg = dict(saved.model)   # the architecture the checkpoints were written with
        else:
            if (run_dir / runs.CONFIG_FILE).exists() and has_run:
                raise ValueError(f"{run_dir} already holds a run: pass --resume to continue it, or another --out")
            self.saved_extra = {}
            self.model_cfg = dict(self.run.model)
        check_logger(self.cfg.logger)
        if self.cfg.init_from and not self.resume:
            self.source = load_init_source(self.cfg.init_from, self.warn)

    def _load_data(self) -> None:
        cfg = self.cfg
        corpus = load_corpus(cfg.data, val_fraction=cfg.val_fraction, max_files=cfg.max_files,
                             text_field=cfg.text_field)
        self.corpus_description = corpus.description
        train_text, val_text = corpus.train_text, corpus.val_text
        self.tokenizer = self._prepare_tokenizer(train_text)
        self.train_tokens = encode_to_tensor(self.tokenizer, train_text)   # (N_train,)
        self.val_tokens = encode_to_tensor(self.tokenizer, val_text)       # (N_val,)
        if self.val_tokens.numel() < cfg.seq_len + 1:  # fail now, not after training
            raise ValueError(f"the validation text has {self.val_tokens.numel()} tokens, fewer than seq_len + 1 = "
                             f"{cfg.seq_len + 1}: use more data, a larger val_fraction (--set val_fraction=0.2) or a "
                             f"shorter --seq-len")
        self.counts = unigram_counts(self.train_tokens, self.tokenizer.vocab_size)
        self.byte_lengths = token_byte_lengths(self.tokenizer)
        self.fingerprint = hashlib.sha256(self.train_tokens.to(torch.int32).numpy().tobytes()).hexdigest()[:16]

    def _prepare_tokenizer(self, train_text: str) -> Tokenizer:
        """The run's tokenizer: the saved one (resume), the source's (init_from), bytes, or a BPE trained on rank 0
        and shared through the run folder."""
        cfg, info, run_dir = self.cfg, self.info, self.run_dir
        if self.resume:
            kind = (self.saved_extra.get("tokenizer") or {}).get("kind", cfg.tokenizer)
            return load_tokenizer(kind, run_dir)
        if self.source is not None:
            if info.is_main:
                self.source.tokenizer.save(run_dir)
            D.barrier(info)
            return self.source.tokenizer
        if cfg.tokenizer == "bytes":
            return ByteTokenizer()
        if info.is_main:
            _log(f"training a byte-level BPE tokenizer ({cfg.bpe_vocab_size} tokens) on the training text")
            BPETokenizer.train([train_text], vocab_size=cfg.bpe_vocab_size).save(run_dir)
        D.barrier(info)
        return load_tokenizer("bpe", run_dir)

    def _build_model(self) -> None:
        cfg, info = self.cfg, self.info
        if self.source is not None:
            self.model_cfg = {**self.source.model, **self.model_cfg}
        self.model_cfg.setdefault("vocab_size", self.tokenizer.vocab_size)
        build_model_config(self.model_cfg)  # validate before anything is allocated
        if self.tokenizer.vocab_size > self.model_cfg["vocab_size"]:
            raise ValueError(f"the tokenizer has {self.tokenizer.vocab_size} tokens but the model only "
                             f"{self.model_cfg['vocab_size']}")
        torch.manual_seed(cfg.seed)
        raw = build_model(self.model_cfg)
        if self.source is not None:
            changed = sorted(k for k in self.run.model if self.source.model.get(k) != self.model_cfg.get(k))
            try:
                runs.check_state_fits(raw, self.source.state, self.source.weights, "the fine-tuning config")
            except CheckpointError:
                raise ValueError(f"--init-from {cfg.init_from}: the model fields {changed} change the shapes of its "
                                 f"weights; with --init-from only fields that keep them (e.g. dropout) may be "
                                 f"set") from None
            raw.load_state_dict(self.source.state)
            self.source.state = {}
        raw = raw.to(info.device)
        self.n_params = count_parameters(raw)
        self.model = D.wrap_model(raw, info, fsdp=cfg.fsdp)
        self.raw = unwrap(self.model)
        self.compiled = torch.compile(self.model) if cfg.compile else self.model

    def _build_optimizer(self) -> None:
        self.optimizer = build_optimizer(self.raw, self.cfg)
        self.scheduler = build_scheduler(self.optimizer, self.cfg)

    def _restore(self) -> None:
        """The newest intact checkpoint whose weights fit the model: weights, optimiser, schedule, random states."""
        run_dir, raw = self.run_dir, self.raw
        config_path = str(run_dir / runs.CONFIG_FILE)
        params = {name: tuple(p.shape) for name, p in raw.named_parameters()}

        def fits(c) -> None:
            runs.check_state_fits(raw, c.model, str(c.path), config_path)
            for name, entry in c.optimizer.get("state", {}).items():
                moments = [v for v in entry.values() if torch.is_tensor(v) and v.dim() > 0]
                if name not in params or any(tuple(v.shape) != params[name] for v in moments):
                    raise CheckpointError(f"optimiser state in {c.path} does not fit the model of {config_path} "
                                          f"({name})")

        ckpt = load_latest_checkpoint(run_dir, warn=self.warn, check=fits)
        if ckpt is None:
            raise CheckpointError(f"nothing to resume: {run_dir} has no checkpoints (it stopped before its first one); "
                                  f"start it again without --resume")
        _load_full_state(raw, self.optimizer, ckpt.model, ckpt.optimizer)
        self.scheduler.load_state_dict(ckpt.state["scheduler"])
        sync_lr(self.optimizer, self.scheduler)   # the same rate, or the new horizon's with --extend
        set_rng_state(ckpt.rng, ckpt.state["rng"])
        if ckpt.state.get("data_fingerprint", self.fingerprint) != self.fingerprint:
            _log("warning: the training tokens differ from those the checkpoint was trained on (data or tokenizer "
                 "changed): the resumed run will not match an uninterrupted one")
        self.start_step = self.step = self.last_saved = ckpt.step
        self.tokens_seen = int(ckpt.state["tokens"])
        self.train_seconds = float(ckpt.state.get("train_seconds", 0.0))
        self.resumed_from, self.resumed_path = ckpt.step, ckpt.path

    def _write_run_files(self) -> None:
        if not self.info.is_main:
            return
        extra = {"tokenizer": tokenizer_info(self.tokenizer), "corpus": self.corpus_description,
                 "parameters": self.n_params, "world_size": self.info.world_size, "xlstmkit_version": _version()}
        if self.source is not None:
            extra["init_from"] = {"path": self.cfg.init_from, "kind": self.source.kind, "weights": self.source.weights}
        elif "init_from" in self.saved_extra:
            extra["init_from"] = self.saved_extra["init_from"]
        RunConfig(model=self.model_cfg, train=self.cfg, preset=self.run.preset).save(
            self.run_dir / runs.CONFIG_FILE, extra=extra)
        # the tokenizer as transformers' AutoTokenizer reads it (byte runs too), special tokens from the model config
        model_config = build_model_config(self.model_cfg)
        save_hf_tokenizer(self.tokenizer, self.run_dir, **{k: getattr(model_config, k, None) for k in (
            "bos_token_id", "eos_token_id", "pad_token_id")})
        save_weights(self.run_dir / runs.UNIGRAM_FILE, {"counts": self.counts.float()})

    # -- the loop --------------------------------------------------------------------------------------------------
    def fit(self) -> None:
        cfg, info = self.cfg, self.info
        self.total = cfg.total_steps
        self.bar = Progress(self.total, initial=self.start_step, desc="train", enabled=self.progress and info.is_main,
                            log_every=cfg.log_every)
        self.t_loop = time.time()
        self.resumed_seconds = self.train_seconds
        self.step_time = 0.0
        try:
            with GracefulStop(enabled=not info.distributed) as stop:
                self.step, self.stopped_by = fit(self.start_step, self.total, self.train_one_step,
                                                 on_step=self.after_step, should_stop=self.should_stop, stop=stop)
            if self.last_saved != self.step:
                self.checkpoint()
        finally:
            self.bar.close()
            self.metrics.close()

    def should_stop(self, step: int) -> str | None:
        budget = self.cfg.time_budget
        if budget is not None and step > self.start_step and time.time() - self.t_loop + self.step_time > budget:
            return "time_budget"
        return None

    def loss(self, _model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        logits = self.compiled(batch[:, :-1])  # (b, T, V)
        return F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())

    def train_one_step(self, step: int):
        cfg, info = self.cfg, self.info
        t0 = time.time()
        micro = (self.sampler.micro_batch(step, j).to(info.device, non_blocking=True) for j in range(cfg.grad_accum))
        stats = train_step(self.model, self.optimizer, self.scheduler, micro, self.loss, grad_clip=cfg.grad_clip,
                           device=info.device, dtype=cfg.dtype, params=self.raw.parameters(), n_micro=cfg.grad_accum)
        self.step_time = time.time() - t0
        return stats

    def after_step(self, step: int, stats) -> None:
        cfg, info = self.cfg, self.info
        self.step = step
        self.tokens_seen += cfg.tokens_per_step
        self.train_seconds += self.step_time
        loss_value = float(D.all_reduce_mean(stats.loss, info))
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"the training loss became {loss_value} at step {step}: lower --lr "
                                     f"(now {cfg.lr}) or use float32")
        row = {"step": step, "tokens": self.tokens_seen, "loss": round(loss_value, 6), "lr": stats.lr,
               "grad_norm": round(stats.grad_norm, 6),
               "tokens_per_s": round(cfg.tokens_per_step / max(self.step_time, 1e-9), 1),
               "elapsed_s": round(self.train_seconds, 3)}
        if cfg.eval_every and step % cfg.eval_every == 0 and step < self.total:
            res = self.validate(cfg.eval_tokens)
            row.update(val_loss=round(res.loss, 6), val_bpb=round(res.bpb, 6))
        self.history.append(row)
        self.metrics.write(row)
        done = step - self.start_step
        wall = time.time() - self.t_loop
        eta = wall / done * (self.total - step)
        if cfg.time_budget is not None:
            eta = min(eta, max(0.0, cfg.time_budget - wall))
        tok_s = cfg.tokens_per_step * done / max(self.train_seconds - self.resumed_seconds, 1e-9)
        post = {"loss": f"{loss_value:.3f}", "tok/s": f"{tok_s:.0f}", "ETA": clock(eta)}
        if "val_loss" in row:
            post["val"] = f"{row['val_loss']:.3f}"
        self.bar.update(step, **post)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            self.checkpoint()

    def validate(self, max_tokens: int) -> EvalResult:
        cfg = self.cfg
        return evaluate(self.raw, self.val_tokens, seq_len=cfg.seq_len, max_tokens=max_tokens,
                        byte_lengths=self.byte_lengths, counts=self.counts, batch_size=max(1, cfg.batch_size // 2),
                        device=self.info.device, dtype=cfg.dtype, info=self.info)

    def checkpoint(self) -> None:
        """Checkpoint the current step; metrics.csv is made durable first, so no row before it can be lost."""
        step = self.step
        model_sd = _full_model_state(self.raw)          # collective under FSDP: every rank calls
        optim_sd = _full_optimizer_state(self.raw, self.optimizer)
        if self.info.is_main:
            self.metrics.sync()
            save_checkpoint(self.run_dir, step, model_sd, optim_sd,
                            {"tokens": self.tokens_seen, "scheduler": self.scheduler.state_dict(),
                             "train_seconds": self.train_seconds, "world_size": self.info.world_size,
                             "data_fingerprint": self.fingerprint},
                            keep_last=self.cfg.keep_last)
        D.barrier(self.info)
        self.last_saved = step

    # -- the end ---------------------------------------------------------------------------------------------------
    def finish(self) -> TrainResult:
        cfg, info, run_dir, step = self.cfg, self.info, self.run_dir, self.step
        result = TrainResult(run_dir=run_dir, step=step, tokens=self.tokens_seen, train_seconds=self.train_seconds,
                             stopped_by=self.stopped_by, resumed_from=self.resumed_from, history=self.history)
        if self.stopped_by == "interrupted":   # checkpointed; skip the final evaluation: the user wants to stop
            return result
        final_state = _full_model_state(self.raw)
        if info.is_main:
            save_weights(run_dir / runs.WEIGHTS_FILE, final_state, metadata={"step": str(step)})
        final = result.final = self.validate(cfg.final_eval_tokens)
        if info.is_main:
            plot_loss_curve(run_dir / runs.METRICS_FILE, run_dir / runs.LOSS_PLOT,
                            title=f"{run_dir.name}: {self.n_params / 1e6:.2f}M parameters, {self.tokenizer.kind} "
                                  f"tokens", final=(step, final.loss))
            self.say(f"stopped at step {step} ({self.stopped_by}); {self.tokens_seen:,} tokens in "
                     f"{self.train_seconds:.0f}s of training, {time.time() - self.t_setup:.0f}s in all")
            self.say(format_result(final))
            if cfg.sample_tokens:
                plain = build_model(self.model_cfg)
                plain.load_state_dict(final_state)
                plain.eval()
                self.say(f"sample ({cfg.sample_tokens} tokens, temperature {cfg.sample_temperature}, top-k "
                         f"{cfg.sample_top_k}, prompt {cfg.sample_prompt!r}):")
                result.sample = sample_text(plain, self.tokenizer, cfg.sample_prompt, cfg.sample_tokens,
                                            temperature=cfg.sample_temperature, top_k=cfg.sample_top_k,
                                            seed=cfg.seed, echo=self.echo)
            results = {"step": step, "tokens": self.tokens_seen, "train_seconds": round(self.train_seconds, 2),
                       "stopped_by": self.stopped_by, "validation": final.to_dict(), "sample": result.sample}
            atomic_write_bytes(run_dir / runs.RESULTS_FILE, (json.dumps(results, indent=2) + "\n").encode("utf-8"))
            self.say(f"run folder: {run_dir}")
        D.barrier(info)  # no rank leaves (and tears the process group down) while rank 0 still works
        return result


def _lock(run_dir: Path, info: D.DistInfo) -> runs.RunLock | None:
    """Rank 0 creates and locks the run folder; every rank learns whether that worked (so none waits forever)."""
    lock, error = None, None
    if info.is_main:
        try:
            runs.prepare_dir(run_dir, "--out")
            lock = runs.RunLock(run_dir, runs.command_line()).acquire()
        except (ValueError, runs.RunLockedError, OSError) as exc:
            error = exc
    failed = D.broadcast_object(None if error is None else str(error), info)
    if error is not None:
        raise error
    if failed is not None:
        raise RuntimeError(failed)
    return lock


def train(run: RunConfig, run_dir: str | Path, *, resume: bool = False, extend: bool = False, progress: bool = True,
          print_fn: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume) the run in `run_dir`, holding its lock throughout; returns the final step, evaluation and
    sample (`stopped_by == "interrupted"` after a Ctrl-C: checkpointed, not evaluated)."""
    cfg = run.train
    run_dir = Path(run_dir)
    info = D.init_distributed(cfg.device)
    previous_threads = D.set_threads(cfg.threads, info.world_size)
    lock = None
    try:
        lock = _lock(run_dir, info)
        trainer = LMTrainer(run, run_dir, info, resume=resume, extend=extend, progress=progress, print_fn=print_fn)
        trainer.setup()
        trainer.fit()
        return trainer.finish()
    finally:
        if lock is not None:
            lock.release()
        torch.set_num_threads(previous_threads)
        D.shutdown(info)


def resume_command(run_dir: Path) -> str:
    """The exact command that continues this run (under torchrun when it runs in several processes)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    head = f"torchrun --nproc_per_node={world} -m xlstmkit" if world > 1 else "xlstmkit"
    return f"{head} train --resume {Path(run_dir).resolve()}"

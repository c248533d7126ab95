"""The training loop of `xlstmkit train`: data, tokenizer, model, AdamW with decay groups and warm-up + cosine
schedule, gradient accumulation and clipping, bf16 autocast, torch.compile, DDP/FSDP, a progress bar, metrics.csv
(and TensorBoard), checkpoints every N steps, resume, a time budget, and a final evaluation with a sample.

The run is deterministic given its config: the batches of step s depend only on (seed, s) and every random state is
checkpointed, so stopping at step 10 and resuming to 20 gives the parameters of 20 steps straight.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batches import WindowSampler
from ..data.text import load_corpus
from ..data.tokenizer import TOKENIZER_FILE, BPETokenizer, ByteTokenizer, Tokenizer, encode_to_tensor, \
    load_tokenizer, stream_decode, token_byte_lengths, tokenizer_info
from . import distributed as D
from .build import build_model, count_parameters
from .checkpoint import CheckpointError, atomic_write_bytes, load_latest_checkpoint, save_checkpoint, save_weights, \
    set_rng_state
from .config import RunConfig
from .evaluate import EvalResult, autocast, evaluate, format_result, unigram_counts
from .optim import build_optimizer, build_scheduler
from .run import CONFIG_FILE, LOSS_PLOT, METRICS_FILE, RESULTS_FILE, UNIGRAM_FILE, WEIGHTS_FILE

METRIC_COLUMNS = ["step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "val_loss", "val_bpb"]
# fields that may change when a run is resumed (they set how long it runs and how it logs, not what it computes)
RESUMABLE_OVERRIDES = {"max_steps", "max_tokens", "time_budget", "checkpoint_every", "keep_last", "eval_every",
                       "eval_tokens", "final_eval_tokens", "sample_tokens", "sample_prompt", "sample_temperature",
                       "sample_top_k", "compile", "device", "threads"}


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    run_dir: Path
    step: int
    tokens: int
    train_seconds: float
    final: EvalResult | None = None
    sample: str = ""
    stopped_by: str = "max_steps"
    resumed_from: int | None = None
    history: list[dict] = field(default_factory=list)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _unwrap(model: nn.Module) -> nn.Module:
    """The underlying module of a DDP or torch.compile wrapper."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


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
    missing = sorted(set(current) - set(model_sd))
    if missing:
        raise CheckpointError(f"the checkpoint does not fit the model: it lacks {missing[:3]}")
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


class MetricsLog:
    """metrics.csv (one row per step; validation columns filled at evaluation steps) and TensorBoard events."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None) -> None:
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self.tb = None
        if not enabled:
            return
        rows = []
        if resume_step is not None and self.path.is_file():  # drop rows logged after the checkpoint we resume from
            with open(self.path, newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.DictReader(fh) if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
        with open(self.path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
            w.writeheader()
            w.writerows(rows)
        self._fh = open(self.path, "a", newline="", encoding="utf-8")
        self._w = csv.DictWriter(self._fh, fieldnames=METRIC_COLUMNS)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(run_dir))
        except Exception:  # tensorboard not installed: CSV only
            self.tb = None

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self._w.writerow({k: row.get(k, "") for k in METRIC_COLUMNS})
        self._fh.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.enabled:
            self._fh.close()
            if self.tb is not None:
                self.tb.close()


def plot_loss_curve(metrics_csv: Path, out_png: Path, title: str = "",
                    final: tuple[int, float] | None = None) -> bool:
    """Training loss (and validation loss where measured, `final` = (step, loss) of the final evaluation) against
    step, as a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps, loss, vsteps, vloss = [], [], [], []
    with open(metrics_csv, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if r.get("loss"):
                steps.append(int(r["step"]))
                loss.append(float(r["loss"]))
            if r.get("val_loss"):
                vsteps.append(int(r["step"]))
                vloss.append(float(r["val_loss"]))
    if not steps:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, lw=0.8, alpha=0.5, label="train loss")
    if len(loss) >= 10:
        k = max(2, len(loss) // 30)
        smooth = [sum(loss[max(0, i - k + 1):i + 1]) / len(loss[max(0, i - k + 1):i + 1]) for i in range(len(loss))]
        ax.plot(steps, smooth, lw=1.5, label=f"train loss (mean of {k})")
    if vloss or final:
        vsteps, vloss = vsteps + ([final[0]] if final else []), vloss + ([final[1]] if final else [])
        ax.plot(vsteps, vloss, marker="o", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title or "xlstmkit training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return True


def _prepare_tokenizer(run: RunConfig, run_dir: Path, train_text: str, info: D.DistInfo, resume: bool) -> Tokenizer:
    """Bytes, or BPE: loaded from the run folder when it is there (resume), else trained on rank 0 and shared."""
    if run.train.tokenizer == "bytes":
        return ByteTokenizer()
    if resume or (run_dir / TOKENIZER_FILE).is_file():
        return load_tokenizer("bpe", run_dir)
    if info.is_main:
        _log(f"training a byte-level BPE tokenizer ({run.train.bpe_vocab_size} tokens) on the training text")
        BPETokenizer.train([train_text], vocab_size=run.train.bpe_vocab_size).save(run_dir)
    D.barrier(info)
    return load_tokenizer("bpe", run_dir)


def train(run: RunConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
          print_fn: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume) the run in `run_dir`; returns the final step, evaluation and sample."""
    cfg = run.train
    run_dir = Path(run_dir)
    info = D.init_distributed(cfg.device)
    previous_threads = D.set_threads(cfg.threads, info.world_size)
    try:
        return _train(run, run_dir, cfg, info, resume, progress, print_fn)
    finally:
        torch.set_num_threads(previous_threads)
        D.shutdown(info)


def _train(run, run_dir, cfg, info, resume, progress, print_fn) -> TrainResult:
    say = print_fn if info.is_main else (lambda *_: None)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    D.barrier(info)
    t_setup = time.time()

    # -- data and tokenizer ----------------------------------------------------------------------------------------
    corpus = load_corpus(cfg.data, val_fraction=cfg.val_fraction, max_files=cfg.max_files, text_field=cfg.text_field)
    train_text, val_text = corpus.train_text, corpus.val_text
    tokenizer = _prepare_tokenizer(run, run_dir, train_text, info, resume)
    train_tokens = encode_to_tensor(tokenizer, train_text)   # (N_train,)
    val_tokens = encode_to_tensor(tokenizer, val_text)       # (N_val,)
    del train_text, val_text
    if val_tokens.numel() < cfg.seq_len + 1:  # fail now, not after training
        raise ValueError(f"the validation text has {val_tokens.numel()} tokens, fewer than seq_len + 1 = "
                         f"{cfg.seq_len + 1}: use more data, a larger val_fraction (--set val_fraction=0.2) or a "
                         f"shorter --seq-len")
    counts = unigram_counts(train_tokens, tokenizer.vocab_size)
    byte_lengths = token_byte_lengths(tokenizer)
    fingerprint = hashlib.sha256(train_tokens.to(torch.int32).numpy().tobytes()).hexdigest()[:16]

    # -- model, optimiser, schedule --------------------------------------------------------------------------------
    model_cfg = {**run.model, "vocab_size": tokenizer.vocab_size}
    torch.manual_seed(cfg.seed)
    raw = build_model(model_cfg).to(info.device)
    n_params = count_parameters(raw)
    model = D.wrap_model(raw, info, fsdp=cfg.fsdp)
    raw = _unwrap(model)
    optimizer = build_optimizer(raw, cfg)
    scheduler = build_scheduler(optimizer, cfg)

    start_step, tokens_seen, train_seconds, resumed_from = 0, 0, 0.0, None
    if resume:
        ckpt = load_latest_checkpoint(run_dir, warn=_log if info.is_main else None)
        if ckpt is None:
            raise CheckpointError(f"nothing to resume: {run_dir} has no checkpoints (it stopped before its first one); "
                                  f"start it again without --resume")
        _load_full_state(raw, optimizer, ckpt.model, ckpt.optimizer)
        scheduler.load_state_dict(ckpt.state["scheduler"])
        set_rng_state(ckpt.rng, ckpt.state["rng"])
        if ckpt.state.get("data_fingerprint", fingerprint) != fingerprint:
            _log("warning: the training tokens differ from those the checkpoint was trained on (data or tokenizer "
                 "changed): the resumed run will not match an uninterrupted one")
        start_step, tokens_seen = ckpt.step, int(ckpt.state["tokens"])
        train_seconds, resumed_from = float(ckpt.state.get("train_seconds", 0.0)), ckpt.step
        say(f"resuming {run_dir} from {ckpt.path.name} (step {start_step})")

    if info.is_main:
        RunConfig(model=model_cfg, train=cfg, preset=run.preset).save(
            run_dir / CONFIG_FILE,
            extra={"tokenizer": tokenizer_info(tokenizer), "corpus": corpus.description,
                   "parameters": n_params, "world_size": info.world_size, "xlstmkit_version": _version()})
        save_weights(run_dir / UNIGRAM_FILE, {"counts": counts.float()})
    compiled = torch.compile(model) if cfg.compile else model
    sampler = WindowSampler(train_tokens, cfg.batch_size, cfg.seq_len, cfg.seed, cfg.grad_accum, info.rank,
                            info.world_size)
    total = cfg.total_steps
    say(f"xlstmkit train: {n_params / 1e6:.2f}M parameters, {tokenizer.kind} tokenizer ({tokenizer.vocab_size} "
        f"tokens), {corpus.description}; {train_tokens.numel():,} training / {val_tokens.numel():,} validation "
        f"tokens; {total} steps x {cfg.tokens_per_step:,} tokens; {info.world_size} process(es) on {info.device}"
        f"{f' ({torch.get_num_threads()} threads each)' if info.device.type == 'cpu' else ''}; "
        f"run folder {run_dir}")

    # -- the loop --------------------------------------------------------------------------------------------------
    metrics = MetricsLog(run_dir, info.is_main, resumed_from if resume else None)
    history: list[dict] = []
    last_saved = start_step if resume else -1

    def checkpoint(step: int) -> None:
        nonlocal last_saved
        model_sd = _full_model_state(raw)          # collective under FSDP: every rank calls
        optim_sd = _full_optimizer_state(raw, optimizer)
        if info.is_main:
            save_checkpoint(run_dir, step, model_sd, optim_sd,
                            {"tokens": tokens_seen, "scheduler": scheduler.state_dict(), "train_seconds": train_seconds,
                             "world_size": info.world_size, "data_fingerprint": fingerprint},
                            keep_last=cfg.keep_last)
        D.barrier(info)
        last_saved = step

    pbar = None
    if progress and info.is_main:
        from tqdm.auto import tqdm

        # no tqdm ETA in the bar: ours (below) also knows the time budget
        pbar = tqdm(total=total, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr,
                    desc="train", smoothing=0.1,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
    stopped_by = "max_steps"
    resumed_seconds = train_seconds
    t_loop = time.time()
    step = start_step
    step_time = 0.0
    try:
        while step < total:
            elapsed = time.time() - t_loop
            if cfg.time_budget is not None and step > start_step and elapsed + step_time > cfg.time_budget:
                stopped_by = "time_budget"
                break
            t0 = time.time()
            model.train()
            optimizer.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), device=info.device)
            for micro in range(cfg.grad_accum):
                batch = sampler.micro_batch(step, micro).to(info.device, non_blocking=True)  # (b, T + 1)
                sync = micro == cfg.grad_accum - 1
                ctx = model.no_sync() if (not sync and hasattr(model, "no_sync")) else contextlib.nullcontext()
                with ctx:
                    with autocast(info.device, cfg.dtype):
                        logits = compiled(batch[:, :-1])  # (b, T, V)
                    loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
                    (loss / cfg.grad_accum).backward()
                loss_sum += loss.detach() / cfg.grad_accum
            if cfg.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
            else:
                grad_norm = torch.nn.utils.clip_grad_norm_(raw.parameters(), float("inf"))
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            step += 1
            tokens_seen += cfg.tokens_per_step
            step_time = time.time() - t0
            train_seconds += step_time
            loss_value = float(D.all_reduce_mean(loss_sum, info))
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"the training loss became {loss_value} at step {step}: lower --lr "
                                         f"(now {cfg.lr}) or use float32")
            row = {"step": step, "tokens": tokens_seen, "loss": round(loss_value, 6), "lr": lr,
                   "grad_norm": round(float(grad_norm), 6), "tokens_per_s": round(cfg.tokens_per_step / step_time, 1),
                   "elapsed_s": round(train_seconds, 3)}
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                res = evaluate(raw, val_tokens, seq_len=cfg.seq_len, max_tokens=cfg.eval_tokens,
                               byte_lengths=byte_lengths, counts=counts, batch_size=max(1, cfg.batch_size // 2),
                               device=info.device, dtype=cfg.dtype, info=info)
                row.update(val_loss=round(res.loss, 6), val_bpb=round(res.bpb, 6))
            history.append(row)
            metrics.write(row)
            if pbar is not None:
                done = step - start_step
                wall = time.time() - t_loop
                eta = wall / done * (total - step)
                if cfg.time_budget is not None:
                    eta = min(eta, max(0.0, cfg.time_budget - wall))
                tok_s = cfg.tokens_per_step * done / max(train_seconds - resumed_seconds, 1e-9)
                post = {"loss": f"{loss_value:.3f}", "tok/s": f"{tok_s:.0f}", "ETA": _clock(eta)}
                if "val_loss" in row:
                    post["val"] = f"{row['val_loss']:.3f}"
                pbar.set_postfix(post, refresh=False)
                pbar.update(1)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint(step)
        if last_saved != step:
            checkpoint(step)
    finally:
        if pbar is not None:
            pbar.close()
        metrics.close()

    # -- the end: weights, evaluation, plot, sample ----------------------------------------------------------------
    final_state = _full_model_state(raw)
    if info.is_main:
        save_weights(run_dir / WEIGHTS_FILE, final_state, metadata={"step": str(step)})
    final = evaluate(raw, val_tokens, seq_len=cfg.seq_len, max_tokens=cfg.final_eval_tokens,
                     byte_lengths=byte_lengths, counts=counts, batch_size=max(1, cfg.batch_size // 2),
                     device=info.device, dtype=cfg.dtype, info=info)
    result = TrainResult(run_dir=run_dir, step=step, tokens=tokens_seen, train_seconds=train_seconds, final=final,
                         stopped_by=stopped_by, resumed_from=resumed_from, history=history)
    if info.is_main:
        plot_loss_curve(run_dir / METRICS_FILE, run_dir / LOSS_PLOT,
                        title=f"{run_dir.name}: {n_params / 1e6:.2f}M parameters, {tokenizer.kind} tokens",
                        final=(step, final.loss))
        say(f"stopped at step {step} ({stopped_by}); {tokens_seen:,} tokens in {train_seconds:.0f}s of training, "
            f"{time.time() - t_setup:.0f}s in all")
        say(format_result(final))
        if cfg.sample_tokens:
            plain = build_model(model_cfg)
            plain.load_state_dict(final_state)
            say(f"sample ({cfg.sample_tokens} tokens, temperature {cfg.sample_temperature}, top-k "
                f"{cfg.sample_top_k}, prompt {cfg.sample_prompt!r}):")
            result.sample = sample_text(plain, tokenizer, cfg.sample_prompt, cfg.sample_tokens,
                                        temperature=cfg.sample_temperature, top_k=cfg.sample_top_k, seed=cfg.seed,
                                        echo=say is print_fn)
        results = {"step": step, "tokens": tokens_seen, "train_seconds": round(train_seconds, 2),
                   "stopped_by": stopped_by, "validation": final.to_dict(), "sample": result.sample}
        atomic_write_bytes(run_dir / RESULTS_FILE, (json.dumps(results, indent=2) + "\n").encode("utf-8"))
        say(f"run folder: {run_dir}")
    D.barrier(info)  # no rank leaves (and tears the process group down) while rank 0 still works
    return result


def sample_text(model: nn.Module, tokenizer: Tokenizer, prompt: str, max_new_tokens: int, *,
                temperature: float = 0.8, top_k: int | None = None, top_p: float | None = None,
                seed: int | None = 0, echo: bool = True, out=None) -> str:
    """Generate from `prompt`, streaming the decoded text to `out` (stdout) as it is produced when `echo`."""
    out = out or sys.stdout
    ids = tokenizer.encode(prompt) or tokenizer.encode("\n")
    input_ids = torch.tensor([ids], dtype=torch.long, device=next(model.parameters()).device)  # (1, S)
    if echo:
        out.write(prompt)
        out.flush()

    def tokens():
        for token in model.stream(input_ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                  seed=seed):
            yield int(token[0])

    pieces = []
    for piece in stream_decode(tokenizer, tokens()):
        pieces.append(piece)
        if echo:
            out.write(piece)
            out.flush()
    if echo:
        out.write("\n")
        out.flush()
    return prompt + "".join(pieces)


def _clock(seconds: float) -> str:
    """h:mm:ss or m:ss."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _version() -> str:
    try:
        from .. import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return "unknown"

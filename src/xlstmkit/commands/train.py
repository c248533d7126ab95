"""`xlstmkit train`: train a language model; with no arguments, a small byte-level xLSTM on the Python standard
library's own source, in about ten minutes on a laptop CPU.

    xlstmkit train                                   # the default run, into runs/<timestamp>
    xlstmkit train --data notes/ --tokenizer bpe --out runs/notes --max-steps 2000
    xlstmkit train --preset tiny --set embedding_dim=64 --set lr=1e-3
    xlstmkit train --resume runs/notes --max-steps 4000       # continue (same results as one long run)
    torchrun --nproc_per_node=2 -m xlstmkit train --out runs/ddp   # DDP over 2 processes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# flag -> training/model field, for flags that map one to one
FLAG_FIELDS = {
    "data": "data", "tokenizer": "tokenizer", "bpe_vocab_size": "bpe_vocab_size", "max_steps": "max_steps",
    "max_tokens": "max_tokens", "time_budget": "time_budget", "seed": "seed", "grad_accum": "grad_accum",
    "batch_size": "batch_size", "seq_len": "seq_len", "lr": "lr", "checkpoint_every": "checkpoint_every",
    "keep_last": "keep_last", "max_files": "max_files", "eval_every": "eval_every", "device": "device",
    "dtype": "dtype", "compile": "compile", "fsdp": "fsdp", "warmup_steps": "warmup_steps", "threads": "threads",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    g = parser.add_argument_group("data")
    g.add_argument("--data", metavar="PATH", help="a text file, a folder of text files, a .jsonl file (field 'text'), "
                   "or a Hugging Face dataset name in the local cache (default: the Python standard library's source)")
    g.add_argument("--max-files", type=int, metavar="N", help="use only N files of the built-in corpus (quick runs)")
    g.add_argument("--tokenizer", choices=["bytes", "bpe"], help="bytes (vocabulary 256, default) or a byte-level "
                   "BPE trained on the training text and saved in the run folder")
    g.add_argument("--bpe-vocab-size", type=int, metavar="N", help="BPE vocabulary size (default 4096)")
    g = parser.add_argument_group("run")
    g.add_argument("--out", metavar="DIR", help="run folder (default runs/<timestamp>)")
    g.add_argument("--resume", nargs="?", const=True, metavar="DIR",
                   help="continue a run from its newest intact checkpoint (DIR, else --out, else the newest run in "
                        "runs/)")
    g.add_argument("--preset", choices=["tiny", "small", "medium"], help="size preset (default small)")
    g.add_argument("--config", metavar="FILE.yaml", help="YAML file with model and training fields")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any model or training field, e.g. --set embedding_dim=192 --set model.num_blocks=6 "
                        "(repeatable)")
    g.add_argument("--max-steps", type=int, metavar="N", help="optimiser steps to run (the schedule's length)")
    g.add_argument("--max-tokens", type=int, metavar="N", help="stop after N training tokens")
    g.add_argument("--time-budget", metavar="DURATION", help="stop training after this long, e.g. 600, 9m, 1h, "
                   "or 'none' (default 8m for the default preset)")
    g.add_argument("--seed", type=int, help="random seed (model init and data order)")
    g.add_argument("--checkpoint-every", type=int, metavar="N", help="checkpoint every N steps (0 = only at the end)")
    g.add_argument("--keep-last", type=int, metavar="K", help="keep the newest K checkpoints")
    g.add_argument("--eval-every", type=int, metavar="N", help="validate every N steps (0 = only at the end)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, metavar="B", help="sequences per optimiser step (over all processes)")
    g.add_argument("--seq-len", type=int, metavar="T", help="training context length in tokens")
    g.add_argument("--grad-accum", type=int, metavar="N", help="split each step's batch into N accumulated parts")
    g.add_argument("--lr", type=float, help="peak learning rate (warm-up, then cosine decay to 10%%)")
    g.add_argument("--warmup-steps", type=int, metavar="N", help="linear warm-up steps")
    g = parser.add_argument_group("engine")
    g.add_argument("--dtype", choices=["float32", "bfloat16"], help="autocast dtype (default float32)")
    g.add_argument("--bf16", action="store_const", const="bfloat16", dest="dtype", help="same as --dtype bfloat16")
    g.add_argument("--compile", action="store_const", const=True, help="torch.compile the model")
    g.add_argument("--fsdp", action="store_const", const=True, help="shard the model with FSDP under torchrun")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: cuda when available")
    g.add_argument("--threads", type=int, metavar="N", help="CPU threads per process (default: all cores but one, "
                   "shared among processes; OMP_NUM_THREADS is respected)")


def _explicit(args: argparse.Namespace) -> dict:
    return {field: getattr(args, flag) for flag, field in FLAG_FIELDS.items() if getattr(args, flag) is not None}


def resolve(args: argparse.Namespace):
    """(RunConfig, run folder, resume?) from the command line."""
    from ..train.config import RunConfig, build_run_config, parse_set
    from ..train.loop import RESUMABLE_OVERRIDES
    from ..train.checkpoint import list_checkpoints
    from ..train.run import CONFIG_FILE, WEIGHTS_FILE, default_run_dir, latest_run_dir

    if args.resume:
        if isinstance(args.resume, str):
            run_dir = Path(args.resume)
        elif args.out:
            run_dir = Path(args.out)
        else:
            run_dir = latest_run_dir()
            if run_dir is None:
                raise ValueError("--resume: no run folder given and none found in runs/")
        if args.out and isinstance(args.resume, str) and Path(args.out) != run_dir:
            raise ValueError(f"--resume {args.resume} and --out {args.out} name different folders")
        run, _ = RunConfig.load(run_dir / CONFIG_FILE)
        changes = dict(_explicit(args))
        for item in args.set:
            key, value = parse_set(item)
            changes[key.removeprefix("train.")] = value
        if args.preset or args.config:
            raise ValueError("--preset and --config cannot be used with --resume: the run keeps its config")
        train = run.train.to_dict()
        for key, value in changes.items():
            if key not in train or (key not in RESUMABLE_OVERRIDES and train[key] != value):
                raise ValueError(f"{key} cannot be changed when resuming (only "
                                 f"{', '.join(sorted(RESUMABLE_OVERRIDES))})")
            train[key] = value
        return RunConfig(model=run.model, train=run.train.from_dict(train), preset=run.preset), run_dir, True
    run = build_run_config(args.preset, args.config, args.set, _explicit(args))
    run_dir = Path(args.out) if args.out else default_run_dir()
    # a folder whose run left no weights (stopped before its first checkpoint) may be started again
    if (run_dir / CONFIG_FILE).exists() and (list_checkpoints(run_dir) or (run_dir / WEIGHTS_FILE).exists()):
        raise ValueError(f"{run_dir} already holds a run: pass --resume to continue it, or another --out")
    return run, run_dir, False


def main(args: argparse.Namespace) -> int:
    from ..train.checkpoint import CheckpointError

    try:
        run, run_dir, resume = resolve(args)
        from ..train.loop import train

        train(run, run_dir, resume=resume, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, CheckpointError, ImportError, FloatingPointError) as exc:
        print(f"xlstmkit train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xlstmkit train: interrupted; resume with --resume (from the last checkpoint)", file=sys.stderr)
        return 130
    return 0

"""`xlstmkit train`: train a language model; with no arguments, a small byte-level xLSTM on the Python standard
library's own source, in about ten minutes on a laptop CPU.

    xlstmkit train                                   # the default run, into runs/<timestamp>
    xlstmkit train --data notes/ --tokenizer bpe --out runs/notes --max-steps 2000
    xlstmkit train --preset tiny --set embedding_dim=64 --lr 1e-3 --print-config
    xlstmkit train --resume runs/notes               # continue after a kill or Ctrl-C (bitwise the same result)
    xlstmkit train --resume runs/notes --max-steps 4000 --extend   # a longer schedule (not bitwise)
    xlstmkit train --init-from runs/notes --data mine.txt --out runs/ft   # fine-tune (run or Hugging Face folder)
    torchrun --nproc_per_node=2 -m xlstmkit train --out runs/ddp   # DDP over 2 processes

Every training field is a flag (listed below, with the config's default; the preset, small unless --preset says
otherwise, sets its own sizes and lengths); model fields are set with --set KEY=VALUE or a YAML file (--config).
Precedence, lowest first: preset < --config < --set < flags.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_field_flags, given

# flags built from TrainConfig fields: filled in by add_arguments
_FIELD_FLAGS: list[str] = []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..train.build import config_field_names
    from ..train.config import TrainConfig

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (__doc__.split("\n\n", 1)[1] + "\nmodel fields (--set KEY=VALUE): "
                     + ", ".join(sorted(config_field_names("xlstm") - {"vocab_size"})))
    g = parser.add_argument_group("run")
    g.add_argument("--out", metavar="DIR", help="run folder (default runs/<timestamp>)")
    g.add_argument("--resume", nargs="?", const=True, metavar="DIR",
                   help="continue a run from its newest intact checkpoint (DIR, else --out, else the newest run in "
                        "runs/)")
    g.add_argument("--extend", action="store_true",
                   help="with --resume and a changed --max-steps/--max-tokens: keep the warm-up and decay the "
                        "learning rate over the new horizon from here on (not bitwise equal to a single run)")
    g.add_argument("--preset", choices=["tiny", "small", "medium"], help="size preset (default small)")
    g.add_argument("--config", metavar="FILE.yaml", help="YAML file with model and training fields")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any model or training field, e.g. --set embedding_dim=192 --set model.num_blocks=6 "
                        "(repeatable)")
    g.add_argument("--print-config", action="store_true", help="print the effective config as YAML and exit")
    g.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    g.add_argument("--bf16", action="store_const", const="bfloat16", dest="dtype", help="same as --dtype bfloat16")
    fields = parser.add_argument_group("training fields (each one a field of the run's config)")
    _FIELD_FLAGS[:] = add_field_flags(fields, TrainConfig)


def _resume_dir(args: argparse.Namespace) -> Path:
    from ..runs import latest_run_dir

    if isinstance(args.resume, str):
        if args.out and Path(args.out) != Path(args.resume):
            raise ValueError(f"--resume {args.resume} and --out {args.out} name different folders")
        return Path(args.resume)
    if args.out:
        return Path(args.out)
    run_dir = latest_run_dir()
    if run_dir is None:
        raise ValueError("--resume: no run folder given and none found in runs/: pass --resume DIR")
    return run_dir


def resolve(args: argparse.Namespace):
    """(RunConfig, run folder, resume?) from the command line, validated before any work."""
    from ..runs import CONFIG_FILE, default_run_dir
    from ..train.config import TRAIN_FIELDS, RunConfig, build_run_config, check_resume, model_fields, parse_set

    explicit = given(args, _FIELD_FLAGS)
    if args.extend and not args.resume:
        raise ValueError("--extend only applies with --resume")
    if args.resume:
        run_dir = _resume_dir(args)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"--resume {run_dir}: no such run folder")
        if args.preset or args.config:
            raise ValueError("--preset and --config cannot be used with --resume: the run keeps its config")
        saved, _ = RunConfig.load(run_dir / CONFIG_FILE)
        changes = dict(explicit)
        for item in args.set:
            key, value = parse_set(item)
            if key.startswith("model.") or key in model_fields(saved.model.get("family", "xlstm")) - TRAIN_FIELDS:
                raise ValueError(f"--set {key}: the model cannot be changed when resuming (only training fields "
                                 f"such as max_steps)")
            changes[key.removeprefix("train.")] = value
        train = saved.train.to_dict()
        unknown = sorted(set(changes) - set(train))
        if unknown:
            raise ValueError(f"unknown training field {unknown[0]!r}")
        train.update(changes)
        run = RunConfig(model=saved.model, train=saved.train.from_dict(train), preset=saved.preset)
        check_resume(saved, run, args.extend)
        return run, run_dir, True
    if explicit.get("init_from") is not None:
        for flag in ("tokenizer", "bpe_vocab_size"):
            if flag in explicit:
                raise ValueError(f"--{flag.replace('_', '-')} cannot be used with --init-from: the run keeps the "
                                 f"tokenizer of the weights it starts from")
    run = build_run_config(args.preset, args.config, args.set, explicit)
    run_dir = Path(args.out) if args.out else default_run_dir()
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--out {run_dir} is a file, not a folder: choose a folder name")
    return run, run_dir, False


def main(args: argparse.Namespace) -> int:
    run, run_dir, resume = resolve(args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump({**run.to_dict(), "run_dir": str(run_dir.resolve()), "resume": resume},
                             sort_keys=False), end="")
        return 0
    from ..train.loop import resume_command, train

    try:
        result = train(run, run_dir, resume=resume, extend=args.extend, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"xlstmkit train: interrupted; resume from the last checkpoint with: {resume_command(run_dir)}",
              file=sys.stderr)
        return 130
    if result.stopped_by == "interrupted":
        print(f"xlstmkit train: interrupted at step {result.step} (checkpoint saved); resume with: "
              f"{resume_command(run_dir)}", file=sys.stderr)
        return 130
    return 0

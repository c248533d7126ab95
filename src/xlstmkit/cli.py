"""`xlstmkit <command> ...`: one sub-command per module in `xlstmkit.commands`.

Each command module defines `add_arguments(parser)` and `main(args) -> int`, and is imported only when its command
runs, so one command's optional dependencies never break another.

Errors: every command checks its arguments before it starts any work, and every error a user can cause (a bad flag,
a missing or damaged file, a full disk, a folder in use) ends the command with one line on stderr,
`xlstmkit <command>: error: ...`, naming the file or flag and the fix, and exit status 2. `--debug` (anywhere on
the command line) or `XLSTMKIT_DEBUG=1` shows the traceback too. Ctrl-C ends with status 130.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback

COMMANDS = {
    "train": "train a language model (default: a small byte-level xLSTM[7:1]-style model on the Python standard "
             "library's source); --resume, --init-from to fine-tune",
    "eval": "evaluate a run or a Hugging Face xLSTM folder: loss, bits per byte, perplexity, length extrapolation",
    "generate": "sample text from a trained run or a Hugging Face xLSTM folder",
    "export": "write a run's model as a Hugging Face folder (transformers, pipeline, lm-eval) with its tokenizer",
    "tasks": "the paper's synthetic tasks: formal languages and associative recall",
    "compare": "train xLSTM, Llama, Mamba, LSTM (and the official xlstm) on the same data, batches and time budget "
               "at matched sizes; --ladder: the paper's LSTM-to-xLSTM ablation",
    "classify": "time-series classification: a bidirectional xLSTM beside MiniRocket, Transformer, LSTM and GRU "
                "baselines on UCR/UEA sets, your files or audio; `classify bench` for the results table",
    "forecast": "probabilistic forecasting: train the xLSTM forecaster (or TiRex zero-shot), score it beside "
                "statsforecast/neuralforecast baselines; `forecast bench` prints the benchmark table",
    "detect": "anomaly detection: score each point by how far it falls outside the xLSTM forecaster's forecast "
              "distribution; report the most anomalous region",
    "vision": "image classification with Vision-LSTM: train (digits, pathfinder or your folder), eval, predict, "
              "convert published weights",
    "bench": "time xlstmkit on this machine",
    "demo": "build a small model, run it and generate (no data, no training)",
}


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that are the user's input, not a bug: reported in one line."""
    errors: list[type[BaseException]] = [OSError, ValueError, RuntimeError, KeyError, TypeError, ImportError,
                                         MemoryError, json.JSONDecodeError, UnicodeError, FloatingPointError]
    try:
        import yaml

        errors.append(yaml.YAMLError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def _version() -> str:
    from . import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    from .commands.common import ArgumentParser

    parser = ArgumentParser(prog="xlstmkit", description="xLSTM language models: train, evaluate, generate.",
                            epilog="--debug (or XLSTMKIT_DEBUG=1) shows the traceback of an error.")
    parser.add_argument("--version", action="version", version=f"xlstmkit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("XLSTMKIT_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0].startswith("-") or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}")
        if argv:
            parser.parse_args(argv)  # --version, --help, or a one-line error
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    from .commands.common import ArgumentParser, describe

    module = importlib.import_module(f"xlstmkit.commands.{name}")
    parser = ArgumentParser(prog=f"xlstmkit {name}", description=COMMANDS[name])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        print(f"xlstmkit {name}: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        if debug:
            traceback.print_exc()
        print(f"xlstmkit {name}: error: {describe(exc)}", file=sys.stderr)
        return 2
    finally:
        if threads is not None:
            torch.set_num_threads(threads)


if __name__ == "__main__":
    sys.exit(main())

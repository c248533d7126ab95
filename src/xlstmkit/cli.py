"""`xlstmkit <command> ...`: one sub-command per module in `xlstmkit.commands`.

Each command module defines `add_arguments(parser)` and `main(args) -> int`, and is imported only when its command
runs, so `xlstmkit --help` stays fast and one command's optional dependencies never break another.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "train": "train a language model (default: a small byte-level xLSTM[7:1]-style model on the Python standard "
             "library's source)",
    "eval": "evaluate a trained run: loss, bits per byte, perplexity, length extrapolation",
    "generate": "sample text from a trained run or a Hugging Face xLSTM folder",
    "tasks": "the paper's synthetic tasks: formal languages and associative recall",
    "bench": "time xlstmkit against its peers",
    "demo": "build a small model, run it and generate (no data, no training)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xlstmkit", description="xLSTM language models: train, evaluate, generate.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}")
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(f"xlstmkit.commands.{name}")
    parser = argparse.ArgumentParser(prog=f"xlstmkit {name}", description=COMMANDS[name])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

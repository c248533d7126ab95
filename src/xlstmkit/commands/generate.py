"""`xlstmkit generate --run DIR --prompt TEXT`: sample from a trained run, streaming the text as it is produced.

    xlstmkit generate --run runs/20260101-120000 --prompt "def main(" --max-new-tokens 300 --temperature 0.8 --top-k 40
    xlstmkit generate --run runs/notes --prompt "Once" --temperature 0     # greedy
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("--run", required=True, metavar="DIR", help="run folder written by `xlstmkit train`")
    parser.add_argument("--prompt", default="", help="text to continue (default: a new line)")
    parser.add_argument("--max-new-tokens", type=int, default=200, metavar="N")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=None, metavar="K", help="sample among the K likeliest tokens")
    parser.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus sampling mass in (0, 1]")
    parser.add_argument("--seed", type=int, default=None, help="make sampling reproducible")


def main(args: argparse.Namespace) -> int:
    from ..train.checkpoint import CheckpointError

    try:
        if args.max_new_tokens < 0:
            raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
        from ..train.loop import sample_text
        from ..train.run import load_run

        warn = lambda msg: print(f"warning: {msg}", file=sys.stderr)  # noqa: E731
        _, _, model, tokenizer, _ = load_run(args.run, warn=warn)
        sample_text(model, tokenizer, args.prompt, args.max_new_tokens, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, seed=args.seed, echo=True, out=sys.stdout)
    except (ValueError, FileNotFoundError, CheckpointError, ImportError) as exc:
        print(f"xlstmkit generate: error: {exc}", file=sys.stderr)
        return 2
    return 0

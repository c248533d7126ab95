"""`xlstmkit eval --run DIR`: validation loss, bits per byte and perplexity of a trained run next to the unigram
baseline; `--lengths 256,1024,4096` adds a length-extrapolation table (CSV) and plot (PNG) in the run folder.

    xlstmkit eval --run runs/20260101-120000
    xlstmkit eval --run runs/notes --lengths 128,256,1024,4096 --max-tokens 32768
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _lengths(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lengths expects comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"--lengths expects positive integers, got {text!r}")
    return sorted(set(values))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("--run", required=True, metavar="DIR", help="run folder written by `xlstmkit train`")
    parser.add_argument("--lengths", type=_lengths, metavar="L1,L2,...",
                        help="also evaluate at these context lengths (length extrapolation)")
    parser.add_argument("--max-tokens", type=int, metavar="N",
                        help="validation tokens to score per length (default: the run's final_eval_tokens)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="B", help="windows per forward pass")
    parser.add_argument("--data", metavar="PATH", help="evaluate on this text instead of the run's validation split")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: all cores but one)")


def main(args: argparse.Namespace) -> int:
    from ..train.checkpoint import CheckpointError

    try:
        return _main(args)
    except (ValueError, FileNotFoundError, CheckpointError, ImportError) as exc:
        print(f"xlstmkit eval: error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    from ..data.text import load_corpus
    from ..data.tokenizer import encode_to_tensor, token_byte_lengths
    from ..train.checkpoint import atomic_write_bytes
    from ..train.evaluate import evaluate, format_length_table, format_result, length_extrapolation, \
        plot_lengths, unigram_counts, write_length_table
    from ..train.run import load_run, load_unigram_counts

    from ..train.distributed import set_threads

    set_threads(args.threads)
    run_dir = Path(args.run)
    warn = lambda msg: print(f"warning: {msg}", file=sys.stderr)  # noqa: E731
    run, extra, model, tokenizer, source = load_run(run_dir, warn=warn)
    cfg = run.train
    if args.max_tokens is not None and args.max_tokens < 1:
        raise ValueError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    max_tokens = args.max_tokens or cfg.final_eval_tokens
    corpus = load_corpus(args.data if args.data else cfg.data, val_fraction=cfg.val_fraction,
                         max_files=None if args.data else cfg.max_files, text_field=cfg.text_field)
    val_tokens = encode_to_tensor(tokenizer, corpus.val_text)
    counts = load_unigram_counts(run_dir)
    if counts is None:
        counts = unigram_counts(encode_to_tensor(tokenizer, corpus.train_text), tokenizer.vocab_size)
    byte_lengths = token_byte_lengths(tokenizer)
    print(f"weights: {source}")
    result = evaluate(model, val_tokens, seq_len=cfg.seq_len, max_tokens=max_tokens, byte_lengths=byte_lengths,
                      counts=counts, batch_size=args.batch_size, dtype=cfg.dtype)
    print(format_result(result))
    report = {"weights": source, "validation": result.to_dict()}
    if args.lengths:
        rows = length_extrapolation(model, val_tokens, args.lengths, max_tokens=max_tokens,
                                    byte_lengths=byte_lengths, counts=counts, batch_size=args.batch_size,
                                    dtype=cfg.dtype)
        skipped = [n for n in args.lengths if n not in {r.seq_len for r in rows}]
        print(f"length extrapolation (trained at {cfg.seq_len}):")
        print(format_length_table(rows, cfg.seq_len))
        if skipped:
            print(f"skipped (longer than the {val_tokens.numel():,}-token validation text): {skipped}")
        write_length_table(rows, run_dir / "length_extrapolation.csv")
        drawn = plot_lengths(rows, run_dir / "length_extrapolation.png", cfg.seq_len)
        print(f"wrote {run_dir / 'length_extrapolation.csv'}" + (f" and {run_dir / 'length_extrapolation.png'}"
                                                               if drawn else ""))
        report["lengths"] = [r.to_dict() for r in rows]
    atomic_write_bytes(run_dir / "eval.json", (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    return 0

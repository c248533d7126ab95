"""`xlstmkit eval --run DIR`: validation loss, bits per byte and perplexity of a trained run (or of a Hugging Face
xLSTM folder) next to the unigram baseline; `--lengths 256,1024,4096` adds a length-extrapolation table (CSV) and
plot (PNG). Results go to eval.json in `--out` (default: the run folder; a Hugging Face folder is never written to).

    xlstmkit eval --run runs/20260101-120000
    xlstmkit eval --run runs/notes --lengths 128,256,1024,4096 --max-tokens 32768
    xlstmkit eval --run ./xlstm-7b --data notes.txt --seq-len 512 --out results/7b
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import add_engine_flags, add_weights_flag, apply_weights, engine, positive


def _lengths(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expects positive integers, got {text!r}")
    return sorted(set(values))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("--run", required=True, metavar="DIR",
                        help="run folder written by `xlstmkit train`, or a Hugging Face xLSTM folder")
    parser.add_argument("--data", metavar="PATH",
                        help="evaluate on this text (default: the run's validation split; needed for a Hugging Face "
                             "folder)")
    parser.add_argument("--seq-len", type=int, metavar="T",
                        help="context length (default: the run's training length; 512 for a Hugging Face folder)")
    parser.add_argument("--lengths", type=_lengths, metavar="L1,L2,...",
                        help="also evaluate at these context lengths (length extrapolation)")
    parser.add_argument("--max-tokens", type=int, metavar="N",
                        help="validation tokens to score per length (default: the run's final_eval_tokens, else "
                             "65536)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="B", help="windows per forward pass (default 8)")
    parser.add_argument("--out", metavar="DIR",
                        help="folder for eval.json and the length table and plot (default: the run folder)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    add_weights_flag(parser, "to evaluate (what a quantised model loses)")
    add_engine_flags(parser)


def main(args: argparse.Namespace) -> int:
    from .. import runs

    # -- arguments, before any work --------------------------------------------------------------------------------
    for flag, value in (("--max-tokens", args.max_tokens), ("--batch-size", args.batch_size),
                        ("--seq-len", args.seq_len)):
        positive(flag, value)
    device, dtype, _ = engine(args)
    run_dir = Path(args.run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} not found" if not run_dir.exists()
                                else f"--run {run_dir} is a file, not a run folder")
    hf = runs.is_hf_dir(run_dir)
    if hf and not args.data:
        raise ValueError(f"--run {run_dir} is a Hugging Face folder: give the text to evaluate on with --data PATH")
    if args.data and not Path(args.data).expanduser().exists() and ("/" in args.data or args.data.startswith(".")):
        raise ValueError(f"--data {args.data}: no such file or folder")
    out_dir = Path(args.out) if args.out else (None if hf else run_dir)
    lock = None
    if out_dir is not None:
        runs.prepare_dir(out_dir, "--out" if args.out else "--run")
        lock = runs.RunLock(out_dir, runs.command_line()).acquire()
    try:
        return _evaluate(args, run_dir, out_dir, device, dtype)
    finally:
        if lock is not None:
            lock.release()


def _evaluate(args, run_dir: Path, out_dir: Path | None, device, dtype: str) -> int:
    from .. import runs
    from ..data.batches import eval_windows
    from ..data.text import load_corpus
    from ..data.tokenizer import encode_to_tensor, token_byte_lengths
    from ..train.checkpoint import atomic_write_bytes
    from ..train.config import TrainConfig
    from ..train.core import Progress
    from ..train.evaluate import evaluate, format_length_table, format_result, length_extrapolation, \
        plot_lengths, unigram_counts, write_length_table

    warn = lambda msg: print(f"warning: {msg}", file=sys.stderr)  # noqa: E731
    loaded = runs.load_model(run_dir, warn=warn)
    model, tokenizer = apply_weights(loaded.model.to(device), args.weights), loaded.tokenizer
    cfg = loaded.run.train if loaded.run is not None else TrainConfig()
    seq_len = args.seq_len or (cfg.seq_len if loaded.run is not None else 512)
    max_tokens = args.max_tokens or cfg.final_eval_tokens
    corpus = load_corpus(args.data if args.data else cfg.data, val_fraction=cfg.val_fraction,
                         max_files=None if args.data else cfg.max_files, text_field=cfg.text_field)
    val_tokens = encode_to_tensor(tokenizer, corpus.val_text)
    if val_tokens.numel() < seq_len + 1:
        raise ValueError(f"the validation text has {val_tokens.numel()} tokens, fewer than --seq-len + 1 = "
                         f"{seq_len + 1}: give more text (--data) or a shorter --seq-len")
    counts = runs.load_unigram_counts(run_dir) if loaded.run is not None else None
    if counts is None:
        counts = unigram_counts(encode_to_tensor(tokenizer, corpus.train_text), tokenizer.vocab_size)
    byte_lengths = token_byte_lengths(tokenizer)
    lengths = [n for n in (args.lengths or []) if val_tokens.numel() >= n + 1]
    total = sum(eval_windows(val_tokens, n, max(max_tokens, n)).shape[0] * n for n in lengths)
    total += eval_windows(val_tokens, seq_len, max_tokens).shape[0] * seq_len
    bar = Progress(total, desc="eval", unit="tokens", enabled=not args.no_progress)
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        bar.update(min(done[0], total))

    print(f"weights: {loaded.source}")
    try:
        result = evaluate(model, val_tokens, seq_len=seq_len, max_tokens=max_tokens, byte_lengths=byte_lengths,
                          counts=counts, batch_size=args.batch_size, device=device, dtype=dtype, progress=advance)
        rows = []
        if args.lengths:
            rows = length_extrapolation(model, val_tokens, args.lengths, max_tokens=max_tokens,
                                        byte_lengths=byte_lengths, counts=counts, batch_size=args.batch_size,
                                        device=device, dtype=dtype, progress=advance)
    finally:
        bar.close()
    print(format_result(result))
    report = {"weights": loaded.source, "weight_dtype": args.weights, "data": corpus.description,
              "validation": result.to_dict()}
    written = []
    if args.lengths:
        skipped = [n for n in args.lengths if n not in {r.seq_len for r in rows}]
        print(f"length extrapolation (trained at {seq_len}):")
        print(format_length_table(rows, seq_len))
        if skipped:
            print(f"skipped (longer than the {val_tokens.numel():,}-token validation text): {skipped}")
        report["lengths"] = [r.to_dict() for r in rows]
        if out_dir is not None:
            write_length_table(rows, out_dir / "length_extrapolation.csv")
            written.append(out_dir / "length_extrapolation.csv")
            if plot_lengths(rows, out_dir / "length_extrapolation.png", seq_len):
                written.append(out_dir / "length_extrapolation.png")
    if out_dir is not None:
        atomic_write_bytes(out_dir / runs.EVAL_FILE, (json.dumps(report, indent=2) + "\n").encode("utf-8"))
        written.insert(0, out_dir / runs.EVAL_FILE)
    print(f"summary: loss {result.loss:.4f} nats/token, {result.bpb:.4f} bits/byte (unigram {result.unigram_bpb:.4f})"
          f" on {result.tokens:,} tokens" + (f"; wrote {', '.join(str(p) for p in written)}" if written else ""))
    return 0

"""`xlstmkit compare`: language models trained one after another on the same data, tokenizer, batches and time
budget, at matched parameter counts, on the same threads; a table, learning curves and length extrapolation.

    xlstmkit compare                                  # the default size, 10 minutes of training per model
    xlstmkit compare --budget 5m --models xlstm[7:1] llama mamba
    xlstmkit compare --ladder --budget 5m             # the paper's ablation: vanilla LSTM ... xLSTM
    xlstmkit compare --size tiny --max-steps 20 --budget none --models xlstm[7:1] lstm --out runs/smoke

Models: xlstm[7:1] (the reference: the size preset's width and depth), xlstm[1:0], xlstm[0:1], llama, mamba
(transformers; Mamba on its pure-PyTorch path), lstm (torch.nn.LSTM, 2 layers) and official (the `xlstm`
package's model; left out when it is not installed). Every other model gets the width whose parameter count is
closest to the reference's (within 5 %). The protocol is in docs/compare.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import add_engine_flags


def _factors(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected factors like '4,16', got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..train.compare import COMPARE_MODELS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    g = parser.add_argument_group("comparison")
    g.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                   help=f"models to compare (default: {' '.join(COMPARE_MODELS)})")
    g.add_argument("--ladder", action="store_true",
                   help="train the rungs of the paper's ablation ladder instead (LSTM -> xLSTM) and print them beside "
                        "the paper's ordering")
    g.add_argument("--budget", default="10m", metavar="DURATION",
                   help="training time per model, e.g. 600, 10m, 1h or 'none' with --max-steps (default: 10m)")
    g.add_argument("--size", choices=["tiny", "small", "medium"], default=None,
                   help="the size preset of `xlstmkit train` for the reference xLSTM[7:1] and the batches "
                        "(default: train's default)")
    g.add_argument("--data", default=None, metavar="PATH",
                   help="text like `xlstmkit train --data` (default: the Python standard library's source)")
    g.add_argument("--max-files", type=int, default=None, metavar="N", help="use only N files of the built-in corpus")
    g.add_argument("--max-steps", type=int, default=None, metavar="N", help="also stop each model after N steps")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate of every model (default: the preset's)")
    g.add_argument("--seq-len", type=int, default=None, metavar="T", help="training context (default: the preset's)")
    g.add_argument("--batch-size", type=int, default=None, metavar="B", help="sequences per step (default: the "
                   "preset's)")
    g.add_argument("--seed", type=int, default=0, help="seed of the batches and of every model's initialisation")
    g.add_argument("--eval-points", type=int, default=10, metavar="N",
                   help="validations per model spread over the budget, for the curves (default: 10)")
    g.add_argument("--extrapolation", type=_factors, default=(4, 16), metavar="K,K",
                   help="also evaluate at these multiples of the training context (default: 4,16)")
    g.add_argument("--extrapolation-tokens", type=int, default=65536, metavar="N",
                   help="validation tokens per extrapolation length (default: 65536)")
    g.add_argument("--pack-documents", action="store_true",
                   help="document-aware packing: no training window runs from one file into the next")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a field of the reference model or of training, as in `xlstmkit train --set`")
    g.add_argument("--out", default=None, metavar="DIR", help="output folder (default runs/compare-<timestamp>)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars or progress lines")
    add_engine_flags(parser)


def main(args: argparse.Namespace) -> int:
    from ..train.compare import COMPARE_MODELS, CompareConfig, run_comparison

    for flag, value in (("--max-steps", args.max_steps), ("--seq-len", args.seq_len),
                        ("--batch-size", args.batch_size), ("--eval-points", args.eval_points),
                        ("--extrapolation-tokens", args.extrapolation_tokens), ("--max-files", args.max_files)):
        if value is not None and value < (0 if flag == "--eval-points" else 1):
            raise ValueError(f"{flag} must be a positive integer, got {value}")
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    cc = CompareConfig(models=tuple(args.models or COMPARE_MODELS), ladder=args.ladder, budget=args.budget,
                       size=args.size, data=args.data, max_files=args.max_files, max_steps=args.max_steps,
                       lr=args.lr, seq_len=args.seq_len, batch_size=args.batch_size, threads=args.threads,
                       dtype=args.dtype, device=args.device, seed=args.seed, eval_points=args.eval_points,
                       extrapolation=args.extrapolation, extrapolation_tokens=args.extrapolation_tokens,
                       pack_documents=args.pack_documents, sets=tuple(args.set))
    out = Path(args.out) if args.out else Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    run_comparison(cc, out, progress=not args.no_progress)
    return 0

"""`xlstmkit bench`: how fast xlstmkit runs on this machine, with nothing but xlstmkit installed.

Times the three mLSTM forms on one sequence length, then a language model's training step, forward pass, prefill
and per-token generation (medians of repeats). Comparisons against the official `xlstm` package, transformers'
xLSTM and a Llama are in the repository's `benchmarks/suite.py`, which needs those packages.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ..config import xLSTMConfig
from ..models.xlstm_lm import xLSTMLM
from ..ops import native
from ..ops.mlstm import MLSTM_FORMS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embedding-dim", type=int, default=256)
    parser.add_argument("--num-blocks", type=int, default=6)
    parser.add_argument("--block-pattern", default="xLSTM[5:1]", help="paper notation, e.g. xLSTM[7:1]")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--op-seq-len", type=int, default=1024, help="sequence length of the op timings")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated at batch 1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--bf16", action="store_true", help="train under bf16 autocast")


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    loop = "native C loop" if native.library() is not None else "PyTorch loop (no C compiler, or XLSTMKIT_NATIVE=0)"
    print(f"sLSTM recurrence: {loop}")
    S, NH, D = args.op_seq_len, 4, 64
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, NH, S, D, generator=g, requires_grad=True) for _ in range(3))
    i = torch.randn(1, NH, S, generator=g, requires_grad=True)
    f = (torch.randn(1, NH, S, generator=g) + 3).requires_grad_()
    print(f"\nmLSTM op, B=1, {NH} heads x {D}, S={S}: forward+backward tokens/s")
    for name, op in MLSTM_FORMS.items():
        t = _median_seconds(lambda op=op: op(q, k, v, i, f).sum().backward(), args.repeats)
        print(f"  {name:<28}{S / t:>12,.0f}")

    cfg = xLSTMConfig(vocab_size=256, embedding_dim=args.embedding_dim, num_blocks=args.num_blocks,
                      block_pattern=args.block_pattern)
    model = xLSTMLM(cfg)
    B, T = args.batch_size, args.seq_len
    ids = torch.randint(0, 256, (B, T + 1), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    print(f"\n{args.block_pattern}, d={cfg.embedding_dim}, {cfg.num_blocks} blocks "
          f"({''.join(cfg.block_types)}), {model.num_parameters():,} parameters")
    def report(label: str, tokens: int, seconds: float) -> None:
        print(f"  {label:<28}{tokens / seconds:>12,.0f} tokens/s")

    report(f"training B={B} T={T}{' bf16' if args.bf16 else ''}", B * T, _median_seconds(train_step, args.repeats))
    model.eval()
    prompt = ids[:1, :T]
    with torch.no_grad():
        report(f"forward B={B} T={T}", B * T, _median_seconds(lambda: model(ids[:, :-1]), args.repeats))
        report(f"prefill B=1 T={T}", T, _median_seconds(lambda: model(prompt, return_state=True), args.repeats))
    report("generation B=1", args.new_tokens,
           _median_seconds(lambda: model.generate(prompt[:, :16], args.new_tokens), args.repeats))
    print("\npeer comparisons: python benchmarks/suite.py (in the repository; needs xlstm and transformers)")
    return 0

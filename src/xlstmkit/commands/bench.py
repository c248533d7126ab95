"""`xlstmkit bench`: how fast xlstmkit runs on this machine, with nothing but xlstmkit installed.

Times the three mLSTM forms on one sequence length, then a language model's training step, forward pass, prefill
and per-token generation (medians of repeats), and ends with a summary table. Comparisons against the official
`xlstm` package, transformers' xLSTM and a Llama are in the repository's `benchmarks/suite.py`, which needs those
packages.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from .common import add_engine_flags, engine, positive


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embedding-dim", type=int, default=256, help="(default 256)")
    parser.add_argument("--num-blocks", type=int, default=6, help="(default 6)")
    parser.add_argument("--block-pattern", default="xLSTM[5:1]", help="paper notation, e.g. xLSTM[7:1] (default "
                        "xLSTM[5:1])")
    parser.add_argument("--batch-size", type=int, default=8, help="(default 8)")
    parser.add_argument("--seq-len", type=int, default=256, help="(default 256)")
    parser.add_argument("--op-seq-len", type=int, default=1024, help="sequence length of the op timings (default "
                        "1024)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated at batch 1 (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement, median (default 3)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    parser.add_argument("--bf16", action="store_const", const="bfloat16", dest="dtype", help="same as --dtype bfloat16")
    add_engine_flags(parser)


def _median_seconds(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(args: argparse.Namespace) -> int:
    for flag in ("embedding_dim", "num_blocks", "batch_size", "seq_len", "op_seq_len", "new_tokens", "repeats"):
        positive("--" + flag.replace("_", "-"), getattr(args, flag))
    import torch

    from ..config import xLSTMConfig
    from ..models.xlstm_lm import xLSTMLM
    from ..ops import native
    from ..ops.mlstm import MLSTM_FORMS
    from ..train.core import Progress, autocast

    cfg = xLSTMConfig(vocab_size=256, embedding_dim=args.embedding_dim, num_blocks=args.num_blocks,
                      block_pattern=args.block_pattern)  # a bad size or pattern fails here, before any timing
    device, dtype, _ = engine(args)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, dtype {dtype}")
    loop = "native C loop" if native.library() is not None else "PyTorch loop (no C compiler, or XLSTMKIT_NATIVE=0)"
    print(f"sLSTM recurrence: {loop}")
    bar = Progress(len(MLSTM_FORMS) + 4, desc="bench", unit="measurement", enabled=not args.no_progress,
                   log_every=1)
    summary: list[tuple[str, float]] = []
    done = 0

    def report(label: str, tokens: int, seconds: float) -> None:
        nonlocal done
        summary.append((label, tokens / seconds))
        done += 1
        bar.update(done)
        print(f"  {label:<28}{tokens / seconds:>12,.0f} tokens/s", flush=True)

    S, NH, D = args.op_seq_len, 4, 64
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, NH, S, D, generator=g).to(device).requires_grad_() for _ in range(3))
    i = torch.randn(1, NH, S, generator=g).to(device).requires_grad_()
    f = (torch.randn(1, NH, S, generator=g) + 3).to(device).requires_grad_()
    print(f"\nmLSTM op, B=1, {NH} heads x {D}, S={S}: forward+backward")
    for name, op in MLSTM_FORMS.items():
        def op_step(op=op) -> None:
            with autocast(device, dtype):
                out = op(q, k, v, i, f)
            out.float().sum().backward()

        report(name, S, _median_seconds(op_step, args.repeats, sync))

    model = xLSTMLM(cfg).to(device)
    B, T = args.batch_size, args.seq_len
    ids = torch.randint(0, 256, (B, T + 1), generator=g).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> None:
        with autocast(device, dtype):
            logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    print(f"\n{args.block_pattern}, d={cfg.embedding_dim}, {cfg.num_blocks} blocks "
          f"({''.join(cfg.block_types)}), {model.num_parameters():,} parameters")
    report(f"training B={B} T={T}{' bf16' if dtype == 'bfloat16' else ''}", B * T,
           _median_seconds(train_step, args.repeats, sync))
    model.eval()
    prompt = ids[:1, :T]
    with torch.no_grad(), autocast(device, dtype):
        report(f"forward B={B} T={T}", B * T, _median_seconds(lambda: model(ids[:, :-1]), args.repeats, sync))
        report(f"prefill B=1 T={T}", T, _median_seconds(lambda: model(prompt, return_state=True), args.repeats, sync))
    report("generation B=1", args.new_tokens,
           _median_seconds(lambda: model.generate(prompt[:, :16], args.new_tokens), args.repeats, sync))
    bar.close()
    best = max(summary, key=lambda item: item[1])
    print(f"\nsummary: {len(summary)} measurements, median of {args.repeats} repeats each; fastest {best[0].strip()} "
          f"at {best[1]:,.0f} tokens/s", file=sys.stderr)
    print("peer comparisons: python benchmarks/suite.py (in the repository; needs xlstm and transformers)")
    return 0

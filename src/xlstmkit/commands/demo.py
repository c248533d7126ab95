"""`xlstmkit demo`: build a small xLSTM[3:1], check that its computation forms agree, and generate from it."""

from __future__ import annotations

import argparse
import time

from .common import add_engine_flags, engine, positive


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="(default 0)")
    parser.add_argument("--length", type=int, default=130, help="prompt length for the form comparison (default 130)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="(default 64)")
    add_engine_flags(parser)


def main(args: argparse.Namespace) -> int:
    positive("--length", args.length)
    positive("--max-new-tokens", args.max_new_tokens, allow_zero=True)
    if not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed must be in [0, 2**63), got {args.seed}")
    import torch

    from ..config import xLSTMConfig
    from ..models.xlstm_lm import xLSTMLM
    from ..train.core import autocast

    device, dtype, _ = engine(args)
    torch.manual_seed(args.seed)
    cfg = xLSTMConfig(vocab_size=256, embedding_dim=128, num_blocks=4, block_pattern="xLSTM[3:1]")
    model = xLSTMLM(cfg).eval().to(device)
    print(f"xLSTM[3:1]: blocks {''.join(cfg.block_types)}, {model.num_parameters():,} parameters, on {device}"
          f"{' (bf16 autocast)' if dtype == 'bfloat16' else ''}")
    ids = torch.randint(0, 256, (1, args.length)).to(device)
    with torch.no_grad(), autocast(device, dtype):
        ref = model(ids, mlstm_form="parallel")
        for form in ("chunkwise", "recurrent"):
            t0 = time.perf_counter()
            out = model(ids, mlstm_form=form)
            dt = time.perf_counter() - t0
            print(f"{form:>9} vs parallel: max |diff| {float((out - ref).abs().max()):.2e}  ({dt * 1e3:.0f} ms)")
        half = max(1, args.length // 2)
        if half < args.length:
            a, state = model(ids[:, :half], return_state=True)
            b = model(ids[:, half:], state=state)
            print(f"two pieces with carried state vs whole: max |diff| "
                  f"{float((torch.cat([a, b], 1) - ref).abs().max()):.2e}")
    prompt = torch.tensor([list(b"def main():\n    ")]).to(device)
    t0 = time.perf_counter()
    with autocast(device, dtype):
        out = model.generate(prompt, args.max_new_tokens, temperature=1.0, top_k=40, seed=args.seed)
    dt = time.perf_counter() - t0
    text = bytes(out[0].tolist()).decode("utf-8", errors="replace")
    print(f"generated {args.max_new_tokens} tokens in {dt:.2f} s (untrained model, so noise): {text!r}")
    return 0

"""`xlstmkit demo`: build a small xLSTM[1:1], check that its computation forms agree, and generate from it."""

from __future__ import annotations

import argparse
import time

import torch

from ..config import xLSTMConfig
from ..models.xlstm_lm import xLSTMLM


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--length", type=int, default=130, help="prompt length for the form comparison")
    parser.add_argument("--max-new-tokens", type=int, default=64)


def main(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    cfg = xLSTMConfig(vocab_size=256, embedding_dim=128, num_blocks=4, block_pattern="xLSTM[3:1]")
    model = xLSTMLM(cfg).eval()
    print(f"xLSTM[3:1]: blocks {''.join(cfg.block_types)}, {model.num_parameters():,} parameters")
    ids = torch.randint(0, 256, (1, args.length))
    with torch.no_grad():
        ref = model(ids, mlstm_form="parallel")
        for form in ("chunkwise", "recurrent"):
            t0 = time.perf_counter()
            out = model(ids, mlstm_form=form)
            dt = time.perf_counter() - t0
            print(f"{form:>9} vs parallel: max |diff| {float((out - ref).abs().max()):.2e}  ({dt * 1e3:.0f} ms)")
        half = args.length // 2
        a, state = model(ids[:, :half], return_state=True)
        b = model(ids[:, half:], state=state)
        print(f"two pieces with carried state vs whole: max |diff| {float((torch.cat([a, b], 1) - ref).abs().max()):.2e}")
    prompt = torch.tensor([list(b"def main():\n    ")])
    t0 = time.perf_counter()
    out = model.generate(prompt, args.max_new_tokens, temperature=1.0, top_k=40, seed=args.seed)
    dt = time.perf_counter() - t0
    text = bytes(out[0].tolist()).decode("utf-8", errors="replace")
    print(f"generated {args.max_new_tokens} tokens in {dt:.2f} s (untrained model, so noise): {text!r}")
    return 0

"""Per-token generation cost at batch 1: xlstmkit's `generate` (and its raw model step) against the official
`xlstm` model's `step()` loop, same weights (`from_official`), side by side in one process.

    python benchmarks/generation_step.py [--tokens 64] [--repeats 5] [--threads 1] [--compile]

Model: issue 5's reference, d = 256, 6 blocks, one sLSTM block, byte vocabulary. Prints ms per token (medians of
interleaved repeats) and the speed-up over the official step() loop. `--compile` adds `generate(compile=True)`
(torch.compile of the per-token step; compiled once before timing, which takes tens of seconds).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from measure import interleave  # noqa: E402
from suite_official import official_model  # noqa: E402

from xlstmkit.interop.official import from_official  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    ap.add_argument("--compile", action="store_true", help="also time generate(compile=True)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    off = official_model(context_length=256).eval()
    ours = from_official(off).eval()
    n = args.tokens
    prompt = torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def official_steps() -> None:
        state = None
        tok = prompt[:, :1]
        for _ in range(n):
            logits, state = off.step(tok, state=state)
            tok = logits[:, -1].argmax(-1, keepdim=True)

    @torch.inference_mode()
    def ours_steps() -> None:
        state = None
        tok = prompt[:, 0]
        for _ in range(n):
            logits, state = ours.decode_step(tok, state)
            tok = logits.argmax(-1)

    def ours_generate() -> None:  # prefill of one token + n - 1 steps: the same number of model calls
        ours.generate(prompt[:, :1], n)

    fns = {"official step()": official_steps, "xlstmkit model step": ours_steps, "xlstmkit generate": ours_generate}
    if args.compile:
        ours.generate(prompt[:, :1], 3, compile=True)  # compile outside the timing
        fns["xlstmkit generate compiled"] = lambda: ours.generate(prompt[:, :1], n, compile=True)
    t = interleave(fns, repeats=args.repeats)
    base = t["official step()"]
    print(f"batch 1, {n} tokens, threads={torch.get_num_threads()}")
    for name, sec in t.items():
        print(f"{name:>26}: {sec / n * 1e3:7.3f} ms/token   {base / sec:5.2f}x official")


if __name__ == "__main__":
    main()

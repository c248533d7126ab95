"""Where sampled generation loses time against greedy generation (issue 17, item 1: "greedy and sampled").

    python benchmarks/sampling_overhead.py [--tokens 2000] [--repeats 7] [--threads 1]

The decode benchmark's model (xLSTM[7:1], d = 256, 6 blocks, byte vocabulary, native float32 decode). Per token,
medians of interleaved runs: `generate` greedy, sampled (temperature 0.8) with and without top-k 50 and a seed; a
hand-written loop of `decode_step` + argmax against `decode_step` + `sample_next` (the tensor operations) and against
`decode_step` + `TokenChooser` (what `generate` does: the same draw in one native call, noise drawn per block of
steps); and `sample_next` and `TokenChooser` alone on random logits. The difference between a loop and the op alone is
the cost of sampling right after a decode step rather than in isolation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from decode import official_model  # noqa: E402
from measure import cpu_model  # noqa: E402
from xlstmkit.generation import TokenChooser, sample_next  # noqa: E402
from xlstmkit.interop.official import from_official  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = from_official(official_model(256, 6, [3])).eval()
    n, first, gen = args.tokens, torch.tensor([[5]]), torch.Generator().manual_seed(0)

    @torch.inference_mode()
    def loop(sampled: bool) -> None:
        state, tok = None, first[:, 0]
        for i in range(n):
            logits, state = model.decode_step(tok, state, reuse_state=i > 0)
            tok = sample_next(logits, temperature=0.8, top_k=50, generator=gen) if sampled else logits.argmax(-1)

    @torch.inference_mode()
    def loop_chooser() -> None:
        state, tok = None, first[:, 0]
        choose = TokenChooser(temperature=0.8, top_k=50, generator=gen)
        for i in range(n):
            logits, state = model.decode_step(tok, state, reuse_state=i > 0)
            tok = choose(logits)

    @torch.inference_mode()
    def alone_chooser() -> None:
        logits = torch.randn(1, 256)
        choose = TokenChooser(temperature=0.8, top_k=50, generator=gen)
        for _ in range(n):
            choose(logits)

    @torch.inference_mode()
    def alone() -> None:
        logits = torch.randn(1, 256)
        for _ in range(n):
            sample_next(logits, temperature=0.8, top_k=50, generator=gen)

    rows = {
        "generate, greedy": lambda: model.generate(first, n),
        "generate, temperature 0.8, seed": lambda: model.generate(first, n, temperature=0.8, seed=0),
        "generate, temperature 0.8, top-k 50, seed": lambda: model.generate(first, n, temperature=0.8, top_k=50,
                                                                             seed=0),
        "generate, temperature 0.8, top-k 50, no seed": lambda: model.generate(first, n, temperature=0.8, top_k=50),
        "loop: decode_step + argmax": lambda: loop(False),
        "loop: decode_step + sample_next (top-k 50, generator)": lambda: loop(True),
        "loop: decode_step + TokenChooser (what generate does; top-k 50, generator)": loop_chooser,
        "sample_next alone (top-k 50, generator, random logits)": alone,
        "TokenChooser alone (top-k 50, generator, random logits)": alone_chooser,
    }
    for fn in rows.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(args.repeats):
        for k, fn in rows.items():
            start = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - start) / n * 1e6)
    print(f"{cpu_model()}, {args.threads} thread(s), load {' / '.join(f'{v:.2f}' for v in os.getloadavg())}, "
          f"torch {torch.__version__}, {n} tokens, median of {args.repeats}")
    print("| what | us per token |\n|---|---|")
    for k in rows:
        print(f"| {k} | {statistics.median(times[k]):.1f} |")


if __name__ == "__main__":
    main()

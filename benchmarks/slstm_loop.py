"""The sLSTM recurrence alone: the official package's `vanilla` CPU backend (a PyTorch loop, autograd backward)
against xlstmkit's `slstm_sequence` with its PyTorch loop and with its native C loop, side by side in one process.

    python benchmarks/slstm_loop.py [--threads 1] [--repeats 7]

4 heads of 64 (d = 256, the issue's model), float32. Prints microseconds per time step (medians of interleaved
repeats) for the forward alone (no autograd graph) and for forward plus backward, and each figure's ratio to the
official loop. The per-step arithmetic here is tiny (one 64 x 256 matrix-vector product per head and row), so
these numbers are the per-step overhead of each implementation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from measure import interleave  # noqa: E402

from xlstmkit.ops import native, slstm_sequence  # noqa: E402

NH, DH = 4, 64


def official_fns(B: int, S: int):
    from xlstm.blocks.slstm.src.vanilla import slstm_forward, slstm_pointwise_function_registry

    H = NH * DH
    g = torch.Generator().manual_seed(0)
    x = torch.randn(S, B, 4 * H, generator=g)
    R = (torch.randn(NH, 4 * DH, DH, generator=g) * 0.1).requires_grad_()
    b = torch.zeros(4 * H, requires_grad=True)
    states = torch.zeros(4, B, H)
    pointwise = slstm_pointwise_function_registry["slstm"]

    def fwd() -> None:
        with torch.no_grad():
            slstm_forward(x, states, R, b, pointwise)

    def fwd_bwd() -> None:
        xg = x.detach().requires_grad_()
        all_states, _, _ = slstm_forward(xg, states, R, b, pointwise)
        all_states[0, 1:].sum().backward()

    return fwd, fwd_bwd


def ours_fns(B: int, S: int, use_native: bool):
    g = torch.Generator().manual_seed(0)
    gates = torch.randn(B, S, NH, 4, DH, generator=g)
    R = (torch.randn(NH, DH, 4 * DH, generator=g) * 0.1).requires_grad_()

    def fwd() -> None:
        with torch.no_grad(), native.use_native(use_native):
            slstm_sequence(gates, R)

    def fwd_bwd() -> None:
        with native.use_native(use_native):
            slstm_sequence(gates.detach().requires_grad_(), R).sum().backward()

    return fwd, fwd_bwd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if native.library() is None:
        raise SystemExit("the native sLSTM loop could not be built here (see the warning above)")
    print(f"sLSTM recurrence, {NH} heads x {DH}, float32, {args.threads} thread(s); microseconds per time step, "
          "median of interleaved repeats; ratio = official / this")
    print(f"| B | S | pass | official vanilla | xlstmkit PyTorch loop | xlstmkit native loop |")
    print("|---|---|---|---|---|---|")
    for B, S in ((1, 2048), (8, 256), (1, 4096)):
        fns = {"official": official_fns(B, S), "torch": ours_fns(B, S, False), "native": ours_fns(B, S, True)}
        for p, name in enumerate(("forward", "forward+backward")):
            t = interleave({k: v[p] for k, v in fns.items()}, repeats=args.repeats)
            us = {k: v / S * 1e6 for k, v in t.items()}
            cells = [f"{us['official']:.1f}"] + [f"{us[k]:.1f} ({us['official'] / us[k]:.1f}x)"
                                                  for k in ("torch", "native")]
            print(f"| {B} | {S} | {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

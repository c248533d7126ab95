"""mlstm_chunkwise forward+backward against mlstm_kernels' `chunkwise--native_custbw`, side by side.

    python benchmarks/mlstm_kernel.py [--seq-lens 1024,4096] [--threads 2]

Prints tokens/s of each and the ratio (xlstmkit / mlstm_kernels), medians over interleaved repeats.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from measure import interleave  # noqa: E402

from xlstmkit.ops import mlstm_chunkwise  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq-lens", default="4096")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--chunk-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from mlstm_kernels.torch import get_mlstm_kernel

    peer = get_mlstm_kernel("chunkwise--native_custbw")
    B, NH, D, L = args.batch, args.heads, args.head_dim, args.chunk_size
    print(f"B={B} NH={NH} DQK=DV={D} chunk={L} fp32 threads={torch.get_num_threads()}")
    print(f"{'S':>6} {'xlstmkit tok/s':>15} {'mlstm_kernels tok/s':>20} {'ratio':>6}")
    for S in map(int, args.seq_lens.split(",")):
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(B, NH, S, D, generator=g, requires_grad=True) for _ in range(3))
        i = torch.randn(B, NH, S, generator=g, requires_grad=True)
        f = (torch.randn(B, NH, S, generator=g) + 3).requires_grad_()
        dh = torch.randn(B, NH, S, D, generator=g)

        def ours():
            h = mlstm_chunkwise(q, k, v, i, f, chunk_size=L)
            torch.autograd.backward(h, dh)

        def theirs():
            h = peer(q, k, v, i, f, chunk_size=L)
            torch.autograd.backward(h, dh)

        t = interleave({"ours": ours, "theirs": theirs}, repeats=args.repeats)
        tok = B * S
        print(f"{S:>6} {tok / t['ours']:>15.0f} {tok / t['theirs']:>20.0f} {t['theirs'] / t['ours']:>6.2f}")


if __name__ == "__main__":
    main()

"""bf16 autocast training against float32 training of the same model, side by side in one process.

    python benchmarks/bf16_training.py [--steps 12] [--batch 8] [--seq-len 256] [--threads 1]

Model: d = 256, 6 blocks, one sLSTM block (issue 5's reference), byte vocabulary, trained on the bytes of this
repository's Python sources. Two copies start from the same weights; their optimiser steps alternate (so machine
noise hits both alike). Prints the median step time of each, the speed ratio, the two loss curves, and the dtypes of
the recurrent states under autocast (they must stay float32).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from xlstmkit import xLSTMConfig, xLSTMLM


def corpus_batches(B: int, T: int, steps: int) -> list[torch.Tensor]:
    root = Path(__file__).resolve().parents[1] / "src"
    data = b"".join(p.read_bytes() for p in sorted(root.rglob("*.py")))
    ids = torch.tensor(list(data), dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(0, len(ids) - T - 1, (steps, B), generator=g)
    return [torch.stack([ids[s:s + T + 1] for s in row.tolist()]) for row in starts]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    ap.add_argument("--lr", type=float, default=2e-3)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = xLSTMConfig(vocab_size=256, embedding_dim=256, num_blocks=6, slstm_at=(3,), mlstm_num_heads=4,
                      slstm_num_heads=4)
    models = {"fp32": xLSTMLM(cfg)}
    models["bf16 autocast"] = copy.deepcopy(models["fp32"])
    opts = {k: torch.optim.AdamW(m.parameters(), lr=args.lr) for k, m in models.items()}
    batches = corpus_batches(args.batch, args.seq_len, args.steps)
    times: dict[str, list[float]] = {k: [] for k in models}
    losses: dict[str, list[float]] = {k: [] for k in models}
    for batch in batches:
        for name, model in models.items():
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name != "fp32"):
                logits = model(batch[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, 256), batch[:, 1:].reshape(-1))
            loss.backward()
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - t0)
            losses[name].append(float(loss.detach()))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, state = models["bf16 autocast"](batches[0][:1, :32], return_state=True)
    state_dtypes = sorted({str(t.dtype) for t in torch.utils._pytree.tree_leaves(state)})
    med = {k: statistics.median(v[1:]) for k, v in times.items()}  # the first step warms up
    tok = args.batch * args.seq_len
    print(f"B={args.batch} T={args.seq_len} threads={torch.get_num_threads()} steps={args.steps}")
    for k, v in med.items():
        print(f"{k:>14}: {v * 1e3:8.1f} ms/step  {tok / v:8.0f} tokens/s")
    print(f"bf16 autocast / fp32 speed: {med['fp32'] / med['bf16 autocast']:.2f}x")
    print("recurrent state dtypes under autocast:", ", ".join(state_dtypes))
    print("step  " + "  ".join(f"{k:>14}" for k in losses))
    for s in range(args.steps):
        print(f"{s:4d}  " + "  ".join(f"{losses[k][s]:14.4f}" for k in losses))


if __name__ == "__main__":
    main()

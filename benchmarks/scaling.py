"""Time per token against sequence length T for training (B = 1) and prefill (B = 1, no grad): xlstmkit's
xLSTMLM (d = 256, 6 blocks, one sLSTM) and, where it fits, the official model built with the same weights.
Prints JSON lines and draws benchmarks/results/scaling.png.

    python benchmarks/scaling.py [--max-len 16384] [--official-max-len 4096]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from measure import LMUnderTest, interleave, train_step_fn  # noqa: E402
from suite_official import V, official_model  # noqa: E402

from xlstmkit.interop.official import from_official  # noqa: E402

OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-len", type=int, default=16384)
    ap.add_argument("--official-max-len", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = [256 * 2**k for k in range(20) if 256 * 2**k <= args.max_len]
    off = official_model(context_length=min(args.official_max_len, args.max_len))
    ours_model = from_official(off)
    rows = []
    for T in lengths:
        ids = torch.randint(0, V, (1, T), generator=torch.Generator().manual_seed(T))
        lms = {"xlstmkit": LMUnderTest("xlstmkit", ours_model, logits=ours_model)}
        if T <= args.official_max_len:
            lms["official xlstm"] = LMUnderTest("official xlstm", off, logits=off)
        train = interleave({k: train_step_fn(lm, 1, T, V) for k, lm in lms.items()}, repeats=args.repeats)

        def prefill(lm):
            def run():
                lm.model.eval()
                with torch.no_grad():
                    if lm.name == "xlstmkit":
                        lm.model(ids, return_state=True)
                    else:
                        lm.model(ids)
            return run

        pre = interleave({k: prefill(lm) for k, lm in lms.items()}, repeats=args.repeats)
        for k in lms:
            row = {"T": T, "model": k, "train_us_per_token": 1e6 * train[k] / T,
                   "prefill_us_per_token": 1e6 * pre[k] / T}
            rows.append(row)
            print(json.dumps(row), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "scaling.json").write_text(json.dumps(rows, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "train_us_per_token", "training (B=1)"),
                           (axes[1], "prefill_us_per_token", "prefill (B=1)")):
        for model in sorted({r["model"] for r in rows}):
            pts = [(r["T"], r[key]) for r in rows if r["model"] == model]
            ax.plot(*zip(*pts), marker="o", label=model)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("time per token (µs)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("xLSTM d=256, 6 blocks (one sLSTM), fp32, CPU")
    fig.tight_layout()
    fig.savefig(OUT / "scaling.png", dpi=120)
    print(f"wrote {OUT / 'scaling.png'}")


if __name__ == "__main__":
    main()

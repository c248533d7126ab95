"""TiRex forecast latency on the CPU: the ``tirex-ts`` package's torch backend against TiRex on xlstmkit (its sLSTM
recurrence in xlstmkit's native loop), side by side in one process, the same random weights in both.

    python benchmarks/tirex_latency.py [--threads 1] [--repeats 5] [--batches 1 256] [--context 2048] [--horizon 32]

The published 35M configuration (12 blocks of width 512, patch 32, context 2048) with seeded random weights (the
latency does not depend on the values; nothing is downloaded). One call = ``model.forecast(context,
prediction_length)`` on a (B, context) float32 batch, the package's own public API on both sides. Medians of
interleaved repeats (one warm-up call each). tirex-ts runs its recurrence in bf16 with float32 pointwise maths
(``compile=False``, its default; ``--compile`` adds its torch.compile'd cell as a third contender); xlstmkit runs in
float32. Prints a markdown table and the load average seen before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from measure import interleave  # noqa: E402

HP = {"model_config": {"input_patch_size": 32, "output_patch_size": 32,
                       "quantiles": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                       "block_kwargs": {"embedding_dim": 512, "num_heads": 4, "num_blocks": 12,
                                        "ffn_proj_factor": 2.6667},
                       "input_ff_dim": 2048},
      "train_ctx_len": 2048}


def build(compile_ref: bool):
    from tirex.models.slstm.cell import sLSTMCellTorch
    from tirex.models.tirex import TiRexZero

    from xlstmkit.interop.tirex import config_from_hparams, from_state_dict

    ref = TiRexZero(backend="torch", **HP).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith(("norm_slstm.weight", "norm_ffn.weight")) or name == "out_norm.weight":
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.5)
    ours = from_state_dict(ref.state_dict(), config_from_hparams(HP))
    models = {"tirex-ts (torch backend)": ref, "xlstmkit TiRex (native sLSTM)": ours}
    if compile_ref:
        import copy

        comp = copy.deepcopy(ref)
        fn = torch.compile(sLSTMCellTorch.slstm_forward)
        for block in comp.blocks:
            block.slstm_layer.slstm_cell._impl_forward_torch = fn
        models["tirex-ts (torch backend, compiled)"] = comp
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--horizon", type=int, default=32)
    ap.add_argument("--compile", action="store_true", help="also time tirex-ts with its compiled cell")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    models = build(args.compile)
    rows = []
    for B in args.batches:
        ctx = torch.randn(B, args.context, generator=torch.Generator().manual_seed(B)).cumsum(1)
        fns = {}
        for name, m in models.items():
            if name.startswith("tirex-ts"):
                fns[name] = (lambda m=m: m.forecast(ctx, prediction_length=args.horizon, output_type="torch",
                                                    batch_size=max(B, 1)))
            else:
                fns[name] = (lambda m=m: m.forecast(ctx, prediction_length=args.horizon))
        with torch.inference_mode():
            times = interleave(fns, args.repeats)
        base = times["tirex-ts (torch backend)"]
        for name, t in times.items():
            rows.append((B, name, t, base / t))
            print(f"batch {B:>4}  {name:<36} {t:9.3f} s  x{base / t:5.2f} vs tirex-ts", flush=True)
    load_after = os.getloadavg()
    print()
    print(f"context {args.context}, horizon {args.horizon}, {args.threads} thread(s), medians of {args.repeats} "
          f"interleaved repeats; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print()
    print("| batch | implementation | seconds per forecast | speed-up vs tirex-ts |")
    print("|---|---|---|---|")
    for B, name, t, s in rows:
        print(f"| {B} | {name} | {t:.3f} | {s:.2f}x |")


if __name__ == "__main__":
    main()

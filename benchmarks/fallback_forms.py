"""Why two PyTorch fast forms restate a step instead of calling its definition (docs/native.md, issue 11).

    python benchmarks/fallback_forms.py [--threads 1] [--repeats 7]

1. The sLSTM time loop taken without a C compiler (`ops/slstm/sequence.py` `_forward_loop`, writing each step into
   preallocated buffers) against the same loop written as one call of the definition `ops/slstm/cell.py`
   `slstm_cell` per step: seconds per step, both checked to agree.
2. xLSTMLarge's one-token step at batch 1: the native per-block step, the fused PyTorch step
   (`models/xlstm_large/decode.py`, taken where the native one does not run: no compiler, a GPU,
   `XLSTMKIT_NATIVE_DECODE=0`) and the plain `block.step` over the ops' `mlstm_step`.

Medians of interleaved repeats in one process.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from measure import interleave  # noqa: E402
from xlstmkit.models.native_decode import use_native_decode  # noqa: E402
from xlstmkit.models.xlstm_large import xLSTMLarge, xLSTMLargeConfig  # noqa: E402
from xlstmkit.ops.slstm import sequence  # noqa: E402
from xlstmkit.ops.slstm.cell import slstm_cell  # noqa: E402


def folded_loop(gx, R, cn, m, h, raws, keep, forget_gate) -> None:
    """`_forward_loop`'s contract, as one `slstm_cell` call per step."""
    S, NH, B, G = gx.shape
    DH = G // 4
    gxs, raw_s, m_s, h_s = gx.unbind(0), raws.unbind(0), m.unbind(0), h.unbind(0)
    c_s, n_s = cn[:, 0].unbind(0), cn[:, 1].unbind(0)
    i_s, f_s, z_s, o_s = (raws[..., k * DH:(k + 1) * DH].unbind(0) for k in range(4))
    for t in range(S):
        torch.baddbmm(gxs[t], h_s[t], R, out=raw_s[t])
        new = slstm_cell(i_s[t], f_s[t], z_s[t], o_s[t], c_s[t], n_s[t], m_s[t], forget_gate)
        for seq, x in zip((c_s, n_s, m_s, h_s), new):
            seq[t + 1].copy_(x if keep is None else torch.where(keep[t], x, seq[t]))


def slstm_loops(repeats: int) -> list[str]:
    lines = ["| (B, S, NH, DH) | in-place loop, us/step | slstm_cell per step, us/step | ratio | max difference |",
             "|---|---|---|---|---|"]
    for B, S, NH, DH in [(1, 256, 4, 32), (8, 256, 4, 64)]:
        torch.manual_seed(0)
        gx, R = torch.randn(S, NH, B, 4 * DH), torch.randn(NH, DH, 4 * DH) * 0.1

        def buffers():
            return (torch.zeros(S + 1, 2, NH, B, DH), torch.zeros(S + 1, NH, B, DH), torch.zeros(S + 1, NH, B, DH),
                    torch.empty_like(gx))

        outs = []
        for loop in (sequence._forward_loop, folded_loop):
            cn, m, h, raws = buffers()
            loop(gx, R, cn, m, h, raws, None, "sigmoid")
            outs.append((cn, m, h))
        diff = max((a - b).abs().max().item() for a, b in zip(*outs))

        def run(loop):
            def f():
                loop(gx, R, *buffers(), None, "sigmoid")
            return f

        t = interleave({"loop": run(sequence._forward_loop), "cell": run(folded_loop)}, repeats=repeats)
        lines.append(f"| {(B, S, NH, DH)} | {1e6 * t['loop'] / S:.1f} | {1e6 * t['cell'] / S:.1f} | "
                     f"{t['cell'] / t['loop']:.2f}x | {diff:.1e} |")
    return lines


def large_steps(repeats: int, n: int = 64) -> list[str]:
    lines = ["| d | native per-block, tokens/s | fused PyTorch step | plain block.step |", "|---|---|---|---|"]
    for d in (256, 1024):
        torch.manual_seed(0)
        cfg = xLSTMLargeConfig(vocab_size=256, embedding_dim=d, num_blocks=6, num_heads=4)
        fused = xLSTMLarge(cfg).eval()
        plain = xLSTMLarge(dataclasses.replace(cfg, fused=False)).eval()
        plain.load_state_dict(fused.state_dict())
        tok = torch.tensor([3])

        def run(model, native: bool):
            def f():
                with torch.no_grad(), use_native_decode(native):
                    state = None
                    for _ in range(n):
                        _, state = model.decode_step(tok, state)
            return f

        t = interleave({"native": run(fused, True), "fused": run(fused, False), "plain": run(plain, False)},
                       repeats=repeats)
        lines.append(f"| {d} | {n / t['native']:.0f} | {n / t['fused']:.0f} | {n / t['plain']:.0f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s), load average {' / '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print("\n".join(slstm_loops(args.repeats)) + "\n")
    print("\n".join(large_steps(args.repeats)))


if __name__ == "__main__":
    main()

"""The whole benchmark table in one command: xlstmkit against the official `xlstm` package, transformers' xLSTM and
a transformers Llama of matched parameter count; training, forward, prefill and generation tokens/s and peak memory,
plus the matrix-multiply peak of this machine and the scaling plot.

    python benchmarks/suite.py            # full run (tens of minutes on 2 cores)
    python benchmarks/suite.py --quick    # smoke run: shorter sequences, one repeat

Each comparison runs in its own process (the official package and transformers' native path cannot share one),
with the peer and xlstmkit side by side in it. Writes benchmarks/results/table.md and scaling.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent
OUT = HERE / "results"
sys.path.insert(0, str(HERE))
from measure import matmul_peak_gflops  # noqa: E402


def run_lines(script: str, *extra: str) -> list[str]:
    cmd = [sys.executable, str(HERE / script), *extra]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{script} failed with exit code {proc.returncode}")
    return proc.stdout.splitlines()


def run(script: str, *extra: str) -> list[dict]:
    """A suite script's results: its JSON lines."""
    return [json.loads(line) for line in run_lines(script, *extra) if line.startswith("{")]


def fmt(v) -> str:
    if isinstance(v, str):
        return v
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def table(rows: list[dict], ours: str) -> str:
    names: list[str] = []
    for r in rows:
        for k in r:
            if k not in ("suite", "what", "unit") and k not in names:
                names.append(k)
    lines = ["| measurement | unit | " + " | ".join(names) + f" | {ours} / best peer |",
             "|---|---|" + "---|" * (len(names) + 1)]
    for r in rows:
        cells = [fmt(r[n]) if n in r else "" for n in names]
        ratio = ""
        nums = {n: r[n] for n in names if isinstance(r.get(n), (int, float))}
        peers = {n: v for n, v in nums.items() if not n.startswith("xlstmkit")}
        if r.get("unit") == "tokens/s" and ours in nums and peers:
            ratio = f"{nums[ours] / max(peers.values()):.2f}x"
        lines.append(f"| {r['what']} | {r.get('unit', '')} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def merge(rows: list[dict]) -> list[dict]:
    """Rows of one measurement that arrive per model (peak memory) joined into one row."""
    merged: dict[tuple, dict] = {}
    for r in rows:
        key = (r["suite"], r["what"], r.get("unit"))
        merged.setdefault(key, {}).update(r)
    return list(merged.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in every measurement (0 = torch default; "
                    "use 1 on a machine that other work shares: oversubscribed threads distort every figure)")
    args = ap.parse_args()
    extra = (["--quick"] if args.quick else []) + (["--threads", str(args.threads)] if args.threads else [])
    if args.threads:
        torch.set_num_threads(args.threads)
    OUT.mkdir(exist_ok=True)
    peak32, peak16 = matmul_peak_gflops(torch.float32), matmul_peak_gflops(torch.bfloat16)
    official = merge(run("suite_official.py", *extra))
    hf_rows = merge(run("suite_hf.py", *extra))
    parts = [
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}; matmul peak {peak32:.0f} GFLOP/s fp32, {peak16:.0f} GFLOP/s bf16 "
        f"(best of 5 1024^3 products, measured now); load average before the run: {os.getloadavg()[0]:.1f}.",
        "",
        "### The paper's model: official `xlstm` vs xlstmkit (`from_official`, same weights)",
        "",
        table(official, "xlstmkit"),
        "",
        "### xLSTM-7B architecture: transformers vs xlstmkit `xLSTMLarge` (same weights), and a matched Llama",
        "",
        table(hf_rows, "xlstmkit xLSTMLarge"),
        "",
        "### The sLSTM time loop alone: official `vanilla` loop vs xlstmkit's PyTorch and native loops",
        "",
        *run_lines("slstm_loop.py", "--threads", str(torch.get_num_threads()), "--repeats",
                   "2" if args.quick else "5"),
    ]
    # achieved FLOP/s of xlstmkit's training at B=8, T=256 (6 N FLOPs per token, N = parameters)
    for rows, name in ((official, "xlstmkit"), (hf_rows, "xlstmkit xLSTMLarge")):
        params = next((r[name] for r in rows if r["what"] == "params"), None)
        train = next((r[name] for r in rows if r["what"] == "train B=8 T=256" and name in r
                      and isinstance(r[name], (int, float))), None)
        if params and train:
            gflops = 6 * params * train / 1e9
            parts.append(f"\n{name}: training at B=8, T=256 achieves about {gflops:.1f} GFLOP/s "
                         f"(6 N per token), {100 * gflops / peak32:.0f}% of the fp32 matmul peak.")
    text = "\n".join(parts)
    # a smoke run keeps the results; one thread is the reference table, other thread counts get their own file
    name = "table-quick.md" if args.quick else ("table.md" if args.threads == 1 else
                                                f"table-{torch.get_num_threads()}threads.md")
    (OUT / name).write_text(text + "\n")
    print(text)
    if not args.skip_scaling:
        scaling = (["--max-len", "2048", "--official-max-len", "1024"] if args.quick else []) + \
            (["--threads", str(args.threads)] if args.threads else [])
        run("scaling.py", *scaling)
        print(f"\nscaling plot: {OUT / 'scaling.png'}")


if __name__ == "__main__":
    main()

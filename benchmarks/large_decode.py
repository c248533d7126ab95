"""xLSTMLarge decoding at full size against the memory-bandwidth bound (issue 17, item 2), and against transformers.

    python benchmarks/large_decode.py [--sizes 300m 7b] [--threads 1,2] [--tokens 8] [--dir /var/tmp/xlstmkit-large]
                                      [--transformers 300m] [--out benchmarks/results/large_decode.md]

For each size, a checkpoint with random bfloat16 weights is written once with `xlstmkit.interop.hf.save` (4 shards,
the hub's layout, about a quarter each; 7b is xLSTM-7B's shapes, 6.87B parameters, 13.7 GB), then each (size, threads) is measured in a
fresh process, so that peaks and page caches of one do not flatter another:

    load         `hf.load(folder)`: meta-device model, weights memory-mapped (zero copy)
    first token  the first `decode_step` (the weights are paged in from the page cache or the disk)
    decode       median seconds per token of the next --tokens greedy steps (batch 1, native per-block step
                 reading the bf16 weights where they lie)
    bound        the time to read every weight once: the median of timed `tensor.sum()` passes over all the
                 model's weights in the same process and threads (weight bytes / that time = the read bandwidth)
    peak memory  VmHWM of the process, and its anonymous part (allocations; the mapped weights are file pages)

`--transformers SIZE` also times transformers' `xLSTMForCausalLM` (same folder, bf16, `generate` with its cache,
greedy, batch 1) against `xLSTMLarge.generate` side by side in one process (interleaved medians).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from measure import cpu_model  # noqa: E402
SIZES = {  # xLSTMLargeConfig overrides
    "300m": dict(embedding_dim=1024, num_heads=4, num_blocks=24),
    "7b": {},
}


def config(size: str):
    from xlstmkit.models.xlstm_large import xLSTMLargeConfig

    return xLSTMLargeConfig(**SIZES[size])


def write_checkpoint(size: str, folder: Path) -> None:
    """Random bf16 weights (normal, std 0.02; norm scales near 1) written as 4 shards; skipped if present."""
    import torch

    from xlstmkit.interop import hf
    from xlstmkit.models.xlstm_large import xLSTMLarge

    if (folder / "config.json").exists():
        return
    cfg = config(size)
    with torch.device("meta"):
        model = xLSTMLarge(cfg)
    model = model.to(torch.bfloat16).to_empty(device="cpu")  # allocated once, in bf16 (never float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.zero_() if "bias" in name else p.normal_(0.0, 0.02, generator=g)
            else:
                p.normal_(0.0, 0.02, generator=g)
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    hf.save(model, folder, max_shard_size=total // 4 + 1)


def rss() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmHWM", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) / 2**20  # kB -> GB
    return out


def measure(folder: Path, threads: int, tokens: int) -> dict:
    """In this (fresh) process: load, first token, steady decode, the read bound, peak memory."""
    import torch

    from xlstmkit.interop import hf

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model = hf.load(folder)
    load_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    tok = torch.tensor([3])
    times = []
    with torch.inference_mode():
        state = None
        for i in range(tokens + 1):
            t0 = time.perf_counter()
            logits, state = model.decode_step(tok, state, reuse_state=i > 0)
            tok = logits.argmax(-1)
            times.append(time.perf_counter() - t0)
        reads = []
        params = list(model.parameters())
        for _ in range(3):
            t0 = time.perf_counter()
            for p in params:
                p.sum()
            reads.append(time.perf_counter() - t0)
    read_s = statistics.median(reads)
    step_s = statistics.median(times[1:])
    return dict(threads=threads, params=n_params, weight_gb=weight_bytes / 1e9, load_s=load_s, first_token_s=times[0],
                step_s=step_s, tokens_per_s=1 / step_s, read_s=read_s, read_gb_per_s=weight_bytes / 1e9 / read_s,
                over_bound=step_s / read_s, finite=bool(torch.isfinite(logits).all()), **rss())


def versus_transformers(folder: Path, threads: int, tokens: int) -> dict:
    """xLSTMLarge.generate vs transformers' generate on the same folder, bf16, greedy, batch 1, interleaved."""
    import torch
    from transformers import xLSTMForCausalLM

    from measure import interleave

    from xlstmkit.interop import hf

    torch.set_num_threads(threads)
    ours = hf.load(folder)
    theirs = xLSTMForCausalLM.from_pretrained(folder, torch_dtype=torch.bfloat16).eval()
    prompt = torch.randint(0, 1000, (1, 16), generator=torch.Generator().manual_seed(0))

    def run_theirs():
        with torch.no_grad():
            theirs.generate(prompt, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, use_cache=True,
                            pad_token_id=0)

    def run_ours():
        ours.generate(prompt, tokens)

    t = interleave({"transformers": run_theirs, "xlstmkit": run_ours}, repeats=3)
    return {"threads": threads, "tokens": tokens, "transformers_tokens_per_s": tokens / t["transformers"],
            "xlstmkit_tokens_per_s": tokens / t["xlstmkit"], "ratio": t["transformers"] / t["xlstmkit"]}


def child(args) -> None:
    folder = Path(args.child_folder)
    if args.child_kind == "measure":
        out = measure(folder, args.child_threads, args.tokens)
    else:
        out = versus_transformers(folder, args.child_threads, args.tokens)
    print("RESULT " + json.dumps(out), flush=True)


def spawn(kind: str, folder: Path, threads: int, tokens: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, __file__, "--child-kind", kind, "--child-folder", str(folder),
                           "--child-threads", str(threads), "--tokens", str(tokens)], env=env, capture_output=True,
                          text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{kind} {folder} at {threads} threads failed:\n{proc.stderr[-3000:]}")


def load_average() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def table(rows: list[dict], versus: list[dict], meta: dict) -> str:
    lines = ["# xLSTMLarge decoding at full size (bf16 weights, batch 1)", "",
             f"`python benchmarks/large_decode.py {meta['argv']}` on {meta['cpu']} ({os.cpu_count()} logical CPUs), "
             f"torch {meta['torch']}, {meta['date']}; load average {meta['load_before']} before, "
             f"{meta['load_after']} after. Random bf16 weights written once with `hf.save` (shards of about a "
             "quarter of the weights each), each row a fresh process: `hf.load` (memory-mapped), the first "
             "`decode_step`, then the median of the next steps; the bound is the median time of reading every "
             "weight once (`tensor.sum()` over all weights, same process and threads).", "",
             "| size | parameters | weights GB | threads | load s | first token s | s per token | tokens/s | "
             "read-all-weights s (bound) | read GB/s | x bound | peak RSS GB (anonymous) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['params'] / 1e6:,.0f}M | {r['weight_gb']:.2f} | {r['threads']} | "
                     f"{r['load_s']:.2f} | {r['first_token_s']:.2f} | {r['step_s']:.3f} | {r['tokens_per_s']:.2f} | "
                     f"{r['read_s']:.3f} | {r['read_gb_per_s']:.1f} | {r['over_bound']:.2f} | "
                     f"{r['VmHWM']:.2f} ({r['RssAnon']:.2f}) |")
    if versus:
        lines += ["", "Against transformers' `xLSTMForCausalLM` on the same folder (bf16, greedy, 16-token prompt, "
                  "`generate` with its cache, interleaved medians of 3):", "",
                  "| size | threads | new tokens | transformers tokens/s | xlstmkit tokens/s | ratio |",
                  "|---|---|---|---|---|---|"]
        for v in versus:
            lines.append(f"| {v['size']} | {v['threads']} | {v['tokens']} | {v['transformers_tokens_per_s']:.2f} | "
                         f"{v['xlstmkit_tokens_per_s']:.2f} | {v['ratio']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["300m", "7b"], choices=sorted(SIZES))
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--tokens", type=int, default=8, help="steady decode steps timed (after the first)")
    ap.add_argument("--dir", default="/var/tmp/xlstmkit-large", help="where the checkpoints are written (kept)")
    ap.add_argument("--transformers", nargs="*", default=["300m"], help="sizes also timed against transformers")
    ap.add_argument("--versus-tokens", type=int, default=32, help="new tokens per generate() against transformers")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "large_decode.md"))
    ap.add_argument("--child-kind", help=argparse.SUPPRESS)
    ap.add_argument("--child-folder", help=argparse.SUPPRESS)
    ap.add_argument("--child-threads", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_kind:
        return child(args)
    import torch

    meta = dict(argv=" ".join(sys.argv[1:]), cpu=cpu_model(), torch=torch.__version__, load_before=load_average(),
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    rows, versus = [], []
    for size in args.sizes:
        folder = Path(args.dir) / size
        t0 = time.perf_counter()
        write_checkpoint(size, folder)
        print(f"{size}: checkpoint at {folder} ({time.perf_counter() - t0:.0f} s)", flush=True)
        for threads in (int(t) for t in args.threads.split(",")):
            r = spawn("measure", folder, threads, args.tokens)
            r["size"] = size
            rows.append(r)
            print(json.dumps(r), flush=True)
            if size in args.transformers:
                v = spawn("versus", folder, threads, args.versus_tokens)
                v["size"] = size
                versus.append(v)
                print(json.dumps(v), flush=True)
    meta["load_after"] = load_average()
    Path(args.out).write_text(table(rows, versus, meta))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Peak memory of `xlstmkit.interop.hf.load` on a generated ~1 GB checkpoint, against the checkpoint size.

    python benchmarks/hf_load_memory.py [--size-gb 1.0] [--keep DIR]

Writes a random xLSTM-Large checkpoint (float32, sharded like the hub's) to a temporary folder, then, each in a fresh
process so that peaks do not mix, loads it:

    hf.load               meta-device construction + memory-mapped safetensors (what we ship)
    no-mmap               hf.load(mmap=False): each tensor read into its own memory, one at a time
    bf16                  hf.load(dtype=torch.bfloat16): the same with a per-tensor cast
    naive                 xLSTMLarge(config) + load_state_dict(safetensors.torch.load_file(...)) for contrast

and reports the process's peak RSS (resource.getrusage ru_maxrss) above the baseline after imports, split at the end
into anonymous memory (allocations) and file-backed pages (the memory-mapped checkpoint, shared with the page
cache and reclaimable), both right after loading and after one forward pass, which touches every weight.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

MB = 2**20


def _status() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024  # kB -> MB
    return out


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def make(folder: Path, size_gb: float) -> None:
    import torch

    from xlstmkit.interop import hf
    from xlstmkit.models.xlstm_large import xLSTMLarge, xLSTMLargeConfig

    torch.manual_seed(0)
    base = dict(vocab_size=50304, embedding_dim=1024, num_heads=4)
    per_block = sum(p.numel() for p in xLSTMLarge(xLSTMLargeConfig(**base, num_blocks=1)).blocks[0].parameters())
    fixed = 2 * 50304 * 1024 + 1024
    num_blocks = max(1, round((size_gb * 1e9 / 4 - fixed) / per_block))
    model = xLSTMLarge(xLSTMLargeConfig(**base, num_blocks=num_blocks))
    hf.save(model, folder, max_shard_size="300MB")


def measure(folder: Path, mode: str) -> dict:
    import torch

    import xlstmkit.interop.hf as hf
    from xlstmkit.models.xlstm_large import xLSTMLarge

    torch.set_num_threads(1)
    base = _peak_mb()
    if mode == "naive":
        from safetensors.torch import load_file

        cfg = hf.config_from_hf(json.loads((folder / "config.json").read_text()))
        model = xLSTMLarge(cfg)
        state = {}
        for shard in sorted(folder.glob("model-*.safetensors")):
            state.update(load_file(shard))
        renamed = {}
        for k, v in state.items():
            k = k.removeprefix("backbone.")
            renamed["embedding.weight" if k == "embeddings.weight" else k] = v
        model.load_state_dict(renamed)
        del state, renamed
    else:
        model = hf.load(folder, dtype=torch.bfloat16 if mode == "bf16" else None, mmap=mode != "no-mmap")
    after_load = {"peak_above_baseline_mb": _peak_mb() - base, **_status()}
    with torch.no_grad():
        model(torch.zeros(1, 8, dtype=torch.long))
    after_forward = {"peak_above_baseline_mb": _peak_mb() - base, **_status()}
    params_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / MB
    return {"mode": mode, "baseline_mb": base, "params_mb": params_mb, "after_load": after_load,
            "after_forward": after_forward}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0, help="checkpoint size to generate (float32)")
    parser.add_argument("--keep", type=Path, default=None, help="write the checkpoint here and keep it")
    parser.add_argument("--_measure", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--_make", nargs=2, metavar=("FOLDER", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._make:
        make(Path(args._make[0]), float(args._make[1]))
        return 0
    if args._measure:
        print(json.dumps(measure(Path(args._measure[0]), args._measure[1])))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "ckpt"
        subprocess.run([sys.executable, __file__, "--_make", str(folder), str(args.size_gb)], check=True)
        ckpt_mb = sum(p.stat().st_size for p in folder.glob("*.safetensors")) / MB
        print(f"checkpoint: {ckpt_mb:.0f} MB in {len(list(folder.glob('*.safetensors')))} safetensors shards")
        print(f"{'mode':<10} {'peak RSS above baseline':>24} {'/ ckpt':>7} {'anon':>8} {'file':>8}   "
              f"{'after forward: peak':>20} {'/ ckpt':>7} {'anon':>8} {'file':>8}")
        for mode in ("hf.load", "no-mmap", "bf16", "naive"):
            proc = subprocess.run([sys.executable, __file__, "--_measure", str(folder), mode], check=True,
                                  capture_output=True, text=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            a, f = r["after_load"], r["after_forward"]
            print(f"{mode:<10} {a['peak_above_baseline_mb']:>21.0f} MB {a['peak_above_baseline_mb'] / ckpt_mb:>7.2f} "
                  f"{a['RssAnon']:>8.0f} {a['RssFile']:>8.0f}   {f['peak_above_baseline_mb']:>17.0f} MB "
                  f"{f['peak_above_baseline_mb'] / ckpt_mb:>7.2f} {f['RssAnon']:>8.0f} {f['RssFile']:>8.0f}")
        print("(MB; anon/file = current anonymous / file-backed resident memory of the whole process; baseline = "
              "peak RSS after importing torch and xlstmkit)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

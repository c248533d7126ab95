"""What the benchmark suite measures, for any causal LM given as callables: training, forward, prefill and
generation throughput (medians), and peak resident memory while an operation runs.

Every number comes from the calling process, so a peer and xlstmkit measured in the same script see the same
machine; `interleave` alternates them repeat by repeat so that noise hits both alike.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch


def suite_args() -> argparse.Namespace:
    """The options every suite script takes (and applies: the thread count)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats and shorter sequences (a smoke run)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--peak-memory", metavar="NAME", help=argparse.SUPPRESS)  # internal: one model, fresh process
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.forward = [*(["--quick"] if args.quick else []), *(["--threads", str(args.threads)] if args.threads else [])]
    return args


def emit(**row) -> None:
    """One result as a JSON line on stdout (what benchmarks/suite.py collects)."""
    print(json.dumps(row), flush=True)


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident set size above the starting level while the `with` block runs (sampled every 2 ms)."""

    def __enter__(self) -> PeakRSS:
        self.start = rss_bytes()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), for the tables' machine line."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def interleave(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, measured round-robin."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def matmul_peak_gflops(dtype: torch.dtype = torch.float32, n: int = 1024, repeats: int = 5) -> float:
    """The machine's achieved matrix-multiply rate (GFLOP/s) for an n x n x n product: the roofline we report
    model FLOP/s against."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):  # the best time: a peak, not a typical rate, on a machine that may be busy
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def peak_train_memory_mb(lm: LMUnderTest, B: int, T: int, vocab: int) -> float:
    """Peak resident memory of one training step above what the process held before it, in MB. Call it in a fresh
    process (see `peak_memory_of`): an allocator that already grew for an earlier step would hide the peak."""
    step = train_step_fn(lm, B, T, vocab)
    gc.collect()
    _reset_peak_rss()
    base = rss_bytes()
    with PeakRSS() as sampled:
        step()
    return (max(sampled.peak, _peak_rss_since_reset()) - base) / 2**20


def _reset_peak_rss() -> None:
    """Reset the kernel's high-water mark of this process (Linux: VmHWM), so imports and model building do not count."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_rss_since_reset() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory_of(script: str, name: str, *extra: str) -> float:
    """Run `script --peak-memory NAME` in a fresh interpreter and return the MB it reports."""
    out = subprocess.run([sys.executable, script, "--peak-memory", name, *extra], capture_output=True, text=True,
                         check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_mb"])


@dataclass
class LMUnderTest:
    """A causal LM reduced to what the suite calls.

    logits(ids) -> (B, S, V) tensor; prefill(ids) runs the prompt and returns whatever generation continues from
    (None if the model cannot carry state); step(token (B, 1), state) -> state; generate(ids, n) -> ids.
    """

    name: str
    model: torch.nn.Module
    logits: Callable[[torch.Tensor], torch.Tensor]
    generate: Callable[[torch.Tensor, int], object] | None = None
    prefill: Callable[[torch.Tensor], object] | None = None
    step_through: Callable[[torch.Tensor], object] | None = None  # feeds a prompt one token at a time
    notes: list[str] = field(default_factory=list)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def train_step_fn(lm: LMUnderTest, B: int, T: int, vocab: int, bf16: bool = False) -> Callable[[], None]:
    """One optimiser step of next-token cross-entropy on random tokens (forward, backward, AdamW)."""
    ids = torch.randint(0, vocab, (B, T + 1), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(lm.model.parameters(), lr=1e-4)
    lm.model.train()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = lm.logits(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def forward_fn(lm: LMUnderTest, B: int, T: int, vocab: int) -> Callable[[], None]:
    ids = torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(1))

    def fwd() -> None:
        lm.model.eval()
        with torch.no_grad():
            lm.logits(ids)

    return fwd

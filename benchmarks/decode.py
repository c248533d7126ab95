"""Decoding speed side by side in one process (docs/inference.md): the official `xlstm` package's `step()` loop,
xlstmkit's PyTorch decode step, and xlstmkit's native decoder (float32, bfloat16 and int8 weights), on the same
weights (`from_official`), greedy, medians of interleaved repeats.

    flock /work/wt/timing.lock python benchmarks/decode.py --threads 1,2 [--batches 1] [--tokens 128] [--repeats 7]
        [--pattern "xLSTM[7:1]"] [--blocks 6] [--dim 256] [--bound] [--out benchmarks/results/decode.md]

Model: the paper's language model at d = 256 (4 heads, convolution 4, sLSTM feed-forward 1.3, GeLU), 6 blocks, a
byte vocabulary, its sLSTM blocks where `--pattern` puts them (xLSTM[7:1] over 6 blocks: block 3). Each
implementation decodes `--tokens` tokens from a one-token prompt, its own loop:

- official step(): `model.step(tok (B, 1), state)` under no_grad, as the package's own generation does;
- xlstmkit PyTorch: `decode_step` with the native decoder switched off (`use_native_decode(False)`; the ops'
  native one-token cells still run), under inference_mode;
- xlstmkit native: `decode_step(..., reuse_state=True)` after the first step (what `generate` does), float32
  weights; then the same model converted with `quantize_(model, "bf16")` and `quantize_(model, "int8")`;
- xlstmkit generate(): the public call (native float32), for its overhead over the raw loop, greedy and sampled
  (temperature 0.8, top-k 50, seeded).

`--bound` adds, at batch 1, the memory bound: the bytes a token needs (every weight but the embedding's, plus the
recurrent state read and written) over the read bandwidth `tensor.sum()` reaches on 1 GB at the same thread count,
and the best ratio to the official loop that leaves any implementation.

Writes a markdown table (tokens/s = batch x tokens / median seconds; ratio to the official loop) with the CPU
model, torch version, thread count and the load average before and after each thread count, and prints it.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from measure import cpu_model, interleave  # noqa: E402
from xlstmkit.config import parse_block_pattern  # noqa: E402
from xlstmkit.interop.official import from_official  # noqa: E402
from xlstmkit.models.native_decode import use_native_decode  # noqa: E402
from xlstmkit.quantize import quantize_, weight_bytes  # noqa: E402

V = 256



def load() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def official_model(dim: int, blocks: int, slstm_at: list[int]):
    from xlstm import (FeedForwardConfig, mLSTMBlockConfig, mLSTMLayerConfig, sLSTMBlockConfig, sLSTMLayerConfig,
                       xLSTMLMModel, xLSTMLMModelConfig)

    cfg = xLSTMLMModelConfig(
        vocab_size=V, embedding_dim=dim, num_blocks=blocks, context_length=256, slstm_at=slstm_at,
        mlstm_block=mLSTMBlockConfig(mlstm=mLSTMLayerConfig(num_heads=4, conv1d_kernel_size=4)),
        slstm_block=sLSTMBlockConfig(slstm=sLSTMLayerConfig(backend="vanilla", num_heads=4, conv1d_kernel_size=4),
                                     feedforward=FeedForwardConfig(proj_factor=1.3, act_fn="gelu")),
    )
    torch.manual_seed(0)
    model = xLSTMLMModel(cfg)
    model.reset_parameters()
    return model.eval()


def loops(off, ours, bf16, int8, B: int, n: int) -> dict:
    first = torch.randint(0, V, (B,), generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def official() -> None:
        state, tok = None, first[:, None]
        for _ in range(n):
            logits, state = off.step(tok, state=state)
            tok = logits[:, -1].argmax(-1, keepdim=True)

    def ours_loop(model, native_on: bool):
        @torch.inference_mode()
        def run() -> None:
            with use_native_decode(native_on):
                state, tok = None, first
                for i in range(n):
                    logits, state = model.decode_step(tok, state, reuse_state=i > 0)
                    tok = logits.argmax(-1)
        return run

    def generate() -> None:
        ours.generate(first[:, None], n)

    def generate_sampled() -> None:  # temperature 0.8, top-k 50: what a chat loop does per token
        ours.generate(first[:, None], n, temperature=0.8, top_k=50, seed=0)

    return {"official xlstm step()": official, "xlstmkit PyTorch decode_step": ours_loop(ours, False),
            "xlstmkit native, float32 weights": ours_loop(ours, True), "xlstmkit generate() (native f32)": generate,
            "xlstmkit generate() sampled (native f32)": generate_sampled,
            "xlstmkit native, bf16 weights": ours_loop(bf16, True),
            "xlstmkit native, int8 weights": ours_loop(int8, True)}


def read_bandwidth(repeats: int = 5, gb: float = 1.0) -> float:
    """Bytes per second that `tensor.sum()` reads from a float32 array of `gb` GB (far beyond the caches) at the
    current thread count, the median of `repeats` passes: what this machine streams from memory."""
    x = torch.ones(int(gb * 2**30) // 4)
    x.sum()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - start)
    return x.numel() * 4 / statistics.median(times)


def memory_bound_lines(models: dict, official_s_per_token: float, threads: int) -> list[str]:
    """The fastest any implementation could decode batch 1 if every byte a token needs came from memory: the weights
    it multiplies (all but the embedding, of which it reads one row) plus the recurrent state, read and written once
    (float32), over the measured read bandwidth; and that time as a ratio to the official loop. At d = 256 the
    weights fit in this CPU's L3 and the bound does not bind; at d = 1024 it does."""
    bw = read_bandwidth()
    lines = [f"Memory bound at {threads} thread{'s' if threads > 1 else ''} (`tensor.sum()` over 1 GB: "
             f"{bw / 1e9:.1f} GB/s):", "", "| weights | weight bytes per token | state bytes (read + write) | "
             "bound, ms per token | best possible vs official |", "|---|---:|---:|---:|---:|"]
    for name, model in models.items():
        emb = model.embedding.weight
        tied = model.head.weight is emb if hasattr(model.head, "weight") else False
        w = weight_bytes(model) - (0 if tied else emb.numel() * emb.element_size())
        with torch.inference_mode():
            _, state = model.decode_step(torch.zeros(1, dtype=torch.long), None)
        st = 2 * sum(t.numel() * t.element_size() for t in torch.utils._pytree.tree_leaves(state))
        bound = (w + st) / bw
        lines.append(f"| {name} | {w / 1e6:.1f} MB | {st / 1e6:.1f} MB | {bound * 1e3:.2f} | "
                     f"{official_s_per_token / bound:.1f}x |")
    return lines + [""]


def serving(off, ours, bf16, int8, batches: list[int], threads: list[int], args) -> list[str]:
    """Batched generation from prompts of different lengths: the official model steps through the padded prompts and
    then generates (it has no padding support; the pads cost it the same steps a real token does), xlstmkit prefills
    with `attention_mask` in one chunkwise pass and decodes natively. Both produce --tokens new tokens per row."""
    lo, hi = (int(v) for v in args.prompts.split(","))
    n = args.tokens
    lines, points = [], {}
    g = torch.Generator().manual_seed(4)
    for B in batches:
        lengths = torch.randint(lo, hi + 1, (B,), generator=g)
        S = int(lengths.max())
        ids = torch.randint(0, V, (B, S), generator=g)
        mask = (torch.arange(S)[None, :] >= (S - lengths)[:, None]).long()  # left padding
        ids = ids * mask

        @torch.no_grad()
        def official() -> None:
            state = None
            for i in range(S):
                logits, state = off.step(ids[:, i:i + 1], state=state)
            tok = logits[:, -1].argmax(-1, keepdim=True)
            for _ in range(n - 1):
                logits, state = off.step(tok, state=state)
                tok = logits[:, -1].argmax(-1, keepdim=True)

        def ours_gen(model):
            def run() -> None:
                model.generate(ids, n, attention_mask=mask)
            return run

        fns = {"official xlstm step() loop": official, "xlstmkit generate(), float32": ours_gen(ours),
               "xlstmkit generate(), bf16 weights": ours_gen(bf16), "xlstmkit generate(), int8 weights": ours_gen(int8)}
        for t in threads:
            torch.set_num_threads(t)
            before = load()
            sec = interleave(fns, args.repeats)
            base = sec["official xlstm step() loop"]
            lines += [f"## batch {B}, prompts of {lo}-{hi} tokens (longest {S}), {n} new tokens per row, {t} "
                      f"thread{'s' if t > 1 else ''}", "", f"Load average (1/5/15 min) before: {before}; after: {load()}.",
                      "", "| implementation | new tokens/s | seconds | vs official |", "|---|---:|---:|---:|"]
            for name, sec_ in sec.items():
                lines.append(f"| {name} | {B * n / sec_:,.0f} | {sec_:.3f} | {base / sec_:.2f}x |")
                points.setdefault((name, t), []).append((B, B * n / sec_))
            lines.append("")
            print("\n".join(lines[-(len(sec) + 6):]), flush=True)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for (name, t), pts in points.items():
            ax.plot([b for b, _ in pts], [v for _, v in pts], marker="o",
                    label=f"{name.replace('xlstmkit ', '')} ({t} thr.)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch (rows)")
        ax.set_ylabel("new tokens/s (prefill included)")
        ax.set_title(f"{args.pattern} d={args.dim}: batched generation, prompts of {lo}-{hi} tokens")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        lines += [f"Plot: `{args.plot}`.", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (default 1,2)")
    ap.add_argument("--batches", default="1", help="comma-separated batch sizes (default 1)")
    ap.add_argument("--tokens", type=int, default=128, help="tokens decoded per repeat at batch 1 (default 128)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--pattern", default="xLSTM[7:1]")
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--prefill", type=int, default=0, metavar="T",
                    help="instead of decoding: time consuming a T-token prompt (last logits), official step() loop vs "
                         "xlstmkit forward (chunkwise) and native stepping, at the first --threads count")
    ap.add_argument("--prompts", default=None, metavar="MIN,MAX",
                    help="batched serving instead of one-token prompts: every row gets a prompt of a random length "
                         "in [MIN, MAX] (left-padded, attention_mask), then --tokens new tokens; tokens/s counts the "
                         "new tokens of every row, the prefill's time included; with --plot, tokens/s against batch")
    ap.add_argument("--plot", default=None, metavar="PNG", help="with --prompts: write the tokens/s-vs-batch plot")
    ap.add_argument("--bound", action="store_true",
                    help="at batch 1, also the memory bound: bytes a token needs (weights + state read and written) "
                         "over the measured read bandwidth, and the best ratio to the official loop it allows")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "decode.md"))
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]

    slstm_at = list(parse_block_pattern(args.pattern, args.blocks))
    off = official_model(args.dim, args.blocks, slstm_at)
    ours = from_official(off).eval()
    bf16 = quantize_(copy.deepcopy(ours), "bf16")
    int8 = quantize_(copy.deepcopy(ours), "int8")
    with torch.inference_mode():  # the three xlstmkit models pick the same greedy tokens as the official one
        x = torch.randint(0, V, (1, 16), generator=torch.Generator().manual_seed(1))
        ref = off(x)
        diff = (ours(x) - ref).abs().max().item()
    params = sum(p.numel() for p in ours.parameters())
    lines = [
        f"# Decoding speed: official xlstm step() vs xlstmkit (PyTorch step, native decoder)",
        "",
        f"Model: {args.pattern} over {args.blocks} blocks (sLSTM at {slstm_at}), d = {args.dim}, vocabulary {V}, "
        f"{params:,} parameters; weights {weight_bytes(ours) / 1e6:.1f} MB float32, {weight_bytes(bf16) / 1e6:.1f} MB "
        f"bf16, {weight_bytes(int8) / 1e6:.1f} MB int8. xlstmkit's model from `from_official` (max logit "
        f"difference to the official forward {diff:.1e}).",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}; Python "
        f"{platform.python_version()}.",
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`; "
        + (f"the time to consume the prompt and give its last logits" if args.prefill else
           f"greedy from a one-token prompt, {args.tokens} tokens per repeat (at batch B > 8: {args.tokens} x 8 / B, "
           f"at least 8), tokens/s counting every batch row")
        + f"; medians of {args.repeats} interleaved repeats after one warm-up.",
        "",
    ]
    if args.prefill:
        T, t = args.prefill, threads[0]
        torch.set_num_threads(t)
        prompt = torch.randint(0, V, (1, T), generator=torch.Generator().manual_seed(2))

        @torch.no_grad()
        def official_steps() -> None:
            state = None
            for i in range(T):
                _, state = off.step(prompt[:, i:i + 1], state=state)

        @torch.inference_mode()
        def ours_forward() -> None:
            ours(prompt, return_state=True)

        @torch.inference_mode()
        def native_steps() -> None:
            state = None
            for i in range(T):
                _, state = ours.decode_step(prompt[:, i], state, reuse_state=i > 0)

        before = load()
        sec = interleave({"official xlstm step() loop": official_steps, "xlstmkit forward (chunkwise)": ours_forward,
                          "xlstmkit native step loop": native_steps}, args.repeats)
        base = sec["official xlstm step() loop"]
        lines += [f"## prefill of a {T}-token prompt, batch 1, {t} thread{'s' if t > 1 else ''}", "",
                  f"Load average (1/5/15 min) before: {before}; after: {load()}.", "",
                  "| implementation | seconds | tokens/s | vs official step() loop |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {s:.3f} | {T / s:,.0f} | {base / s:.1f}x |" for name, s in sec.items()]
        print("\n".join(lines), flush=True)
        batches = []
    if args.prompts:
        lines += serving(off, ours, bf16, int8, batches, threads, args)
        batches = []
    for B in batches:
        n = max(8, args.tokens // max(1, B // 8)) if B > 1 else args.tokens
        for t in threads:
            torch.set_num_threads(t)
            before = load()
            fns = loops(off, ours, bf16, int8, B, n)
            sec = interleave(fns, args.repeats)
            after = load()
            base = sec["official xlstm step()"]
            lines += [f"## batch {B}, {t} thread{'s' if t > 1 else ''}, {n} tokens per repeat",
                      "", f"Load average (1/5/15 min) before: {before}; after: {after}.", "",
                      "| implementation | tokens/s | ms per step | vs official |", "|---|---:|---:|---:|"]
            for name, s in sec.items():
                lines.append(f"| {name} | {B * n / s:,.0f} | {s / n * 1e3:.3f} | {base / s:.2f}x |")
            lines.append("")
            start = len(lines)
            if B == 1 and args.bound:
                lines += memory_bound_lines({"float32": ours, "bf16": bf16, "int8": int8}, base / n, t)
            print("\n".join(lines[-(len(sec) + 6 + len(lines) - start):]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

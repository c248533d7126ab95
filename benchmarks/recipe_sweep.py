"""The small sweep behind the default recipe of `xlstmkit train` (issue 16): which width, depth, context, batch,
learning rate, precision, thread count and packing give the lowest validation bits per byte in a fixed time.

    flock /work/wt/timing.lock python benchmarks/recipe_sweep.py --budget 300 --out benchmarks/recipe_sweep ROW ...
    python benchmarks/recipe_sweep.py --threads-probe      # tokens/s at 1 and 2 threads, fp32 and bf16

Every row trains one xLSTM on the built-in corpus (the Python standard library, bytes) through the trainer of
`xlstmkit compare` (the `LMTrainer` of `xlstmkit train` with the comparison's budget schedule: warm-up by steps,
cosine decay over the time budget, so every row ends its decay when its time is up) and is scored as the default
run is: validation bits per byte with the state carried across the held-out files (`evaluate`, state carried).
Rows run one after another in one process; results.json / results.md are rewritten after each row, and rows already
in results.json are skipped (so an interrupted sweep continues where it stopped). Timing-sensitive: run it alone,
under the shared lock, on a quiet machine, and note the load average it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from xlstmkit.train.compare import Entry, load_shared_data, train_one
from xlstmkit.train.config import RunConfig, TrainConfig, build_run_config

# name: (model fields, training fields, threads, dtype, document-aware packing)
BASE_MODEL = {"mlstm_num_heads": 4, "slstm_num_heads": 4, "chunk_size": 64}
D128 = {"embedding_dim": 128, "num_blocks": 4, "block_pattern": "xLSTM[3:1]"}  # the old default model (0.5M params)


def recipe(batch_size: int, seq_len: int, lr: float) -> dict:
    """The training fields a row varies (40 warm-up steps in every row)."""
    return {"batch_size": batch_size, "seq_len": seq_len, "lr": lr, "warmup_steps": 40}


ROWS: dict[str, tuple[dict, dict, int, str, bool]] = {
    # the old default (0.5M parameters), as shipped: fp32, one thread
    "old-default-fp32-1t": (D128, recipe(32, 128, 3e-3), 1, "float32", False),
    # the same model with bf16 autocast (one thread: two were 6.7x slower beside the machine's background jobs)
    "d128-B32xT128-lr3e-3": (D128, recipe(32, 128, 3e-3), 1, "bfloat16", False),
    # twice the steps at half the batch
    "d128-B16xT128-lr3e-3": (D128, recipe(16, 128, 3e-3), 1, "bfloat16", False),
    # twice the peak learning rate
    "d128-B32xT128-lr6e-3": (D128, recipe(32, 128, 6e-3), 1, "bfloat16", False),
    # wider, longer context
    "d192-B16xT256-lr3e-3": ({"embedding_dim": 192, "num_blocks": 4, "block_pattern": "xLSTM[3:1]"},
                             recipe(16, 256, 3e-3), 1, "bfloat16", False),
    # issue 16's comparison model (2.6M parameters)
    "d256-6b-B16xT256-lr2e-3": ({"embedding_dim": 256, "num_blocks": 6, "block_pattern": "xLSTM[5:1]"},
                                recipe(16, 256, 2e-3), 1, "bfloat16", False),
}
# second round: variations of the best first-round row (chosen by --base)
VARIATIONS: dict[str, tuple[dict, dict, int | None, str | None, bool | None]] = {
    "lr-x0.5": ({}, {"lr": 0.5}, None, None, None),
    "lr-x2": ({}, {"lr": 2.0}, None, None, None),
    "T512-B8": ({}, {"seq_len": 512, "batch_size": 8}, None, None, None),
    "B32": ({}, {"batch_size": 32}, None, None, None),
    "packed": ({}, {}, None, None, True),
    "2-threads": ({}, {}, 2, None, None),
}


def row_config(name: str, base: str | None) -> tuple[dict, dict, int, str, bool]:
    if name in ROWS:
        return ROWS[name]
    if base is None or "+" not in name:
        raise SystemExit(f"unknown row {name!r}: {', '.join(ROWS)} or BASE+VARIATION with {', '.join(VARIATIONS)}")
    base_name, var = name.split("+", 1)
    model, train, threads, dtype, pack = ROWS[base_name]
    dm, dt, th, dty, pk = VARIATIONS[var]
    train = dict(train)
    for k, v in dt.items():
        train[k] = train[k] * v if k == "lr" else v
    return ({**model, **dm}, train, th or threads, dty or dtype, pack if pk is None else pk)


def run_rows(names: list[str], budget: float, out: Path, base: str | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    done = json.loads(path.read_text()) if path.exists() else []
    have = {r["name"] for r in done}
    data = None
    for name in names:
        if name in have:
            print(f"{name}: done already, skipped", file=sys.stderr)
            continue
        model_over, train_over, threads, dtype, pack = row_config(name, base)
        run = build_run_config("small", None, [], {"threads": threads, "dtype": dtype})
        train = run.train.to_dict()
        train.update(train_over, time_budget=budget, max_steps=10_000_000, eval_every=0, checkpoint_every=0,
                     sample_tokens=0, eval_tokens=16384, final_eval_tokens=262144, log_every=50)
        cfg = TrainConfig.from_dict(train)
        if data is None:
            data = load_shared_data(cfg)
        torch.set_num_threads(threads)
        model = {"family": "xlstm", "vocab_size": 256, **BASE_MODEL, **model_over}
        load0 = os.getloadavg()[0]
        t0 = time.time()
        res = train_one(Entry(name, name, "xlstm"), model, cfg, data, out / "runs", preset="small", eval_points=5,
                        pack_documents=pack, schedule="budget", extrapolation=(), extrapolation_tokens=0,
                        progress=False, say=lambda m: print(m, file=sys.stderr), eval_windows=False)
        row = {"name": name, "model": model_over, "train": train_over, "threads": threads, "dtype": dtype,
               "packed": pack, "parameters": res.parameters, "steps": res.steps, "tokens": res.tokens,
               "train_seconds": res.train_seconds, "tokens_per_s": res.tokens_per_s,
               "val_bpb_carried": res.val_bpb, "curve": res.curve, "wall_seconds": round(time.time() - t0, 1),
               "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)]}
        done.append(row)
        path.write_text(json.dumps(done, indent=1) + "\n")
        write_table(done, out / "results.md", budget)
        print(f"{name}: {res.val_bpb:.4f} bits/byte, {res.steps} steps, {res.tokens_per_s:,.0f} tokens/s",
              file=sys.stderr)


def write_table(rows: list[dict], path: Path, budget: float) -> None:
    lines = [f"Budget {budget:.0f} s of training per row; validation bits per byte with the state carried over the "
             "held-out files (262,144 tokens); batch x context, lr, threads, dtype as listed.", "",
             "| row | parameters | B x T | lr | threads | dtype | packed | steps | tokens/s | val bits/byte | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["val_bpb_carried"]):
        t = r["train"]
        lines.append(f"| {r['name']} | {r['parameters']:,} | {t['batch_size']} x {t['seq_len']} | {t['lr']:g} | "
                     f"{r['threads']} | {r['dtype']} | {'yes' if r['packed'] else 'no'} | {r['steps']} | "
                     f"{r['tokens_per_s']:,.0f} | {r['val_bpb_carried']:.4f} | {r['load_average'][0]:.2f}"
                     f"-{r['load_average'][1]:.2f} |")
    path.write_text("\n".join(lines) + "\n")


def threads_probe(names: list[str], repeats: int) -> None:
    """Median step time of each row's model at 1 and 2 threads, fp32 and bf16, interleaved."""
    import torch.nn.functional as F

    from xlstmkit.train.build import build_model

    for name in names:
        model_over, train_over, _, _, _ = row_config(name, None)
        torch.manual_seed(0)
        model = build_model({"family": "xlstm", "vocab_size": 256, **BASE_MODEL, **model_over})
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        B, T = train_over["batch_size"], train_over["seq_len"]
        x = torch.randint(0, 256, (B, T + 1), generator=torch.Generator().manual_seed(0))
        times: dict[tuple[int, str], list[float]] = {}
        for _ in range(repeats + 1):
            for threads in (1, 2):
                for dtype in ("float32", "bfloat16"):
                    torch.set_num_threads(threads)
                    t0 = time.perf_counter()
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                        logits = model(x[:, :-1])
                    F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten()).backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    times.setdefault((threads, dtype), []).append(time.perf_counter() - t0)
        print(f"{name} (B={B}, T={T}), load {os.getloadavg()[0]:.2f}:")
        for (threads, dtype), ts in times.items():
            med = statistics.median(ts[1:])  # the first round warms up
            print(f"  {threads} thread(s) {dtype:>8}: {med * 1e3:7.1f} ms/step {B * T / med:9,.0f} tokens/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", nargs="*", help=f"rows to run (default: {' '.join(ROWS)}); BASE+VARIATION for the "
                                            f"second round ({', '.join(VARIATIONS)})")
    ap.add_argument("--budget", type=float, default=300.0, help="training seconds per row (default 300)")
    ap.add_argument("--out", default="benchmarks/recipe_sweep")
    ap.add_argument("--base", default=None, help="the first-round row the variations start from")
    ap.add_argument("--threads-probe", action="store_true", help="only time the rows' models at 1 and 2 threads")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    names = args.rows or list(ROWS)
    if args.base:
        names = [n if n in ROWS or "+" in n else f"{args.base}+{n}" for n in names]
    if args.threads_probe:
        threads_probe([n for n in names if n in ROWS], args.repeats)
        return
    print(f"load average {os.getloadavg()}", file=sys.stderr)
    run_rows(names, args.budget, Path(args.out), args.base)


if __name__ == "__main__":
    main()

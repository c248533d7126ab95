"""Vision-LSTM against a DeiT-style ViT of the same parameter count (timm), on digits and Pathfinder, side by side.

    python benchmarks/vision.py [--seeds 0 1 2] [--data digits pathfinder] [--out benchmarks/results/vision]
                                [--digits-budget 240] [--pathfinder-budget 480] [--threads 1]
                                [--digits-epochs 15 --pathfinder-epochs 12 --budget 0]   # equal steps instead

Accuracy: every (data set, seed) trains both models with `xlstmkit vision train` (the same command, `--arch vil` or
`--arch vit`): same data, split, augmentation, optimiser, batch size and the same CPU time budget (`--time-budget`:
the cosine schedule is fitted to the steps that fit in the budget at the measured pace, so the faster model takes
more steps); `--budget 0` gives both the same number of epochs instead. The runs of the two models alternate, so
machine load hits both alike. Each run is a subprocess with --threads 1 and writes its
--json; the table gives the mean and the spread (sample standard deviation) of the test accuracy over the seeds.

Speed (one thread, medians of interleaved repeats, in this process): training images/s (forward, backward and AdamW
step on a batch of 64), inference images/s at batch 64 and at batch 1 (no gradients), and for Vision-LSTM the batch-1
latency of each mLSTM form at the trained size and at ViL-T (224 px), which decided `inference_form`.

Writes <out>/<data>_<arch>_s<seed>/ (run folders), <out>/results.json and benchmarks/vision_results.md.
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

import torch

sys.path.insert(0, str(Path(__file__).parent))
from measure import interleave  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ARCHS = ("vil", "vit")


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def train_command(data: str, arch: str, seed: int, epochs: int, budget: float | None, out: Path, threads: int,
                  extra: list[str]) -> list[str]:
    limit = ["--epochs", str(epochs)] if not budget else ["--epochs", "1000", "--time-budget", f"{budget:g}"]
    return ["xlstmkit", "vision", "train", "--data", data, "--arch", arch, "--seed", str(seed), *limit,
            "--threads", str(threads), "--no-progress", "--checkpoint-every", "0", "--out", str(out),
            "--json", str(out) + ".json", *extra]


def run(cmd: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "xlstmkit", *cmd[1:]], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    result = json.loads(Path(cmd[cmd.index("--json") + 1]).read_text())
    result["wall_seconds"] = round(time.time() - t0, 1)
    return result


def speed(spec: dict, image_size: tuple[int, int], channels: int, repeats: int) -> dict:
    """Training and inference images/s of a model spec (config.json "model") at one thread."""
    from xlstmkit.commands.vision import build_model

    torch.manual_seed(0)
    model = build_model(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x64 = torch.randn(64, channels, *image_size)
    y64 = torch.randint(0, spec.get("num_classes", 2), (64,))
    x1 = x64[:1]

    def train_step():
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x64), y64)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer(x):
        def f():
            model.eval()
            with torch.no_grad():
                model(x)
        return f

    t = interleave({"train": train_step, "infer64": infer(x64), "infer1": infer(x1)}, repeats=repeats)
    return {"train_images_per_s": 64 / t["train"], "infer_images_per_s_b64": 64 / t["infer64"],
            "infer_ms_b1": 1e3 * t["infer1"]}


def form_latency(spec: dict, image_size, channels: int, repeats: int) -> dict[str, float]:
    """ms per image at batch 1 for each mLSTM form (Vision-LSTM only)."""
    from xlstmkit.commands.vision import build_model

    torch.manual_seed(0)
    model = build_model(spec).eval()
    x = torch.randn(1, channels, *image_size)

    def f(form):
        def g():
            with torch.no_grad():
                model(x, form=form)
        return g

    t = interleave({form: f(form) for form in ("parallel", "chunkwise", "recurrent")}, repeats=repeats)
    return {k: 1e3 * v for k, v in t.items()}


def mean_spread(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--data", nargs="+", default=["digits", "pathfinder"])
    ap.add_argument("--digits-epochs", type=int, default=15)
    ap.add_argument("--pathfinder-epochs", type=int, default=12)
    ap.add_argument("--digits-budget", type=float, default=240.0, help="training seconds per run on digits")
    ap.add_argument("--pathfinder-budget", type=float, default=480.0, help="training seconds per run on Pathfinder")
    ap.add_argument("--budget", type=float, default=None,
                    help="0: equal epochs (--*-epochs) instead of an equal time budget")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats of each speed measurement")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vision"))
    ap.add_argument("--table", default=str(ROOT / "benchmarks" / "vision_results.md"))
    ap.add_argument("--extra", default="", help="more `vision train` flags for every run, e.g. '--batch-size 32'")
    ap.add_argument("--skip-training", action="store_true", help="only the speed measurements (reuses results.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": [], "speed": {}}
    load_before = load_average()
    epochs = {"digits": args.digits_epochs, "pathfinder": args.pathfinder_epochs}
    budgets = {"digits": args.digits_budget, "pathfinder": args.pathfinder_budget}
    if args.budget == 0:
        budgets = {k: None for k in budgets}
    results["budgets"] = budgets
    extra = args.extra.split()
    commands = {}
    if not args.skip_training:
        results["runs"] = []
        for data in args.data:
            for seed in args.seeds:
                for arch in ARCHS:  # alternate the two models
                    cmd = train_command(data, arch, seed, epochs[data], budgets[data], out / f"{data}_{arch}_s{seed}", args.threads,
                                        extra)
                    commands[(data, arch)] = cmd
                    print(f"[{time.strftime('%H:%M:%S')}] load {load_average()}: {' '.join(cmd)}", flush=True)
                    r = run(cmd)
                    r.update(data=data, arch=arch, seed=seed, command=" ".join(cmd))
                    results["runs"].append({k: v for k, v in r.items() if k not in ("confusion", "classes")})
                    print(f"   test accuracy {r['test_accuracy']:.4f}, {r['params']} parameters, {r['steps']} steps, "
                          f"{r['seconds']:.0f}s training", flush=True)
                    results_path.write_text(json.dumps(results, indent=1))
    # speed at one thread, in this process
    torch.set_num_threads(1)
    for data in args.data:
        runs = [r for r in results["runs"] if r["data"] == data]
        if not runs:
            continue
        for arch in ARCHS:
            spec = next(r["model"] for r in runs if r["arch"] == arch)
            size = tuple(spec["image_size"] if arch == "vil" else spec["img_size"])
            channels = spec["in_channels"] if arch == "vil" else spec["in_chans"]
            results["speed"][f"{data}/{arch}"] = speed(spec, size, channels, args.repeats)
            if arch == "vil":
                results["speed"][f"{data}/vil/forms_ms_b1"] = form_latency(spec, size, channels, args.repeats)
    from xlstmkit.models.vision_lstm import vil_config

    vilt = {"arch": "vil", **vil_config("vil-t").to_dict()}
    results["speed"]["vil-t-224/forms_ms_b1"] = form_latency(vilt, (224, 224), 3, max(3, args.repeats // 2))
    results["load_average"] = {"before": load_before, "after": load_average()}
    results["threads"] = args.threads
    results_path.write_text(json.dumps(results, indent=1))
    Path(args.table).write_text(table(results, epochs, results.get("budgets", {})))
    print(f"wrote {results_path} and {args.table}")


def table(results: dict, epochs: dict, budgets: dict) -> str:
    timed = any(budgets.values())
    lines = ["# Vision-LSTM against a DeiT-style ViT of the same size (CPU)", "",
             "Made by `benchmarks/vision.py` (the commands are below). Both models are trained by `xlstmkit vision "
             "train` with the same data, split, augmentation (digits: small affine maps; Pathfinder: the symmetries "
             "of the square), optimiser (AdamW, lr 2e-3, warm-up and cosine decay, weight decay 0.05, label "
             "smoothing 0.1, clipping 1), batch size (64) and " + ("CPU time budget (the schedule is fitted to the steps that "
             "fit in it, so the faster model takes more steps)" if timed else "number of steps") + "; only `--arch` differs. The ViT is "
             "timm's `VisionTransformer` with a class token (DeiT's architecture), the ViL's width, one block per "
             "ViL block pair, heads of 64 channels and the MLP width that matches the parameter count.", "",
             f"Machine: {os.cpu_count()} CPU cores shared with other jobs; load average {results['load_average']['before']}"
             f" (1, 5, 15 min) before and {results['load_average']['after']} after the runs. Every run and every speed "
             f"measurement uses {results.get('threads', 1)} thread.", ""]
    lines += ["| data | model | parameters | test accuracy (mean ± sd, seeds) | steps (mean) | training s (mean) | "
              "training img/s | inference img/s (batch 64) | inference ms/image (batch 1) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for data in ("digits", "pathfinder"):
        runs = [r for r in results["runs"] if r["data"] == data]
        if not runs:
            continue
        for arch in ARCHS:
            rs = [r for r in runs if r["arch"] == arch]
            if not rs:
                continue
            m, s = mean_spread([r["test_accuracy"] for r in rs])
            sp = results["speed"].get(f"{data}/{arch}", {})
            name = "Vision-LSTM v2 (vil-micro)" if arch == "vil" else "ViT (DeiT-style, timm)"
            accs = ", ".join(f"{100 * r['test_accuracy']:.1f}" for r in rs)
            lines.append(f"| {data} | {name} | {rs[0]['params']:,} | {100 * m:.2f} ± {100 * s:.2f} % "
                         f"({accs}) | {statistics.mean(r['steps'] for r in rs):.0f} | "
                         f"{statistics.mean(r['seconds'] for r in rs):.0f} | "
                         f"{sp.get('train_images_per_s', float('nan')):.0f} | "
                         f"{sp.get('infer_images_per_s_b64', float('nan')):.0f} | "
                         f"{sp.get('infer_ms_b1', float('nan')):.1f} |")
    lines += ["", "Training and inference speed: one thread, medians of interleaved repeats in one process "
              "(`training img/s`: forward, backward and AdamW step on a batch of 64). The training seconds are the "
              "runs' own (they include the machine's load at the time).", "",
              "## mLSTM form at batch 1 (Vision-LSTM inference, ms per image, one thread)", "",
              "| model | parallel | chunkwise | recurrent |", "|---|---|---|---|"]
    for key, label in [(k, k.split("/")[0]) for k in results["speed"] if k.endswith("forms_ms_b1")]:
        v = results["speed"][key]
        lines.append(f"| {label} | {v['parallel']:.1f} | {v['chunkwise']:.1f} | {v['recurrent']:.1f} |")
    lines += ["", "## Commands", "", "```"]
    seen = set()
    for r in results["runs"]:
        key = (r["data"], r["arch"])
        if key not in seen:
            seen.add(key)
            lines.append(r["command"].replace(f"--seed {r['seed']}", "--seed S").replace(f"_s{r['seed']}", "_sS")
                         .replace(str(ROOT) + os.sep, ""))
    limit = f"Time budget per run (s): {budgets}" if timed else f"Epochs: {epochs}"
    lines += ["```", "", f"{limit}. Reproduce everything with `python benchmarks/vision.py` (`--seeds`, "
              "`--digits-budget`, `--pathfinder-budget` change the budget; `--budget 0` trains equal epochs).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

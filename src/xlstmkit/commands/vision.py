"""`xlstmkit vision train | eval | predict | convert`: image classification with Vision-LSTM (docs/vision.md).

    xlstmkit vision train --data digits --json digits.json          # scikit-learn's digits, a few CPU minutes
    xlstmkit vision train --data pathfinder --time-budget 10m       # the long-range Pathfinder task
    xlstmkit vision train --data photos/ --image-size 64 --out runs/photos   # a folder, one sub-folder per class
    xlstmkit vision train --resume runs/photos                       # continue after a kill or Ctrl-C (bitwise)
    xlstmkit vision train --data digits --arch vit                   # the DeiT-style ViT baseline (needs timm)
    xlstmkit vision eval runs/photos --json eval.json                # test accuracy, confusion matrix
    xlstmkit vision predict cat.jpg dog.png --run runs/photos --top-k 3
    xlstmkit vision convert vil2_tiny16_e800_in1k.th --out runs/vil2-tiny   # published weights as a run

A run folder holds config.json, metrics.csv, checkpoints/, model.safetensors, results.json, loss_curve.png and
confusion.png. Without --preset the model is the small Vision-LSTM that learns the data set on a CPU in minutes
(vil-micro: width 64, 2 block pairs), not an ImageNet size.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .common import add_engine_flags, add_field_flags, given

KIND = "vision"
CONFUSION_PLOT = "confusion.png"
CALIBRATION_STEPS = 3  # steps timed (after the first) before a --time-budget run may fix its schedule's length
RESUMABLE = ("time_budget", "eval_every", "checkpoint_every", "keep_last", "device", "threads")
COLUMNS = ["step", "images", "loss", "acc", "lr", "grad_norm", "images_per_s", "elapsed_s", "val_loss", "val_acc"]
# per data source: image size, patch size, preset, epochs (docs/vision.md: what learns in a few CPU minutes)
DATA_DEFAULTS = {
    "digits": dict(image_size=32, patch_size=4, preset="vil-micro", epochs=40),
    "pathfinder": dict(image_size=32, patch_size=4, preset="vil-micro", epochs=15),
    "folder": dict(image_size=64, patch_size=8, preset="vil-micro", epochs=30),
}


def _f(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, **meta})


def _duration(value: Any) -> float | None:
    from ..train.config import parse_duration

    return parse_duration(value)


@dataclass(frozen=True)
class VisionTrainConfig:
    """Everything about a `vision train` run; each field is a flag. None means "the data set's default"
    (DATA_DEFAULTS)."""

    data: str = _f("digits", "digits, pathfinder, or a folder of images with one sub-folder per class (with train/ "
                   "and test/ sub-folders that split is used)", metavar="DATA")
    arch: str = _f("vil", "vil (Vision-LSTM) or vit (a DeiT-style ViT from timm with the parameter count of the "
                   "Vision-LSTM: the baseline)", choices=("vil", "vit"))
    preset: str | None = _f(None, "model size: vil-micro, vil-mini (CPU sizes), vil-t, vil-s, vil-b (ImageNet sizes); none: "
                            "vil-micro",
                            choices=("vil-micro", "vil-mini", "vil-t", "vil-s", "vil-b"))
    dim: int | None = _f(None, "model width; none: the preset's", metavar="D")
    depth: int | None = _f(None, "block pairs; none: the preset's", metavar="N")
    version: int = _f(2, "Vision-LSTM version: 2 (2-D convolution, bilateral concatenation, biases) or 1",
                      choices=(1, 2), type="int")
    image_size: int | None = _f(None, "images are resized to N x N; none: 32 for digits and pathfinder, 64 for a "
                                "folder", metavar="N")
    patch_size: int | None = _f(None, "patch size in pixels; none: image size / 8 (an 8 x 8 grid of patches)",
                                metavar="P")
    epochs: int | None = _f(None, "passes over the training images; none: 40 digits, 15 pathfinder, 30 folder",
                            metavar="N")
    max_steps: int | None = _f(None, "optimiser steps; none: epochs x steps per epoch", metavar="N")
    batch_size: int = _f(64, "images per optimiser step", metavar="B")
    lr: float = _f(2e-3, "peak learning rate (AdamW; linear warm-up, then cosine decay)")
    min_lr_ratio: float = _f(0.01, "final learning rate as a fraction of the peak", metavar="F")
    warmup_steps: int | None = _f(None, "linear warm-up steps; none: a tenth of the steps, at most 100",
                                  metavar="N")
    weight_decay: float = _f(0.05, "AdamW weight decay of the matrices (not norms, biases, embeddings)", metavar="W")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 = no clipping)", metavar="NORM")
    label_smoothing: float = _f(0.1, "label smoothing of the cross-entropy", metavar="E")
    drop_path_rate: float | None = _f(None, "stochastic depth; none: the preset's (0 for the CPU sizes)",
                                      metavar="P")
    augment: bool = _f(True, "augmentation suited to the data (--no-augment: none)")
    time_budget: float | None = _f(None, "stop after this much training time, e.g. 300, 5m, 1h; without "
                                   "--max-steps the schedule is fitted to it", metavar="DURATION", type="duration")
    seed: int = _f(0, "seed of the model, the batches, the augmentation and the data split", metavar="S")
    test_fraction: float = _f(0.2, "test share of a data set without its own split", metavar="F")
    pathfinder_train: int = _f(4000, "pathfinder: training images", metavar="N")
    pathfinder_test: int = _f(1000, "pathfinder: test images", metavar="N")
    pathfinder_segments: int = _f(8, "pathfinder: path length in segments of 3 px (longer: harder)", metavar="N")
    pathfinder_distractors: int = _f(1, "pathfinder: paths without a dot", metavar="N")
    eval_every: int = _f(0, "evaluate on the test images every N steps (0 = only at the end); nothing is selected "
                         "by it", metavar="N")
    checkpoint_every: int = _f(200, "checkpoint every N steps (0 = only at the end)", metavar="N")
    keep_last: int = _f(3, "keep the newest K checkpoints", metavar="K")
    device: str = _f("auto", "device", flag=False)
    dtype: str = _f("float32", "autocast dtype", flag=False)
    threads: int | None = _f(None, "CPU threads", flag=False)

    def __post_init__(self) -> None:
        from ..config import check_bool, check_choice, check_int
        from ..train.config import check_device

        object.__setattr__(self, "time_budget", _duration(self.time_budget))
        for name in ("batch_size", "pathfinder_train", "pathfinder_test", "pathfinder_segments", "keep_last"):
            check_int(self, name, 1)
        for name in ("epochs", "max_steps", "dim", "depth", "image_size", "patch_size", "warmup_steps", "threads"):
            if getattr(self, name) is not None:
                check_int(self, name, 0 if name == "warmup_steps" else 1)
        for name in ("eval_every", "checkpoint_every", "pathfinder_distractors", "seed"):
            check_int(self, name, 0)
        check_bool(self, "augment")
        check_choice(self, "arch", ("vil", "vit"))
        check_choice(self, "dtype", ("float32", "bfloat16"))
        check_device(self.device)
        if self.version not in (1, 2):
            raise ValueError(f"version must be 1 or 2, got {self.version!r}")
        # name: (low, high, low allowed, high allowed)
        ranges = {"lr": (0, None, False, False), "min_lr_ratio": (0, 1, True, True),
                  "weight_decay": (0, None, True, False), "grad_clip": (0, None, True, False),
                  "label_smoothing": (0, 1, True, False), "test_fraction": (0, 1, False, False),
                  "drop_path_rate": (0, 1, True, False)}
        for name, (low, high, low_ok, high_ok) in ranges.items():
            value = getattr(self, name)
            if value is None:
                continue
            ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
                  and (value >= low if low_ok else value > low)
                  and (high is None or (value <= high if high_ok else value < high)))
            if not ok:
                top = "inf)" if high is None else f"{high}]" if high_ok else f"{high})"
                span = f"{'[' if low_ok else '('}{low}, {top}"
                raise ValueError(f"{name} must be a finite number in {span}, got {value!r}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"time_budget must be > 0, got {self.time_budget}")

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VisionTrainConfig:
        import dataclasses

        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown vision training fields {unknown}")
        return cls(**d)

    @property
    def source(self) -> str:
        return self.data if self.data in ("digits", "pathfinder") else "folder"


# -- data --------------------------------------------------------------------------------------------------------------

def sizes(cfg: VisionTrainConfig) -> tuple[int, int]:
    """(image size, patch size) of a run: the flags, else the data set's defaults; checked against each other."""
    image = cfg.image_size or DATA_DEFAULTS[cfg.source]["image_size"]
    patch = cfg.patch_size or (DATA_DEFAULTS[cfg.source]["patch_size"] if cfg.image_size is None
                               else max(1, image // 8))
    if image % patch:
        raise ValueError(f"--image-size {image} is not a multiple of --patch-size {patch}")
    return image, patch


def load_data(cfg: VisionTrainConfig, test_only: bool = False):
    """The ImageSet of a run (data/images.py); `test_only` skips drawing Pathfinder's training images (its test
    images come from their own seeded stream, so they are the same)."""
    from ..data import images as I

    image, _ = sizes(cfg)
    if cfg.data == "digits":
        return I.load_digits(image, cfg.test_fraction, cfg.seed)
    if cfg.data == "pathfinder":
        spec = I.PathfinderSpec(image_size=image, segments=cfg.pathfinder_segments,
                                distractors=cfg.pathfinder_distractors)
        return I.load_pathfinder(2 if test_only else cfg.pathfinder_train, cfg.pathfinder_test, cfg.seed, spec)
    return I.load_image_folder(cfg.data, image, cfg.test_fraction, cfg.seed)


def data_record(data, mean: list[float], std: list[float]) -> dict[str, Any]:
    """What a run keeps about its data (config.json "data"): enough to read new images as the model saw them."""
    return {"name": data.name, "classes": list(data.classes), "mean": mean, "std": std,
            "image_size": list(data.image_size), "channels": data.channels, "augment": data.augment,
            "description": data.description, "train_images": int(len(data.train_y)),
            "test_images": int(len(data.test_y))}


# -- models ------------------------------------------------------------------------------------------------------------

def vil_spec(cfg: VisionTrainConfig, channels: int, num_classes: int) -> dict[str, Any]:
    """The VisionLSTMConfig fields of a run (the preset, its overrides, the data's sizes)."""
    from ..models.vision_lstm import vil_config

    image, patch = sizes(cfg)
    preset = cfg.preset or DATA_DEFAULTS[cfg.source]["preset"]
    overrides: dict[str, Any] = dict(image_size=image, patch_size=patch, in_channels=channels,
                                     num_classes=num_classes, version=cfg.version)
    for name in ("dim", "depth", "drop_path_rate"):
        if getattr(cfg, name) is not None:
            overrides[name] = getattr(cfg, name)
    return {"arch": "vil", "preset": preset, **vil_config(preset, **overrides).to_dict()}


def vit_spec(vil: dict[str, Any]) -> dict[str, Any]:
    """A DeiT-style ViT (timm's VisionTransformer: class token, pre-norm blocks of attention and a GELU MLP) with the
    Vision-LSTM's patch size, input and classes, its width and as many blocks as it has block pairs, heads of 64
    channels (at least 1; DeiT-T/S/B use 3/6/12), and the MLP width chosen so that the parameter count matches."""
    dim, depth = vil["dim"], vil["depth"]
    heads = max(1, dim // 64)
    while dim % heads:
        heads -= 1
    base = dict(arch="vit", img_size=list(vil["image_size"]), patch_size=list(vil["patch_size"]),
                in_chans=vil["in_channels"], num_classes=vil["num_classes"], embed_dim=dim, depth=depth,
                num_heads=heads, drop_path_rate=vil["drop_path_rate"])
    target = count_spec({"arch": "vil", **{k: v for k, v in vil.items() if k not in ("arch", "preset")}})
    p1 = count_spec({**base, "mlp_ratio": 1.0})
    p2 = count_spec({**base, "mlp_ratio": 2.0})
    per_dim = (p2 - p1) / dim  # parameters per MLP channel (exact: the count is linear in the MLP width)
    hidden = max(1, round(dim + (target - p1) / per_dim))
    return {**base, "mlp_ratio": hidden / dim}


def build_model(spec: dict[str, Any]):
    """A fresh model from its spec (config.json "model")."""
    arch = spec.get("arch")
    if arch == "vil":
        from ..models.vision_lstm import VisionLSTM, VisionLSTMConfig

        return VisionLSTM(VisionLSTMConfig.from_dict({k: v for k, v in spec.items() if k not in ("arch", "preset")}))
    if arch == "vit":
        from ..extras import require

        vt = require("timm.models.vision_transformer", "bench", "the ViT baseline (--arch vit)")
        return vt.VisionTransformer(img_size=tuple(spec["img_size"]), patch_size=tuple(spec["patch_size"]),
                                    in_chans=spec["in_chans"], num_classes=spec["num_classes"],
                                    embed_dim=spec["embed_dim"], depth=spec["depth"], num_heads=spec["num_heads"],
                                    mlp_ratio=spec["mlp_ratio"], drop_path_rate=spec["drop_path_rate"],
                                    class_token=True, global_pool="token")
    raise ValueError(f"unknown model arch {arch!r} in the run's config (vil or vit)")


def count_spec(spec: dict[str, Any]) -> int:
    import torch

    with torch.device("meta"):
        model = build_model(spec)
    return sum(p.numel() for p in model.parameters())


# -- metrics.csv -------------------------------------------------------------------------------------------------------

class MetricsCSV:
    """metrics.csv of a vision run (the columns of COLUMNS; "val" is the test split, evaluated every eval_every
    steps and used for nothing but the log). On resume, rows after the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        from ..train.checkpoint import atomic_write_bytes
        from ..train.metrics import read_metrics

        self.path = path
        kept = read_metrics(path, resume_step) if resume_step is not None else []
        atomic_write_bytes(path, self._text(kept, header=True).encode("utf-8"))
        self.fh = open(path, "a", encoding="utf-8", newline="")

    @staticmethod
    def _text(rows: list[dict], header: bool) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        if header:
            w.writeheader()
        w.writerows({k: r.get(k, "") for k in COLUMNS} for r in rows)
        return buf.getvalue()

    def write(self, row: dict) -> None:
        self.fh.write(self._text([row], header=False))
        self.fh.flush()

    def sync(self) -> None:
        import os

        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        if not self.fh.closed:
            self.fh.close()


# -- evaluation --------------------------------------------------------------------------------------------------------

@dataclass
class EvalResult:
    accuracy: float
    loss: float
    confusion: list[list[int]]   # rows: true class, columns: predicted class
    seconds: float
    images_per_s: float


def evaluate(model, x, y, mean, std, *, num_classes: int, batch_size: int = 256, device=None,
             dtype: str = "float32") -> EvalResult:
    """Accuracy, mean cross-entropy and the confusion matrix of `model` on uint8 images x (N, C, H, W), labels y."""
    import torch
    import torch.nn.functional as F

    from ..data.images import normalise
    from ..train.core import autocast

    device = device or torch.device("cpu")
    was = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    loss_sum, t0 = 0.0, time.perf_counter()
    try:
        with torch.no_grad():
            for s in range(0, len(y), batch_size):
                xb = normalise(x[s:s + batch_size], mean, std).to(device)
                yb = y[s:s + batch_size]
                with autocast(device, dtype):
                    logits = model(xb)
                logits = logits.float().cpu()
                loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
                pred = logits.argmax(-1)
                confusion += torch.bincount(yb * num_classes + pred, minlength=num_classes ** 2).view(
                    num_classes, num_classes)
    finally:
        model.train(was)
    seconds = time.perf_counter() - t0
    n = max(len(y), 1)
    return EvalResult(float(confusion.diagonal().sum()) / n, loss_sum / n, confusion.tolist(), seconds,
                      len(y) / max(seconds, 1e-9))


# -- training ----------------------------------------------------------------------------------------------------------

@dataclass
class VisionResult:
    run_dir: Path
    step: int
    stopped_by: str
    train_seconds: float
    test: EvalResult | None
    params: int
    record: dict = field(default_factory=dict)


class VisionTrainer:
    """One `vision train` run, in the three steps of the LM trainer (setup, fit, finish), on the same pieces:
    the run folder and its lock (runs.py), `train.core` (train_step: clipping and autocast; Progress; GracefulStop;
    the step loop `fit`), `train.optim` (AdamW decay groups, warm-up + cosine `lr_factor`, `sync_lr`) and
    `train.checkpoint` (atomic verified checkpoints with every random state).

    Resume is bitwise: the batch of step s (which images, and their augmentation) is a function of (seed, s) alone,
    the model's randomness (drop-path) draws from torch's global generator, which every checkpoint saves, and the
    schedule's length is fixed before the first checkpoint and saved with it."""

    def __init__(self, cfg: VisionTrainConfig, run_dir: Path, *, resume: bool, progress: bool,
                 say: Callable[[str], None] = print) -> None:
        self.cfg, self.run_dir, self.resume, self.progress, self.say = cfg, run_dir, resume, progress, say

    # -- set-up ------------------------------------------------------------------------------------------------------
    def setup(self, saved: dict | None = None) -> None:
        import numpy as np
        import torch

        from .. import runs
        from ..train.distributed import pick_device
        from ..train.optim import OptimSpec, build_optimizer, lr_factor

        cfg = self.cfg
        self.device = pick_device(cfg.device)
        self.data = data = load_data(cfg)
        if saved is not None:
            self.spec, record = saved["model"], saved["data"]
            self.mean, self.std = record["mean"], record["std"]
            if record["classes"] != list(data.classes):
                raise ValueError(f"the data's classes changed since the run started ({len(record['classes'])} then, "
                                 f"{len(data.classes)} now): resume with the same data")
        else:
            self.mean, self.std = data.channel_stats()
            vil = vil_spec(cfg, data.channels, len(data.classes))
            self.spec = vil if cfg.arch == "vil" else vit_spec(vil)
        self.fingerprint = hashlib.sha256(data.train_x.numpy().tobytes()).hexdigest()[:16]
        torch.manual_seed(cfg.seed)
        self.model = build_model(self.spec).to(self.device)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        n = len(data.train_y)
        self.steps_per_epoch = max(1, n // cfg.batch_size)
        if n < cfg.batch_size:
            raise ValueError(f"--batch-size {cfg.batch_size} is larger than the {n} training images: use a smaller "
                             f"batch")
        epochs = cfg.epochs or DATA_DEFAULTS[cfg.source]["epochs"]
        self.planned = cfg.max_steps or epochs * self.steps_per_epoch
        self.warmup = cfg.warmup_steps if cfg.warmup_steps is not None else min(100, self.planned // 10)
        self.horizon: int | None = None if (cfg.time_budget and not cfg.max_steps) else self.planned
        self.horizon_fixed = self.horizon is not None  # a --time-budget run fits it to the measured pace
        spec = OptimSpec(lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999), eps=1e-8,
                         warmup_steps=self.warmup, min_lr_ratio=cfg.min_lr_ratio, grad_clip=cfg.grad_clip)
        self.optimizer = build_optimizer(self.model, spec)
        # the schedule's length may be fixed after the first steps (--time-budget): the factor reads it when called
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(
            s, self.warmup, self.horizon or max(self.planned, s + 1), cfg.min_lr_ratio))
        self.start_step = self.step = 0
        self.train_seconds, self.images_seen, self.resumed_from = 0.0, 0, None
        if self.resume:
            self._restore()
        self.rng_seed = np.random.SeedSequence(cfg.seed).generate_state(1)[0]
        self._write_config()
        self.metrics = MetricsCSV(self.run_dir / runs.METRICS_FILE, self.resumed_from if self.resume else None)
        threads = f" ({torch.get_num_threads()} threads)" if self.device.type == "cpu" else ""
        self.say(f"xlstmkit vision train: {self._model_name()} with {self.n_params / 1e6:.3f}M parameters on "
                 f"{data.description}; {self.planned} steps x {cfg.batch_size} images"
                 f"{' (or until the time budget)' if cfg.time_budget else ''} on {self.device}{threads}; run folder "
                 f"{self.run_dir}")
        if self.resumed_from is not None:
            self.say(f"resuming {self.run_dir} from step {self.start_step}")

    def _model_name(self) -> str:
        s = self.spec
        if s["arch"] == "vil":
            pairs = f"{s['depth']} block pair{'s' * (s['depth'] != 1)}"
            return (f"Vision-LSTM v{s['version']} ({s.get('preset', '')}: width {s['dim']}, {pairs}, "
                    f"patch {s['patch_size'][0]})")
        return (f"ViT (timm, DeiT-style: width {s['embed_dim']}, {s['depth']} blocks, {s['num_heads']} heads, "
                f"MLP x{s['mlp_ratio']:.2f}, patch {s['patch_size'][0]})")

    def _restore(self) -> None:
        from .. import runs
        from ..train.checkpoint import CheckpointError, load_latest_checkpoint, set_rng_state
        from ..train.optim import sync_lr

        model, config_path = self.model, str(self.run_dir / runs.CONFIG_FILE)
        ckpt = load_latest_checkpoint(self.run_dir, warn=lambda m: print(m, file=sys.stderr),
                                      check=lambda c: runs.check_state_fits(model, c.model, str(c.path), config_path))
        if ckpt is None:
            raise CheckpointError(f"nothing to resume: {self.run_dir} has no checkpoints (it stopped before its first "
                                  f"one); start it again without --resume")
        model.load_state_dict(ckpt.model)
        name_of = {id(p): n for n, p in model.named_parameters()}
        state, groups, idx = {}, [], 0
        for saved, group in zip(ckpt.optimizer["param_groups"], self.optimizer.param_groups):
            ids = []
            for p in group["params"]:
                entry = ckpt.optimizer["state"].get(name_of[id(p)])
                if entry:
                    state[idx] = {k: (v.to(p.device) if hasattr(v, "to") and v.dim() > 0 else v)
                                  for k, v in entry.items()}
                ids.append(idx)
                idx += 1
            groups.append({**{k: v for k, v in saved.items() if k != "params"}, "params": ids})
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        self.horizon = ckpt.state.get("horizon")
        self.horizon_fixed = self.horizon is not None
        self.scheduler.load_state_dict(ckpt.state["scheduler"])
        sync_lr(self.optimizer, self.scheduler)
        set_rng_state(ckpt.rng, ckpt.state["rng"])
        if ckpt.state.get("data_fingerprint", self.fingerprint) != self.fingerprint:
            print("warning: the training images differ from those the checkpoint was trained on: the resumed run will "
                  "not match an uninterrupted one", file=sys.stderr)
        self.start_step = self.step = self.last_saved = ckpt.step
        self.train_seconds = float(ckpt.state.get("train_seconds", 0.0))
        self.images_seen = int(ckpt.state.get("images", 0))
        self.resumed_from = ckpt.step

    def _write_config(self) -> None:
        from .. import __version__, runs
        from ..train.checkpoint import atomic_write_bytes

        record = {"kind": KIND, "vision": self.cfg.to_dict(), "model": self.spec,
                  "data": data_record(self.data, self.mean, self.std), "parameters": self.n_params,
                  "xlstmkit_version": __version__}
        atomic_write_bytes(self.run_dir / runs.CONFIG_FILE, (json.dumps(record, indent=1) + "\n").encode("utf-8"))

    # -- batches -----------------------------------------------------------------------------------------------------
    def batch(self, step: int):
        """(images, labels) of optimiser step `step`: the step's slice of its epoch's seeded permutation, augmented
        with a generator seeded by (seed, step), normalised."""
        import numpy as np
        import torch

        from ..data.images import augment_batch

        cfg, data = self.cfg, self.data
        epoch, j = divmod(step, self.steps_per_epoch)
        perm = np.random.default_rng([int(self.rng_seed), epoch]).permutation(len(data.train_y))
        idx = torch.from_numpy(perm[j * cfg.batch_size:(j + 1) * cfg.batch_size])
        x = data.train_x[idx].float() / 255.0
        if cfg.augment:
            g = torch.Generator().manual_seed(int(self.rng_seed) * 1_000_003 + step)
            x = augment_batch(x, data.augment, g)
        m = torch.tensor(self.mean).view(1, -1, 1, 1)
        s = torch.tensor(self.std).view(1, -1, 1, 1)
        return ((x - m) / s).to(self.device), data.train_y[idx].to(self.device)

    # -- the loop ----------------------------------------------------------------------------------------------------
    def fit(self) -> None:
        from ..train.core import GracefulStop, Progress, fit

        self.bar = Progress(self.horizon or self.planned, initial=self.start_step, desc="train",
                            enabled=self.progress, unit="step")
        self.t_loop = time.time()
        self.session_seconds = 0.0
        self.last_saved = getattr(self, "last_saved", -1)
        self.step_time = 0.0
        try:
            with GracefulStop() as stop:
                self.step, self.stopped_by = fit(self.start_step, self.planned, self.train_one_step,
                                                 on_step=self.after_step, should_stop=self.should_stop, stop=stop)
            if self.stopped_by == "max_steps":
                self.stopped_by = "steps"
            if self.last_saved != self.step:
                self.checkpoint()
        finally:
            self.bar.close()
            self.metrics.close()

    def should_stop(self, step: int) -> str | None:
        if self.horizon is not None and step >= self.horizon:
            return "steps"
        budget = self.cfg.time_budget
        if budget is not None and step > self.start_step and time.time() - self.t_loop + self.step_time > budget:
            return "time_budget"
        return None

    def loss(self, model, batch):
        import torch.nn.functional as F

        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.label_smoothing)
        self.last_acc = float((logits.detach().argmax(-1) == y).float().mean())
        return loss

    def train_one_step(self, step: int):
        from ..train.core import train_step

        t0 = time.time()
        stats = train_step(self.model, self.optimizer, self.scheduler, [self.batch(step)], self.loss,
                           grad_clip=self.cfg.grad_clip, device=self.device, dtype=self.cfg.dtype)
        self.step_time = time.time() - t0
        return stats

    def _fit_horizon(self, step: int) -> None:
        """--time-budget without --max-steps: the schedule's length is the number of steps that fit in the rest of
        the budget at the measured pace (at most the planned steps). The pace is wall time per step since the end
        of this session's first step, which carries one-off costs (first calls' set-up, a native library compiled on
        first use; counting it once cut a 240 s budget to 40 s). The length is re-estimated after every step of the
        warm-up, where the learning rate does not depend on it, and fixed at the warm-up's end (at the earliest
        CALIBRATION_STEPS steps after the first)."""
        done = step - self.start_step
        if self.horizon_fixed or done < 1:
            return
        now = time.time()
        if done == 1:
            self.t_first = now
            return
        pace = (now - self.t_first) / (done - 1)
        left = self.cfg.time_budget - (now - self.t_loop)
        self.horizon = max(step + 1, min(self.planned, step + int(0.97 * left / max(pace, 1e-9))))
        self.bar.total = self.horizon
        if self.bar.bar is not None:
            self.bar.bar.total = self.horizon
        if done - 1 >= CALIBRATION_STEPS and step >= self.warmup:
            self.horizon_fixed = True
            self.say(f"time budget {self.cfg.time_budget:.0f}s: {pace:.2f}s per step, the schedule runs "
                     f"{self.horizon} steps")

    def after_step(self, step: int, stats) -> None:
        from ..train.core import clock

        cfg = self.cfg
        self.step = step
        self.train_seconds += self.step_time
        self.session_seconds += self.step_time
        self.images_seen += cfg.batch_size
        loss = float(stats.loss)
        if not math.isfinite(loss):
            raise FloatingPointError(f"the training loss became {loss} at step {step}: lower --lr (now {cfg.lr})")
        if cfg.time_budget is not None:
            self._fit_horizon(step)
        row = {"step": step, "images": self.images_seen, "loss": round(loss, 6), "acc": round(self.last_acc, 4),
               "lr": stats.lr, "grad_norm": round(stats.grad_norm, 6),
               "images_per_s": round(cfg.batch_size / max(self.step_time, 1e-9), 1),
               "elapsed_s": round(self.train_seconds, 3)}
        total = self.horizon or self.planned
        if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
            res = self.evaluate()
            row.update(val_loss=round(res.loss, 6), val_acc=round(res.accuracy, 4))
        self.metrics.write(row)
        done = step - self.start_step
        eta = self.session_seconds / done * (total - step)
        if cfg.time_budget is not None:
            eta = min(eta, max(0.0, cfg.time_budget - (time.time() - self.t_loop)))
        post = {"loss": f"{loss:.3f}", "img/s": f"{cfg.batch_size * done / max(self.session_seconds, 1e-9):.0f}",
                "ETA": clock(eta)}
        if "val_acc" in row:
            post["test acc"] = f"{row['val_acc']:.3f}"
        self.bar.update(step, **post)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            self.checkpoint()

    def evaluate(self) -> EvalResult:
        d = self.data
        return evaluate(self.model, d.test_x, d.test_y, self.mean, self.std, num_classes=len(d.classes),
                        device=self.device, dtype=self.cfg.dtype)

    def checkpoint(self) -> None:
        from ..train.checkpoint import save_checkpoint

        name_of = {id(p): n for n, p in self.model.named_parameters()}
        osd = self.optimizer.state_dict()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        by_name = {"state": {name_of[id(params[i])]: s for i, s in osd["state"].items()},
                   "param_groups": [{**{k: v for k, v in g.items() if k != "params"},
                                     "params": [name_of[id(params[i])] for i in g["params"]]}
                                    for g in osd["param_groups"]]}
        self.metrics.sync()
        save_checkpoint(self.run_dir, self.step, self.model.state_dict(), by_name,
                        {"scheduler": self.scheduler.state_dict(),
                         "horizon": self.horizon if self.horizon_fixed else None,
                         "train_seconds": self.train_seconds, "images": self.images_seen,
                         "data_fingerprint": self.fingerprint}, keep_last=self.cfg.keep_last)
        self.last_saved = self.step

    # -- the end -----------------------------------------------------------------------------------------------------
    def finish(self) -> VisionResult:
        from .. import runs
        from ..train.checkpoint import atomic_write_bytes, save_weights
        from ..train.metrics import plot_confusion, plot_loss_curve

        run_dir, d = self.run_dir, self.data
        result = VisionResult(run_dir, self.step, self.stopped_by, self.train_seconds, None, self.n_params)
        if self.stopped_by == "interrupted":
            return result
        save_weights(run_dir / runs.WEIGHTS_FILE, self.model.state_dict(), metadata={"step": str(self.step)})
        test = result.test = self.evaluate()
        plot_loss_curve(run_dir / runs.METRICS_FILE, run_dir / runs.LOSS_PLOT,
                        title=f"{self._model_name()}: {self.n_params / 1e6:.3f}M parameters",
                        final=(self.step, test.loss))
        plot_confusion(test.confusion, d.classes, run_dir / CONFUSION_PLOT,
                       f"{d.name}: test accuracy {test.accuracy:.3f} ({len(d.test_y)} images)")
        record = {"data": d.name, "test_accuracy": round(test.accuracy, 6), "params": self.n_params,
                  "seconds": round(self.train_seconds, 2), "test_loss": round(test.loss, 6), "arch": self.spec["arch"],
                  "model": self.spec, "steps": self.step, "stopped_by": self.stopped_by,
                  "batch_size": self.cfg.batch_size, "seed": self.cfg.seed,
                  "train_images_per_s": round(self.images_seen / max(self.train_seconds, 1e-9), 2),
                  "test_images_per_s": round(test.images_per_s, 2), "classes": d.classes,
                  "confusion": test.confusion, "run_dir": str(run_dir)}
        atomic_write_bytes(run_dir / runs.RESULTS_FILE, (json.dumps(record, indent=1) + "\n").encode("utf-8"))
        result.record = record
        self.say(f"stopped at step {self.step} ({self.stopped_by}) after {self.train_seconds:.0f}s of training; test "
                 f"accuracy {test.accuracy:.4f} on {len(d.test_y)} images (loss {test.loss:.4f})")
        self.say(f"run folder: {run_dir} (confusion matrix: {run_dir / CONFUSION_PLOT})")
        return result


def train(cfg: VisionTrainConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
          say: Callable[[str], None] = print) -> VisionResult:
    """Train (or resume) a vision run in `run_dir`, holding the folder's lock throughout."""
    import torch

    from .. import runs
    from ..train.distributed import set_threads

    run_dir = Path(run_dir)
    previous = set_threads(cfg.threads)
    lock = None
    try:
        runs.prepare_dir(run_dir, "--out")
        lock = runs.RunLock(run_dir, runs.command_line()).acquire()
        saved = read_run_config(run_dir) if resume else None
        if not resume and (run_dir / runs.CONFIG_FILE).exists() and (
                (run_dir / runs.WEIGHTS_FILE).exists() or (run_dir / "checkpoints").is_dir()):
            raise ValueError(f"{run_dir} already holds a run: pass --resume to continue it, or another --out")
        trainer = VisionTrainer(cfg, run_dir, resume=resume, progress=progress, say=say)
        trainer.setup(saved)
        trainer.fit()
        return trainer.finish()
    finally:
        if lock is not None:
            lock.release()
        torch.set_num_threads(previous)


# -- run folders -------------------------------------------------------------------------------------------------------

def read_run_config(run_dir: Path) -> dict[str, Any]:
    """config.json of a vision run (one-line errors for a missing, damaged or non-vision one)."""
    from .. import runs

    path = Path(run_dir) / runs.CONFIG_FILE
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run folder {run_dir} not found")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: is {run_dir} a run folder of `xlstmkit vision train`?") from None
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{path} is damaged (not JSON)") from None
    if not isinstance(record, dict) or record.get("kind") != KIND:
        raise ValueError(f"{run_dir} is not a run folder of `xlstmkit vision` (its config.json has no \"kind\": "
                         f"\"vision\")")
    for key in ("model", "data"):
        if not isinstance(record.get(key), dict):
            raise ValueError(f"{path} lacks its {key!r} section: is it damaged?")
    return record


def load_run_model(run_dir: str | Path):
    """(model in eval mode with the run's newest good weights, config.json record, weights source)."""
    from .. import runs

    run_dir = Path(run_dir)
    record = read_run_config(run_dir)
    model = build_model(record["model"])
    source = runs.load_run_weights(run_dir, model, warn=lambda m: print(m, file=sys.stderr))
    return model.eval(), record, source


def read_images(paths: list[str], data: dict[str, Any]):
    """uint8 (N, C, H, W) of image files, read as the run's images were: a folder run's transform (shorter side
    resized, centre crop), else resized to the run's image size; grey or colour as the run."""
    import torch

    from ..data.images import image_transform
    from ..extras import require

    Image = require("PIL.Image", "vision", "reading images")
    T = require("torchvision.transforms.v2", "vision", "reading images")
    H, W = data["image_size"]
    channels = data["channels"]
    if data.get("augment") == "natural":
        transform = image_transform(H, channels)
    else:
        mode = {1: "L", 3: "RGB"}[channels]
        transform = T.Compose([T.Lambda(lambda im: im.convert(mode)), T.PILToTensor(),
                               T.Resize((H, W), antialias=True)])
    out = []
    for p in paths:
        try:
            with Image.open(p) as im:
                out.append(transform(im))
        except FileNotFoundError:
            raise FileNotFoundError(f"image {p} not found") from None
        except Exception as exc:
            raise ValueError(f"cannot read image {p} ({type(exc).__name__}): is it an image file?") from None
    return torch.stack(out)


# -- the command line --------------------------------------------------------------------------------------------------

_FIELD_FLAGS: list[str] = []


def _duration_flag(text: str) -> float | None:
    try:
        return _duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import ArgumentParser

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=ArgumentParser)
    sub.required = True
    tr = sub.add_parser("train", help="train a Vision-LSTM (or the ViT baseline) on digits, pathfinder or a folder",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    g = tr.add_argument_group("run")
    g.add_argument("--out", metavar="DIR", help="run folder (default runs/<timestamp>)")
    g.add_argument("--resume", nargs="?", const=True, metavar="DIR",
                   help="continue a run from its newest intact checkpoint (DIR, else --out)")
    g.add_argument("--json", metavar="FILE", help="also write the result (data, test_accuracy, params, seconds, ...) "
                                                  "to this JSON file")
    g.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    fields = tr.add_argument_group("training fields")
    _FIELD_FLAGS[:] = add_field_flags(fields, VisionTrainConfig, parsers={"duration": _duration_flag})
    add_engine_flags(tr)
    ev = sub.add_parser("eval", help="test accuracy and confusion matrix of a run")
    ev.add_argument("run", metavar="RUN", help="run folder of `xlstmkit vision train`")
    ev.add_argument("--data", metavar="DIR", help="evaluate on this folder (one sub-folder per class of the run) "
                                                  "instead of the run's own test images")
    ev.add_argument("--json", metavar="FILE", help="also write the result to this JSON file")
    add_engine_flags(ev)
    pr = sub.add_parser("predict", help="the most probable classes of image files")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    pr.add_argument("--run", required=True, metavar="RUN", help="run folder of `xlstmkit vision train` or `convert`")
    pr.add_argument("--top-k", type=int, default=3, metavar="K", help="classes to show per image (default 3)")
    pr.add_argument("--json", metavar="FILE", help="also write the predictions to this JSON file")
    add_engine_flags(pr)
    cv = sub.add_parser("convert", help="a published Vision-LSTM checkpoint (.th/.pth/.safetensors) as a run folder")
    cv.add_argument("checkpoint", metavar="FILE", help="checkpoint file of NX-AI/vision-lstm")
    cv.add_argument("--out", required=True, metavar="DIR", help="run folder to write")
    cv.add_argument("--image-size", type=int, metavar="N", help="image size (interpolates the position embedding)")


def _check_outputs(args) -> None:
    from .. import runs

    if getattr(args, "json", None):
        runs.check_writable_file(args.json, "--json")


def _write_json(path: str | None, obj: Any) -> None:
    if path:
        from ..train.checkpoint import atomic_write_bytes

        atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode("utf-8"))


def _train(args) -> int:
    from ..runs import default_run_dir

    explicit = given(args, _FIELD_FLAGS + ["device", "dtype", "threads"])
    _check_outputs(args)
    if args.resume:
        run_dir = Path(args.resume if isinstance(args.resume, str) else (args.out or ""))
        if not str(run_dir) or str(run_dir) == ".":
            raise ValueError("--resume: give the run folder (--resume DIR)")
        if args.out and isinstance(args.resume, str) and Path(args.out) != run_dir:
            raise ValueError(f"--resume {args.resume} and --out {args.out} name different folders")
        saved = read_run_config(run_dir)
        fixed = sorted(k for k in explicit if k not in RESUMABLE and explicit[k] != saved["vision"].get(k))
        if fixed:
            raise ValueError(f"--{fixed[0].replace('_', '-')} cannot be changed when resuming (only "
                             f"{', '.join('--' + r.replace('_', '-') for r in RESUMABLE)} can): start a new run")
        cfg = VisionTrainConfig.from_dict({**saved["vision"], **explicit})
        resume = True
    else:
        cfg = VisionTrainConfig(**explicit)
        run_dir = Path(args.out) if args.out else default_run_dir()
        resume = False
        if cfg.arch == "vit":
            from ..extras import require

            require("timm", "bench", "the ViT baseline (--arch vit)")
        if cfg.source == "folder" and not Path(cfg.data).is_dir():
            raise FileNotFoundError(f"--data {cfg.data}: no such folder (give digits, pathfinder or a folder with one "
                                    f"sub-folder per class)")
        sizes(cfg)
    try:
        result = train(cfg, run_dir, resume=resume, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"xlstmkit vision: interrupted; resume with: xlstmkit vision train --resume {run_dir}", file=sys.stderr)
        return 130
    if result.stopped_by == "interrupted":
        print(f"xlstmkit vision: interrupted at step {result.step} (checkpoint saved); resume with: xlstmkit vision "
              f"train --resume {run_dir}", file=sys.stderr)
        return 130
    _write_json(args.json, result.record)
    return 0


def _eval(args) -> int:
    import torch

    from .common import engine

    device, dtype, _ = engine(args)
    _check_outputs(args)
    model, record, source = load_run_model(args.run)
    data = record["data"]
    if args.data:
        from ..data.images import load_image_folder

        ds = load_image_folder(args.data, data["image_size"][0], seed=0, channels=data["channels"])
        if ds.info["split"] == "folders":
            x, y, classes = ds.test_x, ds.test_y, ds.classes
        else:
            x, y, classes = torch.cat([ds.train_x, ds.test_x]), torch.cat([ds.train_y, ds.test_y]), ds.classes
        unknown = sorted(set(classes) - set(data["classes"]))
        if unknown:
            raise ValueError(f"--data {args.data} has classes the run does not know: {unknown[:5]}")
        remap = torch.tensor([data["classes"].index(c) for c in classes])
        y = remap[y]
        name = args.data
    else:
        if "vision" not in record:
            raise ValueError(f"{args.run} was converted, not trained: it has no test images of its own (give --data)")
        cfg = VisionTrainConfig.from_dict(record["vision"])
        ds = load_data(cfg, test_only=True)
        x, y, name = ds.test_x, ds.test_y, ds.name
    res = evaluate(model.to(device), x, y, data["mean"], data["std"], num_classes=len(data["classes"]),
                   device=device, dtype=dtype)
    run_dir = Path(args.run)
    from ..train.metrics import plot_confusion

    plot_confusion(res.confusion, data["classes"], run_dir / CONFUSION_PLOT,
                   f"{name}: test accuracy {res.accuracy:.3f} ({len(y)} images)")
    params = sum(p.numel() for p in model.parameters())
    out = {"data": name, "test_accuracy": round(res.accuracy, 6), "params": params, "seconds": round(res.seconds, 3),
           "test_loss": round(res.loss, 6), "images": int(len(y)), "images_per_s": round(res.images_per_s, 2),
           "classes": data["classes"], "confusion": res.confusion, "weights": source}
    print(f"{name}: test accuracy {res.accuracy:.4f} on {len(y)} images (loss {res.loss:.4f}); confusion matrix "
          f"{run_dir / CONFUSION_PLOT}")
    _write_json(args.json, out)
    return 0


def _predict(args) -> int:
    import torch

    from ..data.images import normalise
    from .common import engine, positive

    positive("--top-k", args.top_k)
    device, dtype, _ = engine(args)
    _check_outputs(args)
    model, record, _ = load_run_model(args.run)
    data = record["data"]
    images = read_images(args.images, data)
    from ..train.core import autocast

    with torch.no_grad(), autocast(device, dtype):
        logits = model.to(device)(normalise(images, data["mean"], data["std"]).to(device))
    probs = torch.softmax(logits.float().cpu(), dim=-1)
    k = min(args.top_k, probs.shape[-1])
    top = probs.topk(k, dim=-1)
    out = []
    for path, p, i in zip(args.images, top.values.tolist(), top.indices.tolist()):
        ranked = [{"class": data["classes"][c], "probability": round(q, 6)} for q, c in zip(p, i)]
        out.append({"image": path, "top": ranked})
        print(f"{path}: " + ", ".join(f"{r['class']} {r['probability']:.3f}" for r in ranked))
    _write_json(args.json, out)
    return 0


IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _convert(args) -> int:
    from .. import __version__, runs
    from ..interop.vision_lstm import convert_state_dict, read_checkpoint
    from ..models.vision_lstm import VisionLSTM
    from ..train.checkpoint import atomic_write_bytes, save_weights

    overrides = {}
    if args.image_size is not None:
        from .common import positive

        positive("--image-size", args.image_size)
        overrides["image_size"] = args.image_size
    cfg, state = convert_state_dict(read_checkpoint(args.checkpoint), **overrides)
    if cfg.num_classes is None:
        raise ValueError(f"{args.checkpoint} holds a feature extractor (no head): there is nothing to predict with")
    model = VisionLSTM(cfg)
    model.load_state_dict(state)  # every parameter: a classifier checkpoint converts completely
    run_dir = runs.prepare_dir(args.out, "--out")
    with runs.RunLock(run_dir, runs.command_line()):
        save_weights(run_dir / runs.WEIGHTS_FILE, model.state_dict())
        imagenet = cfg.num_classes == 1000 and cfg.in_channels == 3
        data = {"name": "imagenet-1k" if imagenet else "unknown", "classes": [str(c) for c in range(cfg.num_classes)],
                "mean": IMAGENET_MEAN if imagenet else [0.5] * cfg.in_channels,
                "std": IMAGENET_STD if imagenet else [0.5] * cfg.in_channels, "image_size": list(cfg.image_size),
                "channels": cfg.in_channels, "augment": "natural",
                "description": f"converted from {args.checkpoint} (class names are the label indices)"}
        record = {"kind": KIND, "model": {"arch": "vil", **cfg.to_dict()}, "data": data,
                  "parameters": sum(p.numel() for p in model.parameters()), "converted_from": str(args.checkpoint),
                  "xlstmkit_version": __version__}
        atomic_write_bytes(run_dir / runs.CONFIG_FILE, (json.dumps(record, indent=1) + "\n").encode("utf-8"))
    print(f"wrote {run_dir}: Vision-LSTM v{cfg.version}, width {cfg.dim}, {cfg.depth} block pairs, "
          f"{record['parameters'] / 1e6:.2f}M parameters, {cfg.image_size[0]}x{cfg.image_size[1]} px")
    return 0


def main(args: argparse.Namespace) -> int:
    return {"train": _train, "eval": _eval, "predict": _predict, "convert": _convert}[args.action](args)

"""The training log: `metrics.csv` (always; the run's record), plus TensorBoard or Weights & Biases when asked
(`--logger`), and the loss-curve plot.

metrics.csv loses nothing, whatever moment the process is killed:
- a row is appended (one `write` of a whole line, flushed) after every step, and the file is fsync'ed before every
  checkpoint, so every step up to the newest checkpoint is on disk before that checkpoint exists;
- on resume from step s, the rows after s (they will be computed again) are dropped by writing the kept rows to a
  temporary file and renaming it over metrics.csv: a kill during the resume leaves the old file or the new one,
  never a part; a row cut short by a kill (the last line) is dropped on reading;
- each step appears once: rows are keyed by step, the last one of a step wins.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_bytes

METRIC_COLUMNS = ["step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "val_loss", "val_bpb"]
LOGGERS = ("csv", "tensorboard", "wandb")


def read_metrics(path: str | Path, up_to_step: int | None = None) -> list[dict[str, str]]:
    """The complete rows of a metrics.csv (a torn last line is skipped), one per step (the last one wins), sorted by
    step, optionally only steps <= `up_to_step`."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.endswith("\n"):  # the last line was cut by a kill
        text = text[: text.rfind("\n") + 1]
    rows: dict[int, dict[str, str]] = {}
    for r in csv.DictReader(io.StringIO(text)):
        step = r.get("step") or ""
        if not step.isdigit() or None in r or any(v is None for v in r.values()):
            continue
        if up_to_step is None or int(step) <= up_to_step:
            rows[int(step)] = r
    return [rows[s] for s in sorted(rows)]


def _csv_text(rows: list[dict[str, Any]], header: bool) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    if header:
        w.writeheader()
    w.writerows({k: r.get(k, "") for k in METRIC_COLUMNS} for r in rows)
    return buf.getvalue()


def check_logger(name: str) -> None:
    """Fail now, in one line, when the logger's package is missing (not after set-up, not silently)."""
    if name == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise ImportError("--logger tensorboard needs the tensorboard package: pip install tensorboard "
                              "(or use --logger csv)") from None
    elif name == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ImportError("--logger wandb needs the wandb package: pip install wandb (or use --logger csv)") from None
    elif name not in LOGGERS:
        raise ValueError(f"--logger must be one of {', '.join(LOGGERS)}, got {name!r}")


class MetricsLog:
    """metrics.csv and the optional logger of one run (only rank 0 writes: `enabled`)."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None, logger: str = "csv",
                 run_config: dict | None = None) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.csv"
        self.tb = self.wandb = None
        self._fh = None
        if not enabled:
            return
        kept = read_metrics(self.path, resume_step) if resume_step is not None else []
        atomic_write_bytes(self.path, _csv_text(kept, header=True).encode("utf-8"))
        self._fh = open(self.path, "a", encoding="utf-8", newline="")
        if logger == "tensorboard":
            check_logger(logger)
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: TensorBoard hides the events of steps after the checkpoint we resumed from
            self.tb = SummaryWriter(log_dir=str(run_dir),
                                    purge_step=None if resume_step is None else resume_step + 1)
        elif logger == "wandb":
            check_logger(logger)
            import wandb

            mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "xlstmkit"), name=Path(run_dir).name,
                                    id=_wandb_id(run_dir), resume="allow", dir=str(run_dir), mode=mode,
                                    config=run_config or {})

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self._fh.write(_csv_text([row], header=False))  # one whole line per write
        self._fh.flush()
        numbers = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        if self.tb is not None:
            for k, v in numbers.items():
                self.tb.add_scalar(k, v, row["step"])
        if self.wandb is not None:
            self.wandb.log(numbers, step=row["step"])

    def sync(self) -> None:
        """Make every row written so far durable (called before each checkpoint)."""
        if self.enabled and self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            if self.tb is not None:
                self.tb.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _wandb_id(run_dir: Path) -> str:
    import hashlib

    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]


def save_figure(fig, path: str | Path) -> None:
    """A matplotlib figure as a PNG, written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(path, buf.getvalue())


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path, title: str) -> bool:
    """The confusion matrix of `xlstmkit classify` and `xlstmkit vision` as a PNG (rows: true class, columns:
    predicted; counts in the cells up to 30 classes); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    import numpy as np

    m = np.asarray(confusion)
    n = len(classes)
    size = min(12.0, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ticks = range(n)
    labels = [str(c) if len(str(c)) <= 14 else str(c)[:13] + "…" for c in classes]
    ax.set_xticks(ticks, labels if n <= 40 else [""] * n, rotation=90 if n > 10 else 0)
    ax.set_yticks(ticks, labels if n <= 40 else [""] * n)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= 30:
        top = m.max() if m.size else 0
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if m[i, j] > top / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True


def plot_loss_curve(metrics_csv: Path, out_png: Path, title: str = "",
                    final: tuple[int, float] | None = None) -> bool:
    """Training loss (and validation loss where measured, `final` = (step, loss) of the final evaluation) against
    step, as a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps, loss, vsteps, vloss = [], [], [], []
    for r in read_metrics(metrics_csv):
        if r.get("loss"):
            steps.append(int(r["step"]))
            loss.append(float(r["loss"]))
        if r.get("val_loss"):
            vsteps.append(int(r["step"]))
            vloss.append(float(r["val_loss"]))
    if not steps:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, lw=0.8, alpha=0.5, label="train loss")
    if len(loss) >= 10:
        k = max(2, len(loss) // 30)
        smooth = [sum(loss[max(0, i - k + 1):i + 1]) / len(loss[max(0, i - k + 1):i + 1]) for i in range(len(loss))]
        ax.plot(steps, smooth, lw=1.5, label=f"train loss (mean of {k})")
    if vloss or final:
        vsteps, vloss = vsteps + ([final[0]] if final else []), vloss + ([final[1]] if final else [])
        ax.plot(vsteps, vloss, marker="o", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title or "xlstmkit training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out_png)
    plt.close(fig)
    return True

"""Kill/resume soak (slow): a tiny `xlstmkit train` is SIGKILLed at 20+ random moments (during set-up, during a
resume's checkpoint loading and metrics rewrite, mid-step, mid-checkpoint) and restarted each time with --resume;
the run it finally completes has bitwise the weights of an uninterrupted run, and metrics.csv holds every step
exactly once."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from xlstmkit.train.checkpoint import list_checkpoints, load_weights
from xlstmkit.train.config import build_run_config
from xlstmkit.train.loop import train

SRC = str(Path(__file__).resolve().parents[1] / "src")
MODEL = ["embedding_dim=16", "num_blocks=2", "slstm_at=[1]", "mlstm_num_heads=2", "slstm_num_heads=2",
         "chunk_size=8", "round_up_to=8", "dropout=0.1"]
TRAIN = {"batch_size": 4, "seq_len": 16, "warmup_steps": 3, "eval_every": 10, "eval_tokens": 128,
         "final_eval_tokens": 128, "sample_tokens": 0, "checkpoint_every": 3, "keep_last": 2, "lr": 1e-2,
         "max_steps": 40, "threads": 1}


@pytest.mark.slow
def test_random_sigkills_lose_nothing_and_change_nothing(tmp_path):
    data = tmp_path / "d.txt"
    data.write_text("".join(f"def g{i}(y):\n    return y - {i % 11}\n" for i in range(200)), encoding="utf-8")
    reference = tmp_path / "reference"
    train(build_run_config("tiny", sets=MODEL, overrides={"data": str(data), **TRAIN}), reference, progress=False,
          print_fn=lambda *_: None)
    out = tmp_path / "run"
    base = ["--preset", "tiny", "--data", str(data), "--no-progress"]
    for item in MODEL:
        base += ["--set", item]
    for key, value in TRAIN.items():
        base += ["--set", f"{key}={value}"]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    rng = random.Random(1234)
    kills, during_resume, attempts = 0, 0, 0
    while kills < 20:
        attempts += 1
        assert attempts < 60, "the run finished before 20 kills: make it longer"
        resume = bool(list_checkpoints(out))
        argv = ["train", "--resume", str(out)] if resume else ["train", *base, "--out", str(out)]
        proc = subprocess.Popen([sys.executable, "-m", "xlstmkit", *argv], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.5, 7.0))   # import + set-up take a few seconds: some kills land in the resume
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            kills += 1
            during_resume += resume
        else:
            assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
            shutil_rmtree(out)              # finished before the kill: start again, the soak needs its kills
    assert during_resume >= 5
    final = subprocess.run([sys.executable, "-m", "xlstmkit", *(["train", "--resume", str(out)]
                                                                if list_checkpoints(out) else
                                                                ["train", *base, "--out", str(out)])],
                           env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    a, b = load_weights(reference / "model.safetensors"), load_weights(out / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after {kills} kills"
    steps = [int(r["step"]) for r in csv.DictReader((out / "metrics.csv").open())]
    assert steps == list(range(1, TRAIN["max_steps"] + 1))
    ref_rows = list(csv.DictReader((reference / "metrics.csv").open()))
    got_rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["loss"] for r in got_rows] == [r["loss"] for r in ref_rows]
    assert not list(out.glob(".*.tmp-*")) and not list((out / "checkpoints").glob(".tmp-*"))


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)

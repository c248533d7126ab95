"""Two processes under torchrun (gloo, CPU) train to the same parameters as one process with the same global batch:
each rank takes its own rows of every global batch, DDP averages the gradients."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xlstmkit.train.checkpoint import load_weights
from xlstmkit.train.config import build_run_config
from xlstmkit.train.loop import train

TINY_MODEL = ["embedding_dim=16", "num_blocks=2", "slstm_at=[1]", "mlstm_num_heads=2", "slstm_num_heads=2",
              "chunk_size=8", "round_up_to=8"]
TRAIN = {"batch_size": 4, "seq_len": 16, "warmup_steps": 1, "eval_every": 0, "eval_tokens": 128,
         "final_eval_tokens": 128, "sample_tokens": 0, "checkpoint_every": 0, "lr": 1e-2, "max_steps": 3}


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "d.txt"
    path.write_text("".join(f"value_{i} = {i * i} % {i + 3}\n" for i in range(300)), encoding="utf-8")
    return path


def _torchrun(tmp_path: Path, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "xlstmkit",
            "train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--no-progress", *extra]
    for item in TINY_MODEL:
        args += ["--set", item]
    for k, v in TRAIN.items():
        args += ["--set", f"{k}={v}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


@pytest.mark.parametrize("extra", [(), pytest.param(("--grad-accum", "2"), marks=pytest.mark.slow), ("--fsdp",)],
                         ids=["ddp", "ddp+accum", "fsdp"])
def test_two_process_ddp_matches_one_process(tmp_path, extra):
    data = _data(tmp_path)
    one = train(build_run_config("tiny", sets=TINY_MODEL, overrides={"data": str(data), **TRAIN}), tmp_path / "one",
                progress=False, print_fn=lambda *_: None)
    done = _torchrun(tmp_path, data, tmp_path / "two", *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout
    a, b = load_weights(tmp_path / "one" / "model.safetensors"), load_weights(tmp_path / "two" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    rows_one = (tmp_path / "one" / "metrics.csv").read_text().splitlines()
    rows_two = (tmp_path / "two" / "metrics.csv").read_text().splitlines()
    assert len(rows_one) == len(rows_two) == 4   # only rank 0 wrote the log (no duplicate rows)
    l1 = [float(r.split(",")[2]) for r in rows_one[1:]]
    l2 = [float(r.split(",")[2]) for r in rows_two[1:]]
    assert l1 == pytest.approx(l2, rel=1e-4)


@pytest.mark.slow
def test_fsdp_resume_matches_one_process(tmp_path):
    """FSDP: 2 steps, then a resume to 3 (each rank cuts its shard from the full checkpoint) == 3 steps in one
    process."""
    data = _data(tmp_path)
    train(build_run_config("tiny", sets=TINY_MODEL, overrides={"data": str(data), **TRAIN, "lr_decay_steps": 3}),
          tmp_path / "one", progress=False, print_fn=lambda *_: None)
    done = _torchrun(tmp_path, data, tmp_path / "two", "--fsdp", "--max-steps", "2", "--set", "lr_decay_steps=3")
    assert done.returncode == 0, done.stderr[-3000:]
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "xlstmkit",
            "train", "--resume", str(tmp_path / "two"), "--max-steps", "3", "--no-progress"]
    done = subprocess.run(args, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_weights(tmp_path / "one" / "model.safetensors"), load_weights(tmp_path / "two" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")

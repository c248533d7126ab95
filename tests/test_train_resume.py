"""Resuming: 10 steps then a resume to 20 equals 20 steps straight (bitwise); a run SIGKILLed while writing a
checkpoint resumes from its last complete one; a corrupt newest checkpoint is named in one line and skipped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from xlstmkit.cli import main as cli_main
from xlstmkit.train.checkpoint import list_checkpoints, load_weights
from xlstmkit.train.config import build_run_config
from xlstmkit.train.loop import train

TINY_MODEL = ["embedding_dim=16", "num_blocks=2", "slstm_at=[1]", "mlstm_num_heads=2", "slstm_num_heads=2",
              "chunk_size=8", "round_up_to=8"]
TINY_TRAIN = {"batch_size": 4, "seq_len": 16, "warmup_steps": 2, "eval_every": 0, "eval_tokens": 128,
              "final_eval_tokens": 128, "sample_tokens": 0, "checkpoint_every": 5, "lr": 1e-2}


def write_text(path: Path) -> Path:
    lines = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(150)]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def tiny(data: Path, **train_fields):
    return build_run_config("tiny", sets=TINY_MODEL, overrides={"data": str(data), **TINY_TRAIN, **train_fields})


def cli_args(data: Path, out: Path, *extra: str) -> list[str]:
    args = ["train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--no-progress"]
    for item in TINY_MODEL:
        args += ["--set", item]
    for key, value in TINY_TRAIN.items():
        args += ["--set", f"{key}={value}"]
    return args + list(extra)


def test_resume_equals_straight_run(tmp_path):
    data = write_text(tmp_path / "d.txt")
    quiet = lambda *_: None  # noqa: E731
    threads = torch.get_num_threads()
    straight = train(tiny(data, max_steps=20, lr_decay_steps=20), tmp_path / "a", progress=False, print_fn=quiet)
    train(tiny(data, max_steps=10, lr_decay_steps=20), tmp_path / "b", progress=False, print_fn=quiet)
    resumed = train(tiny(data, max_steps=20, lr_decay_steps=20), tmp_path / "b", resume=True, progress=False,
                    print_fn=quiet)
    assert resumed.resumed_from == 10 and resumed.step == straight.step == 20
    assert torch.get_num_threads() == threads  # train() restores the caller's thread count
    a, b = load_weights(tmp_path / "a" / "model.safetensors"), load_weights(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume: max diff {(a[k] - b[k]).abs().max():.3e}"
    # the loss after resuming continues exactly where the straight run's did, and the model learned something
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history[10:]]
    assert straight.history[-1]["loss"] < straight.history[0]["loss"] - 0.5
    rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 21 and rows[-1].startswith("20,")


_KILL_SCRIPT = r"""
import sys, time
from pathlib import Path
from xlstmkit.train import checkpoint as ck
real = ck._write_fsync
marker = Path(sys.argv[1])
def slow(path, data):
    if path.name == "optimizer.safetensors" and path.parent.name.startswith(".tmp-step_00000010"):
        real(path, data[: len(data) // 2])   # half of the file is on disk ...
        marker.write_text("writing")
        time.sleep(120)                      # ... when the process is killed
    real(path, data)
ck._write_fsync = slow
from xlstmkit.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_sigkill_mid_checkpoint_then_resume(tmp_path):
    data = write_text(tmp_path / "d.txt")
    out = tmp_path / "run"
    marker = tmp_path / "writing"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(marker),
                             *cli_args(data, out, "--max-steps", "1000")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None, f"training exited early: {proc.stderr.read().decode()[-2000:]}"
            assert time.time() < deadline, "no checkpoint write within 120 s"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert [s for s, _ in list_checkpoints(out)] == [5]           # the half-written step 10 is not a checkpoint
    assert list((out / "checkpoints").glob(".tmp-step_00000010-*"))
    assert not (out / "model.safetensors").exists()
    # a shorter horizon than the killed run's 1000 steps: the user says so with --extend
    code = cli_main(["train", "--resume", str(out), "--max-steps", "12", "--extend", "--no-progress"])
    assert code == 0
    assert [s for s, _ in list_checkpoints(out)][-1] == 12
    assert not list((out / "checkpoints").glob(".tmp-*"))
    rows = (out / "metrics.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, 13))  # steps 6-9 of the killed run dropped


def test_corrupt_newest_checkpoint_named_and_skipped(tmp_path, capsys):
    data = write_text(tmp_path / "d.txt")
    out = tmp_path / "run"
    assert cli_main(cli_args(data, out, "--max-steps", "4", "--checkpoint-every", "2")) == 0
    newest = out / "checkpoints" / "step_00000004" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    capsys.readouterr()
    assert cli_main(["train", "--resume", str(out), "--max-steps", "6", "--no-progress", "--extend"]) == 0
    captured = capsys.readouterr()
    err = captured.err
    bad = [line for line in err.splitlines() if str(newest) in line]
    assert len(bad) == 1 and "truncated or corrupt" in bad[0] and "falling back" in bad[0]
    assert "resuming" in captured.out and "step_00000002" in captured.out and "Traceback" not in err
    # every checkpoint broken: a one-line error, exit code 2, no traceback
    for _, folder in list_checkpoints(out):
        f = folder / "optimizer.safetensors"
        f.write_bytes(f.read_bytes()[:-8])
    capsys.readouterr()
    assert cli_main(["train", "--resume", str(out), "--max-steps", "8", "--no-progress", "--extend"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("xlstmkit train: error: no intact checkpoint") and "Traceback" not in err


def test_resume_refuses_changes_to_what_the_run_computes(tmp_path, capsys):
    data = write_text(tmp_path / "d.txt")
    out = tmp_path / "run"
    assert cli_main(cli_args(data, out, "--max-steps", "2")) == 0
    capsys.readouterr()
    assert cli_main(["train", "--resume", str(out), "--lr", "0.5"]) == 2
    assert "lr cannot be changed when resuming" in capsys.readouterr().err
    assert cli_main(cli_args(data, out, "--max-steps", "2")) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_resume_warns_when_the_data_changed(tmp_path, capsys):
    data = write_text(tmp_path / "d.txt")
    out = tmp_path / "run"
    assert cli_main(cli_args(data, out, "--max-steps", "2")) == 0
    data.write_text(data.read_text().replace("return", "yield"), encoding="utf-8")
    capsys.readouterr()
    assert cli_main(["train", "--resume", str(out), "--max-steps", "3", "--no-progress", "--extend"]) == 0
    assert "training tokens differ" in capsys.readouterr().err


def test_run_killed_before_its_first_checkpoint_can_be_started_again(tmp_path, capsys):
    data = write_text(tmp_path / "d.txt")
    out = tmp_path / "run"
    assert cli_main(cli_args(data, out, "--max-steps", "2")) == 0
    import shutil

    shutil.rmtree(out / "checkpoints")
    (out / "model.safetensors").unlink()            # as if killed before the first checkpoint
    capsys.readouterr()
    assert cli_main(["train", "--resume", str(out), "--no-progress"]) == 2
    assert "without --resume" in capsys.readouterr().err
    assert cli_main(cli_args(data, out, "--max-steps", "2")) == 0

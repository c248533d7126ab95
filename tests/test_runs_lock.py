"""One writer per run folder: a second `train` (or an `eval` writing into it) on a folder in use exits with one line
naming the holder (pid, host); the lock of a process that died (SIGKILL included) is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from xlstmkit.cli import main
from xlstmkit.runs import LOCK_FILE, RunLock, RunLockedError, list_runs, latest_run_dir

TINY = ["--preset", "tiny", "--max-steps", "2", "--no-progress", "--set", "embedding_dim=16", "--set",
        "num_blocks=2", "--set", "slstm_at=[1]", "--set", "mlstm_num_heads=2", "--set", "slstm_num_heads=2",
        "--set", "chunk_size=8", "--set", "round_up_to=8", "--batch-size", "4", "--seq-len", "16", "--set",
        "sample_tokens=0", "--set", "final_eval_tokens=128", "--set", "eval_tokens=128"]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("".join(f"x{i} = {i} * 2\n" for i in range(400)), encoding="utf-8")
    return path


def test_second_writer_is_refused_naming_the_holder(tmp_path, data, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out, "xlstmkit train --out run"):
        assert main(["train", "--data", str(data), "--out", str(out), *TINY]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"process {os.getpid()} on {socket.gethostname()}" in err and "in use" in err
        with pytest.raises(RunLockedError):
            RunLock(out).acquire()
    assert main(["train", "--data", str(data), "--out", str(out), *TINY]) == 0   # free again
    capsys.readouterr()
    with RunLock(out):   # eval writes eval.json into the run folder: also a writer
        assert main(["eval", "--run", str(out), "--max-tokens", "64", "--no-progress"]) == 2
        assert "in use by process" in capsys.readouterr().err
    assert main(["eval", "--run", str(out), "--max-tokens", "64", "--no-progress"]) == 0
    assert [r.path for r in list_runs(tmp_path)] == [out] and latest_run_dir(tmp_path) == out


def test_lock_of_a_killed_process_is_taken_over(tmp_path, data):
    out = tmp_path / "run"
    out.mkdir()
    holder = textwrap.dedent(f"""
        import fcntl, json, os, socket, sys, time
        fd = os.open({str(out / LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({{"pid": os.getpid(), "host": socket.gethostname()}}).encode())
        print("locked", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"process {proc.pid} on"):
            RunLock(out).acquire()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the lock file still names the dead process; the kernel released its lock, so a new run takes it over
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == proc.pid
    assert main(["train", "--data", str(data), "--out", str(out), *TINY]) == 0
    with RunLock(out) as lock:
        assert lock.held

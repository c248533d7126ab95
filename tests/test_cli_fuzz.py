"""Every command, given bad arguments or damaged files, ends with exit status 2 and one error line on stderr, never a
traceback (unless --debug / XLSTMKIT_DEBUG=1 asks for it).

The cases run in subprocesses: one driver process imports xlstmkit once, then forks a child per case that runs the
command as the `xlstmkit` entry point does (stdout/stderr to files, its exit status reported back), so a case that
crashed the interpreter could not take the test down with it, and a case costs milliseconds, not a torch import.
A table covers the known defects; hypothesis draws more bad values for the numeric and device flags.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xlstmkit.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")

_DRIVER = textwrap.dedent(r"""
    import json, os, signal, sys, tempfile, traceback
    import torch
    torch.set_num_threads(1)          # no thread pool in the parent: forking stays safe
    import xlstmkit.cli as cli
    for name in cli.COMMANDS:
        __import__(f"xlstmkit.commands.{name}")
    import xlstmkit.train.loop, xlstmkit.train.synthetic, xlstmkit.runs  # noqa: E401
    for line in sys.stdin:
        case = json.loads(line)
        err = tempfile.NamedTemporaryFile(delete=False)
        err.close()
        pid = os.fork()
        if pid == 0:
            signal.alarm(120)
            out = os.open(os.devnull, os.O_WRONLY)
            os.dup2(out, 1)
            e = os.open(err.name, os.O_WRONLY)
            os.dup2(e, 2)
            os.environ.update(case.get("env", {}))
            try:
                code = cli.main(case["argv"])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        with open(err.name, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        os.unlink(err.name)
        print(json.dumps({"code": code, "stderr": text}), flush=True)
""")


class Driver:
    def __init__(self, cwd: Path) -> None:
        env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
        env.pop("XLSTMKIT_DEBUG", None)
        self.proc = subprocess.Popen([sys.executable, "-c", _DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=cwd)

    def run(self, argv: list[str], env: dict | None = None) -> tuple[int, str]:
        self.proc.stdin.write(json.dumps({"argv": argv, "env": env or {}}) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, "the driver process died"
        result = json.loads(answer)
        return result["code"], result["stderr"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


TINY = ["--preset", "tiny", "--no-progress", "--max-steps", "2", "--set", "embedding_dim=16", "--set", "num_blocks=2",
        "--set", "slstm_at=[1]", "--set", "mlstm_num_heads=2", "--set", "slstm_num_heads=2", "--set", "chunk_size=8",
        "--set", "round_up_to=8", "--batch-size", "4", "--seq-len", "16", "--set", "sample_tokens=0", "--set",
        "final_eval_tokens=128", "--set", "eval_tokens=128"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Files for the cases: data, a trained run, damaged copies, Hugging Face folders with broken files."""
    tmp = tmp_path_factory.mktemp("fuzz")
    data = tmp / "d.txt"
    data.write_text("".join(f"z{i} = {i} + 1\n" for i in range(400)), encoding="utf-8")
    run = tmp / "run"
    assert main(["train", *TINY, "--data", str(data), "--out", str(run), "--set", "checkpoint_every=1",
                 "--set", "keep_last=1"]) == 0
    bad_config = tmp / "bad_config"
    shutil.copytree(run, bad_config)
    (bad_config / "config.json").write_text('{"model": {}, "train": ', encoding="utf-8")
    no_weights = tmp / "no_weights"
    shutil.copytree(run, no_weights)
    (no_weights / "model.safetensors").write_bytes(b"\x00" * 10)
    shutil.rmtree(no_weights / "checkpoints")
    blob = tmp / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 16)
    yml = tmp / "bad.yaml"
    yml.write_text("model: [unclosed\n", encoding="utf-8")
    hf_json = tmp / "hf_json"
    hf_json.mkdir()
    (hf_json / "config.json").write_text('{"model_type": "xlstm", "hidden_size": ', encoding="utf-8")
    hf_header = tmp / "hf_header"
    hf_header.mkdir()
    (hf_header / "config.json").write_text(json.dumps({"model_type": "xlstm", "vocab_size": 64, "hidden_size": 32,
                                                       "num_heads": 2, "num_hidden_layers": 1}), encoding="utf-8")
    (hf_header / "model.safetensors").write_bytes((2**62).to_bytes(8, "little") + b"{}")   # a hostile header length
    hf_types = tmp / "hf_types"
    hf_types.mkdir()
    (hf_types / "config.json").write_text(json.dumps({"model_type": "xlstm", "vocab_size": "many"}), encoding="utf-8")
    (tmp / "work").mkdir()
    driver = Driver(tmp / "work")
    paths = {"DATA": data, "RUN": run, "BAD_CONFIG": bad_config, "NO_WEIGHTS": no_weights, "BLOB": blob,
             "YAML": yml, "HF_JSON": hf_json, "HF_HEADER": hf_header, "HF_TYPES": hf_types, "DIR": tmp,
             "UNWRITABLE": Path("/proc/xlstmkit-nowhere/out")}
    yield driver, {k: str(v) for k, v in paths.items()}
    driver.close()


CASES = [
    # train
    ["train", "--max-steps", "-1"], ["train", "--out", "BLOB"], ["train", "--out", "UNWRITABLE"],
    ["train", "--data", "BLOB"], ["train", "--set", "vocab_size=10"], ["train", "--set", "nonsense"],
    ["train", "--set", "lrate=1"], ["train", "--config", "YAML"], ["train", "--config", "DIR"],
    ["train", "--resume", "/nonexistent/run"], ["train", "--resume", "RUN", "--lr", "5"],
    ["train", "--resume", "RUN", "--max-steps", "99"], ["train", "--resume", "BAD_CONFIG"],
    ["train", "--device", "cuda:3"], ["train", "--device", "tpu"], ["train", "--threads", "0"],
    ["train", "--time-budget", "soon"], ["train", "--logger", "nope"], ["train", "--init-from", "/nonexistent"],
    ["train", "--init-from", "HF_JSON"], ["train", "--init-from", "HF_HEADER"], ["train", "--lr", "nan"],
    ["train", "--extend"], ["train", "--batch-size", "3", "--grad-accum", "2"], ["train", "--no-such-flag"],
    ["train", "--data", "/nonexistent/d.txt"], ["train", "--seq-len", "100000"],
    # eval
    ["eval", "--run", "/nonexistent"], ["eval", "--run", "BLOB"], ["eval", "--run", "RUN", "--max-tokens", "0"],
    ["eval", "--run", "RUN", "--lengths", "a,b"], ["eval", "--run", "RUN", "--out", "BLOB"],
    ["eval", "--run", "HF_JSON", "--data", "DATA"], ["eval", "--run", "HF_HEADER", "--data", "DATA"],
    ["eval", "--run", "HF_TYPES", "--data", "DATA"], ["eval", "--run", "RUN", "--data", "BLOB"],
    ["eval", "--run", "RUN", "--device", "cuda"], ["eval", "--run", "BAD_CONFIG"], ["eval", "--run", "NO_WEIGHTS"],
    ["eval", "--run", "RUN", "--out", "UNWRITABLE"], ["eval", "--run", "RUN", "--seq-len", "100000"],
    # generate
    ["generate", "--run", "RUN", "--temperature", "nan"], ["generate", "--run", "RUN", "--temperature", "-1"],
    ["generate", "--run", "RUN", "--top-p", "0"], ["generate", "--run", "RUN", "--top-p", "1.5"],
    ["generate", "--run", "RUN", "--top-k", "0"], ["generate", "--run", "RUN", "--top-k", "100000"],
    ["generate", "--run", "RUN", "--max-new-tokens", "-3"], ["generate", "--run", "HF_JSON"],
    ["generate", "--run", "HF_HEADER"], ["generate", "--run", "NO_WEIGHTS"], ["generate", "--run", "BAD_CONFIG"],
    ["generate", "--run", "RUN", "--threads", "-2"], ["generate", "--run", "RUN", "--seed", "-1"],
    # tasks
    ["tasks", "run", "nope", "--model", "lstm"], ["tasks", "run", "parity", "--model", "gpt"],
    ["tasks", "run", "parity", "--model", "lstm", "--steps", "-1"],
    ["tasks", "run", "parity", "--model", "lstm", "--threads", "0"],
    ["tasks", "run", "parity", "--model", "lstm", "--test-lengths", "0:5"],
    ["tasks", "run", "parity", "--model", "lstm", "--train-lengths", "5:1"],
    ["tasks", "run", "parity", "--model", "lstm", "--device", "cuda:9"],
    ["tasks", "run", "parity", "--model", "lstm", "--json", "DIR"],
    ["tasks", "run", "parity", "--model", "lstm", "--json", "UNWRITABLE"],
    ["tasks", "run", "parity", "--model", "lstm", "--lr", "nan"],
    ["tasks", "run", "parity", "--model", "lstm", "--batch-size", "0"],
    ["tasks", "run", "mqar", "--model", "lstm", "--mqar-pairs", "0"],
    ["tasks", "grid", "--out", "BLOB"], ["tasks", "grid", "--tasks", "nope", "--out", "DIR"], ["tasks"],
    # bench, demo, the command itself
    ["bench", "--repeats", "0"], ["bench", "--block-pattern", "xLSTM[a:b]"], ["bench", "--embedding-dim", "-4"],
    ["bench", "--device", "cuda"], ["bench", "--threads", "0"],
    ["demo", "--length", "0"], ["demo", "--max-new-tokens", "-1"], ["demo", "--device", "mps"],
    ["demo", "--threads", "0"], ["demo", "--seed", "-5"], ["frobnicate"],
]
BASE = {"train": ["--data", "DATA", "--out", "DIR/new", *TINY]}


def _expand(argv: list[str], paths: dict[str, str]) -> list[str]:
    # the base arguments first: a later flag wins, so the case's bad value is the one that counts
    argv = [argv[0], *BASE.get(argv[0], []), *argv[1:]] if "--resume" not in argv else list(argv)
    out = []
    for a in argv:
        for key in sorted(paths, key=len, reverse=True):
            if a == key or a.startswith(key + "/"):
                a = paths[key] + a[len(key):]
                break
        out.append(a)
    return out


def _check(code: int, err: str, argv: list[str]) -> None:
    errors = [line for line in err.splitlines() if "error" in line]
    assert code == 2 and "Traceback" not in err and len(errors) == 1 and errors[0].startswith("xlstmkit"), (
        f"{argv}: exit {code}, stderr:\n{err[-3000:]}")


@pytest.mark.parametrize("argv", CASES, ids=[" ".join(c) for c in CASES])
def test_bad_arguments_and_files_end_in_one_line_and_status_2(world, argv):
    driver, paths = world
    full = _expand(argv, paths)
    code, err = driver.run(full)
    _check(code, err, full)


_INT_FLAGS = [("train", "--max-steps"), ("train", "--batch-size"), ("train", "--seq-len"), ("train", "--keep-last"),
              ("eval", "--max-tokens"), ("eval", "--batch-size"), ("generate", "--top-k"),
              ("tasks", "--steps"), ("tasks", "--dim"), ("tasks", "--eval-samples"), ("bench", "--repeats"),
              ("bench", "--num-blocks"), ("demo", "--length")]
_BASE_ARGS = {"eval": ["--run", "RUN"], "generate": ["--run", "RUN"], "tasks": ["run", "parity", "--model", "lstm"]}
_not_int = st.text(max_size=6).filter(lambda s: not s.strip().lstrip("+-").isdigit() and not s.startswith("-"))
_bad_device = st.text(max_size=8).filter(lambda s: not s.startswith("-") and s not in ("auto", "cpu"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(_INT_FLAGS), value=st.one_of(st.integers(max_value=0).map(str), _not_int))
def test_drawn_bad_integers(world, case, value):
    driver, paths = world
    command, flag = case
    if command == "tasks" and flag == "--steps" and value.strip() == "0":
        return  # 0 steps is valid for tasks (scores the untrained model)
    argv = _expand([command, *_BASE_ARGS.get(command, []), f"{flag}={value}"], paths)
    code, err = driver.run(argv)
    _check(code, err, argv)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["train", "eval", "generate", "tasks", "bench", "demo"]),
       flag=st.sampled_from(["--device", "--threads", "--dtype"]), value=_bad_device)
def test_drawn_bad_engine_flags(world, command, flag, value):
    """--device, --dtype, --threads: the same checks on every command."""
    driver, paths = world
    if flag == "--threads" and value.strip().isdigit() and int(value) > 0:
        return
    if flag == "--dtype" and value in ("float32", "bfloat16"):
        return
    argv = _expand([command, *_BASE_ARGS.get(command, []), f"{flag}={value}"], paths)
    code, err = driver.run(argv)
    _check(code, err, argv)


def test_debug_shows_the_traceback(world):
    driver, paths = world
    argv = _expand(["eval", "--run", "BAD_CONFIG"], paths)
    code, err = driver.run(argv, env={"XLSTMKIT_DEBUG": "1"})
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("xlstmkit eval: error:")
    code, err = driver.run([*argv, "--debug"])
    assert code == 2 and "Traceback" in err


def test_entry_point_in_a_real_process():
    env = {**os.environ, "PYTHONPATH": SRC}
    env.pop("XLSTMKIT_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "xlstmkit", "generate", "--run", "/nonexistent/run"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr

"""The command line's shared behaviour: --print-config, data paths stored absolute (eval works from another
folder), progress lines without a terminal and a summary at the end, --logger (and a missing logger package as one
line), eval of a Hugging Face folder into --out, Ctrl-C that checkpoints and prints the exact resume command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from xlstmkit.cli import main

TINY = ["--preset", "tiny", "--no-progress", "--set", "embedding_dim=16", "--set", "num_blocks=2", "--set",
        "slstm_at=[1]", "--set", "mlstm_num_heads=2", "--set", "slstm_num_heads=2", "--set", "chunk_size=8",
        "--set", "round_up_to=8", "--batch-size", "4", "--seq-len", "16", "--set", "sample_tokens=0",
        "--set", "final_eval_tokens=128", "--set", "eval_tokens=128"]


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "d.txt"
    path.write_text("".join(f"y{i} = [{i}, {i * 3}]\n" for i in range(400)), encoding="utf-8")
    return path


def test_print_config_shows_the_merged_config_and_does_nothing(tmp_path, data, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--data", "d.txt", "--lr", "0.004", "--set", "embedding_dim=24", "--out", "r",
                 "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["train"]["lr"] == 0.004 and cfg["model"]["embedding_dim"] == 24 and cfg["preset"] == "tiny"
    assert cfg["train"]["data"] == str(data.resolve())          # relative --data stored absolute
    assert not (tmp_path / "r").exists()


def test_relative_data_path_is_stored_absolute_and_eval_runs_elsewhere(tmp_path, data, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--data", "d.txt", "--out", "run", "--max-steps", "2"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["data"] == str(data.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "run"), "--max-tokens", "64"]) == 0
    cap = capsys.readouterr()
    assert "summary: loss" in cap.out and "eval.json" in cap.out
    assert "eval: tokens" in cap.err and "64/64" in cap.err       # progress lines (stderr is not a terminal here)


def test_train_progress_lines_without_a_terminal(tmp_path, data, capsys):
    argv = [a for a in TINY if a != "--no-progress"]
    assert main(["train", *argv, "--data", str(data), "--out", str(tmp_path / "r"), "--max-steps", "4",
                 "--log-every", "2"]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("train: step")]
    assert [ln.split()[2] for ln in lines] == ["2/4", "4/4"] and all("tok/s" in ln for ln in lines)


def test_tensorboard_logger_and_missing_logger_package(tmp_path, data, capsys, monkeypatch):
    pytest.importorskip("tensorboard")
    out = tmp_path / "tb"
    assert main(["train", *TINY, "--data", str(data), "--out", str(out), "--max-steps", "2", "--logger",
                 "tensorboard"]) == 0
    assert list(out.glob("events.out.tfevents.*"))
    monkeypatch.setitem(sys.modules, "wandb", None)   # as if wandb were not installed
    capsys.readouterr()
    assert main(["train", *TINY, "--data", str(data), "--out", str(tmp_path / "w"), "--max-steps", "2", "--logger",
                 "wandb"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install wandb" in err


def test_eval_of_a_hugging_face_folder_writes_to_out(tmp_path, data, capsys):
    import torch

    from xlstmkit import xLSTMLarge, xLSTMLargeConfig
    from xlstmkit.data.tokenizer import BPETokenizer
    from xlstmkit.interop import hf

    tok = BPETokenizer.train([data.read_text()], vocab_size=300)
    torch.manual_seed(0)
    model = xLSTMLarge(xLSTMLargeConfig(vocab_size=tok.vocab_size, embedding_dim=32, num_heads=2, num_blocks=2,
                                        chunk_size=16, pad_token_id=None, bos_token_id=None, eos_token_id=None))
    folder = tmp_path / "hf"
    hf.save(model, folder)
    tok.save(folder)
    before = sorted(p.name for p in folder.iterdir())
    assert main(["eval", "--run", str(folder), "--no-progress"]) == 2        # which text? --data is needed
    assert "--data" in capsys.readouterr().err
    assert main(["eval", "--run", str(folder), "--data", str(data), "--seq-len", "32", "--max-tokens", "128",
                 "--out", str(tmp_path / "res"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "res" / "eval.json").read_text())
    assert report["validation"]["tokens"] == 128 and report["validation"]["bytes"] > 128   # BPE: bytes > tokens
    assert sorted(p.name for p in folder.iterdir()) == before                # the model folder is never written


def test_ctrl_c_checkpoints_and_prints_the_exact_resume_command(tmp_path, data):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "xlstmkit", "train", *TINY, "--data", str(data), "--out", str(out),
                             "--max-steps", "100000", "--set", "checkpoint_every=0"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "metrics.csv").is_file() or (out / "metrics.csv").read_text().count("\n") < 3:
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert f"resume with: xlstmkit train --resume {out.resolve()}" in err and "Traceback" not in err
    step = int(err.split("interrupted at step ")[1].split()[0])
    assert (out / "checkpoints" / f"step_{step:08d}").is_dir()


def _parser(command: str):
    import importlib

    from xlstmkit.commands.common import ArgumentParser

    parser = ArgumentParser(prog=f"xlstmkit {command}")
    importlib.import_module(f"xlstmkit.commands.{command}").add_arguments(parser)
    return parser


def _options(parser) -> dict:
    import argparse

    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.update(_options(sub))
        for opt in action.option_strings:
            found[opt] = action
    return found


def test_flags_are_built_from_the_config_fields():
    """Each TrainConfig / CellConfig field is a flag carrying the field's own help and default (not restated), and
    --device/--dtype/--threads read the same on every command."""
    import dataclasses

    from xlstmkit.commands import tasks as tasks_cmd
    from xlstmkit.train.config import TrainConfig
    from xlstmkit.train.synthetic import CellConfig

    train_opts = _options(_parser("train"))
    for f in dataclasses.fields(TrainConfig):
        action = train_opts["--" + f.name.replace("_", "-")]
        assert action.help.startswith(f.metadata["help"].replace("%", "%%")) and f"(default: " in action.help
        assert action.default is None   # not given: the preset / YAML / config default decides
    task_parser = _parser("tasks")
    task_opts = _options(task_parser)
    for f in dataclasses.fields(CellConfig):
        if f.metadata.get("flag", True):
            default = "none" if f.default is None else f.default
            assert task_opts["--" + f.name.replace("_", "-")].help.endswith(f"(default: {default})")
    args = task_parser.parse_args(["run", "parity", "--model", "lstm"])
    assert tasks_cmd._cell_config(args, "parity", "lstm") == CellConfig(task="parity", model="lstm")
    engine_help = None
    for command in ("train", "eval", "generate", "tasks", "bench", "demo"):
        opts = _options(_parser(command))
        helps = tuple(opts[f].help for f in ("--device", "--dtype", "--threads"))
        assert engine_help in (None, helps), command
        engine_help = helps

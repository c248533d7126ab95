"""`xlstmkit tasks`: every task and every model runs a 20-step cell through the CLI; grids write their outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from xlstmkit.cli import main
from xlstmkit.data.synthetic import TASKS

TINY = ["--steps", "20", "--batch-size", "4", "--dim", "16", "--eval-samples", "2", "--threads", "1"]
SHORT = ["--train-lengths", "1:6"]


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _run(tmp_path, task, model, extra=()):
    out = tmp_path / f"{task}-{model.replace(':', '')}.json"
    assert main(["tasks", "run", task, "--model", model, *TINY, *extra, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _check(result, lengths):
    assert math.isfinite(result["scaled_accuracy"]) and -2.0 < result["scaled_accuracy"] <= 1.0
    assert sorted(int(n) for n in result["per_length"]) == lengths
    for v in result["per_length"].values():
        assert v["tokens"] > 0 and 0.0 <= v["accuracy"] <= 1.0
    mean = sum(v["scaled_accuracy"] for v in result["per_length"].values()) / len(lengths)
    assert result["scaled_accuracy"] == pytest.approx(mean)
    assert result["parameters"] > 0 and result["cpu_seconds"] > 0
    assert result["config"]["steps"] == 20


@pytest.mark.parametrize("task", [t for t in TASKS if not t.startswith("mqar")])
def test_every_formal_task_runs_a_cell(tmp_path, task):
    result = _run(tmp_path, task, "lstm", [*SHORT, "--test-lengths", "8,10"])
    assert result["task"] == task and result["train_lengths"] == [1, 6]
    _check(result, [8, 10])


@pytest.mark.parametrize("task", [t for t in TASKS if t.startswith("mqar")])
def test_every_mqar_setting_runs_a_cell(tmp_path, task):
    result = _run(tmp_path, task, "lstm", ["--mqar-vocab", "64"])
    context = {"mqar": 64, "mqar_64_4": 64, "mqar_128_8": 128, "mqar_256_16": 256}[task]
    _check(result, [context])
    assert result["s_rand"] == pytest.approx(1 / 32)


@pytest.mark.parametrize("model", ["xlstm[0:1]", "xlstm[1:0]", "xlstm[1:1]", "lstm", "llama", "mamba"])
def test_every_model_runs_a_cell(tmp_path, model):
    if model in ("llama", "mamba"):
        pytest.importorskip("transformers")
    result = _run(tmp_path, "parity", model, [*SHORT, "--test-lengths", "8:12:4"])
    assert result["model"] == model
    _check(result, [8, 12])
    budget = result["parameter_budget"]
    assert abs(result["parameters"] - budget) / budget < 0.2  # matched to xLSTM[1:1] of width 16


def test_same_seed_same_result(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    a = _run(tmp_path / "a", "cycle_nav", "xlstm11", [*SHORT, "--test-lengths", "8", "--seed", "3"])
    b = _run(tmp_path / "b", "cycle_nav", "xlstm11", [*SHORT, "--test-lengths", "8", "--seed", "3"])
    assert a["final_train_loss"] == b["final_train_loss"] and a["per_length"] == b["per_length"]
    c = _run(tmp_path / "a", "cycle_nav", "xlstm11", [*SHORT, "--test-lengths", "8", "--seed", "4"])
    assert c["final_train_loss"] != a["final_train_loss"]


def test_grid_writes_table_json_and_heatmap(tmp_path, capsys):
    out = tmp_path / "grid"
    code = main(["tasks", "grid", "--tasks", "parity", "mqar", "--models", "lstm", "xlstm10", *TINY, *SHORT,
                 "--test-lengths", "8", "--mqar-vocab", "64", "--mqar-context", "32", "--mqar-pairs", "2",
                 "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert [(r["task"], r["model"]) for r in results] == [
        ("parity", "lstm"), ("parity", "xlstm[1:0]"), ("mqar", "lstm"), ("mqar", "xlstm[1:0]")]
    assert list(results[2]["per_length"]) == ["32"]  # MQAR keeps its context length
    table = (out / "results.md").read_text()
    assert "| parity |" in table and "| mqar |" in table and "xlstm[1:0]" in table
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert printed.count("scaled accuracy") == 4


def test_list_names_every_task_and_model(capsys):
    assert main(["tasks", "list"]) == 0
    printed = capsys.readouterr().out
    for name in TASKS:
        assert name in printed
    for model in ("xlstm[0:1]", "xlstm[1:0]", "xlstm[1:1]", "llama", "mamba", "lstm"):
        assert model in printed


def _exit_code(argv):
    """main's return value, or the status of the SystemExit that argparse raises."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


@pytest.mark.parametrize("argv,message", [
    (["run", "parity", "--model", "gpt"], "unknown model"),
    (["run", "parity", "--model", "lstm", "--test-lengths", "40-256"], "lengths"),
    (["run", "parityy", "--model", "lstm"], "unknown task"),
    (["run", "parity", "--model", "lstm", "--no-such-flag"], "unrecognized arguments"),
])
def test_bad_arguments_fail_clearly(capsys, argv, message):
    """A one-line error and exit status 2 (before any training), never a traceback."""
    code = _exit_code(["tasks", *argv, *TINY])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert _exit_code(["tasks"]) == 2  # an action is required


@pytest.mark.slow
def test_slstm_learns_parity_and_generalises_to_longer_inputs(tmp_path):
    # the paper's central state-tracking claim, in miniature: train on lengths 1..20, test on 40..80
    result = _run(tmp_path, "parity", "xlstm[0:1]",
                  ["--steps", "600", "--batch-size", "32", "--dim", "32", "--lr", "1e-2", "--train-lengths", "1:20",
                   "--test-lengths", "40:80:20", "--eval-samples", "32"])
    assert result["scaled_accuracy"] >= 0.9

"""`xlstmkit vision`: 20-step training runs on each data source (no network), bitwise resume, eval, predict,
convert, the ViT baseline, and one-line errors."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
import torch

from xlstmkit.cli import main

SMALL = ["--dim", "16", "--depth", "1", "--batch-size", "16", "--threads", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _folder(root, classes=("red", "green", "blue"), per_class=8, size=(20, 26)):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour = np.zeros(3)
            colour[k % 3] = 200
            a = np.clip(rng.normal(colour, 30, (*size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / c / f"{i}.png")
    return root


def _run(args, capsys=None):
    code = main(args)
    return code


def _check_run(out, js, steps):
    result = json.loads(js.read_text())
    assert {"data", "test_accuracy", "params", "seconds"} <= set(result)
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["params"] > 0 and result["steps"] == steps
    for name in ("config.json", "metrics.csv", "model.safetensors", "results.json"):
        assert (out / name).is_file(), name
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == steps + 1
    assert json.loads((out / "config.json").read_text())["kind"] == "vision"
    return result


def test_train_20_steps_on_digits(tmp_path):
    out, js = tmp_path / "run", tmp_path / "r.json"
    assert _run(["vision", "train", "--data", "digits", "--max-steps", "20", "--out", str(out), "--json", str(js),
                 *SMALL]) == 0
    result = _check_run(out, js, 20)
    assert result["data"] == "digits" and result["test_accuracy"] > 0.2  # 10 classes: chance is 0.1
    pytest.importorskip("matplotlib")
    assert (out / "confusion.png").is_file() and (out / "loss_curve.png").is_file()


def test_train_20_steps_on_pathfinder(tmp_path):
    out, js = tmp_path / "run", tmp_path / "r.json"
    assert _run(["vision", "train", "--data", "pathfinder", "--max-steps", "20", "--image-size", "16",
                 "--pathfinder-train", "64", "--pathfinder-test", "16", "--pathfinder-segments", "3",
                 "--out", str(out), "--json", str(js), *SMALL]) == 0
    result = _check_run(out, js, 20)
    assert result["data"] == "pathfinder" and result["classes"] == ["disconnected", "connected"]
    assert result["model"]["patch_size"] == [2, 2]  # image size / 8


def test_train_20_steps_on_a_folder_then_eval_and_predict(tmp_path, capsys):
    pytest.importorskip("torchvision")
    data = _folder(tmp_path / "imgs")
    out, js = tmp_path / "run", tmp_path / "r.json"
    assert _run(["vision", "train", "--data", str(data), "--image-size", "16", "--max-steps", "20",
                 "--out", str(out), "--json", str(js), *SMALL[:-3], "--batch-size", "8", "--threads", "1",
                 "--no-progress"]) == 0
    result = _check_run(out, js, 20)
    assert result["classes"] == ["blue", "green", "red"]
    ev = tmp_path / "e.json"
    assert _run(["vision", "eval", str(out), "--json", str(ev)]) == 0
    assert json.loads(ev.read_text())["test_accuracy"] == pytest.approx(result["test_accuracy"])
    capsys.readouterr()
    pj = tmp_path / "p.json"
    assert _run(["vision", "predict", str(data / "red" / "0.png"), str(data / "blue" / "1.png"), "--run", str(out),
                 "--top-k", "2", "--json", str(pj)]) == 0
    preds = json.loads(pj.read_text())
    assert len(preds) == 2 and len(preds[0]["top"]) == 2
    assert preds[0]["top"][0]["probability"] >= preds[0]["top"][1]["probability"]
    assert sum(p["probability"] for p in preds[0]["top"]) <= 1.0 + 1e-6
    assert "red/0.png:" in capsys.readouterr().out


def test_resume_continues_bitwise_like_an_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    args = ["vision", "train", "--data", "digits", "--max-steps", "8", "--checkpoint-every", "4",
            "--drop-path-rate", "0.3", *SMALL]
    assert _run([*args, "--out", str(tmp_path / "a")]) == 0
    assert _run([*args, "--out", str(tmp_path / "b")]) == 0
    import shutil

    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_00000008")
    (tmp_path / "b" / "model.safetensors").unlink()
    assert _run(["vision", "train", "--resume", str(tmp_path / "b"), "--no-progress"]) == 0
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    rows = (tmp_path / "b" / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(s) for s in range(1, 9)]


def test_time_budget_fits_the_schedule_and_stops(tmp_path):
    js = tmp_path / "r.json"
    assert _run(["vision", "train", "--data", "digits", "--epochs", "1000", "--time-budget", "3",
                 "--out", str(tmp_path / "run"), "--json", str(js), *SMALL]) == 0
    result = json.loads(js.read_text())
    assert result["stopped_by"] in ("time_budget", "steps") and result["steps"] < 1000 * (1438 // 16)
    assert result["seconds"] < 10


def test_time_budget_is_filled_when_the_first_step_is_slow(tmp_path, monkeypatch):
    """The first step carries one-off costs (here a 1.5 s sleep); the schedule is fitted to the pace of the steps
    after it, so the run still trains for most of its budget (fitting it to the first steps' average stopped a 240 s
    run after 40 s)."""
    from xlstmkit.commands import vision

    original = vision.VisionTrainer.train_one_step
    calls = []

    def slow_first(self, step):
        if not calls:
            time.sleep(1.5)
        calls.append(step)
        stats = original(self, step)
        if len(calls) == 1:
            self.step_time += 1.5
        return stats

    monkeypatch.setattr(vision.VisionTrainer, "train_one_step", slow_first)
    js = tmp_path / "r.json"
    assert _run(["vision", "train", "--data", "digits", "--epochs", "1000", "--time-budget", "5", "--eval-every",
                 "0", "--out", str(tmp_path / "run"), "--json", str(js), *SMALL]) == 0
    result = json.loads(js.read_text())
    assert result["stopped_by"] in ("time_budget", "steps")
    assert 3.5 < result["seconds"] < 6.0, result


def test_vit_baseline_matches_the_parameter_count(tmp_path):
    pytest.importorskip("timm")
    from xlstmkit.commands.vision import VisionTrainConfig, count_spec, vil_spec, vit_spec

    for dim, depth in ((16, 1), (64, 2), (192, 12)):
        vil = vil_spec(VisionTrainConfig(dim=dim, depth=depth), channels=1, num_classes=10)
        vit = vit_spec(vil)
        assert abs(count_spec(vit) / count_spec(vil) - 1) < 0.01
        assert vit["embed_dim"] == dim and vit["depth"] == depth and vit["patch_size"] == [4, 4]
    js = tmp_path / "r.json"
    assert _run(["vision", "train", "--data", "digits", "--arch", "vit", "--max-steps", "5", "--out",
                 str(tmp_path / "run"), "--json", str(js), *SMALL]) == 0
    assert json.loads(js.read_text())["arch"] == "vit"


def test_convert_writes_a_run_folder_that_predicts(tmp_path):
    pytest.importorskip("torchvision")
    from test_vision_interop import published_v2

    ckpt = tmp_path / "vil2.th"
    torch.save({"state_dict": {k: v.float() for k, v in published_v2(classes=4).items()}}, ckpt)
    out = tmp_path / "conv"
    assert _run(["vision", "convert", str(ckpt), "--out", str(out)]) == 0
    data = _folder(tmp_path / "imgs", per_class=1)
    assert _run(["vision", "predict", str(data / "red" / "0.png"), "--run", str(out), "--top-k", "4"]) == 0


@pytest.mark.parametrize("args,message", [
    (["vision", "train", "--data", "nowhere"], "no such folder"),
    (["vision", "train", "--data", "digits", "--image-size", "30", "--patch-size", "4"], "not a multiple"),
    (["vision", "train", "--data", "digits", "--lr", "0"], "lr must be"),
    (["vision", "train", "--data", "digits", "--time-budget", "soon"], "time_budget must be"),
    (["vision", "eval", "."], "config.json not found"),
    (["vision", "predict", "x.png", "--run", "."], "config.json not found"),
])
def test_user_errors_are_one_line_with_status_2(args, message, capsys):
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors (a bad flag value)
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_resume_refuses_a_changed_training_field(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(["vision", "train", "--data", "digits", "--max-steps", "2", "--out", str(out), *SMALL]) == 0
    capsys.readouterr()
    assert main(["vision", "train", "--resume", str(out), "--lr", "0.1"]) == 2
    assert "cannot be changed when resuming" in capsys.readouterr().err

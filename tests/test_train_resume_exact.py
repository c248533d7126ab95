"""What resuming guarantees, checked where it could fail:
- a run stopped at any step and resumed with the same config ends bitwise equal to an uninterrupted one, with
  dropout (so the random state matters: a resume that skipped restoring it is caught) and a sampled final text;
- a changed schedule horizon is refused unless --extend, which keeps the warm-up and decays over the new horizon;
- a checkpoint whose weights do not fit the config is passed over like a corrupt one (resume, eval, generate);
- metrics.csv keeps every row up to the checkpoint, once, when a resume is interrupted or a row was torn.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from xlstmkit.cli import main as cli_main
from xlstmkit.train import loop as loop_mod
from xlstmkit.train.checkpoint import list_checkpoints, load_checkpoint, load_weights, save_checkpoint
from xlstmkit.train.config import build_run_config
from xlstmkit.train.loop import LMTrainer, train
from xlstmkit.train.optim import lr_factor

TINY_MODEL = ["embedding_dim=16", "num_blocks=2", "slstm_at=[1]", "mlstm_num_heads=2", "slstm_num_heads=2",
              "chunk_size=8", "round_up_to=8", "dropout=0.2"]
TINY_TRAIN = {"batch_size": 4, "seq_len": 16, "warmup_steps": 2, "eval_every": 0, "eval_tokens": 128,
              "final_eval_tokens": 128, "sample_tokens": 12, "sample_temperature": 1.0, "checkpoint_every": 3,
              "lr": 1e-2, "max_steps": 8}
quiet = lambda *_: None  # noqa: E731


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("exact") / "d.txt"
    path.write_text("".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(150)), encoding="utf-8")
    return path


def tiny(data: Path, **fields):
    return build_run_config("tiny", sets=TINY_MODEL, overrides={"data": str(data), **TINY_TRAIN, **fields})


def _stop_at(monkeypatch, step: int) -> None:
    """Make the next run stop after `step` steps as a time budget would (deterministically)."""
    monkeypatch.setattr(LMTrainer, "should_stop", lambda self, s: "time_budget" if s == step else None)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_weights(run_dir / "model.safetensors")


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("straight") / "run"
    result = train(tiny(data), out, progress=False, print_fn=quiet)
    return result, _weights(out)


def test_stop_and_resume_with_dropout_is_bitwise_exact(tmp_path, data, straight, monkeypatch):
    ref_result, ref = straight
    with monkeypatch.context() as m:
        _stop_at(m, 5)   # stops at step 5: the checkpoint it writes there is the resume point
        first = train(tiny(data), tmp_path / "r", progress=False, print_fn=quiet)
    assert first.stopped_by == "time_budget" and first.step == 5
    resumed = train(tiny(data), tmp_path / "r", resume=True, progress=False, print_fn=quiet)
    assert resumed.resumed_from == 5 and resumed.step == 8
    got = _weights(tmp_path / "r")
    for k in ref:
        assert torch.equal(got[k], ref[k]), f"{k} differs after resume: max diff {(got[k] - ref[k]).abs().max():.3e}"
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in ref_result.history[5:]]
    assert resumed.sample == ref_result.sample and len(resumed.sample) > len(TINY_TRAIN) // 2
    rows = list(csv.DictReader((tmp_path / "r" / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))


def test_the_bitwise_test_catches_a_resume_that_skips_the_random_state(tmp_path, data, straight, monkeypatch):
    """The claim above can fail: without restoring the RNG, dropout masks differ and so do the weights."""
    _, ref = straight
    with monkeypatch.context() as m:
        _stop_at(m, 5)
        train(tiny(data), tmp_path / "r", progress=False, print_fn=quiet)
    monkeypatch.setattr(loop_mod, "set_rng_state", lambda *a, **k: None)
    train(tiny(data), tmp_path / "r", resume=True, progress=False, print_fn=quiet)
    got = _weights(tmp_path / "r")
    assert any(not torch.equal(got[k], ref[k]) for k in ref)


def test_changed_horizon_needs_extend_which_keeps_the_warmup(tmp_path, data, capsys):
    out = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--no-progress"]
    for item in TINY_MODEL:
        args += ["--set", item]
    for key, value in {**TINY_TRAIN, "max_steps": 4, "sample_tokens": 0}.items():
        args += ["--set", f"{key}={value}"]
    assert cli_main(args) == 0
    capsys.readouterr()
    assert cli_main(["train", "--resume", str(out), "--max-steps", "10", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--extend" in err and "decays over 4 steps" in err
    assert cli_main(["train", "--resume", str(out), "--max-steps", "10", "--extend", "--no-progress"]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    lrs = [float(r["lr"]) for r in rows]
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    assert lrs[:4] == pytest.approx([1e-2 * lr_factor(s, 2, 4, 0.1) for s in range(4)])       # as first planned
    assert lrs[4:] == pytest.approx([1e-2 * lr_factor(s, 2, 10, 0.1) for s in range(4, 10)])   # the new horizon


def _misfit(ckpt_dir: Path) -> None:
    """Rewrite a checkpoint intact (valid manifest) but with a weight of the wrong shape."""
    ckpt = load_checkpoint(ckpt_dir)
    model = dict(ckpt.model)
    name = next(k for k in model if k.endswith("embedding.weight"))
    model[name] = torch.zeros(model[name].shape[0], model[name].shape[1] + 1)
    save_checkpoint(ckpt_dir.parent.parent, ckpt.step, model, ckpt.optimizer,
                    {**ckpt.state, "rng": ckpt.state["rng"]}, keep_last=10)


def test_weights_that_do_not_fit_the_config_fall_back_like_a_corrupt_file(tmp_path, data, capsys):
    out = tmp_path / "run"
    train(tiny(data, max_steps=6, sample_tokens=0), out, progress=False, print_fn=quiet)
    assert [s for s, _ in list_checkpoints(out)] == [3, 6]
    _misfit(out / "checkpoints" / "step_00000006")
    capsys.readouterr()
    assert cli_main(["train", "--resume", str(out), "--no-progress"]) == 0
    cap = capsys.readouterr()
    bad = [line for line in cap.err.splitlines() if "step_00000006" in line]
    assert len(bad) == 1 and "do not fit" in bad[0] and "falling back" in bad[0] and "Traceback" not in cap.err
    assert "step_00000003" in cap.out
    # eval / generate: a final model.safetensors that does not fit is passed over for the newest fitting checkpoint
    weights = load_weights(out / "model.safetensors")
    name = next(k for k in weights if k.endswith("embedding.weight"))
    weights[name] = torch.zeros(3, 3)
    from xlstmkit.train.checkpoint import save_weights

    save_weights(out / "model.safetensors", weights)
    capsys.readouterr()
    assert cli_main(["generate", "--run", str(out), "--prompt", "def", "--max-new-tokens", "3", "--seed", "0"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "do not fit" in err and "model.safetensors" in err


def test_interrupted_resume_and_torn_rows_lose_no_metrics_row(tmp_path, data, monkeypatch):
    from xlstmkit.train import metrics as metrics_mod

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _stop_at(m, 5)
        train(tiny(data, sample_tokens=0), out, progress=False, print_fn=quiet)
    before = (out / "metrics.csv").read_text()
    with open(out / "metrics.csv", "a", encoding="utf-8") as fh:
        fh.write("6,96,5.1")   # a row torn by a kill (no newline)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies while the resume rewrites metrics.csv

    with monkeypatch.context() as m:
        m.setattr(metrics_mod, "atomic_write_bytes", killed)
        with pytest.raises(KeyboardInterrupt):
            train(tiny(data, sample_tokens=0), out, resume=True, progress=False, print_fn=quiet)
    assert (out / "metrics.csv").read_text().startswith(before)   # untouched: old rows all there
    train(tiny(data, sample_tokens=0), out, resume=True, progress=False, print_fn=quiet)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))

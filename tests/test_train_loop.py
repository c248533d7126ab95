"""The training loop's arithmetic: gradient accumulation gives the parameters of the whole batch at once, bf16
autocast really changes the computation (and still trains), and the logged learning rate follows the schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xlstmkit.train.checkpoint import load_weights
from xlstmkit.train.config import build_run_config
from xlstmkit.train.loop import train
from xlstmkit.train.optim import lr_factor

TINY_MODEL = ["embedding_dim=16", "num_blocks=2", "slstm_at=[1]", "mlstm_num_heads=2", "slstm_num_heads=2",
              "chunk_size=8", "round_up_to=8"]
TRAIN = {"batch_size": 4, "seq_len": 16, "warmup_steps": 2, "eval_every": 0, "eval_tokens": 128,
         "final_eval_tokens": 128, "sample_tokens": 0, "checkpoint_every": 0, "lr": 1e-2, "max_steps": 4}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("loop") / "d.txt"
    path.write_text("".join(f"item[{i}] = '{chr(97 + i % 26) * (i % 5 + 1)}'\n" for i in range(300)),
                    encoding="utf-8")
    return path


def _run(tmp: Path, data: Path, name: str, **fields):
    result = train(build_run_config("tiny", sets=TINY_MODEL, overrides={"data": str(data), **TRAIN, **fields}),
                   tmp / name, progress=False, print_fn=lambda *_: None)
    return result, load_weights(tmp / name / "model.safetensors")


def test_grad_accumulation_equals_whole_batch(tmp_path, data):
    _, whole = _run(tmp_path, data, "whole")
    _, accum = _run(tmp_path, data, "accum", grad_accum=4)
    for k in whole:
        # float reordering only; a wrong scaling would move parameters by ~lr (1e-2)
        torch.testing.assert_close(accum[k], whole[k], rtol=1e-4, atol=1e-4, msg=lambda m, k=k: f"{k}: {m}")


def test_bf16_autocast_changes_numerics_and_trains(tmp_path, data):
    fp32, w32 = _run(tmp_path, data, "fp32", max_steps=8)
    bf16, w16 = _run(tmp_path, data, "bf16", max_steps=8, dtype="bfloat16")
    assert all(w.dtype == torch.float32 for w in w16.values())        # weights stay float32 (autocast, not cast)
    assert any(not torch.equal(w32[k], w16[k]) for k in w32)          # bf16 really was used
    assert bf16.history[-1]["loss"] < bf16.history[0]["loss"]
    assert abs(bf16.final.loss - fp32.final.loss) < 0.25


def test_logged_learning_rate_follows_the_schedule(tmp_path, data):
    result, _ = _run(tmp_path, data, "lr", max_steps=6, lr_decay_steps=5)
    logged = [row["lr"] for row in result.history]
    expected = [1e-2 * lr_factor(s, 2, 5, 0.1) for s in range(6)]
    assert logged == pytest.approx(expected)

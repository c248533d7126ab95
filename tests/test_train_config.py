"""Run configuration (presets, YAML, --set, precedence, validation), AdamW decay groups and the LR schedule."""

from __future__ import annotations

import math

import pytest

from xlstmkit import xLSTMConfig, xLSTMLM
from xlstmkit.train.build import build_model
from xlstmkit.train.config import PRESETS, RunConfig, TrainConfig, build_run_config, parse_duration, parse_set
from xlstmkit.train.optim import build_optimizer, lr_factor, param_groups


def test_presets_build_valid_models():
    for name in PRESETS:
        run = build_run_config(name)
        cfg = xLSTMConfig.from_dict({**run.model, "vocab_size": 256})
        assert cfg.slstm_positions, f"preset {name} should mix sLSTM into mLSTM blocks (xLSTM[a:b] style)"
        assert cfg.mlstm_positions
    assert isinstance(build_model({**build_run_config("tiny").model, "vocab_size": 256}), xLSTMLM)


def test_precedence_preset_yaml_set_flags(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text("model:\n  embedding_dim: 48\ntrain:\n  lr: 0.01\n  seq_len: 64\nbatch_size: 8\n", encoding="utf-8")
    run = build_run_config("tiny", yml, ["lr=3e-4", "model.num_blocks=3", "block_pattern=xLSTM[2:1]"],
                           {"seq_len": 24, "seed": None})
    assert run.model["embedding_dim"] == 48 and run.model["num_blocks"] == 3
    assert run.model["block_pattern"] == "xLSTM[2:1]" and "slstm_at" not in run.model  # user's choice replaces preset's
    assert run.train.lr == 3e-4 and run.train.seq_len == 24 and run.train.batch_size == 8
    assert run.train.seed == 0  # None overrides are ignored
    again = RunConfig.from_dict(run.to_dict())
    assert again == run


def test_set_parsing_and_errors(tmp_path):
    assert parse_set("lr=3e-4") == ("lr", 3e-4)
    assert parse_set("slstm_at=[1, 3]") == ("slstm_at", [1, 3])
    assert parse_set("compile=true") == ("compile", True)
    assert parse_set("time_budget=null") == ("time_budget", None)
    assert parse_set("sample_prompt=def f") == ("sample_prompt", "def f")
    with pytest.raises(ValueError, match="key=value"):
        parse_set("lr")
    with pytest.raises(ValueError, match="unknown config key 'lrate'"):
        build_run_config("tiny", sets=["lrate=1"])
    with pytest.raises(ValueError, match="unknown model field"):
        build_run_config("tiny", sets=["model.lr=1"])
    with pytest.raises(ValueError, match="preset must be one of"):
        build_run_config("huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="mapping"):
        build_run_config("tiny", bad)


@pytest.mark.parametrize("field,value,msg", [
    ("batch_size", 0, "batch_size must be a positive integer"),
    ("lr", -1.0, "lr must be"),
    ("tokenizer", "words", "tokenizer must be"),
    ("dtype", "float16", "dtype must be one of"),
    ("grad_accum", 3, "divisible by grad_accum"),
    ("time_budget", "soon", "time_budget must be"),
])
def test_train_config_validation(field, value, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**{field: value})


def test_durations_and_token_cap():
    assert parse_duration("9m") == 540 and parse_duration("1.5h") == 5400 and parse_duration(90) == 90
    assert parse_duration("none") is None and parse_duration(0) is None
    cfg = TrainConfig(batch_size=4, seq_len=8, max_steps=100, max_tokens=100)
    assert cfg.total_steps == 4 and cfg.decay_steps == 4


def test_decay_groups_exclude_norms_biases_embeddings():
    model = xLSTMLM(xLSTMConfig.from_dict({**build_run_config("tiny").model, "vocab_size": 64}))
    groups = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = [names[id(p)] for p in groups[0]["params"]]
    plain = [names[id(p)] for p in groups[1]["params"]]
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert "head.weight" in decayed and "embedding.weight" in plain
    assert not any("norm" in n or n.endswith("bias") for n in decayed)
    assert any("norm" in n for n in plain)
    assert len(decayed) + len(plain) == len(list(model.parameters()))
    opt = build_optimizer(model, TrainConfig(lr=1e-3, beta2=0.99))
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)


def test_lr_schedule_warmup_cosine_floor():
    f = [lr_factor(s, 10, 100, 0.1) for s in range(120)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(f[:10], f[1:10]))            # warm-up rises
    assert all(a >= b for a, b in zip(f[10:100], f[11:100]))        # cosine falls
    assert f[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f[100] == f[119] == pytest.approx(0.1)                    # floor at 10 % of peak


def test_threads_default_and_restore(monkeypatch):
    import torch

    from xlstmkit.train.distributed import auto_threads, set_threads

    assert auto_threads(1) >= 1 and auto_threads(64) == 1
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    previous = set_threads(None)
    try:
        assert previous == before and torch.get_num_threads() == auto_threads(1)
        set_threads(1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            set_threads(0)
    finally:
        torch.set_num_threads(previous)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        TrainConfig(threads=0)

"""`xlstmkit compare`: matched parameter counts, identical batches for every model, the budget schedule, and a
20-step smoke run of two tiny models through the command line. (No timing is asserted anywhere.)"""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from xlstmkit.cli import main
from xlstmkit.data.batches import WindowSampler
from xlstmkit.data.text import encode_documents, load_corpus
from xlstmkit.data.tokenizer import ByteTokenizer
from xlstmkit.train.compare import (COMPARE_MODELS, LADDER, PARAM_TOLERANCE, BudgetSchedule, CompareConfig,
                                    matched_models, official_available, parameter_count,
                                    slstm_positions)
from xlstmkit.train.config import DEFAULT_PRESET, TrainConfig, build_run_config


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _names(names):
    return [n for n in names if n != "official" or official_available()]


def _reference_7_1(reference):
    """The reference xLSTM[7:1] at the preset's depth (one sLSTM block where the ratio rounds to none)."""
    return {**reference, "family": "xlstm", "vocab_size": 256, "block_pattern": None,
            "slstm_at": list(slstm_positions("xLSTM[7:1]", reference["num_blocks"]))}


@pytest.mark.parametrize("preset", ["tiny", DEFAULT_PRESET])
def test_xlstm_7_1_keeps_its_slstm_block_and_differs_from_1_0_at_every_preset_depth(preset):
    # at 4 blocks the ratio 7:1 rounds to no sLSTM block: the first 10-minute comparison trained xLSTM[1:0] twice
    from xlstmkit.train.build import build_model
    from xlstmkit.train.compare import ENTRIES, model_dict

    reference = build_run_config(preset).model
    for name in ("xlstm[7:1]", "official"):
        if name == "official" and not official_available():
            continue
        d = model_dict(ENTRIES[name], 64, reference, 256, 512)
        with torch.device("meta"):
            model = build_model(d)
        kinds = [type(m).__name__ for m in model.modules()]
        assert any("slstm" in k.lower() for k in kinds), (name, d)
    d71 = model_dict(ENTRIES["xlstm[7:1]"], 64, reference, 256, 512)
    d10 = model_dict(ENTRIES["xlstm[1:0]"], 64, reference, 256, 512)
    assert parameter_count(d71) != parameter_count(d10)
    assert slstm_positions("xLSTM[7:1]", 4) == (2,) and slstm_positions("xLSTM[7:1]", 16) == (4, 12)
    assert slstm_positions("xLSTM[1:0]", 4) == () and slstm_positions("xLSTM[0:1]", 3) == (0, 1, 2)


@pytest.mark.parametrize("preset", ["tiny", DEFAULT_PRESET])
def test_every_model_is_matched_to_the_reference_within_five_percent(preset):
    pytest.importorskip("transformers")
    reference = build_run_config(preset).model
    models = matched_models(_names(COMPARE_MODELS), reference, 256, 4096)
    budget = models[0][2]
    assert models[0][0].name == "xlstm[7:1]" and budget == parameter_count(_reference_7_1(reference))
    for entry, model_dict, n in models:
        assert abs(n - budget) <= PARAM_TOLERANCE * budget, (entry.name, n, budget)
        assert parameter_count(model_dict) == n  # the count is the built model's
    families = {e.name: d["family"] for e, d, _ in models}
    assert families["llama"] == "llama" and families["mamba"] == "mamba" and families["lstm"] == "lstm"


def test_the_ladder_rungs_are_configurations_of_xlstmkit_blocks_at_one_size():
    reference = build_run_config("tiny").model
    models = matched_models([name for name, _, _ in LADDER], reference, 256, 512)
    budget = parameter_count(_reference_7_1(reference))
    by = {e.name: d for e, d, _ in models}
    assert by["lstm-vanilla"]["family"] == "lstm" and by["lstm-vanilla"]["num_layers"] == reference["num_blocks"]
    assert by["lstm-resnet"]["lstm_at"] == "all" and by["lstm-resnet"]["lstm_ffn"] is False
    assert by["lstm-resnet-up"]["lstm_ffn"] is True
    assert by["xlstm[0:1]"]["block_pattern"] == "xLSTM[0:1]"
    for _, _, n in models:
        assert abs(n - budget) <= PARAM_TOLERANCE * budget


def test_a_model_that_cannot_be_matched_is_refused():
    reference = build_run_config("tiny").model
    with pytest.raises(ValueError, match="away from the reference"):
        matched_models(["lstm"], reference, 256, 512, tolerance=1e-6)


def test_budget_schedule_warms_up_by_step_and_decays_by_time():
    cfg = TrainConfig(lr=1e-2, warmup_steps=4, min_lr_ratio=0.1, time_budget=100.0, max_steps=10_000)
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=1.0)
    clock = {"t": 0.0}
    sched = BudgetSchedule(opt, cfg, lambda: clock["t"])
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 / 4)   # step 0 of 4 warm-up steps
    for _ in range(4):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2)       # warmed up, no time used
    clock["t"] = 50.0
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5))  # half the budget: half-way down
    clock["t"] = 250.0
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)       # past the budget: the floor
    assert sched.state_dict() == {"last_epoch": 6}


def test_compare_config_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="unknown model"):
        CompareConfig(models=("gpt",))
    with pytest.raises(ValueError, match="limit"):
        CompareConfig(models=("lstm",), budget=None)
    with pytest.raises(ValueError, match="twice"):
        CompareConfig(models=("lstm", "LSTM"))
    assert CompareConfig(ladder=True).names[0] == "lstm-vanilla"


def test_smoke_two_tiny_models_same_batches_table_and_plots(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--size", "tiny", "--max-steps", "20", "--budget", "none", "--max-files", "24",
                 "--models", "xlstm[7:1]", "lstm", "--threads", "1", "--dtype", "float32", "--eval-points", "0",
                 "--extrapolation", "4", "--extrapolation-tokens", "1024", "--no-progress", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in data["results"]}
    assert list(rows) == ["xlstm[7:1]", "lstm"]
    for r in rows.values():
        assert r["steps"] == 20 and r["tokens"] == 20 * 4 * 32
        assert math.isfinite(r["val_bpb"]) and 0 < r["val_bpb"] < 10
        assert set(r["extrapolation"]) == {"32", "128"}
        assert r["carried_bpb"] is not None  # both are recurrent
    # the same token stream, batch by batch, for both models ...
    assert rows["xlstm[7:1]"]["batch_sha256"] == rows["lstm"]["batch_sha256"]
    # ... and it is the stream a sampler of (seed, step) gives, independently recomputed here
    corpus = load_corpus(None, max_files=24)
    tokens, _ = encode_documents(ByteTokenizer(), corpus.train_docs)
    sampler = WindowSampler(tokens, batch_size=4, seq_len=32, seed=0)
    h = hashlib.sha256()
    for step in range(20):
        h.update(sampler.micro_batch(step, 0).to(torch.int32).numpy().tobytes())
    assert rows["lstm"]["batch_sha256"]["final"] == h.hexdigest()[:16]
    table = (out / "results.md").read_text()
    assert "| xLSTM[7:1] |" in table and "| LSTM (torch.nn.LSTM, 2 layers) |" in table and "Command:" in table
    for name in ("curves.png", "extrapolation.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Traceback" not in capsys.readouterr().err


def test_compare_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["compare", "--models", "gpt", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown model 'gpt'" in err
    assert main(["compare", "--budget", "soon", "--out", str(tmp_path / "y")]) == 2
    assert "time_budget" in capsys.readouterr().err

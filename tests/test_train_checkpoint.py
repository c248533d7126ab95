"""Checkpoint files: round trip of model/optimiser/RNG state, manifest verification (truncation, bit flips, missing
files) with one-line errors naming the file, fallback to the previous good checkpoint, keep-last-K, and a crash in
the middle of writing leaving the previous checkpoint the newest intact one."""

from __future__ import annotations

import pytest
import torch

from xlstmkit.train import checkpoint as ck
from xlstmkit.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, load_latest_checkpoint, \
    load_weights, save_checkpoint, save_weights


def _states(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.LayerNorm(6))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(3, 4)).pow(2).sum().backward()
    opt.step()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    osd = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
    return model.state_dict(), osd


def test_round_trip(tmp_path):
    msd, osd = _states(0)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    save_checkpoint(tmp_path, 7, msd, osd, {"tokens": 99, "scheduler": {"last_epoch": 7}})
    torch.rand(5)  # move the RNG on; loading restores it
    got = load_checkpoint(tmp_path / "checkpoints" / "step_00000007")
    assert got.step == 7 and got.state["tokens"] == 99 and got.state["scheduler"] == {"last_epoch": 7}
    assert all(torch.equal(msd[k], got.model[k]) for k in msd)
    for name, st in osd["state"].items():
        for key, value in st.items():
            assert torch.equal(value, got.optimizer["state"][name][key])
    assert got.optimizer["param_groups"][0]["betas"] == osd["param_groups"][0]["betas"]
    ck.set_rng_state(got.rng, got.state["rng"])
    assert torch.equal(torch.rand(3), expected_next)


def _two_checkpoints(tmp_path):
    for step in (2, 4):
        msd, osd = _states(step)
        save_checkpoint(tmp_path, step, msd, osd, {"tokens": step}, keep_last=3)
    return tmp_path / "checkpoints" / "step_00000004"


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_damaged_checkpoint_is_named_and_resume_falls_back(tmp_path, damage):
    newest = _two_checkpoints(tmp_path)
    target = newest / ("MANIFEST.json" if damage == "manifest" else "optimizer.safetensors")
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        target.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        target.unlink()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(newest)
    msg = str(err.value)
    assert "\n" not in msg and ("step_00000004" in msg)
    if damage != "manifest":
        assert str(target) in msg
    warnings = []
    got = load_latest_checkpoint(tmp_path, warn=warnings.append)
    assert got.step == 2 and len(warnings) == 1 and "falling back" in warnings[0]


def test_no_intact_checkpoint_is_one_line_error(tmp_path):
    newest = _two_checkpoints(tmp_path)
    for folder in (newest, newest.parent / "step_00000002"):
        f = folder / "model.safetensors"
        f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(CheckpointError, match="no intact checkpoint") as err:
        load_latest_checkpoint(tmp_path)
    assert "\n" not in str(err.value)
    assert load_latest_checkpoint(tmp_path / "empty") is None


def test_keep_last(tmp_path):
    for step in range(1, 6):
        msd, osd = _states(0)
        save_checkpoint(tmp_path, step, msd, osd, {"tokens": 0}, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    msd, osd = _states(0)
    save_checkpoint(tmp_path, 1, msd, osd, {"tokens": 0})
    real = ck._write_fsync
    calls = []

    def dying(path, data):
        calls.append(path.name)
        if path.name == "optimizer.safetensors":
            real(path, data[: len(data) // 3])  # half-written file, then the "process dies"
            raise KeyboardInterrupt("killed")
        real(path, data)

    monkeypatch.setattr(ck, "_write_fsync", dying)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, msd, osd, {"tokens": 0})
    monkeypatch.setattr(ck, "_write_fsync", real)
    assert calls == ["model.safetensors", "optimizer.safetensors"]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]  # the partial one is not a checkpoint
    assert load_latest_checkpoint(tmp_path).step == 1
    save_checkpoint(tmp_path, 3, msd, osd, {"tokens": 0})       # the next save sweeps the leftover
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_weights_file_errors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_weights(path, {"w": torch.ones(3, 3)})
    assert torch.equal(load_weights(path)["w"], torch.ones(3, 3))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="model.safetensors is truncated or corrupt") as err:
        load_weights(path)
    assert "\n" not in str(err.value)

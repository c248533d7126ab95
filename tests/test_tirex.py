"""TiRex on xlstmkit's sLSTM: the loader of the published checkpoint layout, proven equal to the ``tirex-ts``
package's own forward on the same random weights (a tiny configuration; nothing is downloaded).

``tirex-ts``'s torch backend runs the sLSTM recurrence in bf16. Its float32 maths is selected by pointing the cell
module's ``torch.bfloat16`` at float32 (the package's own code path otherwise unchanged): then the two agree to float32
rounding. With the package as shipped they agree to bf16 tolerance.
"""

from __future__ import annotations

import types

import pytest
import torch

tirex_pkg = pytest.importorskip("tirex.models.tirex")
tcell = pytest.importorskip("tirex.models.slstm.cell")

from xlstmkit.interop.tirex import config_from_hparams, convert_state_dict, from_state_dict, load_tirex  # noqa: E402
from xlstmkit.models.tirex import TiRex, TiRexConfig  # noqa: E402

HP = {"model_config": {"input_patch_size": 8, "output_patch_size": 8, "quantiles": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6,
                                                                                      0.7, 0.8, 0.9],
                       "block_kwargs": {"embedding_dim": 32, "num_heads": 4, "num_blocks": 2,
                                        "ffn_proj_factor": 2.6667},
                       "input_ff_dim": 64},
      "train_ctx_len": 64}


pytestmark = pytest.mark.usefixtures("no_network")  # data must load offline (the fixture is in conftest.py)

def _reference(seed: int = 1):
    """tirex-ts's TiRexZero with seeded random weights (norm scales near 1, the rest small)."""
    ref = tirex_pkg.TiRexZero(backend="torch", **HP).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith(("norm_slstm.weight", "norm_ffn.weight")) or name == "out_norm.weight":
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.6 * torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.5)
    return ref


class _Float32Torch(types.ModuleType):
    """``torch`` with ``bfloat16`` meaning float32: selects the float32 maths of tirex-ts's torch cell."""

    def __getattr__(self, name):
        return torch.float32 if name == "bfloat16" else getattr(torch, name)


@pytest.fixture
def float32_reference(monkeypatch):
    monkeypatch.setattr(tcell, "torch", _Float32Torch("torch"))


def _context() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    ctx = torch.randn(3, 50, generator=g).cumsum(1) * 2 + 10
    ctx[1, :20] = float("nan")  # a short series (left padding)
    ctx[2, 30:33] = float("nan")  # a gap
    return ctx


def _save_checkpoint(ref, path):
    state = {"block_stack." + k if k.startswith("blocks.") else k: v for k, v in ref.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": HP}, path)


def test_default_config_has_the_published_35M_parameters():
    assert TiRex(TiRexConfig()).num_parameters() == 35_291_200


def test_loaded_checkpoint_equals_tirex_ts_float32_forward(tmp_path, float32_reference):
    ref = _reference()
    path = tmp_path / "model.ckpt"
    _save_checkpoint(ref, path)
    ours = load_tirex(path)
    theirs = tirex_pkg.TiRexZero.from_pretrained(str(path), backend="torch", device="cpu")  # local file: no download
    ctx = _context()
    q_ref, mean_ref = theirs.forecast(ctx, prediction_length=20, output_type="torch")
    q, median = ours.forecast(ctx, prediction_length=20)
    assert q.shape == (3, 20, 9) and median.shape == (3, 20)
    torch.testing.assert_close(q, q_ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(median, mean_ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("k", [2, 3])
def test_accelerated_rollout_equals_tirex_ts(k, float32_reference):
    ref = _reference()
    ours = from_state_dict(ref.state_dict(), config_from_hparams(HP))
    ctx = _context()
    q_ref, _ = ref.forecast(ctx, prediction_length=20, max_accelerated_rollout_steps=k, output_type="torch")
    q, _ = ours.forecast(ctx, prediction_length=20, max_accelerated_rollout_steps=k)
    torch.testing.assert_close(q, q_ref, rtol=1e-5, atol=1e-4)


def test_equals_tirex_ts_bf16_backend_to_bf16_tolerance():
    ref = _reference()
    ours = from_state_dict(ref.state_dict(), config_from_hparams(HP))
    ctx = _context()
    q_ref, _ = ref.forecast(ctx, prediction_length=16, output_type="torch")
    q, _ = ours.forecast(ctx, prediction_length=16)
    rel = ((q - q_ref).abs().max() / q_ref.abs().max()).item()
    assert rel < 2e-2, f"relative difference {rel} beyond bf16 tolerance"


def test_gate_slot_swap_is_what_makes_them_equal(float32_reference):
    """Without the fgate/igate swap the forecasts differ clearly: the equality tests above can fail."""
    ref = _reference()
    ours = from_state_dict(ref.state_dict(), config_from_hparams(HP))
    with torch.no_grad():
        for block in ours.blocks:
            i, f = block.layer.igate.weight.clone(), block.layer.fgate.weight.clone()
            block.layer.igate.weight.copy_(f)
            block.layer.fgate.weight.copy_(i)
    ctx = _context()
    q_ref, _ = ref.forecast(ctx, prediction_length=8, output_type="torch")
    q, _ = ours.forecast(ctx, prediction_length=8)
    assert (q - q_ref).abs().max() > 1e-2


def test_forecast_runs_the_native_slstm_loop(monkeypatch):
    from xlstmkit.ops import native

    if native.library() is None:
        pytest.skip("no C compiler: the native sLSTM loop is unavailable here")
    names = []
    real = native.call

    def counting(lib, name, *args, **kwargs):
        names.append(name)
        return real(lib, name, *args, **kwargs)

    monkeypatch.setattr(native, "call", counting)
    ours = from_state_dict(_reference().state_dict(), config_from_hparams(HP))
    full = torch.randn(3, HP["train_ctx_len"], generator=torch.Generator().manual_seed(0))  # no padding
    ours.forecast(full, prediction_length=8)
    assert names.count("slstm_forward") == HP["model_config"]["block_kwargs"]["num_blocks"]


def test_list_and_1d_contexts_are_left_padded_with_missing_values():
    ours = from_state_dict(_reference().state_dict(), config_from_hparams(HP))
    ctx = _context()
    q_batch, _ = ours.forecast(ctx[1:2, 20:], prediction_length=8)
    q_list, _ = ours.forecast([ctx[0], ctx[1, 20:]], prediction_length=8)
    q_1d, _ = ours.forecast(ctx[1, 20:], prediction_length=8)
    torch.testing.assert_close(q_list[1], q_batch[0])
    torch.testing.assert_close(q_1d[0], q_batch[0])


def test_loader_rejects_what_is_not_a_tirex_checkpoint(tmp_path):
    bad = tmp_path / "bad.ckpt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="not a TiRex"):
        load_tirex(bad)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="cannot read"):
        load_tirex(junk)
    with pytest.raises(ValueError, match="does not exist"):
        load_tirex(tmp_path / "missing.ckpt")


def test_loader_names_missing_and_unexpected_entries():
    ref = _reference()
    cfg = config_from_hparams(HP)
    state = dict(ref.state_dict())
    del state["blocks.1.slstm_layer.slstm_cell._bias_"]
    with pytest.raises(ValueError, match="lacks 'blocks.1.slstm_layer.slstm_cell._bias_'"):
        convert_state_dict(state, cfg)
    state = dict(ref.state_dict(), extra=torch.zeros(1))
    with pytest.raises(ValueError, match="unexpected entries"):
        convert_state_dict(state, cfg)
    wide = dict(HP, model_config=dict(HP["model_config"], input_ff_dim=32))
    with pytest.raises(ValueError, match="has shape"):
        from_state_dict(ref.state_dict(), config_from_hparams(wide))


def test_reusing_the_padding_state_computes_the_same_forecast():
    ours = from_state_dict(_reference().state_dict(), config_from_hparams(HP))
    ctx = _context()  # rows with 0, 2 and 0 leading NaN patches of 8 (after the window's own padding: more)
    rows = [ctx[0], ctx[1, 20:], ctx[2, 41:], ctx[0, 49:]]
    ctx_b = torch.full((4, 64), float("nan"))
    for i, r in enumerate(rows):
        ctx_b[i, 64 - len(r):] = r
    from xlstmkit.models.forecaster import instance_scale, patch_tokens

    obs = ~torch.isnan(ctx_b)
    x0 = torch.nan_to_num(ctx_b)
    loc, scale = instance_scale(x0, obs)
    tokens = patch_tokens((x0 - loc) / scale, obs, 8)
    with torch.no_grad():
        fast = ours.forward_tokens(tokens, last=2)
        plain = ours.forward_tokens(tokens, last=2, reuse_padding=False)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_cli_forecasts_zero_shot_from_a_checkpoint(tmp_path, capsys):
    import json

    from xlstmkit.cli import main

    path = tmp_path / "model.ckpt"
    _save_checkpoint(_reference(), path)
    js = tmp_path / "r.json"
    code = main(["forecast", "--dataset", "airline", "--model", "tirex", "--checkpoint", str(path), "--json", str(js),
                 "--out", str(tmp_path / "run"), "--no-progress", "--no-plot"])
    assert code == 0, capsys.readouterr().err
    r = json.loads(js.read_text())
    assert r["model"] == "TiRex" and r["horizon"] == 12 and r["mase"] > 0 and 0 <= r["coverage_80"] <= 1
    code = main(["forecast", "--dataset", "airline", "--model", "tirex", "--checkpoint", str(path), "--quantiles",
                 "0.05", "--out", str(tmp_path / "run2"), "--no-progress"])
    assert code == 2 and "fixed levels" in capsys.readouterr().err

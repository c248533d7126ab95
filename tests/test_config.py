"""Every check of the model configs, one case each: a value that cannot work is a one-line ValueError naming the field
(xLSTMConfig and xLSTMLargeConfig), and every field that can be invalid has a case here (the coverage test fails when
a field is added without one)."""

from __future__ import annotations

import dataclasses

import pytest

from xlstmkit import xLSTMConfig
from xlstmkit.models.xlstm_large import xLSTMLargeConfig

NAN, INF = float("nan"), float("inf")

# (case id, field(s) the case is about, overrides, regex the message must match)
LM_CASES = [
    *[(f"{f}-zero", f, {f: 0}, f"{f} must be a positive integer") for f in
      ("vocab_size", "embedding_dim", "num_blocks", "mlstm_num_heads", "slstm_num_heads", "qkv_proj_blocksize",
       "chunk_size", "round_up_to")],
    ("vocab-float", "vocab_size", {"vocab_size": 2.5}, "vocab_size must be a positive integer"),
    ("heads-bool", "mlstm_num_heads", {"mlstm_num_heads": True}, "mlstm_num_heads must be a positive integer"),
    ("mlstm-conv-zero", "mlstm_conv_kernel", {"mlstm_conv_kernel": 0}, "mlstm_conv_kernel must be an integer >= 1"),
    ("slstm-conv-negative", "slstm_conv_kernel", {"slstm_conv_kernel": -1},
     "slstm_conv_kernel must be an integer >= 0"),
    *[(f"{f}-{label}", f, {f: v}, f"{f} must be a finite number > 0") for f in
      ("mlstm_proj_factor", "ffn_proj_factor", "mlstm_eps", "norm_eps")
      for label, v in (("negative", -1), ("zero", 0.0), ("nan", NAN), ("inf", INF), ("string", "1e-5"))],
    *[(f"dropout-{v}", "dropout", {"dropout": v}, "dropout must be a number in \\[0, 1\\)") for v in (1.0, -0.1, NAN)],
    *[(f"{f}-string", f, {f: "false"}, f"{f} must be true or false") for f in
      ("bias", "embedding_dropout", "add_post_blocks_norm", "tie_weights", "fused", "lstm_ffn")],
    ("forget-gate", "forget_gate", {"forget_gate": "relu"}, "forget_gate must be one of"),
    ("form", "mlstm_form", {"mlstm_form": "quadratic"}, "mlstm_form must be one of"),
    ("bias-init", "slstm_bias_init", {"slstm_bias_init": "ones"}, "slstm_bias_init must be one of"),
    ("slstm-at-int", "slstm_at", {"slstm_at": 3}, "slstm_at must be a list of block indices"),
    ("slstm-at-bool", "slstm_at", {"slstm_at": [True]}, "slstm_at must be a list of block indices"),
    ("slstm-at-range", "slstm_at", {"num_blocks": 2, "slstm_at": [2]}, "slstm_at holds indices \\[2\\] outside"),
    ("lstm-at-int", "lstm_at", {"lstm_at": 3}, "lstm_at must be a list of block indices"),
    ("lstm-at-range", "lstm_at", {"num_blocks": 2, "lstm_at": [5]}, "lstm_at holds indices \\[5\\] outside"),
    ("pattern-syntax", "block_pattern", {"block_pattern": "xLSTM[7-1]"}, "block_pattern must look like"),
    ("pattern-empty", "block_pattern", {"block_pattern": "xLSTM[0:0]"}, "block_pattern .* has no blocks"),
    ("pattern-vs-slstm-at", "block_pattern", {"num_blocks": 2, "slstm_at": [0], "block_pattern": "xLSTM[1:1]"},
     "give only one of them"),
    ("mlstm-heads-divide", "mlstm_num_heads", {"embedding_dim": 30, "mlstm_num_heads": 7},
     "mlstm_num_heads \\(7\\) must divide the mLSTM inner dimension 64"),
    ("qkv-blocksize-divides", "qkv_proj_blocksize", {"qkv_proj_blocksize": 3},
     "qkv_proj_blocksize \\(3\\) must divide the mLSTM inner dimension 256"),
    ("slstm-heads-divide", "slstm_num_heads", {"embedding_dim": 30, "num_blocks": 2, "slstm_at": [1],
                                               "mlstm_num_heads": 2, "slstm_num_heads": 4},
     "slstm_num_heads \\(4\\) must divide embedding_dim \\(30\\)"),
]

LARGE_BASE = dict(vocab_size=61, embedding_dim=32, num_heads=2, num_blocks=2)
LARGE_CASES = [
    *[(f"{f}-zero", f, {f: 0}, f"{f} must be a positive integer") for f in
      ("vocab_size", "embedding_dim", "num_heads", "num_blocks", "ffn_round_up_to_multiple_of", "chunk_size")],
    *[(f"{f}-{label}", f, {f: v}, f"{f} must be a finite number > 0") for f in
      ("qk_dim_factor", "v_dim_factor", "ffn_proj_factor", "norm_eps", "eps")
      for label, v in (("negative", -1.0), ("nan", NAN), ("inf", INF))],
    *[(f"{f}-{label}", f, {f: v}, f"{f} must be a finite number > 0 or None") for f in
      ("gate_soft_cap", "output_logit_soft_cap") for label, v in (("zero", 0.0), ("nan", NAN), ("inf", INF))],
    *[(f"{f}-string", f, {f: "yes"}, f"{f} must be true or false") for f in
      ("use_bias", "norm_reduction_force_float32", "add_out_norm", "fused")],
    *[(f"{f}-{label}", f, {f: v}, f"{f} must be a token id in \\[0, vocab_size=61\\)") for f in
      ("pad_token_id", "bos_token_id", "eos_token_id")
      for label, v in (("negative", -1), ("vocab", 61), ("float", 1.5))],
    ("form", "mlstm_form", {"mlstm_form": "loop"}, "mlstm_form must be one of"),
    ("qk-dim-divides", "qk_dim_factor", {"embedding_dim": 30, "num_heads": 4},
     "qk_dim = int\\(embedding_dim \\* qk_dim_factor\\) = 15 must be a positive multiple of num_heads = 4"),
    ("v-dim-divides", "v_dim_factor", {"v_dim_factor": 0.75, "num_heads": 16},
     "v_dim = int\\(embedding_dim \\* v_dim_factor\\) = 24 must be a positive multiple of num_heads = 16"),
    ("ffn-dim-zero", "ffn_proj_factor", {"ffn_proj_factor": 0.01}, "ffn_dim = .* is 0; raise ffn_proj_factor"),
]


@pytest.mark.parametrize("case_id, field, overrides, message", LM_CASES, ids=[c[0] for c in LM_CASES])
def test_xlstm_config_rejects(case_id, field, overrides, message):
    with pytest.raises(ValueError, match=message) as err:
        xLSTMConfig(**overrides)
    assert field in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("case_id, field, overrides, message", LARGE_CASES, ids=[c[0] for c in LARGE_CASES])
def test_xlstm_large_config_rejects(case_id, field, overrides, message):
    with pytest.raises(ValueError, match=message) as err:
        xLSTMLargeConfig(**{**LARGE_BASE, **overrides})
    assert field.split("_factor")[0] in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("config, cases", [(xLSTMConfig, LM_CASES), (xLSTMLargeConfig, LARGE_CASES)],
                         ids=["xLSTMConfig", "xLSTMLargeConfig"])
def test_every_field_has_a_rejection_case(config, cases):
    fields = {f.name for f in dataclasses.fields(config)}
    assert fields - {c[1] for c in cases} == set()


def test_edge_values_that_work_are_accepted():
    """The checks do not refuse what works: no sLSTM convolution, no dropout, 'all' sLSTM blocks, a pattern with no
    sLSTM block, integer factors, uncapped gates and logits, no special tokens."""
    xLSTMConfig(slstm_conv_kernel=0, dropout=0.0, slstm_at="all", mlstm_proj_factor=2, num_blocks=1)
    xLSTMConfig(block_pattern="xLSTM[1:0]", num_blocks=3, slstm_at=[])
    xLSTMConfig.from_dict({**xLSTMConfig().to_dict(), "slstm_at": [0]})  # a JSON list
    xLSTMLargeConfig(**LARGE_BASE, gate_soft_cap=None, output_logit_soft_cap=None, pad_token_id=None,
                     bos_token_id=None, eos_token_id=None, ffn_proj_factor=2)

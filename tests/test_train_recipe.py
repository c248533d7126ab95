"""The default recipe of `xlstmkit train`: bf16 where the CPU has bf16 units (and float32 elsewhere), the thread
count, validation with the state carried across the held-out text, and document-aware packing of the batches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xlstmkit import xLSTMConfig, xLSTMLM
from xlstmkit.data.batches import WindowSampler, eval_streams
from xlstmkit.data.text import encode_documents
from xlstmkit.data.tokenizer import ByteTokenizer
from xlstmkit.models.baselines import LSTMLM
from xlstmkit.train import config as C
from xlstmkit.train.evaluate import accepts_state, evaluate, streams_loss


@pytest.fixture
def no_torch_answer(monkeypatch):
    """PyTorch says nothing about bf16 (as on a CPU it cannot ask): only the kernel's flags decide."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    C.cpu_has_bf16.cache_clear()
    yield
    C.cpu_has_bf16.cache_clear()


@pytest.mark.parametrize("flags,expected", [("fpu avx512f avx512_bf16 sse", True), ("fpu amx_bf16", True),
                                            ("fp asimd bf16 sve", True), ("fpu avx2 avx512f", False), ("", False)])
def test_bf16_units_are_detected_from_the_cpu_flags(tmp_path, monkeypatch, no_torch_answer, flags, expected):
    info = tmp_path / "cpuinfo"
    key = "Features" if "asimd" in flags else "flags"
    info.write_text(f"processor\t: 0\n{key}\t\t: {flags}\n\nprocessor\t: 1\n{key}\t\t: {flags}\n")
    monkeypatch.setattr(C, "CPUINFO", str(info))
    assert C.cpu_has_bf16() is expected
    assert C.resolve_dtype("auto", "cpu") == ("bfloat16" if expected else "float32")


def test_no_cpuinfo_means_float32(monkeypatch, tmp_path, no_torch_answer):
    monkeypatch.setattr(C, "CPUINFO", str(tmp_path / "missing"))
    assert C.cpu_has_bf16() is False and C.resolve_dtype("auto", "cpu") == "float32"


def test_torch_answer_wins_over_missing_flags(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(C, "CPUINFO", str(tmp_path / "missing"))
    C.cpu_has_bf16.cache_clear()
    try:
        assert C.cpu_has_bf16() is True
    finally:
        C.cpu_has_bf16.cache_clear()


@pytest.mark.parametrize("bf16", [True, False])
def test_the_default_run_uses_bf16_exactly_where_the_cpu_has_it(monkeypatch, bf16):
    monkeypatch.setattr(C, "cpu_has_bf16", lambda: bf16)
    run = C.build_run_config()  # `xlstmkit train` with no arguments
    assert run.train.dtype == ("bfloat16" if bf16 else "float32")
    assert C.build_run_config(None, None, [], {"dtype": "float32"}).train.dtype == "float32"  # a flag wins
    assert C.build_run_config(None, None, ["dtype=float32"]).train.dtype == "float32"
    assert C.resolve_dtype("auto", "mps") == "float32"      # no bf16 autocast on Apple's GPUs
    assert C.build_run_config("tiny").train.dtype == "float32"  # the test preset stays exact


def test_all_cores_resolves_to_the_affinity_split_among_processes(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(C, "available_cores", lambda: 4)
    assert C.resolve_threads("all") == 4 and C.resolve_threads(3) == 3 and C.resolve_threads(None) is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert C.resolve_threads("all") == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert C.resolve_threads("all") is None  # the environment decides
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("WORLD_SIZE")
    preset_threads = C.PRESETS[C.DEFAULT_PRESET]["train"].get("threads")
    assert C.build_run_config().train.threads == C.resolve_threads(preset_threads)


def _lm(**kw):
    torch.manual_seed(0)
    return xLSTMLM(xLSTMConfig(vocab_size=256, embedding_dim=16, num_blocks=2, slstm_at=[1], chunk_size=8,
                               round_up_to=16, **kw)).double()


def test_state_carried_evaluation_is_one_pass_over_each_piece():
    model = _lm()
    tokens = torch.randint(0, 256, (301,), generator=torch.Generator().manual_seed(0))
    streams = eval_streams(tokens, 3)                       # (3, 101): three contiguous thirds
    assert streams.shape == (3, 101) and torch.equal(streams[1], tokens[100:201])
    nll_a, n_a = streams_loss(model, streams, chunk=7, device=torch.device("cpu"))
    nll_b, n_b = streams_loss(model, streams, chunk=1000, device=torch.device("cpu"))
    with torch.no_grad():
        logits = model(streams[:, :-1])
        whole = float(F.cross_entropy(logits.flatten(0, 1), streams[:, 1:].flatten(), reduction="sum"))
    assert n_a == n_b == 300
    assert nll_a == pytest.approx(whole, rel=1e-10) and nll_b == pytest.approx(whole, rel=1e-10)


def test_evaluate_says_how_it_scored_and_carries_only_where_it_can():
    tokens = torch.randint(0, 256, (2000,), generator=torch.Generator().manual_seed(1))
    common = dict(seq_len=32, max_tokens=512, byte_lengths=torch.ones(256, dtype=torch.long),
                  counts=torch.ones(256, dtype=torch.float64), batch_size=4)
    model = _lm()
    assert accepts_state(model) and accepts_state(LSTMLM(256, 8))
    carried = evaluate(model, tokens, **common)
    windows = evaluate(model, tokens, **common, carry_state=False)
    assert carried.streams == 4 and carried.tokens == 512 and "state carried across 4" in carried.method
    assert windows.streams == 0 and "windows of 32 tokens" in windows.method
    assert "state carried" in carried.to_dict()["method"]
    assert math.isfinite(carried.bpb) and carried.bpb != windows.bpb

    class NoState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = LSTMLM(256, 8)

        def forward(self, input_ids):
            return self.inner(input_ids)

    assert not accepts_state(NoState())
    assert evaluate(NoState(), tokens, **common).streams == 0


def test_document_aware_windows_stay_inside_their_document():
    docs = ["a" * 300, "b" * 20, "c" * 500, "d" * 100]
    tokens, starts = encode_documents(ByteTokenizer(), docs)
    assert starts.tolist() == [0, 302, 324, 826]   # each document followed by the two-byte separator
    assert tokens.numel() == 926
    T = 63
    sampler = WindowSampler(tokens, batch_size=64, seq_len=T, seed=0, doc_starts=starts)
    seen_docs, seen_starts = set(), set()
    for step in range(100):
        s = sampler.global_starts(step)
        assert torch.equal(s, sampler.global_starts(step))  # a function of (seed, step)
        for start in s.tolist():
            d = int(torch.searchsorted(starts, torch.tensor(start), right=True)) - 1
            end = starts[d + 1].item() if d + 1 < len(starts) else tokens.numel()
            seen_docs.add(d)
            seen_starts.add(start)
            if end - starts[d] >= T + 1:
                assert start + T + 1 <= end  # never runs into the next document
            else:
                assert start == starts[d]     # a short document is packed from its start
    assert seen_docs == {0, 1, 2, 3} and {0, 324, 826} <= seen_starts  # documents' first windows are drawn
    batch = sampler.micro_batch(3, 0)
    assert batch.shape == (64, T + 1)
    plain = WindowSampler(tokens, batch_size=8, seq_len=T, seed=0)
    assert torch.equal(plain.global_starts(5), WindowSampler(tokens, 8, T, 0).global_starts(5))
    with pytest.raises(ValueError, match="doc_starts"):
        WindowSampler(tokens, 8, T, 0, doc_starts=torch.tensor([5, 10]))


def test_bpe_documents_are_encoded_one_by_one():
    pytest.importorskip("tokenizers")
    from xlstmkit.data.tokenizer import BPETokenizer

    docs = ["def f(x):\n    return x\n" * 20, "import os\nprint(os.getcwd())\n" * 20]
    tok = BPETokenizer.train(docs, vocab_size=300)
    tokens, starts = encode_documents(tok, docs)
    assert starts[0] == 0 and len(starts) == 2
    assert tok.decode(tokens[: starts[1]].tolist()) == docs[0] + "\n\n"
    assert tok.decode(tokens[starts[1]:].tolist()) == docs[1]

"""Data loading: the built-in stdlib corpus, --data formats (text file, folder, JSONL, HF name), and the seeded
window batches (deterministic per step, disjoint per-rank shards whose union is the single-process batch)."""

from __future__ import annotations

import json

import pytest
import torch

from xlstmkit.data import corpus as corpus_mod
from xlstmkit.data.batches import WindowSampler, eval_windows
from xlstmkit.data.text import load_corpus


def test_stdlib_corpus_split_is_by_file_deterministic_and_disjoint():
    a = load_corpus(None, max_files=30)
    b = load_corpus(None, max_files=30)
    assert a.train_docs == b.train_docs and a.val_docs == b.val_docs
    assert len(a.train_docs) + len(a.val_docs) == 30
    assert not set(a.train_docs) & set(a.val_docs)
    files = corpus_mod.stdlib_files(30)
    assert all(f.suffix == ".py" for f in files)
    assert not any("site-packages" in f.parts or "test" in f.parts for f in files)
    full = corpus_mod.stdlib_files()
    assert len(full) > 100 and set(files) <= set(full)


def test_stdlib_corpus_missing_gives_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus_mod.sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match="standard library's source was not found.*--data"):
        load_corpus(None)


def test_text_file_split_at_the_end(tmp_path):
    lines = [f"line {i}: the quick brown fox" for i in range(200)]
    path = tmp_path / "a.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    c = load_corpus(str(path), val_fraction=0.1)
    assert c.train_text + c.val_text == path.read_text()
    assert c.train_text.endswith("\n") and 0.05 < len(c.val_text) / len(path.read_text()) < 0.2


def test_folder_of_text_files_split_by_file(tmp_path):
    for i in range(12):
        (tmp_path / f"doc{i}.md").write_text(f"document {i} " * 20, encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "secret.txt").write_text("nope", encoding="utf-8")
    c = load_corpus(str(tmp_path), val_fraction=0.25)
    docs = c.train_docs + c.val_docs
    assert len(docs) == 12 and c.val_docs and c.train_docs
    assert not any("PNG" in d or "nope" in d for d in docs)


def test_jsonl_text_field_and_errors(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"record {i} " * 5, "id": i}) for i in range(20)) + "\n",
                    encoding="utf-8")
    c = load_corpus(str(path), val_fraction=0.2)
    assert len(c.train_docs) + len(c.val_docs) == 20
    with pytest.raises(ValueError, match="no string field 'body'"):
        load_corpus(str(path), text_field="body")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        load_corpus(str(bad))


def test_missing_path_and_unknown_dataset_name_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):
        load_corpus(str(tmp_path / "missing.txt"))
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="datasets. is not installed"):
            load_corpus("some_dataset_name")


def test_window_sampler_is_a_function_of_seed_and_step():
    tokens = torch.arange(1000)
    s = WindowSampler(tokens, batch_size=8, seq_len=16, seed=3)
    a, b = s.micro_batch(5, 0), s.micro_batch(5, 0)
    assert a.shape == (8, 17) and torch.equal(a, b)
    assert not torch.equal(s.micro_batch(6, 0), a)
    assert not torch.equal(WindowSampler(tokens, 8, 16, seed=4).micro_batch(5, 0), a)
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(8, 16, dtype=torch.long))  # contiguous windows


def test_rank_and_accumulation_shards_partition_the_global_batch():
    tokens = torch.arange(5000)
    whole = WindowSampler(tokens, batch_size=8, seq_len=10, seed=0).micro_batch(2, 0)
    parts = [WindowSampler(tokens, 8, 10, seed=0, grad_accum=2, rank=r, world_size=2).micro_batch(2, m)
             for m in range(2) for r in range(2)]
    assert all(p.shape == (2, 11) for p in parts)
    assert torch.equal(torch.cat(parts), whole)
    with pytest.raises(ValueError, match="divisible"):
        WindowSampler(tokens, batch_size=6, seq_len=10, seed=0, world_size=4)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        WindowSampler(torch.arange(5), batch_size=1, seq_len=10, seed=0)


def test_eval_windows_cover_evenly_and_do_not_overlap():
    tokens = torch.arange(1001)
    w = eval_windows(tokens, 100)
    assert w.shape == (10, 101) and torch.equal(w[:, 0], torch.arange(0, 1000, 100))
    capped = eval_windows(tokens, 100, max_tokens=300)
    assert capped.shape[0] == 3 and capped[0, 0] == 0 and capped[-1, 0] == 900


def test_hf_dataset_name_reads_the_local_cache(monkeypatch):
    """A dataset name goes through `datasets.load_dataset` offline; the validation split is used when present."""
    import sys
    import types

    class Split:
        def __init__(self, texts):
            self.column_names = ["text", "id"]
            self._texts = texts

        def __getitem__(self, key):
            assert key == "text"
            return self._texts

    calls = []

    def load_dataset(name, config=None):
        calls.append((name, config))
        return {"train": Split(["alpha " * 10, "", "beta " * 10]), "validation": Split(["gamma " * 10])}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    c = load_corpus("wikitext:wikitext-2-raw-v1")
    assert calls == [("wikitext", "wikitext-2-raw-v1")]
    assert c.train_docs == ["alpha " * 10, "beta " * 10] and c.val_docs == ["gamma " * 10]
    import os

    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
    with pytest.raises(ValueError, match="no column 'body'"):
        load_corpus("wikitext", text_field="body")

"""`xlstmkit train --init-from RUN_DIR|HF_DIR`: fine-tuning starts from the source's weights (with its tokenizer
and architecture, a new optimiser, a new run folder that records the source), on the user's own data; the xLSTM-7B
architecture (`xLSTMLarge`) fine-tunes this way on a CPU at small scale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xlstmkit.cli import main
from xlstmkit.train.checkpoint import load_weights

TRAIN = ["--no-progress", "--batch-size", "4", "--seq-len", "16", "--set", "sample_tokens=4", "--set",
         "final_eval_tokens=128", "--set", "eval_tokens=128", "--set", "eval_every=0", "--set", "warmup_steps=1"]


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("ft")
    a, b = tmp / "a.txt", tmp / "b.txt"
    a.write_text("".join(f"alpha {i} beta {i % 7}\n" for i in range(300)), encoding="utf-8")
    b.write_text("".join(f"gamma({i}) -> delta[{i % 5}]\n" for i in range(300)), encoding="utf-8")
    return a, b


def _close_to(weights: dict, reference: dict, atol: float) -> bool:
    return all(torch.allclose(weights[k].float(), reference[k].float(), atol=atol) for k in reference)


def test_init_from_a_run_folder(tmp_path, texts, capsys):
    a, b = texts
    src = tmp_path / "src"
    assert main(["train", "--preset", "tiny", "--data", str(a), "--tokenizer", "bpe", "--bpe-vocab-size", "300",
                 "--out", str(src), "--max-steps", "3", "--set", "embedding_dim=16", *TRAIN]) == 0
    ft = tmp_path / "ft"
    # a tiny learning rate: the fine-tuned weights stay next to the source's (a fresh init would be far away)
    assert main(["train", "--preset", "tiny", "--init-from", str(src), "--data", str(b), "--out", str(ft),
                 "--max-steps", "2", "--lr", "1e-7", "--set", "dropout=0.1", *TRAIN]) == 0
    config = json.loads((ft / "config.json").read_text())
    assert config["train"]["init_from"] == str(src.resolve()) and config["init_from"]["kind"] == "run"
    assert config["model"]["embedding_dim"] == 16 and config["model"]["dropout"] == 0.1   # source's size, user's dropout
    assert config["tokenizer"]["kind"] == "bpe" and (ft / "tokenizer.json").read_text() == (src / "tokenizer.json").read_text()
    assert config["train"]["data"] == str(b.resolve())
    assert _close_to(load_weights(ft / "model.safetensors"), load_weights(src / "model.safetensors"), 1e-4)
    assert not list((ft / "checkpoints" / "step_00000002").glob("*.tmp*"))
    capsys.readouterr()
    # what cannot apply is refused in one line: another tokenizer, or a size that changes the weights' shapes
    assert main(["train", "--init-from", str(src), "--tokenizer", "bytes", "--out", str(tmp_path / "x"), *TRAIN]) == 2
    assert "cannot be used with --init-from" in capsys.readouterr().err
    assert main(["train", "--preset", "tiny", "--init-from", str(src), "--data", str(b), "--set", "embedding_dim=32",
                 "--out", str(tmp_path / "y"), *TRAIN]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "embedding_dim" in err and "shapes" in err


def test_init_from_a_hugging_face_xlstm_large_folder_fine_tunes_on_cpu(tmp_path, texts, capsys):
    from xlstmkit import xLSTMLarge, xLSTMLargeConfig
    from xlstmkit.data.tokenizer import BPETokenizer
    from xlstmkit.interop import hf

    a, b = texts
    tok = BPETokenizer.train([a.read_text()], vocab_size=300)
    torch.manual_seed(0)
    model = xLSTMLarge(xLSTMLargeConfig(vocab_size=320, embedding_dim=32, num_heads=2, num_blocks=2, chunk_size=16,
                                        pad_token_id=None, bos_token_id=None, eos_token_id=None))
    folder = tmp_path / "hf"
    hf.save(model, folder)
    tok.save(folder)
    source = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / "ft"
    assert main(["train", "--preset", "tiny", "--init-from", str(folder), "--data", str(b), "--out", str(out),
                 "--max-steps", "3", "--lr", "1e-3", *TRAIN]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["family"] == "xlstm_large" and config["model"]["vocab_size"] == 320
    assert config["init_from"] == {"path": str(folder.resolve()), "kind": "hf", "weights": str(folder.resolve())}
    tuned = load_weights(out / "model.safetensors")
    assert set(tuned) == set(source)
    assert not _close_to(tuned, source, 1e-6) and _close_to(tuned, source, 0.05)   # moved, from the source
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4
    # the run folder of a fine-tuned xLSTMLarge is an ordinary run: eval and generate read it
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--max-tokens", "64", "--no-progress"]) == 0
    assert main(["generate", "--run", str(out), "--prompt", "gamma(", "--max-new-tokens", "4", "--seed", "0"]) == 0
    assert "gamma(" in capsys.readouterr().out

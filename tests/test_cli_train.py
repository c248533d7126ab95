"""The command line end to end on a tiny config: `xlstmkit train` (progress bar, run folder, final report with the
unigram baseline and a sample), `xlstmkit eval` (with length extrapolation), `xlstmkit generate` (streaming), BPE
runs, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json

import pytest

from xlstmkit.cli import main

TINY = ["--set", "embedding_dim=16", "--set", "num_blocks=2", "--set", "slstm_at=[1]", "--set", "mlstm_num_heads=2",
        "--set", "slstm_num_heads=2", "--set", "chunk_size=8", "--set", "round_up_to=8", "--set", "eval_tokens=256",
        "--set", "final_eval_tokens=256", "--set", "sample_tokens=12", "--batch-size", "4", "--seq-len", "16"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny byte-level run shared by the tests of this module: 6 steps, checkpoint every 3, eval every 3."""
    tmp = tmp_path_factory.mktemp("cli")
    data = tmp / "notes.txt"
    data.write_text("".join(f"# note {i}\nprint('hello {i % 5}')\n" for i in range(200)), encoding="utf-8")
    out = tmp / "run"
    return data, out, main(["train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--max-steps", "6",
                            "--checkpoint-every", "3", "--eval-every", "3", "--keep-last", "1", *TINY])


def test_train_writes_run_folder_and_report(trained, capfd):
    data, out, code = trained
    assert code == 0
    for name in ("config.json", "model.safetensors", "metrics.csv", "loss_curve.png", "results.json",
                 "unigram.safetensors"):
        assert (out / name).is_file(), name
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000006"]  # keep-last 1
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["embedding_dim"] == 16 and config["model"]["vocab_size"] == 256
    assert config["train"]["data"] == str(data) and config["tokenizer"] == {"kind": "bytes", "vocab_size": 256}
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert rows[2]["val_loss"] and not rows[1]["val_loss"]
    assert all(float(r["tokens_per_s"]) > 0 and float(r["lr"]) > 0 for r in rows)
    results = json.loads((out / "results.json").read_text())
    v = results["validation"]
    assert v["bpb"] == pytest.approx(v["loss"] / 0.6931471805599453)  # bytes tokenizer: 1 token = 1 byte
    assert v["unigram_bpb"] > 0 and results["sample"].startswith("def ")
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_train_output_has_progress_metrics_and_sample(tmp_path, capsys):
    data = tmp_path / "t.txt"
    data.write_text("abc def ghi\n" * 300, encoding="utf-8")
    assert main(["train", "--preset", "tiny", "--data", str(data), "--out", str(tmp_path / "r"), "--max-steps", "2",
                 *TINY]) == 0
    cap = capsys.readouterr()
    assert "2/2" in cap.err and "tok/s" in cap.err                         # the progress bar
    assert "bits/byte" in cap.out and "unigram" in cap.out and "perplexity" in cap.out
    assert "sample (12 tokens" in cap.out


def test_eval_with_lengths(trained, capsys):
    _, out, _ = trained
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--lengths", "16,32,64", "--max-tokens", "128"]) == 0
    text = capsys.readouterr().out
    assert "unigram" in text and "length extrapolation (trained at 16)" in text
    table = (out / "length_extrapolation.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in table[1:]] == [16, 32, 64]
    assert (out / "length_extrapolation.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "eval.json").read_text())
    assert report["validation"]["tokens"] == 128 and len(report["lengths"]) == 3


def test_eval_with_quantised_weights_scores_close_to_float32_and_says_which(trained, tmp_path):
    """--weights bf16|int8 evaluates the model a quantised deployment serves: the scores move (the weights did), but
    by little on this tiny model, and eval.json records the weight storage."""
    _, out, _ = trained
    bpb = {}
    for weights in ("float32", "bf16", "int8"):
        assert main(["eval", "--run", str(out), "--weights", weights, "--max-tokens", "256", "--out",
                     str(tmp_path / weights), "--no-progress"]) == 0
        report = json.loads((tmp_path / weights / "eval.json").read_text())
        assert report["weight_dtype"] == weights
        bpb[weights] = report["validation"]["bpb"]
    assert bpb["bf16"] != bpb["float32"] or bpb["int8"] != bpb["float32"]  # the quantised weights were used
    for weights in ("bf16", "int8"):
        assert bpb[weights] == pytest.approx(bpb["float32"], rel=0.02)


def test_generate_streams_and_is_seeded(trained, capsys):
    _, out, _ = trained
    args = ["generate", "--run", str(out), "--prompt", "print(", "--max-new-tokens", "10", "--top-k", "5",
            "--seed", "3"]
    capsys.readouterr()
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first and first.startswith("print(")
    assert main(args[:-2] + ["--seed", "4", "--temperature", "2.0"]) == 0


def test_generate_from_killed_run_uses_checkpoint(trained, tmp_path, capsys):
    """A run without model.safetensors (stopped before the end) is read from its newest checkpoint; a corrupt
    model.safetensors is named in a one-line warning."""
    import shutil

    _, out, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    capsys.readouterr()
    assert main(["generate", "--run", str(copy), "--prompt", "x", "--max-new-tokens", "3"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(weights) in err and "newest intact checkpoint" in err


def test_bpe_run(tmp_path, capsys):
    data = tmp_path / "docs"
    data.mkdir()
    for i in range(8):
        (data / f"{i}.txt").write_text(f"the cat {i} sat on the mat with {i * 3} other cats.\n" * 40, encoding="utf-8")
    out = tmp_path / "bpe"
    assert main(["train", "--preset", "tiny", "--data", str(data), "--tokenizer", "bpe", "--bpe-vocab-size", "300",
                 "--out", str(out), "--max-steps", "2", "--no-progress", *TINY]) == 0
    assert (out / "tokenizer.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["tokenizer"]["kind"] == "bpe" and config["model"]["vocab_size"] == config["tokenizer"]["vocab_size"]
    v = json.loads((out / "results.json").read_text())["validation"]
    assert v["bytes"] > v["tokens"]  # BPE tokens stand for several bytes; bits per byte accounts for it
    capsys.readouterr()
    assert main(["generate", "--run", str(out), "--prompt", "the cat", "--max-new-tokens", "4", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("the cat")


@pytest.mark.parametrize("argv,msg", [
    (["train", "--data", "/nonexistent/file.txt", "--preset", "tiny"], "no such file or folder"),
    (["train", "--preset", "tiny", "--set", "nonsense=1"], "unknown config key 'nonsense'"),
    (["train", "--preset", "tiny", "--set", "embedding_dim=-4"], "embedding_dim must be a positive integer"),
    (["eval", "--run", "/nonexistent/run"], "run folder /nonexistent/run not found"),
    (["generate", "--run", "/nonexistent/run", "--prompt", "x"], "run folder /nonexistent/run not found"),
])
def test_bad_input_is_one_line_error(tmp_path, capsys, argv, msg):
    argv = [*argv, "--out", str(tmp_path / "o")] if argv[0] == "train" else argv
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and msg in err and "Traceback" not in err


def test_time_budget_stops_early_with_a_checkpoint(tmp_path, capsys):
    data = tmp_path / "t.txt"
    data.write_text("abc def ghi\n" * 300, encoding="utf-8")
    out = tmp_path / "r"
    assert main(["train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--max-steps", "100000",
                 "--time-budget", "0.5s", "--no-progress", "--checkpoint-every", "0", *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["stopped_by"] == "time_budget" and 1 <= results["step"] < 100000
    assert (out / "checkpoints" / f"step_{results['step']:08d}").is_dir()   # resumable from where it stopped


@pytest.mark.slow
def test_compile_and_bf16(tmp_path):
    data = tmp_path / "t.txt"
    data.write_text("abc def ghi\n" * 300, encoding="utf-8")
    for flag in ("--compile", "--bf16"):
        out = tmp_path / flag.strip("-")
        assert main(["train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--max-steps", "2",
                     "--no-progress", flag, *TINY]) == 0
        assert json.loads((out / "results.json").read_text())["validation"]["loss"] < 10


def test_too_little_validation_text_fails_before_training(tmp_path, capsys):
    data = tmp_path / "short.txt"
    data.write_text("x = 1\n" * 40, encoding="utf-8")  # 240 bytes: 12 bytes of validation text
    assert main(["train", "--preset", "tiny", "--data", str(data), "--out", str(tmp_path / "r"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "validation text has" in err and "val_fraction" in err and err.count("\n") == 1
    assert not (tmp_path / "r" / "metrics.csv").exists()


def test_generate_from_hugging_face_folder(tmp_path, capsys):
    """`--run` also takes a Hugging Face xLSTM folder (config.json, safetensors, tokenizer.json); seeded = same text."""
    import torch

    from xlstmkit import xLSTMLarge, xLSTMLargeConfig
    from xlstmkit.data.tokenizer import BPETokenizer
    from xlstmkit.interop import hf

    tok = BPETokenizer.train(["hello world " * 50, "the cat sat on the mat"], vocab_size=300)
    torch.manual_seed(0)
    model = xLSTMLarge(xLSTMLargeConfig(vocab_size=tok.vocab_size, embedding_dim=32, num_heads=2, num_blocks=2,
                                        chunk_size=16, pad_token_id=None, bos_token_id=None, eos_token_id=None))
    hf.save(model, tmp_path)
    (tmp_path / "tokenizer.json").write_text(tok._tok.to_str(), encoding="utf-8")
    args = ["generate", "--run", str(tmp_path), "--prompt", "hello", "--max-new-tokens", "6", "--seed", "1"]
    capsys.readouterr()
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("hello") and len(first) > len("hello\n")
    assert main(args) == 0 and capsys.readouterr().out == first

"""Run folders and `xlstmkit export` folders for the Hugging Face ecosystem: every run folder carries a tokenizer that
`AutoTokenizer` loads with xlstmkit's ids; the byte tokenizer's JSON gives the UTF-8 bytes; an exported folder loads
in transformers and in xlstmkit with the run's logits (the paper's model in xlstmkit's layout, the 7B architecture in
transformers' own), and lm-evaluation-harness scores it from its command line with the log-likelihoods the model
gives."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from xlstmkit import runs  # noqa: E402
from xlstmkit.cli import main  # noqa: E402
from xlstmkit.data.tokenizer import BPETokenizer, byte_tokenizer_json, save_hf_tokenizer  # noqa: E402
from xlstmkit.interop import hf  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ["--set", "embedding_dim=16", "--set", "num_blocks=2", "--set", "slstm_at=[1]", "--set", "mlstm_num_heads=2",
        "--set", "slstm_num_heads=2", "--set", "chunk_size=8", "--set", "round_up_to=8", "--set", "eval_tokens=64",
        "--set", "final_eval_tokens=64", "--set", "sample_tokens=4", "--batch-size", "2", "--seq-len", "16",
        "--no-progress"]
TEXTS = ["hello world", "Grüße, ÿ Ā ĊĠ naïve café\n\ttabs\x00nul 😀 中文", "", " leading space", "a\n\nb"]


@pytest.fixture(scope="module")
def byte_run(tmp_path_factory):
    """A tiny byte-level run (2 steps) and its export."""
    tmp = tmp_path_factory.mktemp("export")
    data = tmp / "notes.txt"
    data.write_text("".join(f"# note {i}\nprint('hello {i % 5}')\n" for i in range(120)), encoding="utf-8")
    run, out = tmp / "run", tmp / "exported"
    assert main(["train", "--preset", "tiny", "--data", str(data), "--out", str(run), "--max-steps", "2", *TINY]) == 0
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    return run, out


def test_byte_runs_carry_a_tokenizer_autotokenizer_loads_with_the_byte_ids(byte_run):
    run, _ = byte_run
    assert json.loads((run / "config.json").read_text())["tokenizer"]["kind"] == "bytes"  # xlstmkit's own reading
    tok = AutoTokenizer.from_pretrained(run)
    for text in TEXTS:
        ids = tok(text)["input_ids"]
        assert ids == list(text.encode("utf-8")) and tok.decode(ids) == text


@settings(max_examples=60, deadline=None)
@given(st.text())
def test_byte_tokenizer_json_encodes_to_the_utf8_bytes_and_back(text):
    tok = _BYTE_TOKENIZER
    ids = tok.encode(text).ids
    assert ids == list(text.encode("utf-8")) and tok.decode(ids) == text


_BYTE_TOKENIZER = tokenizers.Tokenizer.from_str(json.dumps(byte_tokenizer_json()))


def test_bpe_tokenizer_loads_in_autotokenizer_with_the_same_ids(tmp_path):
    bpe = BPETokenizer.train(["the cat sat on the mat. " * 30, "a dog ran after the cat\n" * 20], vocab_size=300)
    config = save_hf_tokenizer(bpe, tmp_path)
    assert "eos_token" not in config  # no special tokens to declare
    tok = AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS + ["the cat sat on the mat"]:
        assert tok(text)["input_ids"] == bpe.encode(text) and tok.decode(tok(text)["input_ids"]) == text


def test_only_special_tokens_are_declared(tmp_path):
    """A bos/eos/pad id is declared in tokenizer_config.json when it is a special token of the tokenizer; an
    ordinary piece would otherwise start matching its text everywhere."""
    raw = tokenizers.Tokenizer(tokenizers.models.BPE())
    raw.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = tokenizers.decoders.ByteLevel()
    raw.train_from_iterator(["hello there " * 20], tokenizers.trainers.BpeTrainer(
        vocab_size=280, special_tokens=["<|bos|>", "<|pad|>", "<|endoftext|>"], show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
    config = save_hf_tokenizer(BPETokenizer(raw), tmp_path, bos_token_id=0, eos_token_id=2, pad_token_id=40)
    assert (config["bos_token"], config["eos_token"], "pad_token" in config) == ("<|bos|>", "<|endoftext|>", False)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 2, None)


def test_export_loads_in_transformers_and_xlstmkit_with_the_runs_logits(byte_run, capsys):
    run, out = byte_run
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "modeling_xlstmkit.py",
            "configuration_xlstmkit.py", "tokenization_xlstmkit.py"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
    trained = runs.load_model(run).model
    x = torch.tensor([list(b"print('hello 3')\n")])
    with torch.no_grad():
        ref = trained(x)
        assert torch.equal(AutoModelForCausalLM.from_pretrained(out)(x).logits, ref)
        assert torch.equal(runs.load_model(out).model(x), ref)
    # xlstmkit's own commands take the exported folder: same seeded text as from the run
    args = ["--prompt", "print(", "--max-new-tokens", "8", "--seed", "3"]
    capsys.readouterr()
    assert main(["generate", "--run", str(run), *args]) == 0
    from_run = capsys.readouterr().out
    assert main(["generate", "--run", str(out), *args]) == 0
    assert capsys.readouterr().out == from_run


def test_export_of_the_7b_architecture_uses_transformers_layout(tmp_path):
    """A run of the 7B architecture (fine-tuned from a Hugging Face folder) exports in transformers' own xLSTM
    layout, with its tokenizer and special tokens; loaded back, it stops generating at eos by default."""
    from xlstmkit.models.xlstm_large import xLSTMLarge, xLSTMLargeConfig

    raw = tokenizers.Tokenizer(tokenizers.models.BPE())
    raw.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = tokenizers.decoders.ByteLevel()
    text = "".join(f"line {i}: the cat sat\n" for i in range(200))
    raw.train_from_iterator([text], tokenizers.trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|bos|>", "<|pad|>", "<|endoftext|>"], show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
    torch.manual_seed(0)
    base = xLSTMLarge(xLSTMLargeConfig(vocab_size=raw.get_vocab_size(), embedding_dim=16, num_heads=2, num_blocks=1,
                                       chunk_size=8, ffn_round_up_to_multiple_of=16))
    base.save_pretrained(tmp_path / "base", tokenizer=BPETokenizer(raw))
    (tmp_path / "data.txt").write_text(text, encoding="utf-8")
    run, out = tmp_path / "run", tmp_path / "out"
    assert main(["train", "--init-from", str(tmp_path / "base"), "--data", str(tmp_path / "data.txt"), "--out",
                 str(run), "--max-steps", "1", "--batch-size", "2", "--seq-len", "16", "--no-progress", "--set",
                 "eval_tokens=64", "--set", "final_eval_tokens=64", "--set", "sample_tokens=2"]) == 0
    assert main(["export", "--run", str(run), "--out", str(out), "--max-shard-size", "20KB"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "xlstm" and (out / "model.safetensors.index.json").is_file()
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert (tok_config["bos_token"], tok_config["pad_token"], tok_config["eos_token"]) == (
        "<|bos|>", "<|pad|>", "<|endoftext|>")
    model = hf.load(out)
    trained = runs.load_model(run).model
    x = torch.tensor([raw.encode("line 7: the").ids])
    with torch.no_grad():
        assert torch.equal(model(x), trained(x))
    assert AutoTokenizer.from_pretrained(out)("line 7")["input_ids"] == raw.encode("line 7").ids


def test_export_refuses_bad_arguments_in_one_line(byte_run, tmp_path, capsys):
    run, _ = byte_run
    cases = [(["--run", str(tmp_path / "none"), "--out", str(tmp_path / "o")], "not found"),
             (["--run", str(run), "--out", str(run)], "is the run folder itself"),
             (["--run", str(run), "--out", str(tmp_path / "o"), "--max-shard-size", "5GB"], "7B architecture"),
             (["--run", str(run), "--out", str(run.parent / "run")], "is the run folder itself")]
    for argv, message in cases:
        capsys.readouterr()
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


TASK = """task: xlstmkit_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""
DOCS = [{"question": "print('hello", "choices": ["3')", "world"], "answer": 0},
        {"question": "# note", "choices": ["12", "twelve", "x"], "answer": 0},
        {"question": "2 + 2 =", "choices": ["4", "5"], "answer": 0},
        {"question": "def f(x): return", "choices": ["x", "None", "print"], "answer": 1}]


def test_lm_eval_scores_an_exported_folder_with_the_models_log_likelihoods(byte_run, tmp_path):
    """`lm_eval --model hf --model_args pretrained=OUT,trust_remote_code=True` on a local JSON task (no download):
    its per-choice log-likelihoods are the model's, and its accuracy follows from them."""
    pytest.importorskip("lm_eval")
    run, out = byte_run
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "xlstmkit_local.yaml").write_text(TASK.format(data=data), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_MODULES_CACHE": str(tmp_path / "modules"), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args",
                           f"pretrained={out},trust_remote_code=True", "--tasks", "xlstmkit_local", "--include_path",
                           str(tmp_path / "tasks"), "--device", "cpu", "--batch_size", "4", "--output_path",
                           str(tmp_path / "results"), "--log_samples"], capture_output=True, text=True, env=env,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = [json.loads(line) for f in glob.glob(str(tmp_path / "results" / "*" / "samples_*.jsonl"))
               for line in open(f, encoding="utf-8")]
    results = json.loads(open(glob.glob(str(tmp_path / "results" / "*" / "results_*.json"))[0]).read())
    model = runs.load_model(run).model
    correct = 0
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        doc = sample["doc"]
        ours = []
        for args in sample["arguments"].values():  # (context, continuation) as lm-eval asked: " " + choice
            assert args["arg_0"] == doc["question"] and args["arg_1"].strip() in doc["choices"]
            ctx, cont = list(args["arg_0"].encode()), list(args["arg_1"].encode())
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ctx + cont])).double(), -1)[0]
            ours.append(sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont)))
        theirs = [float(r[0]) for r in sample["filtered_resps"]]
        assert theirs == pytest.approx(ours, abs=1e-3)
        correct += int(max(range(len(ours)), key=ours.__getitem__) == doc["answer"])
    assert len(samples) == len(DOCS)
    assert results["results"]["xlstmkit_local"]["acc,none"] == pytest.approx(correct / len(DOCS))

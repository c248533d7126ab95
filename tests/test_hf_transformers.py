"""xlstmkit's LMs as transformers models (xlstmkit/interop/transformers.py): folders round-trip with identical logits,
forward's loss is the shifted cross-entropy, the cache continues a sequence, transformers' generate (greedy, sampling,
beam search) agrees with xlstmkit's own generation and with itself without a cache, peft LoRA adapters are on every
computation path, Trainer fine-tunes, pipeline generates, and `import xlstmkit` registers lazily."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from xlstmkit import xLSTMConfig, xLSTMLM  # noqa: E402
from xlstmkit.interop.transformers import xLSTMKitCache, xLSTMKitConfig, xLSTMKitForCausalLM  # noqa: E402
from xlstmkit.models.xlstm_large import xLSTMLarge, xLSTMLargeConfig  # noqa: E402

from conftest import perturb_xlstm_large_  # noqa: E402

V = 48
SRC = Path(__file__).resolve().parents[1] / "src"


@torch.no_grad()
def paper_lm(tie: bool = False, seed: int = 0) -> xLSTMLM:
    torch.manual_seed(seed)
    model = xLSTMLM(xLSTMConfig(vocab_size=V, embedding_dim=16, num_blocks=2, block_pattern="xLSTM[1:1]",
                                mlstm_num_heads=2, slstm_num_heads=2, chunk_size=4, round_up_to=8, tie_weights=tie))
    for p in model.parameters():  # every gate and projection matters
        p.add_(0.3 * torch.randn_like(p))
    return model.eval()


@torch.no_grad()
def large_lm(seed: int = 1, **changes) -> xLSTMLarge:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, embedding_dim=16, num_heads=2, num_blocks=2, chunk_size=4, ffn_round_up_to_multiple_of=16,
               eos_token_id=None, pad_token_id=None, bos_token_id=None)
    model = xLSTMLarge(xLSTMLargeConfig(**{**cfg, **changes}))
    perturb_xlstm_large_(model)
    return model.eval()


MAKERS = {"xlstm": paper_lm, "xlstm_large": large_lm}


def ids(batch: int, length: int, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------------------------
# folders


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_paper_lm_folder_round_trips_with_identical_logits(tmp_path, tie):
    model = paper_lm(tie)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "configuration_xlstmkit.py",
                                                         "model.safetensors", "modeling_xlstmkit.py"]
    stored = load_file(tmp_path / "model.safetensors")
    assert ("model.head.weight" in stored) == (not tie)  # a tied head is stored once, as the embedding
    x = ids(2, 11)
    with torch.no_grad():
        ref = model(x)
        ours = xLSTMLM.from_pretrained(tmp_path)
        hf = AutoModelForCausalLM.from_pretrained(tmp_path)
        assert isinstance(hf, xLSTMKitForCausalLM) and not hf.training
        assert torch.equal(ours(x), ref) and torch.equal(hf(x).logits, ref)
    for m in (ours, hf.model):
        assert (m.head.weight is m.embedding.weight) == tie
    # transformers' own save_pretrained writes the same layout, which xlstmkit reads without transformers
    hf.save_pretrained(tmp_path / "again")
    assert not list((tmp_path / "again").glob("*.bin"))
    with torch.no_grad():
        assert torch.equal(xLSTMLM.from_pretrained(tmp_path / "again")(x), ref)
        assert torch.equal(AutoModelForCausalLM.from_pretrained(tmp_path / "again")(x).logits, ref)


def test_seven_b_architecture_round_trips_both_layouts(tmp_path):
    """xLSTMLarge.save_pretrained writes transformers' own xLSTM layout; wrapped, it writes xlstmkit's; both load."""
    model = large_lm()
    x = ids(2, 9)
    with torch.no_grad():
        ref = model(x)
        model.save_pretrained(tmp_path / "native")
        assert json.loads((tmp_path / "native" / "config.json").read_text())["model_type"] == "xlstm"
        assert torch.equal(xLSTMLarge.from_pretrained(tmp_path / "native")(x), ref)
        xLSTMKitForCausalLM.from_xlstmkit(model).save_pretrained(tmp_path / "kit")
        hf = AutoModelForCausalLM.from_pretrained(tmp_path / "kit")
        assert isinstance(hf.model, xLSTMLarge) and torch.equal(hf(x).logits, ref)
        assert torch.equal(xLSTMLarge.from_pretrained(tmp_path / "kit")(x), ref)
    with pytest.raises(ValueError, match="holds an xLSTMLarge, not an xLSTMLM"):
        xLSTMLM.from_pretrained(tmp_path / "kit")


def test_folders_that_do_not_fit_are_refused_in_one_line(tmp_path):
    paper_lm().save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.stack.blocks.1.ffn.proj_down.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model.safetensors does not fit .*missing .*proj_down") as info:
        xLSTMLM.from_pretrained(tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="missing_keys"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 20)
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file"):
        xLSTMLM.from_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        xLSTMLM.from_pretrained(tmp_path)
    config["xlstmkit_config"]["num_blocks"] = 0
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json: .*num_blocks"):
        xLSTMLM.from_pretrained(tmp_path)


def test_config_is_validated_by_xlstmkit_and_derives_the_fields_tools_read():
    config = xLSTMKitConfig(family="xlstm", xlstmkit_config={"vocab_size": 300, "embedding_dim": 64,
                                                            "num_blocks": 3, "tie_weights": True})
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.tie_word_embeddings) == (
        300, 64, 3, True)
    assert config.to_xlstmkit() == xLSTMConfig(vocab_size=300, embedding_dim=64, num_blocks=3, tie_weights=True)
    large = xLSTMKitConfig.from_xlstmkit(xLSTMLargeConfig(vocab_size=99, embedding_dim=64, num_heads=2, num_blocks=1))
    assert (large.family, large.eos_token_id, large.pad_token_id, large.bos_token_id) == ("xlstm_large", 2, 1, 0)
    with pytest.raises(ValueError, match="vocab_size"):
        xLSTMKitConfig(xlstmkit_config={"vocab_size": 0})
    with pytest.raises(ValueError, match="unknown xLSTMConfig fields"):
        xLSTMKitConfig(xlstmkit_config={"hidden": 3})
    with pytest.raises(ValueError, match="family must be one of"):
        xLSTMKitConfig(family="gpt")
    assert AutoConfig.for_model("xlstmkit").family == "xlstm"  # registered with AutoConfig by `import xlstmkit`


# ---------------------------------------------------------------------------------------------------------------------
# forward


@pytest.mark.parametrize("family", list(MAKERS))
def test_loss_is_the_shifted_cross_entropy(family):
    hf = xLSTMKitForCausalLM.from_xlstmkit(MAKERS[family]())
    x = ids(3, 13)
    labels = x.clone()
    labels[0, :4] = -100  # ignored (e.g. prompt or padding)
    out = hf(x, labels=labels)
    logits = hf.model(x)
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(out.loss, ref, rtol=1e-6) and torch.equal(out.logits, logits)
    out.loss.backward()
    assert all(p.grad is not None for p in hf.parameters() if p.requires_grad)
    assert out.past_key_values is None  # training mode: no cache unless asked
    assert isinstance(hf(x, return_dict=False), tuple)


@pytest.mark.parametrize("family", list(MAKERS))
def test_cache_continues_a_sequence_like_one_forward(family):
    hf = xLSTMKitForCausalLM.from_xlstmkit(MAKERS[family]().double()).eval()
    x = ids(2, 12)
    with torch.no_grad():
        whole = hf(x).logits
        a = hf(x[:, :7])
        cache = a.past_key_values
        assert isinstance(cache, xLSTMKitCache) and cache.get_seq_length() == 7
        b = hf(x[:, 7:8], past_key_values=cache)  # one token: the decode_step path
        c = hf(x[:, 8:], past_key_values=cache, attention_mask=torch.ones(2, 12))  # mask over every column so far
    assert b.past_key_values is cache and cache.get_seq_length() == 12
    tol = 1e-10 if whole.dtype == torch.float64 else 1e-5  # xLSTMLarge returns float32 logits (as transformers)
    assert torch.allclose(torch.cat([a.logits, b.logits, c.logits], 1), whole, atol=tol, rtol=tol)


def test_padded_positions_may_hold_any_id_and_change_no_state():
    """Ids under a 0 of the mask (here one outside the vocabulary, as a tokenizer's added pad token would be) do not
    reach the model: a right-padded row's real logits and state are those of the row alone."""
    hf = xLSTMKitForCausalLM.from_xlstmkit(paper_lm().double()).eval()
    x = ids(1, 6)
    padded = torch.cat([x, torch.full((1, 3), V + 5)], 1)
    mask = torch.tensor([[1] * 6 + [0] * 3])
    with torch.no_grad():
        alone = hf(x)
        out = hf(padded, attention_mask=mask)
        nxt = ids(1, 1, seed=9)
        after_alone = hf(nxt, past_key_values=alone.past_key_values).logits
        after_padded = hf(nxt, past_key_values=out.past_key_values).logits
    assert torch.allclose(out.logits[:, :6], alone.logits, atol=1e-12)
    assert torch.allclose(after_padded, after_alone, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# transformers' generate


@pytest.mark.parametrize("family", list(MAKERS))
def test_greedy_generate_gives_xlstmkit_generate_tokens(family):
    model = MAKERS[family]()
    hf = xLSTMKitForCausalLM.from_xlstmkit(model)
    prompt = ids(2, 7)
    ours = model.generate(prompt, 12)
    theirs = hf.generate(prompt, max_new_tokens=12, do_sample=False)
    assert torch.equal(theirs, ours)
    one = hf.generate(prompt[:, :1], max_new_tokens=5, do_sample=False)  # a one-token prompt: decode steps only
    assert torch.equal(one, model.generate(prompt[:, :1], 5))


def test_sampling_with_the_cache_draws_what_sampling_without_it_draws():
    hf = xLSTMKitForCausalLM.from_xlstmkit(paper_lm().double())
    prompt = ids(2, 5)
    runs = []
    for use_cache in (True, False):
        torch.manual_seed(11)
        runs.append(hf.generate(prompt, max_new_tokens=8, do_sample=True, top_k=10, temperature=0.9,
                                num_return_sequences=2, use_cache=use_cache))
    assert runs[0].shape == (4, 13) and torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("family", list(MAKERS))
def test_beam_search_reorders_the_state_by_beam(family):
    """Beam search with the cache (state reordered by beam index at every step) keeps the same beams as beam search
    recomputing every prefix from scratch, and the beams did switch parents (so the reordering was exercised)."""
    hf = xLSTMKitForCausalLM.from_xlstmkit(MAKERS[family]().double())
    prompt = ids(2, 5, seed=4)
    kw = dict(max_new_tokens=7, num_beams=4, num_return_sequences=3, do_sample=False, length_penalty=0.0,
              return_dict_in_generate=True, output_scores=True)
    cached = hf.generate(prompt, **kw)
    fresh = hf.generate(prompt, use_cache=False, **kw)
    assert torch.equal(cached.sequences, fresh.sequences)
    assert torch.allclose(cached.sequences_scores, fresh.sequences_scores, atol=1e-9)
    parents = cached.beam_indices[:, :7]
    assert bool((parents[:, 1:] != parents[:, :1]).any()), "no beam ever changed parent"


def test_left_padded_prompts_generate_as_each_prompt_alone():
    hf = xLSTMKitForCausalLM.from_xlstmkit(paper_lm().double())
    prompts = [ids(1, n, seed=n)[0] for n in (6, 2, 4)]
    S = 6
    batch = torch.zeros(3, S, dtype=torch.long)
    mask = torch.zeros(3, S, dtype=torch.long)
    for b, p in enumerate(prompts):
        batch[b, S - len(p):], mask[b, S - len(p):] = p, 1
    out = hf.generate(batch, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    for b, p in enumerate(prompts):
        alone = hf.generate(p[None], max_new_tokens=6, do_sample=False)
        assert torch.equal(out[b, S:], alone[0, len(p):]), f"row {b}"


# ---------------------------------------------------------------------------------------------------------------------
# peft, Trainer, pipeline


@pytest.mark.parametrize("family", list(MAKERS))
def test_lora_adapters_sit_on_every_path_and_train(family):
    """LoRA on every linear layer: each adapter gets a gradient (none is skipped by a fused fast path), the loss
    falls, and the adapted model's logits and greedy tokens equal those of the merged model (forward and the
    one-token decoding path both use the adapters); merging restores the fused paths."""
    peft = pytest.importorskip("peft")
    hf = xLSTMKitForCausalLM.from_xlstmkit(MAKERS[family]())
    adapted = peft.get_peft_model(hf, peft.LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=2e-2)
    x = ids(4, 12)
    losses = []
    for step in range(4):
        loss = adapted(input_ids=x, labels=x).loss
        loss.backward()
        if step == 0:
            lora_b = {n: p.grad for n, p in adapted.named_parameters() if "lora_B" in n}
            assert len(lora_b) >= 4 and all(g is not None and g.abs().sum() > 0 for g in lora_b.values()), [
                n for n, g in lora_b.items() if g is None or g.abs().sum() == 0]
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    adapted.eval()
    with torch.no_grad():
        logits = adapted(input_ids=x).logits
        tokens = adapted.generate(input_ids=x[:2, :5], max_new_tokens=6, do_sample=False)
        merged = adapted.merge_and_unload()
        assert torch.allclose(merged(x).logits, logits, atol=1e-5)
        assert all(m.fused for m, fused, _ in merged._slots if fused)  # plain nn.Linear again: fused paths back
        assert torch.equal(merged.generate(x[:2, :5], max_new_tokens=6, do_sample=False), tokens)


def test_trainer_fine_tunes_with_falling_loss(tmp_path):
    from transformers import Trainer, TrainingArguments

    paper_lm().save_pretrained(tmp_path / "model")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    rows = [{"input_ids": r, "labels": r} for r in ids(16, 12, seed=5)]
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=5, per_device_train_batch_size=8,
                             learning_rate=1e-2, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
                             disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 5 and losses[-1] < losses[0]


def test_pipeline_generates_from_a_folder(tmp_path):
    from transformers import pipeline

    torch.manual_seed(0)
    model = xLSTMLM(xLSTMConfig(vocab_size=256, embedding_dim=16, num_blocks=2, block_pattern="xLSTM[1:1]",
                                mlstm_num_heads=2, slstm_num_heads=2, chunk_size=4, round_up_to=8)).eval()
    model.save_pretrained(tmp_path, tokenizer="bytes")
    generator = pipeline("text-generation", model=str(tmp_path))
    text = generator("hello", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    expected = model.generate(torch.tensor([list(b"hello")]), 8)[0].tolist()
    assert text == bytes(expected).decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------------------------------
# registration


LAZY_SCRIPT = """
import json, sys
import xlstmkit
report = {"transformers_after_import": "transformers" in sys.modules}
from transformers import AutoTokenizer
report["modeling_utils_after_autotokenizer"] = "transformers.modeling_utils" in sys.modules
from transformers import AutoConfig, AutoModelForCausalLM
report["config_type"] = type(AutoConfig.from_pretrained(sys.argv[1])).__name__
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
report["model_module"] = type(model).__module__
print(json.dumps(report))
"""


def test_import_registers_lazily_and_auto_classes_load_the_folder(tmp_path):
    """`import xlstmkit` imports no transformers; AutoTokenizer does not pull in transformers' model code because of
    xlstmkit; the Auto classes know model_type "xlstmkit" without any call to a register function."""
    paper_lm().save_pretrained(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = subprocess.run([sys.executable, "-c", LAZY_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"transformers_after_import": False, "modeling_utils_after_autotokenizer": False,
                      "config_type": "xLSTMKitConfig", "model_module": "xlstmkit.interop.transformers"}

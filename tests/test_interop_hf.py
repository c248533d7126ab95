"""Hugging Face checkpoints: transformers' xLSTMForCausalLM is the judge.

transformers runs in a fresh interpreter with the `xlstm` package blocked (tests/_hf_reference.py), so it uses its
own pure-PyTorch path, the one that runs on CPU. Random tiny models it saves with save_pretrained must load here
with the same logits (every form, lengths 1, a prime, exactly the chunk size, above it) and the same greedy
continuation; folders we save must load there with the same logits.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from xlstmkit.interop import hf
from xlstmkit.models.xlstm_large import xLSTMLarge, xLSTMLargeConfig

torch.set_num_threads(1)
pytest.importorskip("transformers")

REFERENCE_SCRIPT = Path(__file__).with_name("_hf_reference.py")
LENGTHS = [1, 67, 64, 130]  # one token, a prime, exactly the chunk size, above it
GEN = 8
CASES = {
    # sizes transformers' cache handles (hidden * 0.5 a multiple of 64): its own cached generate is compared too
    "h128": dict(config=dict(hidden_size=128, num_heads=2, num_hidden_layers=2, vocab_size=99, eos_token_id=None),
                 generate=GEN, generate_cached=True, cache_length=67),
    # sizes where transformers' cache breaks (generation compared against its no-cache forward)
    "h64": dict(config=dict(hidden_size=64, num_heads=2, num_hidden_layers=2, vocab_size=99, eos_token_id=None),
                generate=GEN),
    "h96": dict(config=dict(hidden_size=96, num_heads=2, num_hidden_layers=2, vocab_size=99, eos_token_id=None),
                generate=GEN, grad_length=33),
    # biases everywhere (use_bias also gives the norms a bias), more heads and blocks
    "bias": dict(config=dict(hidden_size=64, num_heads=4, num_hidden_layers=3, vocab_size=99, use_bias=True,
                             eos_token_id=None)),
}


def run_reference(job: dict, workdir: Path) -> None:
    spec = workdir / f"job_{len(list(workdir.glob('job_*.json')))}.json"
    spec.write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, str(REFERENCE_SCRIPT), str(spec)], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"transformers reference run failed:\n{proc.stderr[-4000:]}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hf")


@pytest.fixture(scope="module")
def reference(workdir) -> dict[str, Path]:
    """One transformers run that saves every case and its reference logits / continuations."""
    jobs = [dict(dir=str(workdir / name), seed=k, lengths=LENGTHS, **case) for k, (name, case) in
            enumerate(CASES.items())]
    run_reference({"make": jobs}, workdir)
    return {name: workdir / name for name in CASES}


@pytest.fixture(scope="module")
def loaded(reference) -> dict[str, xLSTMLarge]:
    return {name: hf.load(path) for name, path in reference.items()}


@pytest.fixture(scope="module")
def saved_by_us(workdir, loaded) -> dict[str, Path]:
    """Our saves of two loaded models (one file, and sharded), then checked by one transformers run."""
    out = {"h96": workdir / "ours_h96", "bias-sharded": workdir / "ours_bias_sharded"}
    hf.save(loaded["h96"], out["h96"])
    hf.save(loaded["bias"], out["bias-sharded"], max_shard_size="100KB")
    run_reference({"check": [dict(dir=str(p), lengths=LENGTHS, seed=7) for p in out.values()]}, workdir)
    return out


def assert_close(ours: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4) -> None:
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item()
    assert err <= rel * ref.abs().max().item(), f"max |diff| {err:.3g} vs max |ref| {ref.abs().max().item():.3g}"


# ---------------------------------------------------------------------------------------------------------------------
# transformers -> xlstmkit


@pytest.mark.parametrize("form", ["chunkwise", "parallel", "recurrent"])
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(reference, loaded, case, form):
    ref = load_file(reference[case] / "reference.safetensors")
    model = loaded[case]
    for L in LENGTHS:
        with torch.no_grad():
            ours = model(ref[f"ids_{L}"], mlstm_form=form)
        assert_close(ours, ref[f"logits_{L}"])


@pytest.mark.parametrize("case", ["h128", "h64", "h96"])
def test_greedy_continuation_matches_transformers(reference, loaded, case):
    ref = load_file(reference[case] / "reference.safetensors")
    ours = loaded[case].generate(ref["gen_prompt"], GEN)
    assert ours.shape == (2, 5 + GEN)
    assert torch.equal(ours, ref["gen_out"])
    if "gen_out_hf" in ref:  # transformers' own cached generate
        assert torch.equal(ours, ref["gen_out_hf"])


def test_prefill_then_steps_matches_transformers(reference, loaded):
    """Feeding 130 tokens as 67 + 1 + 62 with the returned state gives transformers' whole-sequence logits."""
    ref = load_file(reference["h96"] / "reference.safetensors")
    ids, model = ref["ids_130"], loaded["h96"]
    with torch.no_grad():
        a, st = model(ids[:, :67], return_state=True)
        b, st = model(ids[:, 67:68], state=st, return_state=True)
        c = model(ids[:, 68:], state=st)
    assert_close(torch.cat([a, b, c], 1), ref["logits_130"])


def test_gradients_match_transformers_where_it_can_train(reference, loaded):
    """At 33 tokens (transformers trains only below its chunk size) loss and every gradient agree."""
    ref = load_file(reference["h96"] / "reference.safetensors")
    model = hf.load(reference["h96"]).train()
    ids = ref["grad_ids"]
    for form in ("chunkwise", "parallel"):
        model.zero_grad()
        logits = model(ids[:, :-1], mlstm_form=form)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 99), ids[:, 1:].reshape(-1))
        loss.backward()
        assert torch.allclose(loss, ref["grad_loss"], rtol=1e-5)
        for name, p in model.named_parameters():
            theirs = ref[f"grad.{hf._to_hf_name(name)}"]
            assert_close(p.grad, theirs, rel=1e-3)


def test_state_converts_to_and_from_transformers_cache(reference, loaded):
    """Our state after 67 tokens is transformers' xLSTMCache.rnn_state up to the key scaling, both ways."""
    ref = load_file(reference["h128"] / "reference.safetensors")
    model = loaded["h128"]
    ids = ref["ids_67"]
    with torch.no_grad():
        _, state = model(ids[:, :-1], return_state=True)
        _, state = model(ids[:, -1:], state=state, return_state=True)
    theirs = {layer: tuple(ref[f"cache.{layer}.{x}"] for x in "Cnm") for layer in range(2)}
    converted = hf.state_to_transformers(state, model.config)
    for layer in range(2):
        for ours, t in zip(converted[layer], theirs[layer]):
            assert ours.shape == t.shape
            assert_close(ours, t, rel=1e-4)
    back = hf.state_from_transformers(theirs, model.config)
    nxt = ref["ids_130"][:, :5]
    with torch.no_grad():
        assert_close(model(nxt, state=back), model(nxt, state=state), rel=1e-4)


# ---------------------------------------------------------------------------------------------------------------------
# xlstmkit -> transformers


@pytest.mark.parametrize("which", ["h96", "bias-sharded"])
def test_saved_folder_loads_in_transformers_with_same_logits(saved_by_us, loaded, which):
    folder = saved_by_us[which]
    model = loaded["h96" if which == "h96" else "bias"]
    theirs = load_file(folder / "transformers_logits.safetensors")
    for L in LENGTHS:
        with torch.no_grad():
            assert_close(model(theirs[f"ids_{L}"]), theirs[f"logits_{L}"])


def test_saved_config_is_transformers_shaped(saved_by_us):
    cfg = json.loads((saved_by_us["h96"] / "config.json").read_text())
    assert cfg["model_type"] == "xlstm" and cfg["architectures"] == ["xLSTMForCausalLM"]
    assert cfg["hidden_size"] == 96 and cfg["num_hidden_layers"] == 2 and cfg["weight_mode"] == "single"
    with safe_open(str(saved_by_us["h96"] / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert "backbone.embeddings.weight" in f.keys() and "lm_head.weight" in f.keys()


def test_sharded_round_trip(tmp_path, loaded):
    model = loaded["bias"]
    hf.save(model, tmp_path, max_shard_size=60_000)
    index = json.loads((tmp_path / hf.INDEX_NAME).read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 2 and not (tmp_path / hf.WEIGHTS_NAME).exists()
    assert index["metadata"]["total_size"] == sum(p.numel() * p.element_size() for p in model.parameters())
    for back in (hf.load(tmp_path), hf.load(tmp_path, mmap=False)):  # memory-mapped and read tensor by tensor
        for (n1, p1), (n2, p2) in zip(model.state_dict().items(), back.state_dict().items()):
            assert n1 == n2 and torch.equal(p1, p2)
    hf.save(model, tmp_path)  # re-saving unsharded leaves one unambiguous layout
    assert (tmp_path / hf.WEIGHTS_NAME).exists() and not (tmp_path / hf.INDEX_NAME).exists()
    assert not list(tmp_path.glob("model-*-of-*.safetensors"))


def test_saving_over_the_folder_a_model_was_memory_mapped_from(tmp_path, loaded):
    """Files are replaced atomically, so a model whose weights map the old files keeps working."""
    hf.save(loaded["h64"], tmp_path)
    model = hf.load(tmp_path)
    ids = torch.randint(0, 99, (1, 20))
    with torch.no_grad():
        before = model(ids)
        loaded["h64"].lm_head.weight.add_(1.0)
        try:
            hf.save(loaded["h64"], tmp_path)
        finally:
            loaded["h64"].lm_head.weight.sub_(1.0)
        assert torch.equal(model(ids), before)
        assert not torch.equal(hf.load(tmp_path)(ids), before)


# ---------------------------------------------------------------------------------------------------------------------
# loading details


def test_load_builds_on_meta_and_fills_every_parameter(reference, monkeypatch):
    devices = []
    original = xLSTMLarge.reset_parameters

    def spy(self):
        devices.append(self.lm_head.weight.device.type)
        original(self)

    monkeypatch.setattr(xLSTMLarge, "reset_parameters", spy)
    model = hf.load(reference["h64"])
    assert devices == ["meta"]  # constructed without allocating (or initialising) real weights
    assert not any(p.is_meta for p in model.parameters()) and not model.training
    with safe_open(str(reference["h64"] / "model.safetensors"), "pt") as f:
        assert torch.equal(model.blocks[1].mlstm_layer.q.weight, f.get_tensor("backbone.blocks.1.mlstm_layer.q.weight"))


def test_dtype_is_a_choice_and_state_stays_float32(reference):
    model = hf.load(reference["h128"], dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids = torch.randint(0, 99, (2, 70))
    with torch.no_grad():
        logits, state = model(ids, return_state=True)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert all(t.dtype == torch.float32 for st in state for t in st)
    assert {p.dtype for p in hf.load(reference["h128"]).parameters()} == {torch.float32}  # as stored
    with pytest.raises(TypeError, match="dtype"):
        hf.load(reference["h128"], dtype="int8")


def _fuse(tensors: dict, num_blocks: int) -> dict:
    """The weight_mode='fused' layout: q|k|v|o, i|f and gate|up concatenated along the output rows."""
    out = dict(tensors)
    for b in range(num_blocks):
        p = f"backbone.blocks.{b}."
        for fused, parts in (("mlstm_layer.qkv_opreact", ("q", "k", "v", "ogate_preact")),
                             ("mlstm_layer.ifgate_preact", ("igate_preact", "fgate_preact")),
                             ("ffn.proj_up_gate_z", ("proj_up_gate", "proj_up"))):
            group = fused.split(".")[0]
            for suffix in ("weight", "bias"):
                names = [f"{p}{group}.{part}.{suffix}" for part in parts]
                if names[0] in out:
                    out[f"{p}{fused}.{suffix}"] = torch.cat([out.pop(n) for n in names])
    return out


@pytest.mark.parametrize("layout", ["fused", "official"])
def test_fused_and_official_layouts_load(tmp_path, reference, loaded, layout):
    src = reference["bias"]
    tensors = load_file(src / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text())
    if layout == "fused":
        fused = _fuse(tensors, 3)
        assert any("qkv_opreact" in n for n in fused)
        save_file(fused, tmp_path / "model.safetensors")
        (tmp_path / "config.json").write_text(json.dumps({**cfg, "weight_mode": "fused"}))
    else:  # NX-AI xlstm_large from_pretrained: config.yaml, model_{n}.safetensors, top-level embedding.weight
        tensors["embedding.weight"] = tensors.pop("backbone.embeddings.weight")
        names = sorted(tensors)
        save_file({n: tensors[n] for n in names[:20]}, tmp_path / "model_0.safetensors")
        save_file({n: tensors[n] for n in names[20:]}, tmp_path / "model_1.safetensors")
        keys = ("embedding_dim", "num_heads", "num_blocks", "vocab_size", "use_bias", "norm_eps", "qk_dim_factor",
                "v_dim_factor", "ffn_proj_factor", "gate_soft_cap", "output_logit_soft_cap", "chunkwise_kernel")
        yaml = pytest.importorskip("yaml")
        (tmp_path / "config.yaml").write_text(yaml.safe_dump({k: cfg[k] for k in keys}))
    model = hf.load(tmp_path)
    for (n1, p1), (n2, p2) in zip(loaded["bias"].state_dict().items(), model.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1


# ---------------------------------------------------------------------------------------------------------------------
# bad input


def test_bad_checkpoint_reports_every_mismatch_at_once(tmp_path, reference):
    src = reference["h64"]
    tensors = load_file(src / "model.safetensors")
    del tensors["backbone.blocks.1.ffn.proj_up.weight"]  # missing
    tensors["backbone.blocks.0.mlstm_layer.extra.weight"] = torch.zeros(3)  # unexpected
    tensors["backbone.blocks.0.mlstm_layer.q.weight"] = torch.zeros(31, 64)  # wrong shape
    save_file(tensors, tmp_path / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(vocab_size=100, num_hidden_layers=3, num_blocks=3)  # disagree with the weights
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError) as info:
        hf.load(tmp_path)
    msg = str(info.value)
    for expected in ("missing tensor backbone.blocks.1.ffn.proj_up.weight",
                     "unexpected tensor backbone.blocks.0.mlstm_layer.extra.weight",
                     "backbone.blocks.0.mlstm_layer.q.weight has shape [31, 64]",
                     "vocab_size=100", "num_hidden_layers=3", "missing tensor backbone.blocks.2."):
        assert expected in msg, expected
    assert len(info.value.problems) >= 6


def test_missing_files_and_conflicting_aliases(tmp_path, reference):
    with pytest.raises(FileNotFoundError, match="config.json"):
        hf.load(tmp_path)
    cfg = json.loads((reference["h64"] / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FileNotFoundError, match="safetensors"):
        hf.load(tmp_path)
    with pytest.raises(ValueError, match="aliases"):
        hf.config_from_hf({**cfg, "embedding_dim": 128})
    with pytest.raises(FileNotFoundError, match="directory"):
        hf.load(tmp_path / "nope")
    (tmp_path / "model.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(ValueError, match="not a safetensors file"):
        hf.load(tmp_path)


def test_save_rejects_what_transformers_cannot_load(tmp_path):
    model = xLSTMLarge(xLSTMLargeConfig(vocab_size=10, embedding_dim=32, num_heads=2, num_blocks=1,
                                        add_out_norm=False))
    with pytest.raises(ValueError, match="out_norm"):
        hf.save(model, tmp_path)
    with pytest.raises(TypeError, match="xLSTMLarge"):
        hf.save(torch.nn.Linear(2, 2), tmp_path)
    with pytest.raises(ValueError, match="max_shard_size"):
        hf.save(xLSTMLarge(model.config.replace(add_out_norm=True)), tmp_path, max_shard_size="lots")


# ---------------------------------------------------------------------------------------------------------------------
# tokenizer


def test_tokenizer_json_is_loaded_with_tokenizers(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    assert not hf.has_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        hf.load_tokenizer(tmp_path)
    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    assert hf.has_tokenizer(tmp_path)
    assert hf.load_tokenizer(tmp_path).encode("hello world again").ids == [1, 2, 0]


# ---------------------------------------------------------------------------------------------------------------------
# damaged files, special tokens


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.suffix in (".json", ".safetensors") and f.name != "reference.safetensors":
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _safetensors_with_header(path: Path, header: object, data: bytes = b"\0" * 16) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)


def test_damaged_files_are_value_errors_naming_the_file(tmp_path, reference):
    """What used to escape as JSONDecodeError, KeyError, TypeError, AttributeError or MemoryError is a ValueError
    naming the file: one line for a file that cannot be parsed, a listed problem for a damaged entry."""
    good = reference["h64"]

    def case(name: str, edit) -> str:
        folder = _copy(good, tmp_path / name)
        edit(folder)
        with pytest.raises(ValueError) as info:
            hf.load(folder)
        return str(info.value)

    msg = case("json", lambda d: (d / "config.json").write_text("{not json"))
    assert "config.json is damaged" in msg and "\n" not in msg
    msg = case("gen", lambda d: (d / "generation_config.json").write_text("[1, 2"))
    assert "generation_config.json is damaged" in msg and "\n" not in msg
    cfg = json.loads((good / "config.json").read_text())
    msg = case("alias", lambda d: (d / "config.json").write_text(json.dumps({**cfg, "hidden_size": [64]})))
    assert "aliases must agree" in msg or "config is invalid" in msg
    msg = case("types", lambda d: (d / "config.json").write_text(json.dumps({**cfg, "vocab_size": "many"})))
    assert "config is invalid" in msg
    index = {"weight_map": {"lm_head.weight": "../elsewhere.safetensors"}}
    msg = case("index", lambda d: (d / hf.INDEX_NAME).write_text(json.dumps(index)))
    assert hf.INDEX_NAME in msg and "file name in the folder" in msg
    msg = case("index-json", lambda d: (d / hf.INDEX_NAME).write_text("{"))
    assert f"{hf.INDEX_NAME} is damaged" in msg and "\n" not in msg
    for name, header in {"list": [1, 2], "shape": {"x": {"dtype": "F32", "shape": "ab", "data_offsets": [0, 4]}},
                         "offsets": {"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 4000]}},
                         "size": {"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}},
                         "entry": {"x": "F32"}}.items():
        msg = case(f"st-{name}", lambda d, h=header: _safetensors_with_header(d / "model.safetensors", h))
        assert "model.safetensors" in msg, name
    msg = case("huge", lambda d: (d / "model.safetensors").write_bytes((1 << 40).to_bytes(8, "little") + b"{}"))
    assert "bad header length" in msg  # no attempt to read a terabyte


def test_generation_stops_at_the_checkpoints_eos_by_default(tmp_path, reference):
    """As transformers does: generate ends a row at eos_token_id (generation_config.json wins over config.json) and
    fills it with pad_token_id; stop_tokens=None turns that off, a list replaces it."""
    folder = _copy(reference["h96"], tmp_path / "m")
    prompt = torch.randint(0, 99, (1, 5), generator=torch.Generator().manual_seed(0))
    free = hf.load(folder).generate(prompt, 8)[0, 5:].tolist()  # its config has eos_token_id None
    k = next(i for i in range(1, 8) if free[i] not in free[:i])  # a token that first appears at step k
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [free[k]], "pad_token_id": 0}))
    model = hf.load(folder)
    assert model.config.eos_token_id == free[k] and model.config.pad_token_id == 0
    assert model.generate(prompt, 8)[0, 5:].tolist() == free[:k + 1]
    assert model.generate(prompt, 8, stop_tokens=None)[0, 5:].tolist() == free
    assert model.generate(prompt, 8, stop_tokens=[free[0]])[0, 5:].tolist() == free[:1]
    other = torch.randint(0, 99, (1, 5), generator=torch.Generator().manual_seed(1))
    batch = model.generate(torch.cat([prompt, other]), 8)
    assert batch[0, 5:].tolist() == free[:k + 1] + [0] * (batch.shape[1] - 6 - k)  # the stopped row is padded
    with pytest.raises(ValueError, match="stop_tokens must be"):
        model.generate(prompt, 2, stop_tokens="end")

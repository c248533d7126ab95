"""transformers' own xLSTM as the reference for tests/test_interop_hf.py, run in a fresh interpreter.

The `xlstm` package is blocked before transformers is imported, so transformers takes its pure-PyTorch path (the
one that runs on CPU). Usage:  python tests/_hf_reference.py JOB.json  where the job is

    {"make":  [{"dir": D, "config": {...}, "seed": s, "lengths": [...], "generate": n}, ...],
     "check": [{"dir": D, "lengths": [...], "seed": s}, ...]}

"make" builds a random xLSTMForCausalLM (parameters perturbed so that every gate and projection matters), saves it
with save_pretrained and writes D/reference.safetensors with, per length L, the input ids `ids_L` (batch 2) and
transformers' logits `logits_L`. Optional keys add more:
    "generate": n          `gen_prompt` / `gen_out`: greedy, n new tokens, by repeated full forward passes without
                           a cache (works for sizes transformers' cache gets wrong); "generate_cached": true adds
                           `gen_out_hf` from its own cached `generate`
    "cache_length": L      transformers' cache after the L-token input (`cache.LAYER.C|n|m`)
    "grad_length": L       loss and every parameter's gradient (`grad.NAME`) of one next-token cross-entropy step
"check" loads D with from_pretrained and writes D/transformers_logits.safetensors for the same kind of inputs.
"""

import json
import sys

sys.modules["xlstm"] = None  # makes importlib.util.find_spec("xlstm") None: transformers uses its native path

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import xLSTMConfig, xLSTMForCausalLM  # noqa: E402
from transformers.models.xlstm import modeling_xlstm  # noqa: E402

from conftest import perturb_xlstm_large_  # noqa: E402  (tests/ is this script's folder)

assert not modeling_xlstm.external_xlstm, "transformers picked up the xlstm package"
torch.set_num_threads(1)


def inputs(vocab: int, lengths, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {L: torch.randint(0, vocab, (2, L), generator=g) for L in lengths}


@torch.no_grad()
def make(job: dict) -> None:
    torch.manual_seed(job["seed"])
    config = xLSTMConfig(**job["config"])
    model = xLSTMForCausalLM(config).eval()
    perturb_xlstm_large_(model)
    model.save_pretrained(job["dir"])
    out = {}
    for L, ids in inputs(config.vocab_size, job["lengths"], job["seed"] + 1).items():
        out[f"ids_{L}"] = ids
        out[f"logits_{L}"] = model(ids, use_cache=False).logits.float().contiguous()
    if job.get("generate"):
        ids = inputs(config.vocab_size, [5], job["seed"] + 2)[5]
        out["gen_prompt"] = ids
        for _ in range(job["generate"]):
            nxt = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
        out["gen_out"] = ids
        if job.get("generate_cached"):  # transformers' own cached greedy generate (sizes where its cache works)
            out["gen_out_hf"] = model.generate(out["gen_prompt"], max_new_tokens=job["generate"], do_sample=False)
    if job.get("cache_length"):  # transformers' own recurrent state after a prefill (xLSTMCache.rnn_state)
        ids = out[f"ids_{job['cache_length']}"]
        cache = model(ids, use_cache=True).cache_params
        for layer, (C, n, m) in cache.rnn_state.items():
            out.update({f"cache.{layer}.C": C, f"cache.{layer}.n": n, f"cache.{layer}.m": m})
    if job.get("grad_length"):  # a training step at a length transformers can train at (< its chunk size)
        with torch.enable_grad():
            ids = inputs(config.vocab_size, [job["grad_length"] + 1], job["seed"] + 3)[job["grad_length"] + 1]
            model.train()
            logits = model(ids[:, :-1], use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
            loss.backward()
        out["grad_ids"], out["grad_loss"] = ids, loss.detach()
        out.update({f"grad.{n}": p.grad.contiguous() for n, p in model.named_parameters()})
    save_file(out, f"{job['dir']}/reference.safetensors")


@torch.no_grad()
def check(job: dict) -> None:
    model = xLSTMForCausalLM.from_pretrained(job["dir"]).eval().float()
    out = {}
    for L, ids in inputs(model.config.vocab_size, job["lengths"], job["seed"]).items():
        out[f"ids_{L}"] = ids
        out[f"logits_{L}"] = model(ids, use_cache=False).logits.float().contiguous()
    save_file(out, f"{job['dir']}/transformers_logits.safetensors")


if __name__ == "__main__":
    spec = json.load(open(sys.argv[1]))
    for j in spec.get("make", []):
        make(j)
    for j in spec.get("check", []):
        check(j)

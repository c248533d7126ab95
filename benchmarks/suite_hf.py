"""transformers' xLSTM (its pure-PyTorch path: the `xlstm` package is blocked in this process) and a transformers
Llama of matched parameter count, against xlstmkit's `xLSTMLarge` loaded from the same transformers checkpoint,
side by side in this process. Prints one JSON line per measurement.

    python benchmarks/suite_hf.py [--quick] [--threads N]
    python benchmarks/suite_hf.py --threads 1 --breakdown   # where the time goes: dense matmuls vs the rest

Model: the xLSTM-7B block design at d = 256, 6 blocks, 4 heads, byte vocabulary.

`--breakdown` profiles one training step (B=8 T=256 and B=1 T=2048) and one prefill of both xLSTMs and reports the
time in the dense projection matmuls (aten::mm / addmm: every nn.Linear, forward and backward), their achieved
GFLOP/s against this machine's matmul peak, and the best speed-up over transformers that is possible if
everything except the dense matmuls took no time and they ran at the peak (`speedup_bound`; on a busy machine the
peak, a best-of, reads high against the timings) or at transformers' own matmul rate (`speedup_bound_same_rate`).
"""

from __future__ import annotations

import sys

sys.modules["xlstm"] = None  # transformers then takes its native (CPU) code path, as on a machine without xlstm

import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from measure import (LMUnderTest, emit, forward_fn, interleave, matmul_peak_gflops, peak_memory_of,  # noqa: E402
                     peak_train_memory_mb, suite_args, train_step_fn)

from xlstmkit.interop import hf  # noqa: E402

V = 256
BREAKDOWN = "--breakdown" in sys.argv  # taken out before the shared option parser sees it
if BREAKDOWN:
    sys.argv.remove("--breakdown")
DENSE = ("aten::mm", "aten::addmm")  # what nn.Linear runs as, forward and backward


def dense_flops_per_token(model: torch.nn.Module) -> int:
    """2 * (weights of every nn.Linear): the forward FLOPs per token of the dense projections (x3 for training)."""
    return 2 * sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def breakdown(lms: list[LMUnderTest], rep: int) -> None:
    """Per workload and model: median seconds (interleaved), the profiled share of dense matmuls, their GFLOP/s,
    and the speed-up bound over transformers if xlstmkit ran nothing but its dense matmuls, at the peak."""
    from torch.profiler import profile

    peak = max(matmul_peak_gflops(repeats=20) for _ in range(3))  # the best of many: a busy machine reads low
    lms = [lm for lm in lms if "xLSTM" in lm.name]
    theirs_name, ours_name = (lm.name for lm in lms)
    long = torch.randint(0, V, (1, 4096), generator=torch.Generator().manual_seed(3))
    work = {}  # name -> (passes over the weights per token: 3 for training, 1 forward; tokens; functions)
    for B, T in ((8, 256), (1, 2048)):
        work[f"train B={B} T={T}"] = (3, B * T, {lm.name: train_step_fn(lm, B, T, V) for lm in lms})

    def prefill(lm: LMUnderTest):
        @torch.no_grad()
        def run() -> None:
            lm.model.eval()
            lm.logits(long)
        return run

    work["forward B=1 T=4096"] = (1, long.numel(), {lm.name: prefill(lm) for lm in lms})
    rows = []
    for what, (passes, tokens, fns) in work.items():
        t = interleave(fns, repeats=rep)
        row = {}
        for lm in lms:
            fns[lm.name]()
            with profile() as prof:
                fns[lm.name]()
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events) / 1e6
            dense = sum(e.self_cpu_time_total for e in events if e.key in DENSE) / 1e6
            flops = passes * dense_flops_per_token(lm.model) * tokens
            row[lm.name] = dict(seconds=t[lm.name], dense_share=dense / total, dense_gflops=flops / dense / 1e9,
                                dense_gflop=flops / 1e9)
        rows.append((what, t, row))
    # the peak: the best of the n^3 benchmark and of any dense rate seen in the workloads
    peak = max([peak, *(r["dense_gflops"] for _, _, row in rows for r in row.values())])
    emit(suite="hf", what="matmul peak", unit="GFLOP/s", value=peak)
    for what, t, row in rows:
        at_peak = row[ours_name]["dense_gflop"] / peak  # seconds if xlstmkit ran only its dense matmuls, at peak
        # speedup_bound: xlstmkit = its dense matmuls alone, at the peak; speedup_bound_same_rate: at the rate
        # transformers' own matmuls ran (1 / their dense share; insensitive to a machine that is uniformly busy)
        emit(suite="hf", what=f"breakdown {what}", speedup=t[theirs_name] / t[ours_name],
             speedup_bound=t[theirs_name] / at_peak, speedup_bound_same_rate=1 / row[theirs_name]["dense_share"],
             dense_at_peak_seconds=at_peak, **row)


def build(mode: str):
    from transformers import LlamaConfig, LlamaForCausalLM, xLSTMConfig, xLSTMForCausalLM

    torch.manual_seed(0)
    cfg = xLSTMConfig(vocab_size=V, hidden_size=256, num_hidden_layers=6, num_heads=4, mode=mode,
                      chunkwise_kernel="chunkwise--native_autograd", sequence_kernel="native_sequence__native",
                      step_kernel="native", return_last_states=True, autocast_kernel_dtype="float32")
    theirs = xLSTMForCausalLM(cfg)
    with tempfile.TemporaryDirectory() as d:
        theirs.save_pretrained(d)
        ours = hf.load(d, mmap=False)
    n_x = sum(p.numel() for p in theirs.parameters())
    llama_cfg = LlamaConfig(vocab_size=V, hidden_size=256, num_hidden_layers=6, num_attention_heads=4,
                            num_key_value_heads=4, intermediate_size=704, max_position_embeddings=20000,
                            tie_word_embeddings=False)
    llama = LlamaForCausalLM(llama_cfg)
    return theirs, ours, llama, n_x


def main() -> None:
    args = suite_args()
    rep = 1 if args.quick else 3
    prompt_len = 512 if args.quick else 4096
    theirs, ours, llama, _ = build(mode="inference")
    lms = [
        LMUnderTest("transformers xLSTM", theirs, logits=lambda ids: theirs(ids, use_cache=False).logits),
        LMUnderTest("xlstmkit xLSTMLarge", ours, logits=ours),
        LMUnderTest("transformers Llama", llama, logits=lambda ids: llama(ids, use_cache=False).logits),
    ]
    if args.peak_memory:
        lm = next(lm for lm in lms if lm.name == args.peak_memory)
        emit(peak_mb=peak_train_memory_mb(lm, 8, 256, V))
        return
    if BREAKDOWN:
        breakdown(lms, rep)
        return
    emit(suite="hf", what="params", **{lm.name: lm.params for lm in lms})

    for B, T in ((8, 256), (1, 2048 if not args.quick else 512)):
        fns = {}
        for lm in lms:
            step = train_step_fn(lm, B, T, V)
            try:
                step()  # transformers' xLSTM cannot train at some lengths: report it rather than stop
            except Exception as exc:  # noqa: BLE001 - any failure of the peer is a result
                emit(suite="hf", what=f"train B={B} T={T}", unit="error", **{lm.name: f"{type(exc).__name__}: "
                                                                              f"{str(exc)[:120]}"})
                continue
            fns[lm.name] = step
        t = interleave(fns, repeats=rep)
        emit(suite="hf", what=f"train B={B} T={T}", unit="tokens/s", **{k: B * T / v for k, v in t.items()})

    fns = {lm.name: forward_fn(lm, 8, 256, V) for lm in lms}
    t = interleave(fns, repeats=rep)
    emit(suite="hf", what="forward B=8 T=256", unit="tokens/s", **{k: 8 * 256 / v for k, v in t.items()})

    prompt = torch.randint(0, V, (1, 16), generator=torch.Generator().manual_seed(2))
    n_new = 32 if args.quick else 128
    for m in (theirs, ours, llama):
        m.eval()

    def hf_generate(model):
        return lambda: model.generate(prompt, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                                      use_cache=True, pad_token_id=0)

    t = interleave({"transformers xLSTM": hf_generate(theirs), "xlstmkit xLSTMLarge": lambda: ours.generate(prompt,
                    n_new), "transformers Llama": hf_generate(llama)}, repeats=rep)
    emit(suite="hf", what="generate B=1 (16-token prompt)", unit="tokens/s", **{k: n_new / v for k, v in t.items()})

    long_prompt = torch.randint(0, V, (1, prompt_len), generator=torch.Generator().manual_seed(3))

    def prefill(name):
        @torch.no_grad()  # on the function that runs (a decorated factory would record autograd graphs)
        def run():
            if name == "xlstmkit xLSTMLarge":
                return ours(long_prompt, return_state=True)
            model = theirs if name == "transformers xLSTM" else llama
            return model(long_prompt, use_cache=True)
        return run

    t = interleave({lm.name: prefill(lm.name) for lm in lms}, repeats=1)
    emit(suite="hf", what=f"prefill B=1 T={prompt_len}", unit="tokens/s", **{k: prompt_len / v for k, v in t.items()})

    emit(suite="hf", what="peak memory train B=8 T=256", unit="MB",
         **{lm.name: peak_memory_of(__file__, lm.name, *args.forward) for lm in lms})


if __name__ == "__main__":
    main()

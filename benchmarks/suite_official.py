"""The official NX-AI `xlstm` xLSTMLMModel against xlstmkit's `xLSTMLM` built from it with `from_official` (same
weights, same config), side by side in this process. Prints one JSON line per (model, measurement).

    python benchmarks/suite_official.py [--quick]

Model (issue 5's reference): d = 256, 6 blocks, one sLSTM block (vanilla backend) among them, byte vocabulary.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from measure import (LMUnderTest, emit, forward_fn, interleave, peak_memory_of, peak_train_memory_mb,  # noqa: E402
                     suite_args, train_step_fn)

from xlstmkit.interop.official import from_official  # noqa: E402

V = 256


def official_model(context_length: int, slstm: bool = True):
    from xlstm import (FeedForwardConfig, mLSTMBlockConfig, mLSTMLayerConfig, sLSTMBlockConfig, sLSTMLayerConfig,
                       xLSTMLMModel, xLSTMLMModelConfig)

    cfg = xLSTMLMModelConfig(
        vocab_size=V, embedding_dim=256, num_blocks=6, context_length=context_length,
        slstm_at=[3] if slstm else [],
        mlstm_block=mLSTMBlockConfig(mlstm=mLSTMLayerConfig(num_heads=4, conv1d_kernel_size=4)),
        slstm_block=sLSTMBlockConfig(slstm=sLSTMLayerConfig(backend="vanilla", num_heads=4, conv1d_kernel_size=4),
                                     feedforward=FeedForwardConfig(proj_factor=1.3, act_fn="gelu")),
    )
    torch.manual_seed(0)
    model = xLSTMLMModel(cfg)
    model.reset_parameters()
    return model


def main() -> None:
    args = suite_args()
    rep = 1 if args.quick else 3
    prompt_len = 512 if args.quick else 4096
    long_T = 512 if args.quick else 2048

    off = official_model(context_length=max(prompt_len, long_T) + 1)
    ours_model = from_official(off)
    official = LMUnderTest("official xlstm", off, logits=off)
    ours = LMUnderTest("xlstmkit", ours_model, logits=ours_model)
    if args.peak_memory:
        lm = official if args.peak_memory == official.name else ours
        emit(peak_mb=peak_train_memory_mb(lm, 1, long_T, V))
        return
    emit(suite="official", what="params", **{official.name: official.params, ours.name: ours.params})

    # training: B=8, T=256 and B=1, T=long_T
    for B, T in ((8, 256), (1, long_T)):
        fns = {lm.name: train_step_fn(lm, B, T, V) for lm in (official, ours)}
        t = interleave(fns, repeats=rep)
        emit(suite="official", what=f"train B={B} T={T}", unit="tokens/s",
             **{k: B * T / v for k, v in t.items()})

    # forward (no grad)
    fns = {lm.name: forward_fn(lm, 8, 256, V) for lm in (official, ours)}
    t = interleave(fns, repeats=rep)
    emit(suite="official", what="forward B=8 T=256", unit="tokens/s", **{k: 8 * 256 / v for k, v in t.items()})

    # generation at batch 1: ours prefill + steps; official has no prefill with state, so it steps the prompt too
    prompt = torch.randint(0, V, (1, 16), generator=torch.Generator().manual_seed(2))
    n_new = 32 if args.quick else 128

    @torch.no_grad()
    def official_generate() -> None:
        off.eval()
        state = None
        for t_ in range(prompt.shape[1]):
            logits, state = off.step(prompt[:, t_:t_ + 1], state=state)
        tok = logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(n_new - 1):
            logits, state = off.step(tok, state=state)
            tok = logits[:, -1].argmax(-1, keepdim=True)

    def ours_generate() -> None:
        ours_model.generate(prompt, n_new)

    def ours_generate_compiled() -> None:
        ours_model.generate(prompt, n_new, compile=True)

    ours_generate_compiled()  # compile before timing (torch.compile; falls back with a warning if it cannot)
    t = interleave({"official xlstm": official_generate, "xlstmkit": ours_generate,
                    "xlstmkit compile=True": ours_generate_compiled}, repeats=rep)
    emit(suite="official", what="generate B=1 (16-token prompt)", unit="tokens/s",
         **{k: n_new / v for k, v in t.items()})

    # prefill: one chunkwise pass returning the state, against stepping the prompt token by token
    long_prompt = torch.randint(0, V, (1, prompt_len), generator=torch.Generator().manual_seed(3))

    @torch.no_grad()
    def ours_prefill() -> None:
        ours_model.eval()
        ours_model(long_prompt, return_state=True)

    @torch.no_grad()
    def ours_stepwise() -> None:
        ours_model.eval()
        state = None
        for t_ in range(prompt_len):
            _, state = ours_model.decode_step(long_prompt[:, t_], state)

    @torch.no_grad()
    def official_stepwise() -> None:
        off.eval()
        state = None
        for t_ in range(prompt_len):
            _, state = off.step(long_prompt[:, t_:t_ + 1], state=state)

    t = interleave({"xlstmkit prefill": ours_prefill, "xlstmkit stepwise": ours_stepwise,
                    "official stepwise": official_stepwise}, repeats=1, warmup=0)
    emit(suite="official", what=f"prompt of {prompt_len} tokens", unit="seconds", **t)

    # peak memory of one training step, each model in a fresh process
    emit(suite="official", what=f"peak memory train B=1 T={long_T}", unit="MB",
         **{lm.name: peak_memory_of(__file__, lm.name, *args.forward) for lm in (official, ours)})


if __name__ == "__main__":
    main()

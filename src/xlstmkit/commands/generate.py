"""`xlstmkit generate --run DIR --prompt TEXT`: sample from a trained run (or a Hugging Face xLSTM folder with
config.json, safetensors weights and tokenizer.json), streaming the text as it is produced.

    xlstmkit generate --run runs/20260101-120000 --prompt "def main(" --max-new-tokens 300 --temperature 0.8 --top-k 40
    xlstmkit generate --run runs/notes --prompt "Once" --temperature 0     # greedy
    xlstmkit generate --run runs/notes --prompt "Once" --weights int8       # int8 weights, float32 states

--weights converts the loaded weights for serving (docs/inference.md): bf16 halves their bytes, int8 quarters the
large projections' (one scale per output channel); states and arithmetic stay float32 and the native decoders read
the narrow weights directly. (--dtype is the engine's autocast setting, a different thing: bfloat16 activations.)
"""

from __future__ import annotations

import argparse
import sys

from .common import add_engine_flags, add_weights_flag, apply_weights, engine, finite, positive


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("--run", required=True, metavar="DIR",
                        help="run folder written by `xlstmkit train`, or a Hugging Face xLSTM folder")
    parser.add_argument("--prompt", default="", help="text to continue (default: a new line, or the model's BOS)")
    parser.add_argument("--max-new-tokens", type=int, default=200, metavar="N", help="(default 200)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    parser.add_argument("--top-k", type=int, default=None, metavar="K", help="sample among the K likeliest tokens")
    parser.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus sampling mass in (0, 1]")
    parser.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    add_weights_flag(parser, "for generation")
    add_engine_flags(parser)


def main(args: argparse.Namespace) -> int:
    from .. import runs
    from ..data.tokenizer import sample_text
    from ..train.core import autocast

    positive("--max-new-tokens", args.max_new_tokens, allow_zero=True)
    finite("--temperature", args.temperature, low=0.0)
    positive("--top-k", args.top_k)
    finite("--top-p", args.top_p, low=0.0, high=1.0, low_open=True)
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed must be in [0, 2**63), got {args.seed}")
    device, dtype, _ = engine(args)
    warn = lambda msg: print(f"warning: {msg}", file=sys.stderr)  # noqa: E731
    loaded = runs.load_model(args.run, warn=warn)
    model = apply_weights(loaded.model.to(device), args.weights)
    eos = getattr(model.config, "eos_token_id", None)  # the 7B architecture stops at its end-of-text token
    if args.top_k is not None and args.top_k > loaded.tokenizer.vocab_size:
        raise ValueError(f"--top-k {args.top_k} is larger than the vocabulary ({loaded.tokenizer.vocab_size})")
    with autocast(device, dtype):
        sample_text(model, loaded.tokenizer, args.prompt, args.max_new_tokens, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, seed=args.seed, echo=True, out=sys.stdout,
                    stop_tokens=[eos] if isinstance(eos, int) else None)
    return 0

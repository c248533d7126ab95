"""`xlstmkit generate --run DIR --prompt TEXT`: sample from a trained run (or a Hugging Face xLSTM folder with
config.json, safetensors weights and tokenizer.json), streaming the text as it is produced.

    xlstmkit generate --run runs/20260101-120000 --prompt "def main(" --max-new-tokens 300 --temperature 0.8 --top-k 40
    xlstmkit generate --run runs/notes --prompt "Once" --temperature 0     # greedy
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("--run", required=True, metavar="DIR",
                        help="run folder written by `xlstmkit train`, or a Hugging Face xLSTM folder")
    parser.add_argument("--prompt", default="", help="text to continue (default: a new line)")
    parser.add_argument("--max-new-tokens", type=int, default=200, metavar="N")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=None, metavar="K", help="sample among the K likeliest tokens")
    parser.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus sampling mass in (0, 1]")
    parser.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: all cores but one)")


def main(args: argparse.Namespace) -> int:
    from ..train.checkpoint import CheckpointError

    try:
        if args.max_new_tokens < 0:
            raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
        from ..train.distributed import set_threads
        from ..train.loop import sample_text
        from ..train.run import load_run

        set_threads(args.threads)
        warn = lambda msg: print(f"warning: {msg}", file=sys.stderr)  # noqa: E731
        if _is_hf_folder(Path(args.run)):
            return _generate_hf(args)
        _, _, model, tokenizer, _ = load_run(args.run, warn=warn)
        sample_text(model, tokenizer, args.prompt, args.max_new_tokens, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, seed=args.seed, echo=True, out=sys.stdout)
    except (ValueError, FileNotFoundError, CheckpointError, ImportError) as exc:
        print(f"xlstmkit generate: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _is_hf_folder(path: Path) -> bool:
    """A Hugging Face xLSTM folder: config.json without xlstmkit's "train" section."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "train" not in config and "model_type" in config


def _generate_hf(args: argparse.Namespace) -> int:
    """Stream from an `xLSTMLarge` in a Hugging Face folder with the folder's own tokenizer."""
    import torch

    from ..interop import hf

    model = hf.load(args.run)
    tok = hf.load_tokenizer(args.run)
    ids = tok.encode(args.prompt).ids if args.prompt else []
    if not ids:
        bos = model.config.bos_token_id
        ids = [bos if bos is not None else 0]
    eos = model.config.eos_token_id
    out = sys.stdout
    out.write(args.prompt)
    out.flush()
    new: list[int] = []
    shown = ""
    for token in model.stream(torch.tensor([ids]), args.max_new_tokens, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                              stop_tokens=[eos] if eos is not None else None):
        if eos is not None and int(token[0]) == eos:
            break
        new.append(int(token[0]))
        text = tok.decode(new)
        if not text.endswith("\ufffd"):  # hold back a character whose bytes are not all generated yet
            out.write(text[len(shown):])
            out.flush()
            shown = text
    text = tok.decode(new)
    out.write(text[len(shown):] + "\n")
    out.flush()
    return 0

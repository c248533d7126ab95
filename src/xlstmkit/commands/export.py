"""`xlstmkit export --run DIR --out OUT`: a run's trained model as a Hugging Face model folder, with its tokenizer.

    xlstmkit export --run runs/20260101-120000 --out exported/notes
    xlstmkit export --run runs/ft-7b --out exported/ft-7b --weights-dtype bfloat16 --max-shard-size 5GB

The folder loads with `transformers.AutoModelForCausalLM.from_pretrained(OUT)` (after `import xlstmkit`, or with
trust_remote_code=True where xlstmkit is installed but not imported, e.g. lm-evaluation-harness), with
`AutoTokenizer.from_pretrained(OUT)`, in `pipeline("text-generation", model=OUT)`, and in xlstmkit itself
(`xlstmkit generate --run OUT`, `xLSTMLM.from_pretrained(OUT)`). The paper's models (family "xlstm") are written in
xlstmkit's layout (model_type "xlstmkit"); the 7B architecture (family "xlstm_large") in transformers' own xLSTM
layout (model_type "xlstm"), which transformers loads without xlstmkit. See docs/huggingface.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DTYPES = ("float32", "bfloat16", "float16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("--run", required=True, metavar="DIR",
                        help="run folder written by `xlstmkit train` (its final weights, else its newest checkpoint)")
    parser.add_argument("--out", required=True, metavar="OUT", help="the folder to write (created if needed)")
    parser.add_argument("--weights-dtype", choices=DTYPES, default=None,
                        help="store the weights in this dtype (default: as trained, float32)")
    parser.add_argument("--max-shard-size", default=None, metavar="SIZE",
                        help="7B architecture only: split the weights into files of at most SIZE (e.g. 5GB)")


def main(args: argparse.Namespace) -> int:
    import torch

    from .. import runs
    from ..interop import hf, pretrained

    out, src = Path(args.out), Path(args.run)
    if out.resolve() == src.resolve():
        raise ValueError(f"--out {out} is the run folder itself: choose another folder")
    if runs.is_run_dir(out):
        raise ValueError(f"--out {out} holds a training run: choose another folder")
    warn = lambda msg: print(f"warning: {msg}", file=sys.stderr)  # noqa: E731
    loaded = runs.load_model(src, warn=warn)
    model = loaded.model
    family = pretrained.family_of(model)
    if args.max_shard_size is not None:
        if family != "xlstm_large":
            raise ValueError("--max-shard-size applies to the 7B architecture (family xlstm_large) only")
        hf._parse_size(args.max_shard_size)  # a one-line error before anything is written
    if args.weights_dtype is not None:
        model = model.to(getattr(torch, args.weights_dtype))
    runs.prepare_dir(out, "--out")
    if family == "xlstm_large":
        hf.save(model, out, max_shard_size=args.max_shard_size, tokenizer=loaded.tokenizer)
    else:
        pretrained.save(model, out, tokenizer=loaded.tokenizer)
    layout = "transformers' xLSTM layout" if family == "xlstm_large" else "xlstmkit layout"
    print(f"xlstmkit export: {out} ({layout}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"{loaded.tokenizer.kind} tokenizer, weights from {loaded.source})")
    return 0

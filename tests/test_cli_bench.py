"""`xlstmkit bench` runs end to end on a tiny configuration and reports every measurement."""

import re

from xlstmkit.cli import main
from xlstmkit.ops import native


def test_bench_reports_every_measurement(capsys):
    argv = ["bench", "--repeats", "1", "--threads", "1", "--op-seq-len", "70", "--seq-len", "33", "--batch-size", "2",
            "--new-tokens", "4", "--embedding-dim", "32", "--num-blocks", "2", "--block-pattern", "xLSTM[1:1]"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for label in ("parallel", "chunkwise", "recurrent", "training B=2 T=33", "forward B=2 T=33",
                  "prefill B=1 T=33", "generation B=1"):
        line = next((ln for ln in out.splitlines() if label in ln), None)
        assert line is not None, f"no line for {label!r} in:\n{out}"
        rate = re.search(r"([\d,]+)(?: tokens/s)?\s*$", line)
        assert rate and int(rate.group(1).replace(",", "")) > 0, line
    assert "(ms)" in out  # the block pattern is reported as built
    assert ("sLSTM recurrence: native C loop" in out) == (native.library() is not None)

"""`xlstmkit detect`: a 20-step smoke run on a labelled CSV, its outputs, one-line errors. No network."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xlstmkit.cli import main


pytestmark = pytest.mark.usefixtures("no_network")  # data must load offline (the fixture is in conftest.py)

def _csv(path, with_labels=True):
    t = np.arange(300)
    x = np.sin(2 * np.pi * t / 25)
    x[220:226] = 2.5  # a flat-line at a wrong level
    lab = ((t >= 220) & (t < 226)).astype(int)
    rows = ["time,value" + (",label" if with_labels else "")]
    rows += [f"{i},{v:.5f}" + (f",{l}" if with_labels else "") for i, (v, l) in enumerate(zip(x, lab))]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_detect_smoke_run_writes_scores_plot_and_json(tmp_path, capsys):
    csv = _csv(tmp_path / "sensor.csv")
    js, out = tmp_path / "r.json", tmp_path / "run"
    code = main(["detect", "--dataset", str(csv), "--train-length", "150", "--steps", "20", "--batch-size", "16",
                 "--context-length", "32",
                 "--json", str(js), "--out", str(out), "--no-progress", "--threads", "1"])
    assert code == 0
    r = json.loads(js.read_text())
    assert {"top_index", "hit", "auc_pr", "auc_roc", "region"} <= set(r)
    assert 150 <= r["top_index"] < 300 and 0 <= r["auc_pr"] <= 1 and r["training_steps"] <= 20
    assert r["region"][0] <= r["region"][1]
    assert (out / "detection.png").stat().st_size > 1000 and (out / "scores.csv").exists()
    assert "most anomalous region" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "SENSOR"], "give --train-length"),
    (["--dataset", "SENSOR", "--train-length", "250"], "holds labelled anomalies"),
    (["--dataset", "SENSOR", "--train-length", "999"], "must be between 1 and"),
    (["--dataset", "nothing_here"], "not kdd_tsad_135"),
    (["--dataset", "injected:airline/wobble"], "unknown kind"),
    (["--dataset", "SENSOR", "--train-length", "150", "--horizon", "0"], "horizon must be a positive integer"),
])
def test_detect_errors_are_one_line_with_status_2(argv, message, tmp_path, capsys):
    csv = str(_csv(tmp_path / "s.csv"))
    argv = [csv if a == "SENSOR" else a for a in argv]
    code = main(["detect", *argv, "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err

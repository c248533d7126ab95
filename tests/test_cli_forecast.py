"""`xlstmkit forecast`: a 20-step smoke run on a small CSV with gaps, its outputs, one-line errors. No network."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from xlstmkit.cli import main


pytestmark = pytest.mark.usefixtures("no_network")  # data must load offline (the fixture is in conftest.py)

def _wide_csv(path):
    """Three monthly series, wide layout, empty cells inside (missing values) and a late-starting series."""
    lines = ["month,a,b,c"]
    for i in range(30):
        a = "" if i in (4, 17) else f"{10 + (i % 12) * 0.5:.2f}"
        b = f"{100 + 2 * i}"
        c = "" if i < 9 else f"{5 + (i % 4)}"
        lines.append(f"{2000 + i // 12}-{i % 12 + 1:02d}-01,{a},{b},{c}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_forecast_smoke_run_writes_forecasts_plot_and_json(tmp_path, capsys):
    csv = _wide_csv(tmp_path / "sales.csv")
    out, js = tmp_path / "run", tmp_path / "r.json"
    code = main(["forecast", "--dataset", str(csv), "--horizon", "3", "--steps", "20", "--embedding-dim", "16",
                 "--num-heads", "2", "--embed-hidden", "16", "--head-hidden", "16", "--baselines", "SeasonalNaive",
                 "--json", str(js), "--out", str(out), "--no-progress", "--threads", "1"])
    assert code == 0
    r = json.loads(js.read_text())
    for key in ("dataset", "horizon", "mase", "smape", "scaled_crps", "coverage_80", "seconds"):
        assert key in r
    assert r["horizon"] == 3 and r["training"]["steps"] <= 20
    assert set(r["baselines"]["SeasonalNaive"]) >= {"mase", "smape", "scaled_crps", "coverage_80", "seconds"}
    fc = pd.read_csv(out / "forecasts.csv")
    assert {"unique_id", "ds", "model", "point", "q0.1", "q0.5", "q0.9"} <= set(fc.columns)
    assert len(fc[fc["model"] == "xLSTMForecaster"]) == 3 * 3
    assert (out / "forecast.png").stat().st_size > 1000
    assert (out / "model.safetensors").exists() and json.loads((out / "results.json").read_text()) == r
    assert "MASE" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "no_such_set"], "neither a bundled set"),
    (["--dataset", "airline", "--model", "tirex"], "needs --checkpoint"),
    (["--dataset", "airline", "--quantiles", "0", "0.5"], "strictly between 0 and 1"),
    (["--dataset", "airline", "--baselines", "Prophet"], "unknown ['Prophet']"),
    (["--dataset", "airline", "--horizon", "200"], "needs at least one more"),
    (["--dataset", "airline", "--model", "tirex", "--checkpoint", "missing.ckpt"], "does not exist"),
])
def test_forecast_errors_are_one_line_with_status_2(argv, message, capsys, tmp_path):
    code = main(["forecast", *argv, "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_csv_with_a_missing_time_is_a_one_line_error(capsys, tmp_path):
    csv = tmp_path / "long.csv"
    csv.write_text("unique_id,ds,y\na,2020-01-01,1\na,2020-02-01,2\na,2020-04-01,3\na,2020-05-01,4\n"
                   "a,2020-06-01,5\n")
    code = main(["forecast", "--dataset", str(csv), "--freq", "MS", "--horizon", "2", "--out", str(tmp_path / "o"),
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "has a gap: no row for 2020-03-01" in err and len(err.splitlines()) == 1


def test_the_bench_table_says_undefined_where_no_seed_has_a_finite_score():
    from xlstmkit.commands.forecast import bench_table

    rows = [{"dataset": "pbs", "model": m, "mase": mase, "smape": 200.0, "scaled_crps": None, "coverage_80": 1.0,
             "seconds": 1.0} for m, mase in (("SeasonalNaive", 0.5), ("xLSTMForecaster", 0.25))]
    table = bench_table(rows)
    pbs = [line for line in table.splitlines() if line.startswith("| pbs | xLSTMForecaster")][0]
    assert pbs.split(" | ")[4] == "undefined" and "nan" not in table
    assert "| xLSTMForecaster | 0.250 | 0.500 | 1 |" in table

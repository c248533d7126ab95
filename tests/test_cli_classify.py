"""`xlstmkit classify`: a 20-step smoke run per dataset family (univariate, multivariate, variable length, an audio
folder written here) with no network, the run folder and JSON it writes, baselines on the same splits at matched
size, `classify bench` (table beside the published accuracies, resumed without re-running), and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("aeon")
from xlstmkit.cli import main  # noqa: E402
from xlstmkit.commands.classify import PUBLISHED, Recipe, build_baseline, load_data, xlstm_params  # noqa: E402

FAST = ["--max-steps", "20", "--no-progress", "--threads", "1", "--depth", "1", "--embedding-dim", "32"]


def _tone(freq: float, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def audio_folder(tmp_path):
    sf = pytest.importorskip("soundfile")
    pytest.importorskip("librosa")
    root = tmp_path / "clips"
    for cls, f in (("low", 300.0), ("high", 3000.0)):
        (root / cls).mkdir(parents=True)
        for j in range(6):
            sf.write(root / cls / f"{j}.wav", _tone(f * (1 + 0.03 * j), 0.1 + 0.02 * j, 16000), 16000)
    return str(root)


FAMILIES = {"univariate": ("ItalyPowerDemand", 2, 1029), "multivariate": ("BasicMotions", 4, 40),
            "variable-length": ("JapaneseVowels", 9, 370), "audio-folder": (None, 2, 4)}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_twenty_step_run_per_dataset_family_writes_results_offline(family, tmp_path, capsys, no_network, request):
    dataset, n_classes, n_test = FAMILIES[family]
    if dataset is None:
        dataset = request.getfixturevalue("audio_folder")
    out, js = tmp_path / "run", tmp_path / "r.json"
    assert main(["classify", "--dataset", dataset, "--out", str(out), "--json", str(js), *FAST]) == 0
    r = json.loads(js.read_text())
    assert {"dataset", "model", "test_accuracy", "macro_f1", "params", "seconds"} <= set(r)
    assert r["model"] == "xlstm-bi" and r["steps"] == 20 and r["stopped"] == "steps"
    assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["macro_f1"] <= 1.0
    assert r["n_test"] == n_test and np.asarray(r["confusion_matrix"]).shape == (n_classes, n_classes)
    assert np.asarray(r["confusion_matrix"]).sum() == n_test
    assert r["params"] == xlstm_params(load_data(dataset, None, 0.2, 0.25, 0)[0], Recipe(depth=1, embedding_dim=32))
    for name in ("config.json", "results.json", "metrics.csv", "model.safetensors", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    stdout = capsys.readouterr().out
    assert f"run folder: {out}" in stdout and "test accuracy" in stdout


def test_validation_comes_from_the_training_set_and_baselines_share_the_split(tmp_path, capsys):
    data, full = load_data("ItalyPowerDemand", None, 0.2, 0.25, seed=3)
    assert len(data.train) + len(data.val) == len(full.train) == 67 and len(data.test) == 1029
    recipe = Recipe()
    target = xlstm_params(data, recipe)
    for kind in ("transformer", "lstm", "gru"):
        n = sum(p.numel() for p in build_baseline(kind, data, recipe).parameters())
        assert abs(n - target) <= 0.05 * target, kind
    results = {}
    for model in ("minirocket", "gru"):
        js = tmp_path / f"{model}.json"
        assert main(["classify", "--dataset", "ItalyPowerDemand", "--model", model, "--seed", "3", "--out",
                     str(tmp_path / model), "--json", str(js), *FAST]) == 0
        results[model] = json.loads(js.read_text())
    assert results["minirocket"]["n_test"] == results["gru"]["n_test"] == 1029
    assert results["minirocket"]["n_train"] == 67  # MiniRocket needs no validation: the whole training set
    assert results["gru"]["n_train"] + results["gru"]["n_val"] == 67
    assert results["minirocket"]["test_accuracy"] > 0.9  # MiniRocket on ItalyPowerDemand (published 0.960)


def test_bench_writes_the_table_beside_published_accuracies_and_resumes(tmp_path, capsys):
    out, table = tmp_path / "bench", tmp_path / "table.md"
    argv = ["classify", "bench", "--datasets", "ItalyPowerDemand", "--models", "xlstm-bi", "minirocket", "--seeds",
            "2", "--out", str(out), "--table", str(table), "--max-steps", "3", "--no-progress", "--threads", "1",
            "--depth", "1", "--embedding-dim", "32"]
    assert main(argv) == 0
    text = table.read_text()
    assert "| ItalyPowerDemand |" in text and f"{PUBLISHED['ItalyPowerDemand']['MiniRocket']:.3f}" in text
    assert "**mean (1 sets)**" in text and "±" in text
    cells = (out / "cells.jsonl").read_text().splitlines()
    assert len(cells) == 4 and {json.loads(c)["seed"] for c in cells} == {0, 1}
    table.write_text(table.read_text() + "\n<!-- notes: kept when the table above is rewritten -->\nmy notes\n")
    assert main(argv) == 0  # every cell is there already: nothing runs again
    assert len((out / "cells.jsonl").read_text().splitlines()) == 4
    assert "accuracy" not in capsys.readouterr().err.split("wrote")[-2]  # no cell line printed on the second run
    assert table.read_text().endswith("my notes\n") and "| ItalyPowerDemand |" in table.read_text()


@pytest.mark.parametrize("argv,msg", [
    (["classify"], "--dataset is required"),
    (["classify", "--dataset", "NoSuchSet"], "NoSuchSet"),
    (["classify", "--dataset", "/no/such/file.ts"], "does not exist"),
    (["classify", "--dataset", "GunPoint", "--time-budget", "-1"], "--time-budget"),
    (["classify", "--dataset", "GunPoint", "--val-fraction", "1.5"], "--val-fraction"),
    (["classify", "--dataset", "GunPoint", "--datasets", "GunPoint"], "belongs to `xlstmkit classify bench`"),
    (["classify", "bench", "--dataset", "GunPoint"], "bench runs --datasets"),
    (["classify", "bench", "--models", "xlstm-bi", "svm"], "unknown ['svm']"),
    (["classify", "--dataset", "GunPoint", "--model", "svm"], "invalid choice: 'svm'"),
    (["classify", "--dataset", "GunPoint", "--lr", "0"], "--lr"),
    (["classify", "--dataset", "GunPoint", "--augment", "slice,warp"], "--augment: unknown kind(s) warp"),
    (["classify", "--dataset", "GunPoint", "--dtype", "bfloat16"], "trains in float32"),
])
def test_bad_input_is_a_one_line_error(argv, msg, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors (an unknown choice) exit while parsing
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and msg in err and "Traceback" not in err


def test_a_run_folder_in_use_is_refused(tmp_path, capsys):
    from xlstmkit.runs import RunLock

    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out, "another"):
        assert main(["classify", "--dataset", "ItalyPowerDemand", "--out", str(out), *FAST]) == 2
    assert "is in use" in capsys.readouterr().err

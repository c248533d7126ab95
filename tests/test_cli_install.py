"""The package installs and runs as a user gets it: the wheel, built from the repository, installed into a fresh
virtual environment with only its declared dependencies (and the CPU torch), runs `xlstmkit --version`, `demo` and a
20-step `train` from a folder outside the repository.

Nothing is downloaded: the packages come from the machine's local package index and wheel folders (read from pip's
configuration; the test is skipped where there are none). About a minute, most of it installing torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _local_sources() -> list[str]:
    """pip options naming only local package sources (file:// indexes and find-links folders) from pip's config."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    indexes, links = [], []
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        values = value.strip().strip("'\"").split()
        if key.endswith("index-url"):
            indexes += [v for v in values if v.startswith("file://")]
        elif key.endswith("find-links"):
            links += [v for v in values if os.path.isdir(v.removeprefix("file://"))]
    if not indexes and not links:
        return []
    options = ["--no-index"] if not indexes else ["--index-url", indexes[0]]
    for url in indexes[1:]:
        options += ["--extra-index-url", url]
    for folder in dict.fromkeys(links):
        options += ["--find-links", folder]
    return options


def test_wheel_installs_into_a_fresh_venv_and_runs_outside_the_repository(tmp_path):
    import torch

    sources = _local_sources()
    if not sources:
        pytest.skip("no local package index or wheel folder configured for pip (this test never downloads)")
    # build from a copy, so the repository gets no build/ or egg-info folders
    src = tmp_path / "src-copy"
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(src)], check=True, env=env, capture_output=True)
    wheel = next(wheels.glob("xlstmkit-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert any(n.endswith("licenses/LICENSE") for n in names), "the wheel must ship the LICENSE file"
    assert "Requires-Dist: numpy" in metadata

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # the running torch where the local sources hold it with everything it needs; else the CPU build the main job
    # installs (the test environment's torch is a CUDA build whose CUDA wheels are not on this disk)
    pins = list(dict.fromkeys([f"torch=={torch.__version__.split('+')[0]}", "torch==2.13.0"]))
    for torch_pin in pins:
        done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-compile",
                               *sources, str(wheel), torch_pin], env=env, capture_output=True, text=True)
        if done.returncode == 0:
            break
    assert done.returncode == 0, done.stderr[-3000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "notes.txt").write_text("".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(300)), encoding="utf-8")
    exe = str(venv / "bin" / "xlstmkit")
    run_env = {**env, "OMP_NUM_THREADS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], cwd=work, env=run_env, capture_output=True, text=True, timeout=300)

    where = subprocess.run([str(python), "-c", "import xlstmkit; print(xlstmkit.__file__)"], cwd=work, env=run_env,
                           capture_output=True, text=True)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr   # the installed copy, not the repository
    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip().startswith("xlstmkit ")
    demo = run("demo", "--length", "20", "--max-new-tokens", "4")
    assert demo.returncode == 0 and "generated 4 tokens" in demo.stdout, demo.stderr[-3000:]
    train = run("train", "--preset", "tiny", "--data", "notes.txt", "--out", "run", "--max-steps", "20",
                "--no-progress", "--set", "sample_tokens=8")
    assert train.returncode == 0, train.stderr[-3000:]
    results = json.loads((work / "run" / "results.json").read_text())
    assert results["step"] == 20 and results["validation"]["loss"] > 0
    config = json.loads((work / "run" / "config.json").read_text())
    assert config["train"]["data"] == str((work / "notes.txt").resolve())   # stored absolute

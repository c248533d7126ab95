"""Optional dependencies: import them on first use, or say in one line how to install them.

xlstmkit's core needs only torch, safetensors, tqdm and pyyaml. The time-series applications lean on the libraries the
field uses, grouped into pip extras:

- ``timeseries``: aeon (bundled UCR/UEA/forecasting/anomaly data, MiniRocket, MERLIN, STOMP), stumpy (STOMP's matrix
  profile), scikit-learn (metrics), pandas (the Nixtla long format), statsforecast and utilsforecast (statistical
  baselines and reference metrics);
- ``audio``: soundfile (WAV/FLAC reading) and librosa (log-mel features);
- ``vision``: torchvision and pillow (image folders, `xlstmkit vision predict`), scikit-learn (the digits data);
- ``bench``: neuralforecast (xLSTM, NHITS, PatchTST forecasting baselines) and the official ``xlstm`` package its
  xLSTM model imports; used by benchmarks only.

Every optional import in the package goes through :func:`require`, so a missing package produces the same one-line
``ImportError`` naming the command that fixes it, instead of a traceback from deep inside a loader.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# extra -> the packages it installs (documentation for the lead's pyproject and for error messages)
EXTRAS: dict[str, tuple[str, ...]] = {
    "timeseries": ("aeon", "stumpy", "scikit-learn", "pandas", "statsforecast", "utilsforecast"),
    "audio": ("soundfile", "librosa"),
    "vision": ("torchvision", "pillow", "scikit-learn"),
    "bench": ("neuralforecast", "xlstm"),
    "hf": ("transformers", "tokenizers"),
}


def install_hint(extra: str) -> str:
    """The pip command that installs an extra (quoted for shells that glob square brackets)."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; choose one of {sorted(EXTRAS)}")
    return f"pip install 'xlstmkit[{extra}]'"


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` (dotted names allowed) or raise a one-line ``ImportError`` naming the install command.

    Only a *missing* package is translated: if ``module`` (or one of its parent packages) is absent, the error reads
    e.g. ``loading UCR data needs 'aeon', which is not installed: pip install 'xlstmkit[timeseries]'``. An error
    raised while importing a package that *is* installed (a broken install, a missing sub-dependency of that package)
    is re-raised unchanged, because hiding it behind an install hint would point the user at the wrong fix.
    """
    hint = install_hint(extra)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        parts = module.split(".")
        ours = {".".join(parts[: i + 1]) for i in range(len(parts))}
        if missing not in ours:
            raise
        raise ImportError(f"{purpose} needs {parts[0]!r}, which is not installed: {hint}") from None

#!/usr/bin/env bash
# Create .venv (if absent) and install xlstmkit with the given extras. The CPU build of torch 2.13.0 is installed
# first where pip can find it, so that the package's own torch range does not pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-train}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
py=.venv/bin/python
$py -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! $py -c "import torch" >/dev/null 2>&1; then
  $py -m pip install -q "torch==2.13.0" || echo "torch 2.13.0 not available here; the package's own torch range applies" >&2
fi
$py -m pip install -q -e ".[${extras}]"

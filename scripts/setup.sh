#!/usr/bin/env bash
# Create a virtual environment (default .venv) if absent and install xlstmkit into it with the given extras.
#   bash scripts/setup.sh EXTRAS [VENV]
# torch is installed first, pinned to a build pip finds on this machine class, so that the package's own torch range
# does not pull a multi-GB CUDA build from the index:
# - without vision (the main job): the CPU build of torch 2.13.0;
# - with vision or test: torchvision is needed, and PyPI's torchvision does not import beside the 2.13.0 CPU file, so
#   torch and torchvision are pinned as a pair that does (x86_64: 2.14.1 + 0.29.1; aarch64: 2.9.1 + 0.24.1).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-train}"
venv="${2:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
$py -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! $py -c "import torch" >/dev/null 2>&1; then
  case ",$extras," in
    *,vision,*|*,test,*)
      case "$(uname -m)" in
        aarch64|arm64) spec="torch==2.9.1 torchvision==0.24.1" ;;
        *) spec="torch==2.14.1 torchvision==0.29.1" ;;
      esac ;;
    *) spec="torch==2.13.0" ;;
  esac
  # shellcheck disable=SC2086
  $py -m pip install -q $spec || echo "$spec not available here; the package's own torch range applies" >&2
fi
$py -m pip install -q -e ".[${extras}]"

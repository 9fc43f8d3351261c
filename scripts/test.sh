#!/usr/bin/env bash
# Sets up .venv (see setup.sh) and runs the whole test suite, slow tests with the real SmolLM2 included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -q "$@"

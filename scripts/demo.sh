#!/usr/bin/env bash
# Sets up .venv (see setup.sh) and runs the demo job: SmolLM2-135M-Instruct teaches a pruned copy of itself (see README, "Two commands").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
distilflow run examples/summarize-smollm2.yaml --workspace "${DISTILFLOW_HOME:-runs}"

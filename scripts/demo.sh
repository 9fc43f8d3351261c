#!/usr/bin/env bash
# Sets up .venv for the demo (`setup.sh demo`: distilflow and the model file, no test extras, no browser) and runs
# the demo job: SmolLM2-135M-Instruct, reading 40 examples, teaches a pruned copy of itself to label
# customer-support messages zero-shot (see README, "The demo").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
. .venv/bin/activate
distilflow run examples/support-intents-smollm2.yaml --workspace "${DISTILFLOW_HOME:-runs}"

#!/usr/bin/env bash
# Headless Chromium for tests/test_report_job.py (the HTML report rendered and screenshotted in a real browser).
# Debian/Ubuntu; runs as root or through sudo; does nothing when a Chromium is already installed.
# Without it that one test is skipped (reason: chromium is not installed).
set -euo pipefail
for name in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$name" >/dev/null 2>&1; then exit 0; fi
done
SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
# fonts-dejavu-core: the report's text needs a font to render (minimal images have none).
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core

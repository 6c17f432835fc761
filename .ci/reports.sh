#!/usr/bin/env bash
# The report's browser tests (tests/service/reports/test_browser.py) and `trialbook report
# --format pdf` drive Debian's headless Chromium; without it those tests are skipped. Run this
# before the test suite in CI so that they run.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
chromium --version

#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (unit, end-to-end, fuzz).
# Pass -L unit (or another CTest label) to run a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd build && ctest --output-on-failure "$@"

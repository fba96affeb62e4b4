#!/usr/bin/env bash
# One command on a fresh machine: set up, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system-deps.sh
.venv/bin/python -m pytest -q "$@"

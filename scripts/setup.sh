#!/usr/bin/env bash
# Set up .venv with everything postmortem and its tests need. Safe to run again: it only adds what is missing.
# torch==2.13.0 is installed first, on its own: the CPU wheel; any looser request could pull GBs of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[test]"

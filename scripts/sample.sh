#!/usr/bin/env bash
# One command on a fresh machine: set up, then write the report of the bundled sample run (HTML and PDF).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/postmortem report sample_runs/dialogue_gru "$@"
echo "open sample_runs/dialogue_gru/postmortem-report/report.html (and report.pdf, report.md)"

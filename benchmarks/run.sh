#!/usr/bin/env bash
# The whole benchmark suite in one command (not part of CI): set up, then every benchmark, each printing its
# ratios and merging its figures into benchmarks/results.json. Extra arguments go to the evaluation benchmark
# (e.g. --repeats 7). On a GPU machine whose python already has CUDA torch, run
# `python3 benchmarks/bench_eval_overhead.py --device cuda` directly: setup installs the CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python benchmarks/bench_eval_overhead.py "$@"
.venv/bin/python benchmarks/bench_report.py
.venv/bin/python benchmarks/bench_classes.py
.venv/bin/python benchmarks/bench_callbacks.py
.venv/bin/python benchmarks/bench_scenarios.py --size large
.venv/bin/python benchmarks/bench_training_scenarios.py --size large

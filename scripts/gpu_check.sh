#!/usr/bin/env bash
# The first GPU's check in one run, under 8 minutes on a CUDA machine: demo --quick --device cuda, predict-series
# on CUDA vs the CPU, one short epoch of each trainer with nnUNet_compile off and on, the planner's memory estimate
# vs the measured peak, benchmarks/networks.py on CUDA. Figures go to stdout, gpu_check_run/ and $OUT (when set).
#   scripts/gpu_check.sh                       on a CUDA machine, after ./scripts/bootstrap.sh
#   scripts/gpu_check.sh --dry-run [--demo D]  the same steps on the CPU at the smallest sizes (CI); D: a finished
#                                              demo --quick folder to reuse
# PYTHON picks the interpreter (default .venv/bin/python); the steps are in scripts/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" scripts/gpu_check.py "$@"

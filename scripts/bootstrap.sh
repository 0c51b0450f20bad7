#!/usr/bin/env bash
# Make .venv on a fresh machine: the pinned torch first (it lies on local disk; an unpinned
# torch would pull a multi-GB CUDA build), then this project with its test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"

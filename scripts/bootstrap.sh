#!/usr/bin/env bash
# Make .venv on a fresh machine: the pinned torch first (it lies on local disk; an unpinned
# torch would pull a multi-GB CUDA build), then this project with its test tools. With --test,
# also Debian's Chromium, for the test that renders the demo's report in a real browser. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
if [ "${1:-}" = "--test" ] && { ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; }; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 ||
      (apt-get update -qq >/dev/null && apt-get install -y -qq chromium chromium-driver >/dev/null))
  else
    echo "bootstrap: Chromium is missing; install Debian's chromium and chromium-driver for the report test" >&2
  fi
fi

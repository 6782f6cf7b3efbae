#!/usr/bin/env bash
# Create .venv (once) and install wmiwatch with the given extras, e.g. `setup.sh dev`.
set -euo pipefail
cd "$(dirname "$0")"
extras="${1:-local}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
.venv/bin/python -m pip install --quiet --editable ".[${extras}]"
# The tests run promtool and a real Prometheus server: Debian's prometheus package.
if [ "$extras" = dev ] && ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "setup: promtool and prometheus are missing; install Debian's prometheus package" >&2
  fi
fi

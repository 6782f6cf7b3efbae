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

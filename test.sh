#!/usr/bin/env bash
# Set up and run the whole test suite: lint, types, rule self-tests, unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/wmiwatch test-rules
.venv/bin/pytest "$@"

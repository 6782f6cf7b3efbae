#!/usr/bin/env bash
# Set up and run the whole test suite: lint, types, rule self-tests, unit and integration tests
# on the embedded broker, then the integration tests again on Apache Kafka (one node) and the
# cluster tests on a three-node Apache Kafka cluster.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/wmiwatch test-rules
.venv/bin/pytest -m "not cluster" "$@"
WMIWATCH_TEST_BROKER=apache-kafka .venv/bin/pytest -m "integration or cluster" "$@"

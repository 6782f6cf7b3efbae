#!/usr/bin/env bash
# Set up and run the demo: local broker, topics, a worker, bundled samples replayed, findings shown.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh local
exec .venv/bin/wmiwatch demo "$@"

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
# The tests run promtool and a real Prometheus server (Debian's prometheus package), and Apache
# Kafka, whose jars Maven fetches and Java runs (openjdk-17-jre-headless, maven).
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
if [ "$extras" = dev ] && [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages: ${missing[*]}" >&2
  fi
fi

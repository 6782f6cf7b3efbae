#!/usr/bin/env bash
# Mutation-test the pure core against the unit tests with mutmut (outside CI; about 30 minutes
# on 2 cores) and print the score per module, then each survivor. The modules and tests are
# [tool.mutmut] in pyproject.toml; `mutmut show NAME` in .venv-mutation shows one mutant.
#
# mutmut runs in a venv of its own: mutmut 3.8 (the first to mutate methods of decorated
# classes, i.e. our dataclasses) asks for click>=8.4.2, faust-streaming for click<8.4. mutmut
# works with the older click, so it is installed without its dependency resolution.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-mutation
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
"$venv/bin/python" -m pip install --quiet --editable ".[dev]" \
  "libcst>=1.9" "coverage>=7.3" "setproctitle>=1.3.7" "textual>=1"
"$venv/bin/python" -m pip install --quiet --no-deps "mutmut==3.8.1"
rm -rf mutants  # a fresh run: the score is that of the tests as they are now
start=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! "$venv/bin/mutmut" run --max-children "$(nproc)" >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  exit 1
fi
"$venv/bin/mutmut" results --all true |
  "$venv/bin/python" scripts/mutation_score.py scripts/mutation_equivalent.txt
echo "mutation run: $(($(date +%s) - start)) s"

"""Print the mutation score of each mutated module from ``mutmut results --all true``.

Reads the results on standard input. A mutant counts as killed when a test failed or timed
out on it; one no test reaches counts as a survivor.
"""

from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict

DETECTED = {"killed", "timeout", "segfault"}
# mutmut names a mutant module.x_function__mutmut_N or module.x\u01c1Class\u01c1method__mutmut_N.
MUTANT = re.compile(r"(?P<module>.+?)\.x[_\u01c1]")


def module_of(mutant: str) -> str:
    """Return the module of a mutant name such as ``pipeline.risk.x_add__mutmut_3``."""
    found = MUTANT.match(mutant)
    return found["module"] if found else mutant


def main() -> None:
    """Print one line per module, the survivors' names after it, then the total."""
    statuses: defaultdict[str, Counter[str]] = defaultdict(Counter)
    survivors: defaultdict[str, list[str]] = defaultdict(list)
    for line in sys.stdin:
        name, _, status = line.strip().partition(": ")
        if not status:
            continue
        module = module_of(name)
        statuses[module][status] += 1
        if status not in DETECTED:
            survivors[module].append(f"{name} ({status})")
    total = Counter[str]()
    print(f"{'module':<32} {'mutants':>7} {'killed':>7} {'score':>6}")
    for module in sorted(statuses):
        counts = statuses[module]
        total.update(counts)
        print(_row(module, counts))
    print(_row("all", total))
    for module in sorted(survivors):
        print(f"\n{module}:", *survivors[module], sep="\n  ")


def _row(module: str, counts: Counter[str]) -> str:
    mutants = sum(counts.values())
    killed = sum(counts[s] for s in DETECTED)
    return f"{module:<32} {mutants:>7} {killed:>7} {killed / max(mutants, 1):>6.1%}"


if __name__ == "__main__":
    main()

"""Print the mutation score of each mutated module from ``mutmut results --all true``.

Reads the results on standard input. A mutant counts as killed when a test failed or timed
out on it; one no test reaches counts as a survivor. Mutants listed in the equivalents file
(``name  reason`` per line) behave like the original by construction: they are left out of
the score and printed with their reason.
"""

from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

DETECTED = {"killed", "timeout", "segfault"}
# mutmut names a mutant module.x_function__mutmut_N or module.x\u01c1Class\u01c1method__mutmut_N.
MUTANT = re.compile(r"(?P<module>.+?)\.x[_\u01c1]")


def module_of(mutant: str) -> str:
    """Return the module of a mutant name such as ``pipeline.risk.x_add__mutmut_3``."""
    found = MUTANT.match(mutant)
    return found["module"] if found else mutant


def read_equivalents(path: Path) -> dict[str, str]:
    """Return the listed equivalent mutants and why each one is."""
    lines = (line.split(None, 1) for line in path.read_text().splitlines())
    return {parts[0]: parts[1] for parts in lines if parts and not parts[0].startswith("#")}


def main(equivalents: dict[str, str]) -> None:
    """Print one line per module, then the total, then each survivor and each equivalent."""
    statuses: defaultdict[str, Counter[str]] = defaultdict(Counter)
    survivors: defaultdict[str, list[str]] = defaultdict(list)
    for line in sys.stdin:
        name, _, status = line.strip().partition(": ")
        if not status:
            continue
        module = module_of(name)
        if name in equivalents and status not in DETECTED:
            status = "equivalent"
        statuses[module][status] += 1
        if status not in DETECTED | {"equivalent"}:
            survivors[module].append(f"{name} ({status})")
    total = Counter[str]()
    print(f"{'module':<28} {'mutants':>7} {'equivalent':>10} {'killed':>7} {'score':>6}")
    for module in sorted(statuses):
        total.update(statuses[module])
        print(_row(module, statuses[module]))
    print(_row("all", total))
    for module in sorted(survivors):
        print(f"\n{module} survivors:", *survivors[module], sep="\n  ")
    print("\nequivalent:", *(f"{n}  {why}" for n, why in sorted(equivalents.items())), sep="\n  ")


def _row(module: str, counts: Counter[str]) -> str:
    equivalent = counts["equivalent"]
    mutants = sum(counts.values())
    killed = sum(counts[s] for s in DETECTED)
    score = killed / max(mutants - equivalent, 1)
    return f"{module:<28} {mutants:>7} {equivalent:>10} {killed:>7} {score:>6.1%}"


if __name__ == "__main__":
    main(read_equivalents(Path(sys.argv[1])) if len(sys.argv) > 1 else {})

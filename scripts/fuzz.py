"""Long fuzz run (not part of CI): hypothesis with many examples against the input boundary.

    .venv/bin/python scripts/fuzz.py [--examples 20000]

Feeds arbitrary bytes, XML-shaped and JSON-shaped records to the detection core and arbitrary
text to the SPL compiler; prints how many inputs each target tried. Any exception other than a
rejection (dead letter) or a RuleError fails the run.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import PROJECT_ROOT
from pipeline.engine import Detector
from pipeline.rules.compiler import Macro, compile_search
from pipeline.rules.errors import RuleError
from pipeline.rules.loader import load_rules

TRIED: Counter[str] = Counter()
DETECTOR = Detector(load_rules(PROJECT_ROOT / "rules"))
XMLISH = st.builds(
    lambda channel, code, body: (
        f"<Event><System><EventID>{code}</EventID><Channel>{channel}</Channel>"
        f"<TimeCreated SystemTime='2024-01-01T00:00:00Z'/></System>{body}</Event>"
    ).encode(),
    st.sampled_from(["Microsoft-Windows-Sysmon/Operational", "Security", "x"]),
    st.sampled_from(["1", "4688", "4104", "5861", "21", "0"]),
    st.text(max_size=300),
)
JSONISH = st.builds(
    lambda body: ('{"Channel":"Security","EventID":4688,"EventTime":"2024-01-01",' + body).encode(),
    st.text(max_size=300),
)


def run(examples: int) -> None:
    """Run every target with ``examples`` examples each."""
    options = settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )

    @options
    @given(st.one_of(st.binary(max_size=4000), XMLISH, JSONISH))
    def detector(payload: bytes) -> None:
        TRIED["detector"] += 1
        DETECTOR.process(payload)

    @options
    @given(st.text(max_size=200))
    def compiler(search: str) -> None:
        TRIED["compiler"] += 1
        with contextlib.suppress(RuleError):
            compile_search(search, {"m": Macro("a=1")})

    for target in (detector, compiler):
        target()


def main() -> None:
    """Parse arguments, run, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000)
    started = time.perf_counter()
    run(parser.parse_args().examples)
    for target, count in TRIED.items():
        print(f"{target}: {count} inputs, no unexpected exception")
    print(f"{sum(TRIED.values())} inputs in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()

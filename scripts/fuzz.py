"""Long fuzz run (not part of CI): hypothesis with many examples against the input boundary.

    .venv/bin/python scripts/fuzz.py [--examples 20000]

Feeds arbitrary bytes, XML-shaped and JSON-shaped records and the structure-aware hostile
generators of ``tests/synthetic_hostile.py`` (deep nesting, attribute floods, extreme times,
duplicate keys, decoy identity fields) to the detection core and the aggregation, checks that
the byte screen never skips what the parser would match and that no event time leaves the
trusted bounds, and feeds arbitrary text to the SPL compiler; prints how many inputs each target
tried. Any exception escaping the core, or a broken check, fails the run.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.aggregate import Aggregator
from pipeline.engine import Detector
from pipeline.match import match_event
from pipeline.parse import parse_event
from pipeline.policy import TimePolicy, WindowPolicy
from pipeline.rejects import Rejected
from pipeline.rules.compiler import Macro, compile_search
from pipeline.rules.errors import RuleError
from pipeline.rules.loader import load_rules

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.synthetic_hostile import HOSTILE

PROJECT_ROOT = Path(__file__).resolve().parent.parent

TRIED: Counter[str] = Counter()
NOW = time.time()
POLICY = TimePolicy(max_future_seconds=300, max_age_seconds=365 * 86_400)
DETECTOR = Detector(load_rules(PROJECT_ROOT / "rules"), time_policy=POLICY, clock=lambda: NOW)
RECEIVED = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
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
    @given(st.one_of(st.binary(max_size=4000), XMLISH, JSONISH, HOSTILE), RECEIVED)
    def detector(payload: bytes, received: float | None) -> None:
        TRIED["detector"] += 1
        outcome = DETECTOR.process(payload, received=received)
        assert outcome.rejected is None or outcome.rejected.reason != "unprocessable", outcome
        if outcome.event is not None:
            assert POLICY.oldest(NOW) <= outcome.event.time <= NOW + 300, outcome.event.time
        aggregator = Aggregator(DETECTOR.rules, {}, WindowPolicy())
        for match in outcome.matches:
            aggregator.add(match, -math.inf, NOW)
        aggregator.advance(math.inf, NOW, list(aggregator.state))

    @options
    @given(HOSTILE)
    def screen(payload: bytes) -> None:
        TRIED["screen"] += 1
        if DETECTOR.screen(payload) is None:
            return
        try:
            event = DETECTOR.normalizer.normalize(parse_event(payload))
        except Rejected:
            return
        rules = DETECTOR.router.rules_for(event)
        assert not [r for r in rules if match_event(r, event) is not None], payload[:200]

    @options
    @given(st.text(max_size=200))
    def compiler(search: str) -> None:
        TRIED["compiler"] += 1
        with contextlib.suppress(RuleError):
            compile_search(search, {"m": Macro("a=1")})

    for target in (detector, screen, compiler):
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

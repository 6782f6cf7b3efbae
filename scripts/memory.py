"""Memory over a long replay (not part of CI): RSS of the detection core as events stream by.

    .venv/bin/python scripts/memory.py [--events 2000000] [--every 250000]

Runs the benchmark's fleet mix (event times advancing) through parse/normalize/route/match and
the aggregator, closing windows as the watermark moves, and prints RSS and table size along
the way: both should level off.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.aggregate import Aggregator
from pipeline.engine import Detector
from pipeline.policy import WindowPolicy
from pipeline.records import DestState
from pipeline.rules.loader import load_rules

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from bench.fleet import events

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def rss_mib() -> float:
    """Return this process's resident set size in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    """Stream events and report memory at intervals."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--every", type=int, default=250_000)
    parser.add_argument("--per-second", type=int, default=20, help="events per event-time second")
    args = parser.parse_args()
    detector = Detector(load_rules(PROJECT_ROOT / "rules"))
    state: dict[str, DestState] = {}
    aggregator = Aggregator(detector.rules, state, WindowPolicy())
    watermark, started = 0.0, time.perf_counter()
    print(f"{'events':>10} {'rss MiB':>8} {'dests':>6} {'groups':>7} {'s':>6}")
    stream = events(args.events, per_second=args.per_second)
    for number, (_, _, payload) in enumerate(stream, start=1):
        outcome = detector.process(payload)
        if outcome.event is not None:
            watermark = max(watermark, outcome.event.time)
        for match in outcome.matches:
            aggregator.add(match, watermark, 0.0)
        if number % 10_000 == 0:
            aggregator.advance(watermark, 0.0, list(state))
        if number % args.every == 0:
            groups = sum(len(groups) for groups in state.values())
            print(
                f"{number:>10} {rss_mib():>8.1f} {len(state):>6} {groups:>7} "
                f"{time.perf_counter() - started:>6.0f}"
            )


if __name__ == "__main__":
    main()

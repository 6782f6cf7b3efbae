"""The dest schedule: a tick visits only what is due, with the findings of visiting every dest."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.aggregate import Aggregator
from pipeline.ocsf import RENDERERS
from pipeline.records import MATCH, DestState, Finding
from pipeline.stream import Aggregation
from pipeline.wakeups import Wake, Wakeups
from pipeline.watermark import MergedWatermark
from tests.unit.test_stream import HOUR, POLICY, match, tick


def test_a_dest_keeps_its_earliest_time_and_leaves_once_due() -> None:
    wakeups = Wakeups()
    wakeups.schedule("h1", Wake(100.0, None))
    wakeups.schedule("h1", Wake(50.0, 30.0))  # earlier watermark: supersedes 100
    wakeups.schedule("h1", Wake(70.0, None))  # later: ignored
    wakeups.schedule("h2", Wake(200.0, None))
    assert wakeups.due(watermark=10.0, now=10.0) == set()
    assert wakeups.due(watermark=10.0, now=30.0) == {"h1"}  # its clock time came
    assert wakeups.due(watermark=60.0, now=30.0) == {"h1"}
    assert wakeups.due(watermark=150.0, now=30.0) == set()  # the superseded 100 is no visit
    assert wakeups.due(watermark=200.0, now=30.0) == {"h2"}


def test_a_tick_before_anything_is_due_visits_no_dest(rules: dict[str, Any]) -> None:
    table: dict[str, DestState] = {}
    aggregation = Aggregation(
        rules, table, POLICY, RENDERERS["native"], lambda: MergedWatermark(30, 300), 6
    )
    for number in range(200):
        aggregation.commit(aggregation.handle(match(7300.0, dest=f"h{number}"), 0, 1.0), 1.0)
    assert aggregation.wakeups is not None
    assert aggregation.wakeups[0].due(watermark=7300.0, now=2.0) == set()
    assert len(aggregation.wakeups[0].due(watermark=7200.0 + HOUR + 300, now=2.0)) == 200


EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("match"), st.integers(0, 3), st.integers(0, 3 * HOUR)),
        st.tuples(st.just("tick"), st.integers(0, 600), st.integers(0, 1800)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(EVENTS)
def test_the_schedule_gives_the_findings_of_visiting_every_dest(
    rules: dict[str, Any], events: list[tuple[str, int, int]]
) -> None:
    table: dict[str, DestState] = {}
    aggregation = Aggregation(
        rules,
        table,
        POLICY,
        lambda f: f.finding_id.encode() + f.status.encode(),
        lambda: MergedWatermark(30, 300),
        6,
    )
    reference_state: dict[str, DestState] = {}
    reference = Aggregator(rules, reference_state, POLICY)
    now, newest = 1_000.0, 0.0
    ours: list[bytes] = []
    theirs: list[bytes] = []
    for kind, a, b in events:
        if kind == "match":
            payload = match(float(b), dest=f"h{a}")
            step = aggregation.handle(payload, 0, now)
            due = reference.add(MATCH.decode(payload), watermark(aggregation), now) or []
        else:
            now, newest = now + a, newest + b
            step = aggregation.handle(tick(now, newest), 0, now)
            due = reference.advance(watermark(aggregation), now, sorted(reference_state))
        aggregation.commit(step, now)
        ours += [o.value for o in step.outgoing if o.output == "findings"]
        theirs += [rendered(f) for f in due]
    assert ours == theirs


def watermark(aggregation: Aggregation) -> float:
    return aggregation.watermarks[0].value if 0 in aggregation.watermarks else float("-inf")


def rendered(finding: Finding) -> bytes:
    return finding.finding_id.encode() + finding.status.encode()

"""Finding records: titles from the result row, the dest, the entity."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.emit import FINDING_NAMESPACE, build_finding, iso_time, render_title, uuid5
from pipeline.records import GroupState
from tests.synthetic import WMIC_NODE_RULE


def test_a_title_keeps_a_placeholder_the_row_cannot_fill() -> None:
    template = "$process$ ran on $dest$ as $user$"
    assert render_title(template, {"process": "wmic", "dest": "h1"}) == "wmic ran on h1 as $user$"


def test_the_dest_is_the_row_s_else_the_group_s(rules: dict[str, Any]) -> None:
    stats = GroupState("f", WMIC_NODE_RULE, "from-the-match", 0, {}, 0, count=1)
    rule = rules[WMIC_NODE_RULE]
    with_dest = build_finding(rule, stats, {"dest": "from-the-row"}, "new")
    assert (with_dest.dest, with_dest.entity.value) == ("from-the-row", "from-the-row")
    without = build_finding(rule, stats, {}, "new")
    assert (without.dest, without.entity.value) == ("from-the-match", "from-the-match")
    assert without.title.endswith("in host $dest$")  # the row has no dest to render


@given(st.text())
def test_ids_are_uuid5_of_the_finding_namespace(name: str) -> None:
    assert uuid5(name.encode()) == str(uuid.uuid5(FINDING_NAMESPACE, name))


@given(
    st.one_of(
        # from 1906 (a negative fraction borrows a second) to 9999-12-31
        st.floats(min_value=-2_000_000_000, max_value=253_402_300_799, allow_nan=False),
        st.integers(-2_000_000_000, 0).map(lambda s: s - 0.9999995),  # rounds to the one before
        st.integers(0, 4_000_000_000).map(lambda s: s + 0.0005),  # half a millisecond
        st.integers(0, 4_000_000_000).map(lambda s: s + 0.9999995),  # rounds to the next second
        st.integers(0, 4_000_000_000).map(float),
    )
)
def test_iso_time_renders_as_datetime_does(seconds: float) -> None:
    moment = datetime.fromtimestamp(seconds, UTC)
    assert iso_time(seconds) == moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

"""A stage's table per input partition, its changelog records and their replay."""

from __future__ import annotations

import pytest

from pipeline.records import INPUT_POSITION, InputPosition
from pipeline.state import (
    MATCHES_POSITION,
    RISK_BATCHES_POSITION,
    PartitionedTable,
    changelog_records,
    replay,
)


def test_writes_go_to_the_current_partition_and_are_kept_for_its_changelog() -> None:
    table = PartitionedTable()
    table.partition = 2
    table["h1"] = b"one"
    table["h2"] = b"two"
    del table["h1"]
    table.partition = 5
    table["h9"] = b"nine"
    assert dict(table) == {"h2": b"two", "h9": b"nine"}
    assert table.take_changes(2) == {"h1": None, "h2": b"two"}
    assert table.take_changes(2) == {}
    assert table.take_changes(5) == {"h9": b"nine"}


def test_dropping_a_partition_forgets_its_keys_and_changes_only() -> None:
    table = PartitionedTable()
    table.load(1, {"a": b"1", "b": b"2"})
    table.partition = 3
    table["c"] = b"3"
    table.partition = 1
    table["d"] = b"4"
    table.drop(1)
    assert dict(table) == {"c": b"3"}
    assert table.take_changes(1) == {}
    assert table.take_changes(3) == {"c": b"3"}


def test_replaying_the_changelog_gives_back_the_table_and_the_next_offset() -> None:
    first = list(changelog_records({"h1": b"x", "h2": b"y"}, 10, MATCHES_POSITION))
    second = list(changelog_records({"h1": None, "h2": b"z"}, 17, MATCHES_POSITION))
    assert first[-1] == (b"o", INPUT_POSITION.encode(InputPosition(10)))
    assert replay(first + second, MATCHES_POSITION) == ({"h2": b"z"}, 17)
    assert replay([], MATCHES_POSITION) == ({}, None)


def test_a_stage_passes_over_the_position_of_an_input_it_no_longer_reads() -> None:
    """The scoring read wmiwatch.risk (its offset under "o"); it now reads the risk batches."""
    earlier = list(changelog_records({"h1": b"x"}, 5000, MATCHES_POSITION))
    assert replay(earlier, RISK_BATCHES_POSITION) == ({"h1": b"x"}, None)
    later = list(changelog_records({"h2": b"y"}, 12, RISK_BATCHES_POSITION))
    assert replay(earlier + later, RISK_BATCHES_POSITION) == ({"h1": b"x", "h2": b"y"}, 12)


def test_a_table_key_can_never_be_read_back_as_the_position() -> None:
    rows = {"o": b"state of a dest named o", "b": b"and b", "": b"empty"}
    records = list(changelog_records(rows, 3, MATCHES_POSITION))
    assert replay(records, MATCHES_POSITION) == (rows, 3)


def test_a_record_the_stage_did_not_write_is_refused() -> None:
    with pytest.raises(ValueError, match="not a state changelog record"):
        replay([(b"x-foreign", b"{}")], MATCHES_POSITION)

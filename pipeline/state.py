"""A stage's table in memory, per input partition, with the changes its changelog still needs.

The aggregation's table (dest -> open groups) and the scoring's (risk object -> contributions)
are kept here rather than in Faust tables: their changelog records are written by the stage's
own producer, in the transaction that also carries the outputs those changes announce and the
next input offset (``pipeline.transactional``). Every key belongs to one input partition, the
partition of the record that wrote it, since records are keyed by what the table is keyed by.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Protocol

from pipeline.records import INPUT_POSITION, InputPosition

# The changelog record holding a stage's next input offset, one key per input topic: a stage
# passes over another's (the scoring read wmiwatch.risk, under "o", before it read the batches).
MATCHES_POSITION = b"o"
RISK_BATCHES_POSITION = b"b"
POSITION_KEYS = frozenset({MATCHES_POSITION, RISK_BATCHES_POSITION})
DATA_PREFIX = b"k"  # before every table key in the changelog, so no key can be the position's

Changes = dict[str, bytes | None]  # key -> value, None: deleted


class Holder(Protocol):
    """A view of the table that holds writes back (to encode a key once however often written)."""

    def write_held(self) -> None:
        """Write what is held to the table, each key to the partition it was written in."""

    def forget_held(self, partition: int) -> None:
        """Drop what is held for ``partition``."""


class PartitionedTable(MutableMapping[str, bytes]):
    """The table of the input partitions owned; writes go to ``partition`` and are remembered.

    The wiring sets ``partition`` to the partition of the record being handled, and calls
    ``write_held`` before it takes changes, so that views holding writes back hand them over.
    """

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.partition_keys: dict[int, set[str]] = {}
        self.changes: dict[int, Changes] = {}
        self.partition = 0
        self.holders: list[Holder] = []

    def __getitem__(self, key: str) -> bytes:
        return self.data[key]

    def __setitem__(self, key: str, value: bytes) -> None:
        self.data[key] = value
        self.partition_keys.setdefault(self.partition, set()).add(key)
        self.changes.setdefault(self.partition, {})[key] = value

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self.partition_keys.setdefault(self.partition, set()).discard(key)
        self.changes.setdefault(self.partition, {})[key] = None

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def load(self, partition: int, rows: dict[str, bytes]) -> None:
        """Hold ``rows`` as ``partition``'s part of the table (read back from the changelog)."""
        self.drop(partition)
        self.data.update(rows)
        self.partition_keys[partition] = set(rows)

    def drop(self, partition: int) -> None:
        """Forget ``partition``'s part of the table and its pending changes."""
        for holder in self.holders:
            holder.forget_held(partition)
        for key in self.partition_keys.pop(partition, ()):
            self.data.pop(key, None)
        self.changes.pop(partition, None)

    def write_held(self) -> None:
        """Have the views holding writes back write them (before changes are taken)."""
        for holder in self.holders:
            holder.write_held()

    def take_changes(self, partition: int) -> Changes:
        """Return and forget the changes made in ``partition`` since the last call."""
        return self.changes.pop(partition, {})


def changelog_records(
    changes: Changes, next_offset: int, position: bytes
) -> Iterator[tuple[bytes, bytes | None]]:
    """Yield the changelog records of ``changes``, then the one holding ``next_offset`` (under
    the key ``position``)."""
    for key, value in changes.items():
        yield DATA_PREFIX + key.encode(), value
    yield position, INPUT_POSITION.encode(InputPosition(next_offset))


def replay(
    records: Iterable[tuple[bytes, bytes | None]], position: bytes
) -> tuple[dict[str, bytes], int | None]:
    """Return the table and the next input offset (kept under the key ``position``) that a
    partition's changelog records leave.

    Raise ``ValueError`` on a record this module did not write.
    """
    rows: dict[str, bytes] = {}
    next_offset: int | None = None
    for key, value in records:
        if key in POSITION_KEYS:
            if key == position and value is not None:
                next_offset = INPUT_POSITION.decode(value).next_offset
        elif key.startswith(DATA_PREFIX):
            name = key[len(DATA_PREFIX) :].decode()
            if value is None:
                rows.pop(name, None)
            else:
                rows[name] = value
        else:
            raise ValueError(f"not a state changelog record: key {key[:40]!r}")
    return rows, next_offset

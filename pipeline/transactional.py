"""A stage's outputs, table changes and input position, made durable together.

A stage is the aggregation (matches in; findings, risk events out) or the risk scoring (batches
of risk events in; incidents out). For each input partition it owns, it has a producer, an
in-memory part of its table (``pipeline.state``) and the next input offset it expects, and it
commits all three at once, at most every ``commit_interval_seconds``:

* ``exactly_once``: the producer is transactional, with the id ``<group>-<stage>-<partition>``.
  The outputs of a partition's records, the changelog records of the table changes they made
  and the next offset go into one transaction. Taking a partition over starts by initialising
  its producer, which fences the previous owner and aborts what it left open, and then reads
  the stage's changelog partition (``read_committed``) back: table and offset are exactly those
  of the outputs committed. So a record is never handled twice into the outputs, whatever
  Faust's own offset commits say.
* ``at_least_once``: the producers are plain; committing flushes the outputs and then writes
  the changelog and the offset, so a crash between the two sends outputs again.

A commit does not stop the stage: records that arrive while their partition commits are
handled, their outputs held and sent in the partition's next transaction once the commit
returns, and their table changes and offset left for the next commit.

Records below the expected offset are passed over (already in the state); if the first record
after a partition is taken over lies beyond it, the records between are read again from the
broker (Faust 0.15 can commit past records it never delivered around rebalances: faust-streaming
issue 312). A transaction that cannot commit is aborted and the partition's state dropped: the
next record re-reads it and the records since the last commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from confluent_kafka import KafkaException, Producer

from pipeline import metrics
from pipeline.kafka import CALL_TIMEOUT, RangeReader, flush, producer, retrying, transactional
from pipeline.policy import STATE_RECORD_BYTES
from pipeline.settings import Settings
from pipeline.state import Changes, PartitionedTable, changelog_records, replay

log = logging.getLogger(__name__)
RECORD_OVERHEAD = 65_536  # what a produce request adds to the records it carries
IDLE_COMMIT_SECONDS = 5.0  # how long a partition's position may wait when nothing changed


class Outbound(NamedTuple):
    """A record to send: to ``partition`` of ``topic``, or where its key puts it (-1)."""

    topic: str
    key: bytes
    value: bytes
    partition: int = -1


@dataclass
class Owned:
    """One input partition as the stage holds it."""

    producer: Producer
    next_offset: int | None  # None: no record of it handled yet, anywhere
    checked: bool = False  # the first record since it was taken over was checked for a hole
    open: bool = False  # a transaction is begun (exactly_once)
    dirty: bool = False  # records handled since the last commit
    sent: bool = False  # outputs sent since the last commit
    committing: bool = False  # a commit of it is in flight: outputs wait in ``held``
    held: list[Outbound] = field(default_factory=list)
    committed_at: float = field(default_factory=time.monotonic)


class Commit(NamedTuple):
    """What one partition's commit makes durable, as it was when the commit began."""

    changes: Changes
    next_offset: int


class Stage:
    """Owns input partitions of one topic; commits their outputs, table and offsets together."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        source: str,
        changelog: str,
        position: bytes,
        table: PartitionedTable,
        reindex: Callable[[int], None] = lambda partition: None,
    ) -> None:
        self.settings, self.name, self.changelog, self.table = settings, name, changelog, table
        self.position = position  # the changelog key of its next input offset
        self.reindex = reindex  # told each partition whose table part was read back or dropped
        self.transactional = settings.processing_guarantee == "exactly_once"
        self.source = RangeReader(settings, source)
        self.state = RangeReader(settings, changelog)
        self.assigned: set[int] = set()
        self.owned: dict[int, Owned] = {}
        self.lock = asyncio.Lock()  # records and rebalances take turns
        self.last_commit = time.monotonic()
        self.committing: asyncio.Task[None] | None = None  # the commit in flight, if any

    async def due(self, partition: int, offset: int, value: bytes) -> list[tuple[int, bytes]]:
        """Return the records to handle now, as (offset, value), for a record Faust delivered.

        Empty for a partition no longer assigned or a record already handled; with the records
        Faust skipped before it for the first record since the partition was taken over. The
        table's writes go to ``partition`` until the next call.
        """
        if partition not in self.assigned:
            return []
        owned = self.owned.get(partition)
        if owned is None:
            owned = self._own(partition, *await asyncio.to_thread(self._take_over, partition))
        self.table.partition = partition
        expected = owned.next_offset
        if expected is None:
            expected = await asyncio.to_thread(self.source.first_offset, partition)
        if offset < expected:
            metrics.records_passed_over_total.labels(self.name).inc()
            return []
        skipped: list[tuple[int, bytes]] = []
        if offset > expected and not owned.checked:
            read = await asyncio.to_thread(self.source.read, partition, expected, offset)
            skipped = [(m.offset() or 0, m.value() or b"") for m in read]
            metrics.records_reread_total.labels(self.name).inc(len(skipped))
        owned.checked = True
        return [*skipped, (offset, value)]

    def produce(self, partition: int, output: Outbound) -> None:
        """Send an output of a record of ``partition`` (in its transaction, if transactional);
        hold it while the partition commits."""
        owned = self.owned[partition]
        if owned.committing:
            owned.held.append(output)
        else:
            self._begun(partition).producer.produce(
                output.topic, output.value, key=output.key, partition=output.partition
            )
        owned.sent = True

    def handled(self, partition: int, offset: int) -> None:
        """Record that the record at ``offset`` is handled: its outputs and changes are sent."""
        owned = self.owned[partition]
        owned.next_offset, owned.dirty = offset + 1, True

    def commit_due(self) -> bool:
        """Return True once ``commit_interval_seconds`` has passed since the last commit began
        and no commit is in flight."""
        if self.committing is not None and not self.committing.done():
            return False
        return time.monotonic() - self.last_commit >= self.settings.commit_interval_seconds

    def start_commit(self) -> None:
        """Begin a commit (``commit``) unless one is in flight, without waiting for it; raise
        what the last one raised."""
        if self.committing is not None:
            if not self.committing.done():
                return
            finished, self.committing = self.committing, None
            finished.result()
        self.committing = asyncio.ensure_future(self._commit_due_partitions())

    async def commit(self, everything: bool = False) -> None:
        """Wait for the commit in flight, then commit the partitions whose records sent
        outputs or changed the table, and those whose records changed nothing (ticks) once
        ``IDLE_COMMIT_SECONDS`` old, or with ``everything`` all with records handled.

        A record that changed nothing need not be committed soon: handled again after a
        crash, it changes nothing again.
        """
        await self._settled()
        self.committing = asyncio.ensure_future(self._commit_due_partitions(everything))
        await self._settled()

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Commit, then let ``partitions`` go: their next owner takes them over."""
        await self.commit(everything=True)
        for partition in partitions:
            self.assigned.discard(partition)
            self._drop(partition)

    async def _settled(self) -> None:
        """Wait for the commit in flight, if any (raising what it raised). It stays in flight
        meanwhile: no other commit may begin (``commit_due``, ``start_commit``) until it ends."""
        in_flight = self.committing
        if in_flight is None:
            return
        try:
            await in_flight
        finally:
            if self.committing is in_flight:
                self.committing = None

    async def _commit_due_partitions(self, everything: bool = False) -> None:
        self.last_commit = now = time.monotonic()
        self.table.write_held()  # here, not in the threads committing partitions
        dirty = [
            p
            for p, owned in self.owned.items()
            if owned.dirty
            and (
                everything
                or owned.sent
                or self.table.changes.get(p)
                or now - owned.committed_at >= IDLE_COMMIT_SECONDS
            )
        ]
        commits = [self._begin_commit(p) for p in dirty]
        results = await asyncio.gather(
            *(asyncio.to_thread(self._commit, p, c) for p, c in zip(dirty, commits, strict=True)),
            return_exceptions=True,
        )
        for partition, failure in zip(dirty, results, strict=True):
            if failure is not None:
                log.warning("%s partition %d not committed: %s", self.name, partition, failure)
                metrics.transactions_aborted_total.labels(self.name).inc()
            self._end_commit(partition, lost=failure is not None)

    def _begin_commit(self, partition: int) -> Commit:
        """Take what ``partition``'s commit makes durable; hold its outputs until it ends."""
        owned = self.owned[partition]
        assert owned.next_offset is not None  # dirty: a record was handled
        owned.committing, owned.dirty, owned.sent = True, False, False
        return Commit(self.table.take_changes(partition), owned.next_offset)

    def _end_commit(self, partition: int, lost: bool) -> None:
        """Send the outputs held during ``partition``'s commit, or drop its state if it was
        lost (or the next transaction cannot take them)."""
        owned = self.owned[partition]
        owned.committing, owned.committed_at = False, time.monotonic()
        held, owned.held = owned.held, []
        if not lost:
            try:
                for output in held:
                    self.produce(partition, output)
                return
            except (KafkaException, BufferError) as error:
                log.warning("%s partition %d cannot go on: %r", self.name, partition, error)
        self._drop(partition)
        self.reindex(partition)

    def _take_over(self, partition: int) -> tuple[Producer, dict[str, bytes], int | None]:
        """Fence the previous owner of ``partition``, then read its table and offset back."""
        started = time.monotonic()
        client = producer(
            self.settings,
            **transactional(self.settings, f"{self.name}-{partition}"),
            **{"message.max.bytes": STATE_RECORD_BYTES + RECORD_OVERHEAD},
        )
        if self.transactional:
            retrying(client.init_transactions, CALL_TIMEOUT)
        records = self.state.read_all(partition)
        rows, next_offset = replay(((m.key() or b"", m.value()) for m in records), self.position)
        log.info(
            "%s took over partition %d: %d keys, next offset %s, in %.2f s",
            self.name, partition, len(rows), next_offset, time.monotonic() - started,
        )  # fmt: skip
        return client, rows, next_offset

    def _own(
        self, partition: int, client: Producer, rows: dict[str, bytes], next_offset: int | None
    ) -> Owned:
        """Hold ``partition`` as taken over (here, not in the thread that read it back)."""
        self.table.load(partition, rows)
        self.owned[partition] = Owned(client, next_offset)
        metrics.partitions_taken_over_total.labels(self.name).inc()
        self.reindex(partition)
        return self.owned[partition]

    def _begun(self, partition: int) -> Owned:
        owned = self.owned[partition]
        if self.transactional and not owned.open:
            owned.producer.begin_transaction()
            owned.open = True
        return owned

    def _commit(self, partition: int, commit: Commit) -> None:
        """Commit ``partition``'s outputs, changes and offset; raise if they were not.

        A commit that fails is the partition's to redo, not the worker's: the transaction is
        aborted (a fenced or failed producer is let go) and the partition taken over again
        from what was committed at its next record.
        """
        owned = self._begun(partition)
        try:
            if not self.transactional:
                flush(owned.producer)  # the outputs are durable before the state says so
            changelog = changelog_records(commit.changes, commit.next_offset, self.position)
            for key, value in changelog:
                owned.producer.produce(self.changelog, value, key=key, partition=partition)
            self._complete(owned.producer)
        except KafkaException as exception:
            if self.transactional and not exception.args[0].fatal():
                with contextlib.suppress(KafkaException):  # its successor's take-over aborts it
                    retrying(owned.producer.abort_transaction, CALL_TIMEOUT)
            raise
        owned.open = False

    def _complete(self, client: Producer) -> None:
        if self.transactional:
            retrying(client.commit_transaction, CALL_TIMEOUT)
        else:
            flush(client)

    def _drop(self, partition: int) -> None:
        self.owned.pop(partition, None)
        self.table.drop(partition)

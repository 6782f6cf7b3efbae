"""The worker's decisions, without Faust: what each matches or risk record leads to.

``agents`` only wires: it hands each record's bytes to ``Aggregation.handle`` or
``Scoring.handle``, sends the returned outputs and dead-letters the returned rejects, and then
calls ``commit``, which applies the record's table changes; ``pipeline.transactional`` makes
outputs, changes and the input offset durable together. A record that raises is the record's
fault: ``discard`` drops what it staged and the caller dead-letters it. A part of a batch that
cannot be handled (a match of no loaded rule, a risk event that is not one) is rejected alone;
the batch's other parts are handled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, NamedTuple, Protocol, TypeVar

import msgspec
from isal import isal_zlib

from pipeline import metrics
from pipeline.aggregate import Aggregator, Full, StagedWrites
from pipeline.emit import build_risk_events
from pipeline.partitions import partitioned
from pipeline.policy import RiskPolicy, WindowPolicy
from pipeline.records import (
    AGGREGATION_INPUT,
    INCIDENT,
    MATCH,
    RISK_BATCH,
    RISK_EVENT,
    Codec,
    DestState,
    Finding,
    Match,
    MatchBatch,
    ObjectState,
    RiskBatch,
    Tick,
)
from pipeline.rejects import RejectReason
from pipeline.risk import RiskScorer
from pipeline.rules.model import Rule
from pipeline.state import PartitionedTable
from pipeline.wakeups import Wakeups
from pipeline.watermark import MergedWatermark

V = TypeVar("V")
DECODED_FROM = 65_536  # a value whose JSON is this large is kept decoded when written ...
DECODED_BUDGET = 33_554_432  # ... and any value read back; within this much JSON in all


class Output(StrEnum):
    """The topics the worker publishes to."""

    FINDINGS = "findings"
    RISK = "risk"
    RISK_BATCHES = "risk-batches"  # the risk events again, batched for the scoring
    INCIDENTS = "incidents"


class Outgoing(NamedTuple):
    """One record to publish, with what its metric counts (a finding's status, a kind), when
    the event that made it arrived (a new finding's), and its partition (-1: by its key)."""

    output: Output
    key: str
    value: bytes
    rule_id: str
    kind: str
    ingested_at: float | None = None
    partition: int = -1


class Rejected(NamedTuple):
    """A part of an input record that could not be handled, and why (to dead-letter)."""

    payload: bytes
    error: str
    reason: RejectReason = RejectReason.UNPROCESSABLE


@dataclass
class Step:
    """What one input record leads to: the records to publish and the parts rejected."""

    outgoing: list[Outgoing] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


class EncodedTable(MutableMapping[str, V], Generic[V]):
    """A view of a table of compressed JSON bytes as a table of records.

    Values are zlib-compressed: a dest's groups repeat their field names and ids, and
    compressed they take a third of the memory, in the table and in its changelog. ISA-L's
    level 1 writes the zlib format every zlib reads (workers of earlier versions too) two to
    three times faster than zlib's own level 1, at the same ratio. A value that is plain JSON
    (written before compression) is read as it is. A value written is held
    as a record until the table asks for it (before its changes are committed), so a key
    written by many records between two commits is encoded and compressed once. A value read
    back after it was written (a dest matched again) and a large one (a busy dest's groups, up
    to megabytes) are kept decoded too, within a budget, as long as the table holds the bytes
    they were decoded from: each record of a busy dest would otherwise decode its groups again
    after each commit. A value written once and not read (a flood of new dests) is not kept.
    """

    def __init__(self, table: PartitionedTable, codec: Codec[V]) -> None:
        self.table, self.codec = table, codec
        self.held: dict[str, tuple[int, V]] = {}  # key -> (partition written in, value)
        self.unstored: set[str] = set()  # the keys held that the table does not hold (counted)
        self.decoded: dict[str, tuple[bytes, V, int]] = {}  # key -> (stored, value, JSON size)
        self.decoded_bytes = 0
        table.holders.append(self)

    def __getitem__(self, key: str) -> V:
        if key in self.held:
            return self.held[key][1]
        stored = self.table[key]
        kept = self.decoded.get(key)
        if kept is not None and kept[0] is stored:
            return kept[1]
        encoded = stored if stored[:1] == b"{" else isal_zlib.decompress(stored)
        value = self.codec.decode(encoded)
        self._keep_decoded(key, stored, value, len(encoded))  # read back: a busy key
        return value

    def __setitem__(self, key: str, value: V) -> None:
        if key not in self.table:
            self.unstored.add(key)
        self.held[key] = (self.table.partition, value)

    def __delitem__(self, key: str) -> None:
        held = self.held.pop(key, None)
        self.unstored.discard(key)
        self._drop_decoded(key)
        if key in self.table:
            del self.table[key]
        elif held is None:
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return key in self.held or key in self.table  # without decoding the value

    def __iter__(self) -> Iterator[str]:
        yield from self.held
        yield from (key for key in self.table if key not in self.held)

    def __len__(self) -> int:
        return len(self.table) + len(self.unstored)  # a key is one partition's: no overlap

    def write_held(self) -> None:
        """Encode the values held into the table, each in the partition it was written in."""
        current = self.table.partition
        for key, (partition, value) in self.held.items():
            self.table.partition = partition
            encoded = self.codec.encode(value)
            self.table[key] = stored = isal_zlib.compress(encoded, 1)
            if key in self.decoded or len(encoded) >= DECODED_FROM:
                self._keep_decoded(key, stored, value, len(encoded))
        self.table.partition = current
        self.held.clear()
        self.unstored.clear()

    def _keep_decoded(self, key: str, stored: bytes, value: V, size: int) -> None:
        """Keep a value decoded, the oldest kept let go past ``DECODED_BUDGET``."""
        self._drop_decoded(key)
        self.decoded[key] = (stored, value, size)
        self.decoded_bytes += size
        while self.decoded_bytes > DECODED_BUDGET:
            self._drop_decoded(next(iter(self.decoded)))

    def _drop_decoded(self, key: str) -> None:
        if (kept := self.decoded.pop(key, None)) is not None:
            self.decoded_bytes -= kept[2]

    def forget_held(self, partition: int) -> None:
        """Drop the values held that were written in ``partition``."""
        self.held = {k: held for k, held in self.held.items() if held[0] != partition}
        self.unstored &= self.held.keys()


class Decisions(Protocol):
    """A stage's decisions: a record in, a step out; its table changes kept until committed."""

    def handle(self, payload: bytes, partition: int, now: float) -> Step:
        """Decide what the record ``payload`` of input ``partition`` leads to."""

    def commit(self, step: Step, now: float) -> None:
        """Apply the table changes of ``step``, whose records are sent."""

    def discard(self) -> None:
        """Drop the table changes of a record that could not be handled."""

    def forget_index(self) -> None:
        """Rebuild what is kept beside the table (a schedule) from it, at the next record."""


class Aggregation:
    """Matches and ticks in, findings and risk events out, for the matches partitions owned.

    Each matches partition has its own watermark, merged from the ticks of every intake, and
    its own schedule of when each dest next has something due, so a tick visits only those.
    """

    def __init__(
        self,
        rules: Mapping[str, Rule],
        table: MutableMapping[str, DestState],
        policy: WindowPolicy,
        render: Callable[[Finding], bytes],
        watermark: Callable[[], MergedWatermark],
        risk_partitions: int,
        max_dests: int | None = None,
    ) -> None:
        self.rules, self.render, self.new_watermark = rules, render, watermark
        self.risk_partitions = risk_partitions
        self.staged: StagedWrites[DestState] = StagedWrites(table)
        self.windows = Aggregator(rules, self.staged, policy, max_dests)
        self.watermarks: dict[int, MergedWatermark] = {}
        self.wakeups: dict[int, Wakeups] | None = None  # per partition; None: rebuild from table
        self.tally: metrics.Tally = Counter()  # the matches counted, added at the commit

    def handle(self, payload: bytes, partition: int, now: float) -> Step:
        """Decode one record of the matches topic and decide what it leads to."""
        record = AGGREGATION_INPUT.decode(payload)
        if isinstance(record, Tick):
            step = self.on_tick(record, partition, now)
        elif isinstance(record, MatchBatch):
            step = self.on_batch(record, partition, now)
        else:
            step = self.on_match(record, partition, now)
        step.outgoing += self._risk_batches(step.outgoing)
        step.rejected += [
            Rejected(msgspec.json.encode(group.stats), group.detail, RejectReason.REGEX_TIMEOUT)
            for group in self.windows.take_undecided()
        ]
        return step

    def on_batch(self, batch: MatchBatch, partition: int, now: float) -> Step:
        """Count each match of ``batch``; reject alone one that cannot be counted."""
        step = Step()
        handled_parts(batch.matches, lambda part: self._count(part, partition, now), step)
        return step

    def _count(self, payload: bytes, partition: int, now: float) -> list[Outgoing]:
        """Count one match of a batch; return the records it makes due."""
        return self.on_match(MATCH.decode(payload), partition, now).outgoing

    def on_match(self, match: Match, partition: int, now: float) -> Step:
        """Count a match unless it is a redelivery; return the findings it makes due."""
        watermark = self._watermark(partition).value
        counted = self.windows.count(self._known(match), watermark, now, partition)
        if counted is None:
            self.tally[metrics.matches_redelivered_total, (match.rule_id,)] += 1
            return Step()
        group, due = counted
        # The dest's other groups are scheduled already (a schedule keeps its earliest time):
        # only this one's wake is new, and a busy dest holds thousands of groups.
        wake = self.windows.wake({group.finding_id: group})
        self._wakeups(partition).schedule(match.dest, wake)
        self.tally[metrics.matches_aggregated_total, (match.rule_id,)] += 1
        if self.windows.is_late(match, watermark):
            self.tally[metrics.late_matches_total, (match.rule_id,)] += 1
        return Step(self._outgoing(due, match.ingested_at))

    def on_tick(self, tick: Tick, partition: int, now: float) -> Step:
        """Advance the partition's watermark; return the updates and finals it makes due."""
        watermark = self._watermark(partition).apply(tick, now)
        metrics.event_time_watermark_seconds.set(max(w.value for w in self.watermarks.values()))
        metrics.raw_partitions_silent.set(max(w.silent for w in self.watermarks.values()))
        dests = sorted(self._wakeups(partition).due(watermark, now))
        due = self.windows.advance(watermark, now, dests)
        for dest in dests:
            self._schedule(partition, dest)
        return Step(self._outgoing(due))

    def commit(self, step: Step, now: float) -> None:
        """Record in the table what ``step`` changed, once its records are acknowledged, and
        count its matches."""
        self.staged.apply()
        metrics.add(self.tally)
        self.tally.clear()
        count_published(step, now)

    def discard(self) -> None:
        """Drop what the record being handled staged and counted (it could not be handled)."""
        self.staged.discard()
        self.tally.clear()
        self.windows.take_undecided()

    def forget_index(self) -> None:
        """Rebuild the schedule of dests from the table at the next record (a rebalance)."""
        self.wakeups = None

    def _known(self, match: Match) -> Match:
        """Return ``match``; raise KeyError if its rule is not loaded."""
        if match.rule_id not in self.rules:
            raise KeyError(f"match of unknown rule {match.rule_id!r}")
        return match

    def _watermark(self, partition: int) -> MergedWatermark:
        if partition not in self.watermarks:
            self.watermarks[partition] = self.new_watermark()
        return self.watermarks[partition]

    def _wakeups(self, partition: int) -> Wakeups:
        if self.wakeups is None:
            self.wakeups = {}
            for dest in list(self.staged):  # a live table: a key listed may be gone when read
                state = self.staged.get(dest) or {}
                for owner in {group.partition for group in state.values()}:
                    self.wakeups.setdefault(owner, Wakeups()).schedule(
                        dest, self.windows.wake(state)
                    )
        return self.wakeups.setdefault(partition, Wakeups())

    def _schedule(self, partition: int, dest: str) -> None:
        """Schedule the next visit of ``dest`` from its groups as they are now."""
        state = self.staged.get(dest)
        if state:
            self._wakeups(partition).schedule(dest, self.windows.wake(state))

    def _risk_batches(self, outgoing: list[Outgoing]) -> list[Outgoing]:
        """Return the risk events among ``outgoing`` again, batched per risk partition."""
        risks = [(o.key, o.value) for o in outgoing if o.output is Output.RISK]
        return [
            Outgoing(
                Output.RISK_BATCHES, "", RISK_BATCH.encode(RiskBatch(run)), "", "", partition=p
            )
            for p, run in partitioned(risks, self.risk_partitions)
        ]

    def _outgoing(self, due: list[Finding], ingested_at: float | None = None) -> list[Outgoing]:
        """Return the findings due, each followed by the risk events of a new one; a new one
        made by a match carries when that match's event arrived."""
        records = []
        for finding in due:
            records.append(
                Outgoing(
                    Output.FINDINGS,
                    finding.dest,
                    self.render(finding),
                    finding.rule_id,
                    finding.status,
                    ingested_at if finding.status == "new" else None,
                )
            )
            if finding.status != "new":
                continue
            for risk in build_risk_events(self.rules[finding.rule_id], finding):
                value = RISK_EVENT.encode(risk)
                records.append(
                    Outgoing(Output.RISK, risk.risk_object, value, risk.rule_id, Output.RISK)
                )
        return records


class Scoring:
    """Batches of risk events in, risk incidents out."""

    def __init__(self, table: MutableMapping[str, ObjectState], policy: RiskPolicy) -> None:
        self.staged: StagedWrites[ObjectState] = StagedWrites(table)
        self.scorer = RiskScorer(self.staged, policy)

    def handle(self, payload: bytes, partition: int = 0, now: float = 0.0) -> Step:
        """Decode a batch of risk events of ``partition``, score them in order, and return the
        incidents they raise; reject alone one that is not a risk event.

        ``now`` does not matter: a risk event carries its own time.
        """
        step = Step()
        handled_parts(
            RISK_BATCH.decode(payload).risk_events, lambda p: self._score(p, partition), step
        )
        return step

    def _score(self, payload: bytes, partition: int) -> list[Outgoing]:
        """Score one risk event; return the incidents it raises."""
        return [
            Outgoing(Output.INCIDENTS, i.risk_object, INCIDENT.encode(i), "", i.kind)
            for i in self.scorer.add(RISK_EVENT.decode(payload), partition)
        ]

    def commit(self, step: Step, now: float) -> None:
        """Record in the table what ``step`` changed, once its incidents are sent."""
        self.staged.apply()
        count_published(step, now)

    def discard(self) -> None:
        """Drop what the risk event being handled staged (it could not be handled)."""
        self.staged.discard()

    def forget_index(self) -> None:
        """Rebuild the objects' expiry schedule from the table at the next event."""
        self.scorer.forget_index()


def handled_parts(
    parts: Iterable[msgspec.Raw], handle: Callable[[bytes], list[Outgoing]], step: Step
) -> None:
    """Hand each part of a batch to ``handle`` and add what it returns to ``step``; one it
    cannot decode, of a rule not loaded (KeyError) or past a bound of the state is rejected in
    ``step``."""
    for raw in parts:
        payload = bytes(raw)
        try:
            step.outgoing += handle(payload)
        except Full as full:
            step.rejected.append(Rejected(payload, str(full), full.reason))
        except (msgspec.ValidationError, KeyError) as error:
            step.rejected.append(Rejected(payload, repr(error)))


def count_published(step: Step, now: float) -> None:
    """Count the records of ``step`` that were published (a risk batch repeats risk events),
    each series once per step."""
    tally: metrics.Tally = Counter()
    for record in step.outgoing:
        if record.output is Output.RISK:
            tally[metrics.risk_events_emitted_total, (record.rule_id,)] += 1
        elif record.output is Output.INCIDENTS:
            tally[metrics.incidents_emitted_total, (record.kind,)] += 1
        elif record.output is Output.FINDINGS:
            tally[metrics.findings_emitted_total, (record.rule_id, record.kind)] += 1
            if record.ingested_at is not None:
                metrics.finding_latency_seconds.observe(now - record.ingested_at)
    metrics.add(tally)

"""Aggregate matches per (rule, group, window) as SPL ``stats count min(_time) max(_time)``.

Windows are tumbling, in event time. The first match of a group emits a ``new`` finding; later
matches make the group dirty and an ``update`` goes out at most once per update interval; when
the watermark passes the window's end plus the allowed lateness a ``final`` record goes out.
All records of a group share its ``finding_id``. A match for a window that is already closed is
still counted, and its record is flagged ``late``.

Delivery is at least once, so a match can arrive twice (an intake or worker restarted before it
committed). Each group keeps the highest raw offset it counted per source partition, and a match
at or below it is a redelivery: not counted again. Matches of one dest from one source partition
arrive in offset order (one producer per source partition, idempotent), so this is exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Generic, NamedTuple, TypeVar

from msgspec.structs import replace

from pipeline.emit import build_finding, finding_id
from pipeline.policy import DEST_STATE_BYTES, MAX_KEPT_CHARS, MAX_KEPT_VALUES, WindowPolicy
from pipeline.records import DEST_STATE, DestState, Finding, GroupState, Match, Origin, Status
from pipeline.rejects import RejectReason
from pipeline.rules.model import Rule
from pipeline.rules.patterns import Undecided
from pipeline.rules.steps import run_steps
from pipeline.wakeups import Wake

V = TypeVar("V")

MAX_EVIDENCE = 10
KEPT_WINDOWS = 2


class Full(ValueError):
    """Raised when a match would make the state pass a bound; carries which (the reason)."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


class UndecidedGroup(NamedTuple):
    """A group whose post-stats commands could not decide (a bounded expression ran out of
    time on its row): no finding this time, and the group is dead-lettered (regex_timeout)."""

    stats: GroupState
    detail: str


def window_start(seconds: float, window: int) -> int:
    """Return the start of the tumbling event-time window holding ``seconds``."""
    return int(seconds // window) * window


def result_row(rule: Rule, stats: GroupState) -> dict[str, str] | None:
    """Return the group's result row after the rule's post-stats commands, or None if dropped."""
    row = dict(stats.group)
    for aggregation in rule.plan.aggregations:
        function, output = aggregation.function, aggregation.output
        if function == "count":
            counted = stats.counts.get(output, 0) if aggregation.field else stats.count
            row[output] = str(counted)
        elif function in ("min", "max"):
            row[output] = str(stats.first if function == "min" else stats.last)
        else:
            seen = stats.values.get(output, ())
            row[output] = _rendered(function, seen)
    return row if run_steps(rule.plan.row_steps, row) else None


def _rendered(function: str, seen: tuple[str, ...]) -> str:
    if function == "dc":
        return str(len(seen))
    return seen[0] if function in ("earliest", "latest") and seen else "\n".join(sorted(seen))


class Aggregator:
    """Counts matches into ``state`` (dest -> group states) and says which findings are due.

    ``state`` is a plain dict offline and a table in the worker: every change is written back
    with ``state[dest] = ...`` so that a table's changelog sees it.
    """

    def __init__(
        self,
        rules: Mapping[str, Rule],
        state: MutableMapping[str, DestState],
        policy: WindowPolicy,
        max_dests: int | None = None,
    ) -> None:
        """``max_dests``: how many dests ``state`` may hold (None: no bound)."""
        self.rules, self.state, self.policy, self.max_dests = rules, state, policy, max_dests
        self.undecided: list[UndecidedGroup] = []  # since ``take_undecided`` last ran

    def take_undecided(self) -> list[UndecidedGroup]:
        """Return the groups that could not decide since the last call, and forget them."""
        undecided, self.undecided = self.undecided, []
        return undecided

    def window_of(self, rule: Rule) -> int:
        """Return the rule's window length in seconds."""
        return rule.spec.window_seconds or rule.plan.window_seconds or self.policy.window_seconds

    def closes_at(self, rule_id: str, start: float) -> float:
        """Return the watermark at which the rule's window starting at ``start`` closes."""
        window = self.window_of(self.rules[rule_id])
        return float(start + window + self.policy.allowed_lateness_seconds)

    def is_late(self, match: Match, watermark: float) -> bool:
        """Return True when the match's window had closed before it arrived."""
        window = self.window_of(self.rules[match.rule_id])
        return self.closes_at(match.rule_id, window_start(match.time, window)) <= watermark

    def group_of(self, match: Match) -> tuple[str, int]:
        """Return the finding id and window start of the group ``match`` counts into."""
        rule = self.rules[match.rule_id]
        start = window_start(match.time, self.window_of(rule))
        return finding_id(rule.id, start, match.group), start

    def is_redelivery(self, match: Match) -> bool:
        """Return True when the match's group has already counted its raw record."""
        stats = (self.state.get(match.dest) or {}).get(self.group_of(match)[0])
        return _has_counted(stats, match)

    def add(
        self, match: Match, watermark: float, now: float, partition: int = 0
    ) -> list[Finding] | None:
        """Count ``match`` (read from matches ``partition``); return the findings now due.

        A redelivery is not counted again: None. The dest's groups stay near
        ``DEST_STATE_BYTES``: past it, a match that would open a group raises ``Full``, and one
        that brings a group new values is counted without them. A match of a new dest when
        ``state`` holds ``max_dests`` raises ``Full`` too.
        """
        counted = self.count(match, watermark, now, partition)
        return None if counted is None else counted[1]

    def count(
        self, match: Match, watermark: float, now: float, partition: int = 0
    ) -> tuple[GroupState, list[Finding]] | None:
        """``add``, returning also the group ``match`` was counted into, as now kept."""
        rule = self.rules[match.rule_id]
        fid, start = self.group_of(match)
        dest_state = dict(self.state.get(match.dest) or {})
        if not dest_state and self.max_dests is not None and len(self.state) >= self.max_dests:
            detail = f"the table holds {self.max_dests} dests: no new one is opened"
            raise Full(RejectReason.TABLE_FULL, detail)
        old = dest_state.get(fid)
        if _has_counted(old, match):
            return None
        stats = _within_bound(dest_state, old, _counted(old, match, fid, start, partition, rule))
        if self.is_late(match, watermark):
            stats = replace(stats, late=True)
        findings: list[Finding] = []
        if not stats.emitted:
            stats, findings = self._emit(rule, stats, "new", now)
        elif stats.closed:  # a late match: its window's final record is already out
            stats, findings = self._emit(rule, stats, "update", now)
        dest_state[fid] = stats
        self.state[match.dest] = dest_state
        return stats, findings

    def advance(self, watermark: float, now: float, dests: Iterable[str]) -> list[Finding]:
        """For ``dests``: emit due updates and finals, and forget groups long closed.

        Groups of a rule no longer loaded (removed in a redeploy) are forgotten too.
        """
        findings: list[Finding] = []
        for dest in list(dests):
            before = self.state.get(dest) or {}
            after = {}
            for fid, old in before.items():
                if old.rule_id not in self.rules:
                    continue
                stats, due = self._advance_group(old, watermark, now)
                findings += due
                if not self._expired(stats, watermark):
                    after[fid] = stats
            if after == before:
                continue  # unchanged: no table write, no changelog record
            if after:
                self.state[dest] = after
            else:
                del self.state[dest]
        return findings

    def wake(self, state: DestState) -> Wake:
        """Return when a dest with groups ``state`` next has something due in ``advance``."""
        watermarks, clocks = [], []
        for stats in state.values():
            if stats.rule_id not in self.rules:
                watermarks.append(-math.inf)  # to be forgotten at the next tick
            elif stats.closed:
                watermarks.append(self._forgotten_at(stats))
            else:
                watermarks.append(self.closes_at(stats.rule_id, stats.window_start))
                if stats.dirty and stats.emitted:
                    clocks.append(stats.emitted_at + self.policy.update_interval_seconds)
        return Wake(min(watermarks, default=None), min(clocks, default=None))

    def _advance_group(
        self, stats: GroupState, watermark: float, now: float
    ) -> tuple[GroupState, list[Finding]]:
        rule = self.rules[stats.rule_id]
        closing = (
            not stats.closed and self.closes_at(stats.rule_id, stats.window_start) <= watermark
        )
        if closing:
            stats = replace(stats, closed=True)
        findings: list[Finding] = []
        if not stats.emitted:
            stats, findings = self._emit(rule, stats, "new", now)
        if closing and stats.emitted:
            stats, final = self._emit(rule, stats, "final", now)
            findings += final
        elif (
            stats.dirty
            and stats.emitted
            and not stats.closed
            and now - stats.emitted_at >= self.policy.update_interval_seconds
        ):
            stats, update = self._emit(rule, stats, "update", now)
            findings += update
        return stats, findings

    def _emit(
        self, rule: Rule, stats: GroupState, status: Status, now: float
    ) -> tuple[GroupState, list[Finding]]:
        try:
            row = result_row(rule, stats)
        except Undecided as error:  # tried again when the group next has something due
            self.undecided.append(UndecidedGroup(stats, f"rule {rule.id}: {error}"))
            return stats, []
        if row is None:
            return stats, []
        stats = replace(stats, emitted=True, emitted_at=now, dirty=False)
        return stats, [build_finding(rule, stats, row, status)]

    def _expired(self, stats: GroupState, watermark: float) -> bool:
        return stats.closed and self._forgotten_at(stats) <= watermark

    def _forgotten_at(self, stats: GroupState) -> float:
        """Return the watermark at which a closed group is forgotten."""
        return float(
            stats.window_start + self.window_of(self.rules[stats.rule_id]) * (1 + KEPT_WINDOWS)
        )


def _source_key(origin: Origin) -> str:
    return f"{origin.topic}:{origin.partition}"


def _has_counted(stats: GroupState | None, match: Match) -> bool:
    """Return True when ``stats`` has already counted the raw record of ``match``."""
    if stats is None or match.origin is None:
        return False
    return match.origin.offset <= stats.counted.get(_source_key(match.origin), -1)


def _merged(
    stats: GroupState, match: Match, functions: dict[str, str]
) -> dict[str, tuple[str, ...]]:
    """Return the group's kept values with the match's (``stats.values`` itself if none is
    new): every distinct value (values, dc) within ``MAX_KEPT_VALUES`` and ``MAX_KEPT_CHARS``,
    or the one at the earliest or latest time (earliest, latest)."""
    values = stats.values
    for name, value in match.values.items():
        seen, function = values.get(name, ()), functions.get(name)
        if function == "count":
            continue  # tallied, not kept
        if function in ("latest", "earliest"):
            if seen and (seen == (value,) or not _newer_end(function, match.time, stats)):
                continue
            kept: tuple[str, ...] = (value,)
        elif value in seen or not _room_for(seen, value):
            continue
        else:
            kept = (*seen, value)
        if values is stats.values:
            values = dict(values)
        values[name] = kept
    return values


def _room_for(seen: tuple[str, ...], value: str) -> bool:
    """Return whether a group keeping ``seen`` of a field can keep ``value`` too."""
    return len(seen) < MAX_KEPT_VALUES and sum(map(len, seen)) + len(value) <= MAX_KEPT_CHARS


def _within_bound(dest_state: DestState, old: GroupState | None, stats: GroupState) -> GroupState:
    """Return ``stats`` (sized, if it grew) when its dest's groups stay within
    ``DEST_STATE_BYTES`` (each counts its size when it last grew); else, for an open group,
    ``stats`` without its new values; raise ``Full`` for a new one."""
    if old is not None and stats.values is old.values:
        return stats  # it did not grow
    stats = replace(stats, size=len(DEST_STATE.encode({stats.finding_id: stats})))
    others = sum(group.size for fid, group in dest_state.items() if fid != stats.finding_id)
    if others + stats.size <= DEST_STATE_BYTES:
        return stats
    if old is None:
        detail = f"dest {stats.dest!r} has its groups at their bound, {DEST_STATE_BYTES} bytes"
        raise Full(RejectReason.DEST_FULL, detail)
    return replace(stats, values=old.values, size=old.size)  # counted, its new values not kept


def _tallied(stats: GroupState, match: Match, functions: dict[str, str]) -> dict[str, int]:
    """Return the group's ``count(field)`` tallies with the match's fields counted in."""
    present = [name for name in match.values if functions.get(name) == "count"]
    if not present:
        return stats.counts
    return {**stats.counts, **{name: stats.counts.get(name, 0) + 1 for name in present}}


def _newer_end(function: str, time: float, stats: GroupState) -> bool:
    """Return whether an event at ``time`` is the group's latest (or earliest) so far."""
    return time >= stats.last if function == "latest" else time < stats.first


def _counted(
    stats: GroupState | None, match: Match, fid: str, start: int, partition: int, rule: Rule
) -> GroupState:
    """Return the group's state with ``match`` counted in."""
    if stats is None:
        stats = GroupState(
            fid,
            match.rule_id,
            match.dest,
            start,
            match.group,
            partition,
            first=match.time,
            last=match.time,
        )
    functions = {a.output: a.function for a in rule.plan.aggregations}
    values = _merged(stats, match, functions)
    counts = _tallied(stats, match, functions)
    counted, evidence, origin = stats.counted, stats.evidence, match.origin
    if origin is not None:
        counted = {**counted, _source_key(origin): origin.offset}
        if len(evidence) < MAX_EVIDENCE:
            evidence = (*evidence, origin)
    return replace(
        stats,
        count=stats.count + 1,
        dirty=True,
        time_clamped=stats.time_clamped or match.time_clamped,
        first=min(stats.first, match.time),
        last=max(stats.last, match.time),
        values=values,
        counts=counts,
        counted=counted,
        evidence=evidence,
    )


class StagedWrites(MutableMapping[str, V], Generic[V]):
    """A view of a table whose writes wait for ``apply``.

    The worker applies them only after the findings they announce are acknowledged, so a
    table never records a finding as sent that a crash kept from being sent.
    """

    def __init__(self, table: MutableMapping[str, V]) -> None:
        self.table = table
        self.pending: dict[str, V | None] = {}  # None: delete
        self.added = 0  # the keys the held changes add to the table's (negative: remove)

    def __getitem__(self, key: str) -> V:
        if key not in self.pending:
            return self.table[key]
        value = self.pending[key]
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: V) -> None:
        self.added += key not in self
        self.pending[key] = value

    def __delitem__(self, key: str) -> None:
        self.added -= key in self
        self.pending[key] = None

    def __contains__(self, key: object) -> bool:
        if key in self.pending:
            return self.pending[key] is not None
        return key in self.table

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        """Return the keys there are with the held changes applied."""
        return len(self.table) + self.added

    def discard(self) -> None:
        """Forget the held changes (the record that made them could not be handled)."""
        self.pending.clear()
        self.added = 0

    def apply(self) -> None:
        """Write the held changes to the table."""
        for key, value in self.pending.items():
            if value is not None:
                self.table[key] = value
            elif key in self.table:
                del self.table[key]
        self.pending.clear()
        self.added = 0

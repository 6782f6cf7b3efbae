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

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from pipeline.emit import build_finding, finding_id
from pipeline.match import Origin, RuleMatch
from pipeline.rules.model import Rule
from pipeline.rules.steps import run_steps

GroupStats = dict[str, Any]
DestState = dict[str, GroupStats]
MAX_EVIDENCE = 10
KEPT_WINDOWS = 2


@dataclass(frozen=True)
class WindowPolicy:
    """Window length, allowed lateness and update throttle, in seconds."""

    window_seconds: int = 3600
    allowed_lateness_seconds: int = 300
    update_interval_seconds: float = 60.0


def window_start(seconds: float, window: int) -> int:
    """Return the start of the tumbling event-time window holding ``seconds``."""
    return int(seconds // window) * window


def result_row(rule: Rule, stats: GroupStats) -> dict[str, str] | None:
    """Return the group's result row after the rule's post-stats commands, or None if dropped."""
    row = dict(stats["group"])
    for aggregation in rule.plan.aggregations:
        function, output = aggregation.function, aggregation.output
        if function == "count":
            row[output] = str(stats["count"])
        elif function in ("min", "max"):
            row[output] = str(stats["first" if function == "min" else "last"])
        else:
            seen = stats["values"].get(output, [])
            row[output] = str(len(seen)) if function == "dc" else "\n".join(sorted(seen))
    return row if run_steps(rule.plan.row_steps, row) else None


class Aggregator:
    """Counts matches into ``state`` (dest -> group stats) and says which records are due.

    ``state`` is a plain dict offline and a Faust table in the worker: every change is written
    back with ``state[dest] = ...`` so that a table's changelog sees it.
    """

    def __init__(
        self, rules: Mapping[str, Rule], state: MutableMapping[str, DestState], policy: WindowPolicy
    ) -> None:
        self.rules, self.state, self.policy = rules, state, policy

    def window_of(self, rule: Rule) -> int:
        """Return the rule's window length in seconds."""
        return rule.spec.window_seconds or self.policy.window_seconds

    def closes_at(self, rule_id: str, start: float) -> float:
        """Return the watermark at which the rule's window starting at ``start`` closes."""
        window = self.window_of(self.rules[rule_id])
        return float(start + window + self.policy.allowed_lateness_seconds)

    def is_late(self, match: RuleMatch, watermark: float) -> bool:
        """Return True when the match's window had closed before it arrived."""
        window = self.window_of(self.rules[match.rule_id])
        return self.closes_at(match.rule_id, window_start(match.time, window)) <= watermark

    def group_of(self, match: RuleMatch) -> tuple[str, int]:
        """Return the finding id and window start of the group ``match`` counts into."""
        rule = self.rules[match.rule_id]
        start = window_start(match.time, self.window_of(rule))
        return finding_id(rule.id, start, match.group), start

    def is_redelivery(self, match: RuleMatch) -> bool:
        """Return True when the match's group has already counted its raw record."""
        if match.origin is None:
            return False
        stats = (self.state.get(match.dest) or {}).get(self.group_of(match)[0])
        counted = (stats or {}).get("counted", {}).get(_source_key(match.origin), -1)
        return bool(match.origin.offset <= counted)

    def add(
        self, match: RuleMatch, watermark: float, now: float, extra: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Count ``match``; return the records that become due (new, or a late update)."""
        if self.is_redelivery(match):
            return []
        rule = self.rules[match.rule_id]
        fid, start = self.group_of(match)
        dest_state = dict(self.state.get(match.dest) or {})
        stats = _updated(dest_state.get(fid), match, fid, start, extra or {})
        stats["late"] = stats["late"] or self.is_late(match, watermark)
        records = []
        if not stats["emitted"]:
            records = self._emit(rule, stats, "new", now)
        elif stats["closed"]:  # a late match: its window's final record is already out
            records = self._emit(rule, stats, "update", now)
        dest_state[fid] = stats
        self.state[match.dest] = dest_state
        return records

    def advance(self, watermark: float, now: float, dests: Iterable[str]) -> list[dict[str, Any]]:
        """For ``dests``: emit due updates and finals, and forget groups long closed.

        Groups of a rule no longer loaded (removed in a redeploy) are forgotten too.
        """
        records = []
        for dest in list(dests):
            before = self.state.get(dest) or {}
            after = {}
            for fid, old in before.items():
                if old["rule_id"] not in self.rules:
                    continue
                stats = dict(old)
                records += self._advance_group(stats, watermark, now)
                if not self._expired(stats, watermark):
                    after[fid] = stats
            if after == before:
                continue  # unchanged: no table write, no changelog record
            if after:
                self.state[dest] = after
            else:
                del self.state[dest]
        return records

    def _advance_group(
        self, stats: GroupStats, watermark: float, now: float
    ) -> list[dict[str, Any]]:
        rule = self.rules[stats["rule_id"]]
        closing = not stats["closed"] and (
            self.closes_at(stats["rule_id"], stats["window_start"]) <= watermark
        )
        stats["closed"] = stats["closed"] or closing
        records = [] if stats["emitted"] else self._emit(rule, stats, "new", now)
        if closing and stats["emitted"]:
            records += self._emit(rule, stats, "final", now)
        elif (
            stats["dirty"]
            and stats["emitted"]
            and not stats["closed"]
            and now - stats["emitted_at"] >= self.policy.update_interval_seconds
        ):
            records += self._emit(rule, stats, "update", now)
        return records

    def _emit(self, rule: Rule, stats: GroupStats, status: str, now: float) -> list[dict[str, Any]]:
        row = result_row(rule, stats)
        if row is None:
            return []
        stats.update(emitted=True, emitted_at=now, dirty=False)
        finding = build_finding(rule, stats, row)
        finding.update(status=status, late=stats["late"])
        return [finding]

    def _expired(self, stats: GroupStats, watermark: float) -> bool:
        window = self.window_of(self.rules[stats["rule_id"]])
        return bool(
            stats["closed"] and stats["window_start"] + window * (1 + KEPT_WINDOWS) <= watermark
        )


def _source_key(origin: Origin) -> str:
    return f"{origin.topic}:{origin.partition}"


def _updated(
    stats: GroupStats | None, match: RuleMatch, fid: str, start: int, extra: Mapping[str, Any]
) -> GroupStats:
    if stats is None:
        stats = {
            "finding_id": fid,
            "rule_id": match.rule_id,
            "dest": match.dest,
            "window_start": start,
            "group": match.group,
            "count": 0,
            "first": match.time,
            "last": match.time,
            "values": {},
            "evidence": [],
            "counted": {},
            "emitted": False,
            "emitted_at": 0.0,
            "closed": False,
            "late": False,
            "time_clamped": False,
            **extra,
        }
    else:
        stats = {
            **stats,
            "values": {k: list(v) for k, v in stats["values"].items()},
            "evidence": list(stats["evidence"]),
            "counted": dict(stats["counted"]),
        }
    stats["count"] += 1
    stats["dirty"] = True
    stats["time_clamped"] = stats.get("time_clamped", False) or match.time_clamped
    stats["first"] = min(stats["first"], match.time)
    stats["last"] = max(stats["last"], match.time)
    for name, value in match.values.items():
        seen = stats["values"].setdefault(name, [])
        if value not in seen:
            seen.append(value)
    origin = match.origin
    if origin is None:
        return stats
    stats["counted"][_source_key(origin)] = origin.offset
    if len(stats["evidence"]) < MAX_EVIDENCE:
        stats["evidence"].append(
            {
                "topic": origin.topic,
                "partition": origin.partition,
                "offset": origin.offset,
                "record_id": origin.record_id,
            }
        )
    return stats


class StagedWrites(MutableMapping[str, DestState]):
    """A view of a table whose writes wait for ``apply``.

    The worker applies them only after the findings they announce are acknowledged, so a
    table never records a finding as sent that a crash kept from being sent.
    """

    def __init__(self, table: MutableMapping[str, DestState]) -> None:
        self.table = table
        self.pending: dict[str, DestState | None] = {}  # None: delete

    def __getitem__(self, key: str) -> DestState:
        if key not in self.pending:
            return self.table[key]
        value = self.pending[key]
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: DestState) -> None:
        self.pending[key] = value

    def __delitem__(self, key: str) -> None:
        self.pending[key] = None

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def discard(self) -> None:
        """Forget the held changes (the record that made them could not be handled)."""
        self.pending.clear()

    def apply(self) -> None:
        """Write the held changes to the table."""
        for key, value in self.pending.items():
            if value is not None:
                self.table[key] = value
            elif key in self.table:
                del self.table[key]
        self.pending.clear()

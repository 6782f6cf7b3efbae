"""Aggregate matches per (rule, group, window) as SPL ``stats count min(_time) max(_time)``."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from pipeline.emit import build_finding, finding_id
from pipeline.match import RuleMatch
from pipeline.rules.model import Rule
from pipeline.rules.steps import run_steps

GroupStats = dict[str, Any]
DestState = dict[str, GroupStats]
MAX_EVIDENCE = 10
KEPT_WINDOWS = 2


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
    """Counts matches into ``state`` (dest -> group stats) and says which findings are new.

    ``state`` is a plain dict offline and a Faust table in the worker: every change is written
    back with ``state[dest] = ...`` so that a table's changelog sees it.
    """

    def __init__(
        self, rules: Mapping[str, Rule], state: MutableMapping[str, DestState], window_seconds: int
    ) -> None:
        self.rules, self.state, self.window_seconds = rules, state, window_seconds

    def window_of(self, rule: Rule) -> int:
        """Return the rule's window length in seconds."""
        return rule.spec.window_seconds or self.window_seconds

    def add(self, match: RuleMatch) -> list[dict[str, Any]]:
        """Count ``match``; return the findings that become due (at most one, on first pass)."""
        rule = self.rules[match.rule_id]
        window = self.window_of(rule)
        start = window_start(match.time, window)
        fid = finding_id(rule.id, start, match.group)
        dest_state = dict(self.state.get(match.dest) or {})
        stats = _updated(dest_state.get(fid), match, fid, start)
        findings = []
        row = result_row(rule, stats)
        if row is not None and not stats["emitted"]:
            stats["emitted"] = True
            findings.append(build_finding(rule, stats, row))
        dest_state[fid] = stats
        self.state[match.dest] = self._unexpired(dest_state)
        return findings

    def current(self, dest: str, fid: str) -> dict[str, Any] | None:
        """Return finding ``fid`` of ``dest`` as its stats stand now, or None if expired."""
        stats = (self.state.get(dest) or {}).get(fid)
        if stats is None:
            return None
        rule = self.rules[stats["rule_id"]]
        row = result_row(rule, stats)
        return None if row is None else build_finding(rule, stats, row)

    def _unexpired(self, dest_state: DestState) -> DestState:
        """Drop groups whose window ended KEPT_WINDOWS windows before the newest event."""
        newest = max(stats["last"] for stats in dest_state.values())

        def alive(stats: GroupStats) -> bool:
            rule = self.rules.get(stats["rule_id"])
            window = self.window_of(rule) if rule else self.window_seconds
            return bool(stats["window_start"] + window * (1 + KEPT_WINDOWS) > newest)

        return {fid: stats for fid, stats in dest_state.items() if alive(stats)}


def _updated(stats: GroupStats | None, match: RuleMatch, fid: str, start: int) -> GroupStats:
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
            "emitted": False,
        }
    else:
        stats = {
            **stats,
            "values": {k: list(v) for k, v in stats["values"].items()},
            "evidence": list(stats["evidence"]),
        }
    stats["count"] += 1
    stats["first"] = min(stats["first"], match.time)
    stats["last"] = max(stats["last"], match.time)
    for name, value in match.values.items():
        seen = stats["values"].setdefault(name, [])
        if value not in seen:
            seen.append(value)
    if match.origin is not None and len(stats["evidence"]) < MAX_EVIDENCE:
        origin = match.origin
        stats["evidence"].append(
            {
                "topic": origin.topic,
                "partition": origin.partition,
                "offset": origin.offset,
                "record_id": origin.record_id,
            }
        )
    return stats

"""Route an event by (source, EventCode) to the rules that can match it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from pipeline.event import Event
from pipeline.rules.model import Rule


class Router:
    """A lookup table from (source, EventCode) to rules, built once from the rules' routes."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        table: dict[tuple[str, str], list[Rule]] = defaultdict(list)
        for rule in rules:
            for route in rule.routes:
                table[route].append(rule)
        self._table = {route: tuple(found) for route, found in table.items()}

    @property
    def routes(self) -> frozenset[tuple[str, str]]:
        """Return every (source, EventCode) some rule listens to."""
        return frozenset(self._table)

    def rules_at(self, route: tuple[str, str]) -> tuple[Rule, ...]:
        """Return the rules listening to ``route`` (source, EventCode)."""
        return self._table.get(route, ())

    def rules_for(self, event: Event) -> tuple[Rule, ...]:
        """Return the rules that can match ``event`` (normalized)."""
        return self.rules_at((event.source, event.fields.get("EventCode", "")))

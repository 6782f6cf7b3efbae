"""Live suppressions: entries from a compacted topic that drop matching rule matches.

A suppression silences detection, so the topic is a control plane: every entry applied or
removed is logged with its author, reason and scope, and counted. An entry that covers every
rule (``rule_id`` ``*``) or every value of its field (a value of only ``*``) must say so with
``broad: true``, or it is refused. Entries naming a rule or a field the loaded rules do not
know are applied but flagged (logged and counted): they are probably mistakes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from pipeline import metrics
from pipeline.normalize import Normalizer
from pipeline.rules.model import Rule
from pipeline.wildcard import Wildcard

log = logging.getLogger(__name__)
ALL_RULES = "*"
# Fields every parsed event carries whatever its source.
EVENT_FIELDS = frozenset({"Computer", "EventRecordID", "SystemTime", "EventCode", "dest"})


class Scope(StrEnum):
    """How much an entry silences."""

    VALUES = "values"  # one rule, the events whose field matches the value
    WHOLE_RULE = "whole_rule"  # one rule, every event that has the field
    ALL_RULES = "all_rules"  # every rule


_SILENCES = {Scope.WHOLE_RULE: "every match of its rule", Scope.ALL_RULES: "every rule"}


class Suppression(BaseModel):
    """One suppression entry: which rule (``*``: all), which field value, until when, why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule_id: str
    field: str
    value: str
    expires_at: datetime | None = None
    reason: str
    author: str
    broad: bool = False  # required for an entry of every rule or every value

    @model_validator(mode="after")
    def _broad_is_explicit(self) -> Suppression:
        if self.scope is not Scope.VALUES and not self.broad:
            raise ValueError(
                f"this entry silences {_SILENCES[self.scope]}: set broad to true"
                " (wmiwatch suppress add --broad) if that is meant"
            )
        return self

    @property
    def scope(self) -> Scope:
        """Return how much the entry silences."""
        if self.rule_id == ALL_RULES:
            return Scope.ALL_RULES
        return Scope.WHOLE_RULE if not self.value.strip("*") else Scope.VALUES

    def expired(self, now: float) -> bool:
        """Return True once ``expires_at`` has passed."""
        return self.expires_at is not None and self.expires_at.timestamp() <= now

    def problems(self, known: Mapping[str, frozenset[str]]) -> list[str]:
        """Return why the entry looks like a mistake, given each rule's known fields."""
        if self.rule_id != ALL_RULES and self.rule_id not in known:
            return [f"unknown rule id {self.rule_id!r}"]
        fields = known.get(self.rule_id) or frozenset().union(*known.values())
        return [] if self.field in fields else [f"no rule's events carry field {self.field!r}"]


def known_fields(rules: Iterable[Rule], normalizer: Normalizer) -> dict[str, frozenset[str]]:
    """Return, per rule id, the fields a suppression of that rule can test."""
    found = {}
    for rule in rules:
        names = set(EVENT_FIELDS)
        for source, code in rule.routes:
            names |= normalizer.by_source(source).field_names(code)
        for by in rule.plan.group_by:
            names |= {by.row_name, by.event_field}
        found[rule.id] = frozenset(names)
    return found


class Suppressions:
    """The current entries, keyed as on the topic (a tombstone removes its key)."""

    def __init__(self, known: Mapping[str, frozenset[str]] | None = None) -> None:
        self.entries: dict[str, tuple[Suppression, Wildcard]] = {}
        self.known = known

    def apply(self, key: str, value: bytes | None) -> None:
        """Apply one record of the suppressions topic; a refused entry is logged and counted."""
        if value is None:
            removed = self.entries.pop(key, None)
            if removed is not None:
                log.warning("suppression %r removed (was by %s)", key, removed[0].author)
                metrics.suppressions_total.labels("removed", removed[0].scope).inc()
            return
        try:
            entry = Suppression.model_validate(orjson.loads(value))
        except (orjson.JSONDecodeError, ValidationError) as error:
            log.error("suppression %r refused: %s", key, error)
            metrics.suppressions_total.labels("refused", "").inc()
            return
        self.entries[key] = (entry, Wildcard.compile(entry.value))
        log.warning(
            "suppression %r applied: scope=%s rule=%s %s=%r expires=%s author=%r reason=%r",
            key,
            entry.scope,
            entry.rule_id,
            entry.field,
            entry.value,
            entry.expires_at.isoformat() if entry.expires_at else "never",
            entry.author,
            entry.reason,
        )
        metrics.suppressions_total.labels("applied", entry.scope).inc()
        for problem in entry.problems(self.known) if self.known is not None else []:
            log.error("suppression %r looks wrong: %s", key, problem)
            metrics.suppressions_total.labels("flagged", entry.scope).inc()

    def match(self, rule_id: str, fields: Mapping[str, str], now: float) -> Suppression | None:
        """Return the first live entry that suppresses this rule's match on ``fields``."""
        for entry, pattern in self.entries.values():
            if entry.rule_id not in (ALL_RULES, rule_id) or entry.expired(now):
                continue
            value = fields.get(entry.field)
            if value is not None and pattern.matches(value):
                return entry
        return None

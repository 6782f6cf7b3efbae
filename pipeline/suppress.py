"""Live suppressions: entries from a compacted topic that drop matching rule matches."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.wildcard import Wildcard

log = logging.getLogger(__name__)


class Suppression(BaseModel):
    """One suppression entry: which rule (``*``: all), which field value, until when, why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule_id: str
    field: str
    value: str
    expires_at: datetime | None = None
    reason: str
    author: str

    def expired(self, now: float) -> bool:
        """Return True once ``expires_at`` has passed."""
        return self.expires_at is not None and self.expires_at.timestamp() <= now


class Suppressions:
    """The current entries, keyed as on the topic (a tombstone removes its key)."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[Suppression, Wildcard]] = {}

    def apply(self, key: str, value: bytes | None) -> None:
        """Apply one record of the suppressions topic; a malformed entry is logged and skipped."""
        if value is None:
            self.entries.pop(key, None)
            return
        try:
            entry = Suppression.model_validate(orjson.loads(value))
        except (orjson.JSONDecodeError, ValidationError) as error:
            log.warning("ignoring suppression %r: %s", key, error)
            return
        self.entries[key] = (entry, Wildcard.compile(entry.value))

    def match(self, rule_id: str, fields: Mapping[str, str], now: float) -> Suppression | None:
        """Return the first live entry that suppresses this rule's match on ``fields``."""
        for entry, pattern in self.entries.values():
            if entry.rule_id not in ("*", rule_id) or entry.expired(now):
                continue
            value = fields.get(entry.field)
            if value is not None and pattern.matches(value):
                return entry
        return None

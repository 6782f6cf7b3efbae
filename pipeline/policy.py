"""The policies the pipeline runs by: windows, risk, event-time trust and size limits.

Each default is written here once; ``Settings`` reads its defaults from these classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MAX_EVENT_BYTES = 1_048_576  # a raw record larger than this is dead-lettered (too_large)
DEAD_LETTER_PAYLOAD_BYTES = 65_536  # a dead letter holds at most this much of its record
# One search or replace of an expression only a backtracking engine runs (lookaround): past
# this, the value decides nothing and the record is dead-lettered (regex_timeout). All such
# calls of a process together may take this share of its time, in bursts of up to a second:
# a flood of crafted values costs the other rules a tenth of their speed at most.
PATTERN_SECONDS = 0.05
PATTERN_SHARE = 0.1
PATTERN_BURST_SECONDS = 1.0

# What an endpoint's events can make the aggregation keep and publish. Every value, and so every
# record and table row, stays well within what a broker accepts (1 MiB by default): a record
# the broker refuses would be retried for ever, and the partition holding it stop.
MAX_VALUE_CHARS = 4_096  # a longer field value is shortened in matches (and all after them)
MAX_MATCH_CHARS = 65_536  # an event whose match would hold more is dead-lettered (too_large)
MAX_KEPT_VALUES = 100  # the distinct values a group keeps per values()/dc() field ...
MAX_KEPT_CHARS = 16_384  # ... and their characters in all
# A dest's groups, encoded: past this, no group opens or keeps a value. Written compressed
# (tenfold, for real events) as one record of the state topic, which accepts twice this.
DEST_STATE_BYTES = 8_388_608
STATE_RECORD_BYTES = 2 * DEST_STATE_BYTES
MAX_CONTRIBUTIONS = 256  # per risk object: past this, its oldest contribution is forgotten
MAX_OPEN_DESTS = 500_000  # per worker (~1.8 KB each): past this, a match of a new dest is refused


@dataclass(frozen=True)
class WindowPolicy:
    """Window length, allowed lateness and update throttle, in seconds."""

    window_seconds: int = 3600
    allowed_lateness_seconds: int = 300
    update_interval_seconds: float = 60.0


@dataclass(frozen=True)
class RiskPolicy:
    """Thresholds and sliding windows of the incident rules."""

    score_threshold: int = 100
    score_window_seconds: int = 86_400
    tactics_threshold: int = 3
    tactics_window_seconds: int = 604_800


class Clamp(StrEnum):
    """Which bound an event time broke."""

    FUTURE = "future"
    PAST = "past"


@dataclass(frozen=True)
class TimePolicy:
    """How far an event's own time is believed, in seconds.

    An event's own timestamp comes from the host that logged it, so whoever owns the host
    chooses it; it is trusted only within bounds set by trusted clocks. It is used as is when
    it lies between the oldest time allowed and the reference time plus the allowed skew; the
    reference is the record's Kafka timestamp when that is itself plausible, else the worker's
    wall clock. Outside those bounds the event takes the reference time and is flagged (as
    Splunk's MAX_DAYS_HENCE and MAX_DAYS_AGO replace a timestamp they do not believe): it is
    still matched, but it can neither close windows early nor open them in the distant past.
    """

    max_future_seconds: float = 300.0
    max_age_seconds: float | None = None  # None: any time since 1970 (replays of old logs)

    def oldest(self, now: float) -> float:
        """Return the oldest event time believed at wall-clock time ``now``."""
        return 0.0 if self.max_age_seconds is None else max(0.0, now - self.max_age_seconds)

    def reference(self, received: float | None, now: float) -> float:
        """Return the trusted time of arrival: the Kafka timestamp if plausible, else ``now``."""
        if received is None or not self.oldest(now) <= received:
            return now
        return min(received, now)

    def trusted(
        self, event_time: float, received: float | None, now: float
    ) -> tuple[float, Clamp | None]:
        """Return the time to use for an event and, when it was replaced, the bound it broke."""
        reference = self.reference(received, now)
        if self.oldest(now) <= event_time <= reference + self.max_future_seconds:
            return event_time, None
        return reference, Clamp.FUTURE if event_time > reference else Clamp.PAST

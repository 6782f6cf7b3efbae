"""Raw record in, rule matches or a rejection out: parse, normalize, route, match."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pipeline.event import Event
from pipeline.match import match_event
from pipeline.normalize import Normalizer, default_normalizer
from pipeline.parse import parse_event
from pipeline.policy import MAX_EVENT_BYTES, TimePolicy
from pipeline.prefilter import Prefilter, Verdict
from pipeline.records import Match, Origin
from pipeline.rejects import Rejected, RejectReason
from pipeline.route import Router
from pipeline.rules.model import Rule
from pipeline.rules.patterns import Undecided

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    """What became of one raw record."""

    event: Event | None = None
    matches: list[Match] = field(default_factory=list)
    rejected: Rejected | None = None  # with ``event`` set: some rules could not decide
    routed: bool = False
    source: str = ""
    event_code: str = ""
    screened: bool = False  # skipped unparsed: no rule can match it


class Detector:
    """The pure detection core shared by the stream worker and the offline ``detect``."""

    def __init__(
        self,
        rules: tuple[Rule, ...],
        normalizer: Normalizer | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
        time_policy: TimePolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = {rule.id: rule for rule in rules}
        self.normalizer = normalizer or default_normalizer()
        self.router = Router(rules)
        self.prefilter = Prefilter(self.normalizer, self.router)
        self.max_event_bytes = max_event_bytes
        self.time_policy = time_policy or TimePolicy()
        self.clock = clock

    def event_time(self, payload: bytes, received: float | None = None) -> float | None:
        """Return the trusted event time of a raw record, or None when it cannot be read.

        ``received`` is the record's Kafka timestamp (epoch seconds), if it has one.
        """
        try:
            moment = parse_event(payload, max_bytes=self.max_event_bytes).time
        except Rejected:
            return None
        return self.time_policy.trusted(moment, received, self.clock())[0]

    def screen(self, payload: bytes) -> Verdict | Rejected | None:
        """Return the prefilter's verdict when no rule can match ``payload``, unparsed.

        A record of a channel no source mapping knows comes back as its rejection.

        A record too large is never screened out: parsing it rejects it. Nor is one the screen
        fails on: parsing it finds out what is wrong.
        """
        if len(payload) > self.max_event_bytes:
            return None
        try:
            return self.prefilter.skip(payload)
        except Exception:
            log.exception("screen failed; the record is parsed instead")
            return None

    def process(
        self, payload: bytes, origin: Origin | None = None, received: float | None = None
    ) -> Outcome:
        """Screen one raw record, and detect in it if it passes; bad input becomes a rejection."""
        verdict = self.screen(payload)
        if isinstance(verdict, Rejected):
            return Outcome(rejected=verdict)
        if verdict is not None:
            return Outcome(source=verdict.source, event_code=verdict.event_code, screened=True)
        return self.detect(payload, origin, received)

    def detect(
        self, payload: bytes, origin: Origin | None = None, received: float | None = None
    ) -> Outcome:
        """Parse, normalize, route and match one raw record (one ``screen`` let through).

        An event time outside the trusted bounds is replaced by the arrival time and flagged.
        """
        try:
            return self._detect(payload, origin, received)
        except Rejected as rejected:
            return Outcome(rejected=rejected)
        except Exception as error:  # a defect one record triggers must not stop the stream
            log.exception("record could not be processed")
            return Outcome(rejected=Rejected(RejectReason.UNPROCESSABLE, repr(error)))

    def _detect(self, payload: bytes, origin: Origin | None, received: float | None) -> Outcome:
        event = self.normalizer.normalize(parse_event(payload, max_bytes=self.max_event_bytes))
        event.time, event.clamped = self.time_policy.trusted(event.time, received, self.clock())
        route = (event.source, event.fields.get("EventCode", ""))
        routed = self.router.rules_at(route)
        rules = self.prefilter.plausible(route, payload)
        if origin is not None:
            origin = Origin(
                origin.topic, origin.partition, origin.offset, event.fields.get("EventRecordID", "")
            )
        arrived = self.clock() if received is None else received
        matches, undecided = _matched(rules, event, origin, arrived)
        return Outcome(
            event=event,
            matches=matches,
            rejected=Rejected(RejectReason.REGEX_TIMEOUT, undecided) if undecided else None,
            routed=bool(routed),
            source=event.source,
            event_code=event.fields.get("EventCode", ""),
        )


def _matched(
    rules: Iterable[Rule], event: Event, origin: Origin | None, arrived: float
) -> tuple[list[Match], str]:
    """Return the matches of ``rules`` in ``event``, and which rules could not decide (their
    bounded expressions ran out of time on it; the others decide as always)."""
    matches, undecided = [], []
    for rule in rules:
        try:
            match = match_event(rule, event, origin, arrived)
        except Undecided as error:
            undecided.append(f"rule {rule.id}: {error}")
            continue
        if match is not None:
            matches.append(match)
    return matches, "; ".join(undecided)

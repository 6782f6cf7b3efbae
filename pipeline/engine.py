"""Raw record in, rule matches or a rejection out: parse, normalize, route, match."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.event import Event
from pipeline.match import Origin, RuleMatch, match_event
from pipeline.normalize import Normalizer, default_normalizer
from pipeline.parse import parse_event
from pipeline.prefilter import Prefilter, Verdict
from pipeline.rejects import Rejected
from pipeline.route import Router
from pipeline.rules.model import Rule


@dataclass(slots=True)
class Outcome:
    """What became of one raw record."""

    event: Event | None = None
    matches: list[RuleMatch] = field(default_factory=list)
    rejected: Rejected | None = None
    routed: bool = False
    source: str = ""
    event_code: str = ""


class Detector:
    """The pure detection core shared by the stream worker and the offline ``detect``."""

    def __init__(
        self,
        rules: tuple[Rule, ...],
        normalizer: Normalizer | None = None,
        max_event_bytes: int = 1_048_576,
    ) -> None:
        self.rules = {rule.id: rule for rule in rules}
        self.normalizer = normalizer or default_normalizer()
        self.router = Router(rules)
        self.prefilter = Prefilter(self.normalizer, self.router)
        self.max_event_bytes = max_event_bytes

    def event_time(self, payload: bytes) -> float | None:
        """Return the event time of a raw record, or None when it cannot be read."""
        try:
            return parse_event(payload, max_bytes=self.max_event_bytes).time
        except Rejected:
            return None

    def screen(self, payload: bytes) -> Verdict | None:
        """Return the prefilter's verdict when no rule can match ``payload``, unparsed.

        A record too large is never screened out: parsing it rejects it.
        """
        return self.prefilter.skip(payload) if len(payload) <= self.max_event_bytes else None

    def process(self, payload: bytes, origin: Origin | None = None) -> Outcome:
        """Run one raw record through the pipeline; bad input becomes a rejection."""
        verdict = self.screen(payload)
        if verdict is not None:
            return Outcome(source=verdict.source, event_code=verdict.event_code)
        return self.detect(payload, origin)

    def detect(self, payload: bytes, origin: Origin | None = None) -> Outcome:
        """Parse, normalize, route and match one raw record (one ``screen`` let through)."""
        try:
            event = self.normalizer.normalize(parse_event(payload, max_bytes=self.max_event_bytes))
        except Rejected as rejected:
            return Outcome(rejected=rejected)
        rules = self.router.rules_for(event)
        if origin is not None:
            origin = Origin(
                origin.topic, origin.partition, origin.offset, event.fields.get("EventRecordID", "")
            )
        matches = [m for rule in rules if (m := match_event(rule, event, origin)) is not None]
        return Outcome(
            event=event,
            matches=matches,
            routed=bool(rules),
            source=event.source,
            event_code=event.fields.get("EventCode", ""),
        )

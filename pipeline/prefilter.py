"""Decide from the raw bytes, before any parse, that an event can reach no rule."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.normalize import Normalizer

# In XML, '<' inside text is escaped, so the first <Channel>/<EventID> is the System one. In
# JSON a key is matched only where it is not inside a string (no backslash before its quote).
_XML_CHANNEL = re.compile(rb"<Channel>([^<]{1,128})</Channel>")
_XML_EVENT_ID = re.compile(rb"<EventID(?:\s[^>]*)?>(\d{1,6})</EventID>")


def _json_key(name: str, value: bytes) -> re.Pattern[bytes]:
    return re.compile(rb'(?<!\\)"' + name.encode() + rb'"\s*:\s*' + value)


_JSON_STRING = rb'"([^"\\]{1,128})"'
_JSON_CHANNEL = _json_key("Channel", _JSON_STRING)
_JSON_EVENT_ID = _json_key("EventID", rb'"?(\d{1,6})\b')
_JSON_SIMPLE_NAME = _json_key("event_simpleName", _JSON_STRING)


@dataclass(frozen=True, slots=True)
class Verdict:
    """An event the rules cannot match: its source and event code, read from the bytes."""

    source: str
    event_code: str


class Prefilter:
    """Skips events whose (source, EventCode) no rule listens to; anything unclear is parsed."""

    def __init__(self, normalizer: Normalizer, routes: Iterable[tuple[str, str]]) -> None:
        self.routes = frozenset(routes)
        self.by_channel = {
            m.identify.equals.casefold(): m.source
            for m in normalizer.mappings
            if m.identify.field == "Channel" and m.identify.equals
        }
        self.simple_name_source = next(
            (m.source for m in normalizer.mappings if m.identify.field == "event_simpleName"), None
        )

    def unroutable(self, payload: bytes) -> Verdict | None:
        """Return the verdict when ``payload`` certainly reaches no rule, else None."""
        head = payload.lstrip()[:1]
        if head == b"<":
            source, code = self._pair(_XML_CHANNEL.search(payload), _XML_EVENT_ID.search(payload))
        elif head == b"{":
            simple = _JSON_SIMPLE_NAME.search(payload)
            if simple is not None and self.simple_name_source is not None:
                source, code = self.simple_name_source, simple.group(1).decode()
            else:
                source, code = self._pair(
                    _JSON_CHANNEL.search(payload), _JSON_EVENT_ID.search(payload)
                )
        else:
            return None
        if source is None or code is None or (source, code) in self.routes:
            return None
        return Verdict(source, code)

    def _pair(
        self, channel: re.Match[bytes] | None, event_id: re.Match[bytes] | None
    ) -> tuple[str | None, str | None]:
        if channel is None or event_id is None:
            return None, None
        source = self.by_channel.get(channel.group(1).decode("utf-8", "replace").casefold())
        return source, event_id.group(1).decode()

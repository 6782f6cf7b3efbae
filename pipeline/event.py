"""The in-memory shape of one Windows event as it moves through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.policy import Clamp

_RAW_KEY = "\x00raw"


@dataclass(slots=True)
class Event:
    """A parsed event: flat string fields, event time (epoch seconds) and the raw text."""

    fields: dict[str, str]
    time: float
    raw: str
    source: str = ""
    datamodel: str | None = None
    clamped: Clamp | None = None  # the bound its own time broke; ``time`` is then its arrival
    _folded: dict[str, str] = field(default_factory=dict, repr=False)

    def folded(self, name: str) -> str | None:
        """Return the casefolded value of field ``name`` (cached), or None when absent."""
        cached = self._folded.get(name)
        if cached is not None:
            return cached
        value = self.fields.get(name)
        if value is None:
            return None
        folded = self._folded[name] = value.casefold()
        return folded

    def folded_raw(self) -> str:
        """Return the casefolded raw text (cached) for keyword terms."""
        cached = self._folded.get(_RAW_KEY)
        if cached is None:
            cached = self._folded[_RAW_KEY] = self.raw.casefold()
        return cached

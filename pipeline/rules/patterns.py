"""Rule authors' regular expressions, run in time linear in the value searched (RE2).

Event fields are the endpoint's to choose, and a backtracking engine can take minutes on one
crafted value: ``Windows Unsigned DLL Side-Loading In Same Process Path``'s ``rex`` took 524 s
in Python's ``re`` on a 1 MB ``Image``, and a stalled intake reads the same record again after
its restart. RE2 never backtracks. An expression only a backtracking engine runs (lookaround,
backreferences) is refused at start-up, naming the command.

RE2's syntax is PCRE's for everything else (``(?<name>…)`` groups included), and like Splunk's
PCRE without Unicode properties its ``\\w``, ``\\d``, ``\\s`` and ``\\b`` are ASCII only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, cast

import re2

from pipeline.rules.errors import RuleError

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused expression is reported once, as a RuleError
REFUSED = "expressions run on RE2, which has no lookaround or backreferences"
BACKTRACKING_ONLY = ("invalid perl operator", "invalid escape sequence")  # RE2's words for those


class Found(Protocol):
    """A match of a ``Pattern``."""

    def group(self, index: int) -> str | None:
        """Return group ``index`` (0: the whole match), or None when it took no part."""
        ...

    def groupdict(self) -> dict[str, str | None]:
        """Return the named groups."""
        ...


class Pattern(Protocol):
    """A compiled expression: the part of ``re.Pattern`` the rules use."""

    @property
    def groups(self) -> int:
        """Return how many groups the expression has."""
        ...

    @property
    def groupindex(self) -> Mapping[str, int]:
        """Return the named groups' numbers."""
        ...

    def search(self, text: str) -> Found | None:
        """Return the leftmost match in ``text``, or None."""
        ...

    def sub(self, replacement: Callable[[Found], str], text: str) -> str:
        """Return ``text`` with each match replaced by ``replacement`` of it."""
        ...


def pcre(source: str, command: str) -> Pattern:
    """Compile a rule's PCRE-style expression with RE2; raise RuleError if RE2 cannot run it."""
    try:
        return cast(Pattern, re2.compile(source, _OPTIONS))
    except re2.error as error:
        reason = error.args[0] if error.args else error
        detail = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        note = f" ({REFUSED})" if detail.startswith(BACKTRACKING_ONLY) else ""
        raise RuleError(f"{command}: bad regular expression: {detail}{note}") from None

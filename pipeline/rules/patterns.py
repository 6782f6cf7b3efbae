"""Rule authors' regular expressions: in time linear in the value searched (RE2) where they can
be, else on a backtracking engine bounded in time per call.

Event fields are the endpoint's to choose, and a backtracking engine can take minutes on one
crafted value: ``Windows Unsigned DLL Side-Loading In Same Process Path``'s ``rex`` took 524 s
in Python's ``re`` on a 1 MB ``Image``, and a stalled intake reads the same record again after
its restart. RE2 never backtracks. An expression only a backtracking engine runs (lookaround,
backreferences) runs on ``regex`` instead, each search or replace stopped after
``PATTERN_SECONDS``: it then raises ``Undecided``, which decides nothing for that rule and that
record, and its caller dead-letters the record (reason ``regex_timeout``) and goes on. Such
calls share a ``TimeBudget`` per process; while a flood of crafted values has it spent, they
raise ``Undecided`` without running.

Both engines take PCRE's syntax (``(?<name>…)`` groups included), and like Splunk's PCRE
without Unicode properties their ``\\w``, ``\\d``, ``\\s`` and ``\\b`` are ASCII only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, cast

import re2
import regex

from pipeline.policy import PATTERN_BURST_SECONDS, PATTERN_SECONDS, PATTERN_SHARE
from pipeline.rules.errors import RuleError

T = TypeVar("T")
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused expression is reported once, as a RuleError
BACKTRACKING_ONLY = ("invalid perl operator", "invalid escape sequence")  # RE2's words for those


class Undecided(Exception):
    """Raised when a bounded expression runs past its time bound on a value."""


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


@dataclass(slots=True, eq=False)  # one per process, shared: compared by identity
class TimeBudget:
    """The time bounded expressions may take: ``share`` of the time passing, saved up to
    ``burst`` seconds."""

    share: float = PATTERN_SHARE
    burst: float = PATTERN_BURST_SECONDS
    left: float = field(init=False)  # starts full
    at: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.left = self.burst

    def allows(self) -> bool:
        """Add the time passed since the last call's share; say whether any is left."""
        now = time.monotonic()
        self.left = min(self.burst, self.left + (now - self.at) * self.share)
        self.at = now
        return self.left > 0

    def spend(self, seconds: float) -> None:
        """Take ``seconds`` off what is left."""
        self.left -= seconds


PROCESS_BUDGET = TimeBudget()  # shared by the bounded expressions of all rules of a process


@dataclass(frozen=True, slots=True)
class Bounded:
    """An expression only a backtracking engine runs, each call stopped after ``seconds``
    and all calls within ``budget``."""

    compiled: regex.Pattern[str]
    command: str
    seconds: float = PATTERN_SECONDS
    budget: TimeBudget = PROCESS_BUDGET

    @property
    def groups(self) -> int:
        """Return how many groups the expression has."""
        return self.compiled.groups

    @property
    def groupindex(self) -> Mapping[str, int]:
        """Return the named groups' numbers."""
        return self.compiled.groupindex

    def search(self, text: str) -> Found | None:
        """Return the leftmost match in ``text``, or None; raise Undecided past the bounds."""
        return self._bounded(lambda: self.compiled.search(text, timeout=self.seconds), text)

    def sub(self, replacement: Callable[[Found], str], text: str) -> str:
        """Return ``text`` with each match replaced; raise Undecided past the bounds."""
        return self._bounded(
            lambda: self.compiled.sub(replacement, text, timeout=self.seconds), text
        )

    def _bounded(self, call: Callable[[], T], text: str) -> T:
        """Return what ``call`` returns, run within the budget and its own bound."""
        if not self.budget.allows():
            raise Undecided(f"{self._name()} not run: the process's time for these is spent")
        started = time.monotonic()
        try:
            return call()
        except TimeoutError:
            detail = f"ran past {self.seconds} s on a value of {len(text)} characters"
            raise Undecided(f"{self._name()} {detail}") from None
        finally:
            self.budget.spend(time.monotonic() - started)

    def _name(self) -> str:
        return f"{self.command}: {self.compiled.pattern!r}"


def pcre(source: str, command: str) -> Pattern:
    """Compile a rule's PCRE-style expression: with RE2, else (lookaround, backreferences)
    bounded in time; raise RuleError if neither engine can run it."""
    try:
        return cast(Pattern, re2.compile(source, _OPTIONS))
    except re2.error as error:
        reason = error.args[0] if error.args else error
        detail = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
    if not detail.startswith(BACKTRACKING_ONLY):
        raise RuleError(f"{command}: bad regular expression: {detail}")
    try:
        return Bounded(regex.compile(source, regex.ASCII), command)
    except regex.error as error:
        raise RuleError(f"{command}: bad regular expression: {error}") from None

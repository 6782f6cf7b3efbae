"""Errors that carry where in a rule file they come from."""

from __future__ import annotations

from pydantic import ValidationError


class RuleError(Exception):
    """A problem in one rule file, with its location (file, and stage when known)."""

    def __init__(self, message: str, *, path: str = "", stage: str = "") -> None:
        self.message, self.path, self.stage = message, path, stage
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.path, self.stage) if part)
        return f"{where}: {self.message}" if where else self.message

    def at(self, *, path: str = "", stage: str = "") -> RuleError:
        """Return a copy located in ``path`` and/or ``stage`` (keeping what is set)."""
        return RuleError(self.message, path=self.path or path, stage=self.stage or stage)


class RuleErrors(Exception):
    """Every problem found while loading a rules directory."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = errors
        lines = "\n".join(f"  - {error}" for error in errors)
        super().__init__(f"{len(errors)} problem(s) in the rules:\n{lines}")


def describe(error: Exception) -> str:
    """Return a one-line account of why a rules file or search could not be read."""
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in error.errors()
        )
    return (str(error).strip().splitlines() or [type(error).__name__])[0]

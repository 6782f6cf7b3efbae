"""Case-insensitive ``*`` wildcard matching in linear time, without regular expressions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Wildcard:
    """A compiled SPL value pattern: literal pieces separated by ``*``."""

    pieces: tuple[str, ...]

    @classmethod
    def compile(cls, pattern: str) -> Wildcard:
        """Compile ``pattern`` (``*`` matches any run of characters, case-insensitively)."""
        return cls(tuple(pattern.casefold().split("*")))

    @property
    def is_literal(self) -> bool:
        """Return True when the pattern has no ``*``."""
        return len(self.pieces) == 1

    def matches(self, value: str) -> bool:
        """Return True when the whole of ``value`` matches the pattern."""
        return self.matches_folded(value.casefold())

    def matches_folded(self, folded: str) -> bool:
        """Match a value that is already casefolded (hot path)."""
        pieces = self.pieces
        if len(pieces) == 1:
            return folded == pieces[0]
        head, *middle, tail = pieces
        if len(folded) < len(head) + len(tail):
            return False
        if not folded.startswith(head) or not folded.endswith(tail):
            return False
        position, end = len(head), len(folded) - len(tail)
        for piece in middle:
            found = folded.find(piece, position, end)
            if found < 0:
                return False
            position = found + len(piece)
        return True

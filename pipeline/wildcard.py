"""Case-insensitive ``*`` wildcard matching in linear time, without regular expressions."""

from __future__ import annotations

from dataclasses import dataclass

# Splunk's default segmenters: major breakers, then minor ones. A bare search term matches
# whole tokens, which these characters delimit.
BREAKERS = frozenset(" \t\n\r\v\f[]<>(){}|!;,'\"*&?+" + "/:=@.-$#%\\_")


def _starts_token(text: str, at: int) -> bool:
    return at == 0 or text[at - 1] in BREAKERS


def _ends_token(text: str, at: int) -> bool:
    return at == len(text) or text[at] in BREAKERS


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

    def occurs_as_token(self, folded: str) -> bool:
        """Return True when the pattern matches a run of whole tokens of ``folded`` text.

        A leading or trailing ``*`` lifts the token boundary on its side, as a Splunk search
        term's does; the text is already casefolded.
        """
        head, *rest = self.pieces
        if not rest:
            return self._is_token(folded, head)
        position = self._first_at_token_start(folded, head) if head else 0
        if position < 0:
            return False
        position += len(head)
        *middle, tail = rest
        for piece in middle:
            found = folded.find(piece, position)
            if found < 0:
                return False
            position = found + len(piece)
        return not tail or self._ends_at_token_end(folded, tail, position)

    @staticmethod
    def _is_token(folded: str, piece: str) -> bool:
        found = folded.find(piece)
        while found >= 0:
            if _starts_token(folded, found) and _ends_token(folded, found + len(piece)):
                return True
            found = folded.find(piece, found + 1)
        return False

    @staticmethod
    def _first_at_token_start(folded: str, piece: str) -> int:
        found = folded.find(piece)
        while found >= 0 and not _starts_token(folded, found):
            found = folded.find(piece, found + 1)
        return found

    @staticmethod
    def _ends_at_token_end(folded: str, piece: str, start: int) -> bool:
        found = folded.find(piece, start)
        while found >= 0 and not _ends_token(folded, found + len(piece)):
            found = folded.find(piece, found + 1)
        return found >= 0

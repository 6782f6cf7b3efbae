"""The eval functions wmiwatch evaluates, as two registries: conditions and values."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar
from urllib.parse import unquote

from pipeline.rules.errors import RuleError
from pipeline.rules.evaluation import (
    MULTIVALUE_SEPARATOR,
    Condition,
    Fields,
    Operand,
    number_text,
    values_of,
)
from pipeline.rules.expr import number_or_none
from pipeline.rules.patterns import Found, pcre

T = TypeVar("T")
_BACKREFERENCE = re.compile(r"\\(\d)")


class Argument(Protocol):
    """One argument of a call, compiled as its function needs it."""

    def value(self) -> Operand:
        """Compile the argument as a value."""
        ...

    def condition(self) -> Condition:
        """Compile the argument as a condition."""
        ...

    def constant(self) -> str | None:
        """Return the text of a quoted string, or None for any other argument."""
        ...


Build = Callable[[Sequence[Argument]], T]


def _quoted(function: str, argument: Argument) -> str:
    text = argument.constant()
    if text is None:
        raise RuleError(f"{function}() needs a quoted string as that argument")
    return text


def _map(operand: Operand, function: Callable[[str], T]) -> Callable[[Fields], T | None]:
    """Return ``function`` of the operand's value (null stays null): a value or a test."""

    def mapped(fields: Fields) -> T | None:
        value = operand(fields)
        return None if value is None else function(value)

    return mapped


def _text(function: Callable[[str], str | None]) -> Build[Operand]:
    return lambda args: _map(args[0].value(), function)


def _if(args: Sequence[Argument]) -> Operand:
    condition, then, otherwise = args[0].condition(), args[1].value(), args[2].value()
    return lambda fields: then(fields) if condition(fields) is True else otherwise(fields)


def _case(args: Sequence[Argument]) -> Operand:
    if len(args) % 2:
        raise RuleError("case() takes pairs of a condition and a value")
    pairs = [(args[i].condition(), args[i + 1].value()) for i in range(0, len(args), 2)]

    def first_true(fields: Fields) -> str | None:
        return next((value(fields) for test, value in pairs if test(fields) is True), None)

    return first_true


def _coalesce(args: Sequence[Argument]) -> Operand:
    operands = [argument.value() for argument in args]

    def first_value(fields: Fields) -> str | None:
        return next((v for operand in operands if (v := operand(fields)) is not None), None)

    return first_value


def _substitution(template: str) -> Callable[[Found], str]:
    r"""Return a replacement function for ``replace()``: ``\N`` is group N, the rest literal."""
    parts = _BACKREFERENCE.split(template)  # text, group, text, group, …, text
    return lambda found: "".join(
        found.group(int(part)) or "" if odd else part for odd, part in _alternate(parts)
    )


def _alternate(parts: list[str]) -> list[tuple[bool, str]]:
    return [(index % 2 == 1, part) for index, part in enumerate(parts)]


def _replace(args: Sequence[Argument]) -> Operand:
    pattern = pcre(_quoted("replace", args[1]), "replace()")
    template = _quoted("replace", args[2])
    if any(int(n) > pattern.groups for n in _BACKREFERENCE.findall(template)):
        raise RuleError("replace(): the replacement names a group the expression lacks")
    substitute = _substitution(template)
    return _map(args[0].value(), lambda value: pattern.sub(substitute, value))


def _integer(operand: Operand, fields: Fields) -> int | None:
    number = number_or_none(operand(fields))
    return int(number) if number is not None and number.is_integer() else None


def _substr(args: Sequence[Argument]) -> Operand:
    """SQLite's substr: 1-based; a negative start counts from the end."""
    text, start = args[0].value(), args[1].value()
    length = args[2].value() if len(args) > 2 else None

    def cut(fields: Fields) -> str | None:
        value, first = text(fields), _integer(start, fields)
        count = None if length is None else _integer(length, fields)
        if value is None or first is None or (length is not None and count is None):
            return None
        begin = first - 1 if first > 0 else len(value) + first if first < 0 else -1
        end = len(value) if count is None else begin + count
        return value[max(begin, 0) : max(end, 0)]

    return cut


def _split(args: Sequence[Argument]) -> Operand:
    """Split a value at each occurrence of a separator (an empty one: into characters)."""
    value, separator = args[0].value(), args[1].value()

    def split(fields: Fields) -> str | None:
        text, by = value(fields), separator(fields)
        if text is None or by is None:
            return None
        return MULTIVALUE_SEPARATOR.join(text.split(by) if by else list(text))

    return split


def _mvindex(args: Sequence[Argument]) -> Operand:
    """Return the value at a 0-based index (negative from the end), or the values from start
    to end inclusive; null out of range."""
    values, start = args[0].value(), args[1].value()
    stop = args[2].value() if len(args) > 2 else None

    def pick(fields: Fields) -> str | None:
        value, first = values(fields), _integer(start, fields)
        last = first if stop is None else _integer(stop, fields)
        if value is None or first is None or last is None:
            return None
        found = values_of(value)
        first, last = (i + len(found) if i < 0 else i for i in (first, last))
        if not 0 <= first <= last < len(found):
            return None
        return MULTIVALUE_SEPARATOR.join(found[first : last + 1])

    return pick


def _mvjoin(args: Sequence[Argument]) -> Operand:
    separator = _quoted("mvjoin", args[1])
    return _map(args[0].value(), lambda value: separator.join(values_of(value)))


def _trim(strip: Callable[[str, str | None], str]) -> Build[Operand]:
    def build(args: Sequence[Argument]) -> Operand:
        characters = _quoted("trim", args[1]) if len(args) > 1 else None
        return _map(args[0].value(), lambda value: strip(value, characters))

    return build


def _number(function: Callable[[float], float]) -> Callable[[str], str | None]:
    def compute(value: str) -> str | None:
        number = number_or_none(value)
        return None if number is None else number_text(function(number))

    return compute


def _round(args: Sequence[Argument]) -> Operand:
    digits = int(number_or_none(args[1].constant()) or 0) if len(args) > 1 else 0
    scale = 10**digits
    half_away = _number(lambda x: (1 if x >= 0 else -1) * int(abs(x) * scale + 0.5) / scale)
    return _map(args[0].value(), half_away)


def _piece(text: str) -> tuple[re.Pattern[str], int]:
    """Compile a piece of a LIKE pattern between ``%``: ``_`` is one character."""
    source = "".join("." if c == "_" else re.escape(c) for c in text)
    return re.compile(source, re.DOTALL), len(text)


def like_test(pattern: str) -> Callable[[str], bool]:
    """Return SQL LIKE's test (``%`` any run, ``_`` one character) in time linear in the
    pattern times the value: the pieces between ``%`` have fixed lengths, so the leftmost
    occurrence of each is as good as any."""
    pieces = [_piece(text) for text in pattern.split("%")]
    if len(pieces) == 1:
        return lambda value: pieces[0][0].fullmatch(value) is not None
    (head, _), *middle, (tail, width) = pieces

    def like(value: str) -> bool:
        found = head.match(value)
        if found is None:
            return False
        at = found.end()
        for piece, _ in middle:
            found = piece.search(value, at)
            if found is None:
                return False
            at = found.end()
        start = len(value) - width
        return start >= at and tail.fullmatch(value, start) is not None

    return like


def _like(args: Sequence[Argument]) -> Condition:
    constant = args[1].constant()
    if constant is not None:
        return _map(args[0].value(), like_test(constant))
    value, pattern = args[0].value(), args[1].value()

    def like(fields: Fields) -> bool | None:
        text, written = value(fields), pattern(fields)
        return None if text is None or written is None else like_test(written)(text)

    return like


def _match(args: Sequence[Argument]) -> Condition:
    pattern = pcre(_quoted("match", args[1]), "match()")
    return _map(args[0].value(), lambda value: pattern.search(value) is not None)


def _in(args: Sequence[Argument]) -> Condition:
    value, *choices = (argument.value() for argument in args)

    def member(fields: Fields) -> bool | None:
        found = value(fields)
        return None if found is None else found in {choice(fields) for choice in choices}

    return member


def _null_test(is_null: bool) -> Build[Condition]:
    def build(args: Sequence[Argument]) -> Condition:
        operand = args[0].value()
        return lambda fields: (operand(fields) is None) == is_null

    return build


# name -> (fewest arguments, most arguments (None: no limit), builder)
CONDITIONS: dict[str, tuple[int, int | None, Build[Condition]]] = {
    "like": (2, 2, _like),
    "match": (2, 2, _match),
    "isnull": (1, 1, _null_test(True)),
    "isnotnull": (1, 1, _null_test(False)),
    "in": (2, None, _in),
    "true": (0, 0, lambda args: lambda fields: True),
    "false": (0, 0, lambda args: lambda fields: False),
}
VALUES: dict[str, tuple[int, int | None, Build[Operand]]] = {
    "if": (3, 3, _if),
    "case": (2, None, _case),
    "coalesce": (1, None, _coalesce),
    "null": (0, 0, lambda args: lambda fields: None),
    "lower": (1, 1, _text(str.lower)),
    "upper": (1, 1, _text(str.upper)),
    "len": (1, 1, _text(lambda value: str(len(value)))),
    "trim": (1, 2, _trim(str.strip)),
    "ltrim": (1, 2, _trim(str.lstrip)),
    "rtrim": (1, 2, _trim(str.rstrip)),
    "replace": (3, 3, _replace),
    "substr": (2, 3, _substr),
    "split": (2, 2, _split),
    "mvcount": (1, 1, _text(lambda value: str(len(values_of(value))))),
    "mvindex": (2, 3, _mvindex),
    "mvjoin": (2, 2, _mvjoin),
    "tostring": (1, 1, lambda args: args[0].value()),
    "tonumber": (1, 1, _text(_number(lambda x: x))),
    "abs": (1, 1, _text(_number(abs))),
    "round": (1, 2, _round),
    "urldecode": (1, 1, _text(unquote)),
}


def condition_call(name: str, args: Sequence[Argument]) -> Condition:
    """Return the condition function ``name`` applied to ``args``."""
    if name.lower() in VALUES:
        raise RuleError(f"{name}() gives a value, not a condition")
    return _checked(CONDITIONS, name, args)(args)


def value_call(name: str, args: Sequence[Argument]) -> Operand:
    """Return the value function ``name`` applied to ``args``."""
    if name.lower() in CONDITIONS:
        raise RuleError(f"{name}() gives a condition: fields cannot be assigned a boolean result")
    return _checked(VALUES, name, args)(args)


def _checked(
    registry: dict[str, tuple[int, int | None, Build[T]]], name: str, args: Sequence[Argument]
) -> Build[T]:
    found = registry.get(name.lower())
    if found is None:
        raise RuleError(f"unsupported function {name}()")
    least, most, build = found
    if len(args) < least or (most is not None and len(args) > most):
        wanted = (
            f"{least} or more"
            if most is None
            else f"{least}"
            if least == most
            else f"{least} to {most}"
        )
        raise RuleError(f"{name}() takes {wanted} argument(s), got {len(args)}")
    return build

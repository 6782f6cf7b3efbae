"""Compile a rule's SPL ``search`` (the supported subset) into a Plan."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

from lark import Lark, Token, Tree
from lark.exceptions import LarkError

from pipeline.rules import evaluation, functions
from pipeline.rules.errors import RuleError, describe
from pipeline.rules.evaluation import Where
from pipeline.rules.expr import (
    ALWAYS,
    All,
    Any,
    Differs,
    Expr,
    Keyword,
    Match,
    Not,
    Ordering,
    Regex,
    any_of,
)
from pipeline.rules.lookups import Lookup, Lookups
from pipeline.rules.patterns import pcre
from pipeline.rules.plan import Aggregation, GroupField, Plan
from pipeline.rules.pushdown import group_steps
from pipeline.rules.steps import Assign, Convert, Fillnull, Filter, Rename, Rex, Step
from pipeline.wildcard import Wildcard

DATAMODEL_FIELD = "_datamodel"
SUPPORTED_DATAMODELS = {
    "Endpoint.Processes": "Processes",
    "Endpoint.Registry": "Registry",
    "Endpoint.Filesystem": "Filesystem",
}
AGGREGATIONS = {"count", "min", "max", "values", "dc", "earliest", "latest"}
PER_FIELD = ("values", "dc", "earliest", "latest")  # functions that keep values of a field
# (function, argument) -> the function it is ("" matches any argument)
_SAME_AS = {
    ("distinct_count", ""): "dc",
    ("earliest", "_time"): "min",
    ("latest", "_time"): "max",
}
COMMENT = re.compile(r"```.*?```", re.DOTALL)  # Splunk's comments, in searches and macros
MACRO_CALL = re.compile(r"`([A-Za-z0-9_]+)(?:\(([^`]*)\))?`")
MAX_MACRO_DEPTH = 10
_ESCAPED = re.compile(r'\\([\\"|])')


@dataclass(frozen=True, slots=True)
class Macro:
    """A search macro: definition text with ``$arg$`` placeholders."""

    definition: str
    arguments: tuple[str, ...] = ()


@cache
def _parser() -> Lark:
    grammar = files("pipeline.rules").joinpath("spl.lark").read_text()
    starts = [f"{name}_args" for name in COMMANDS]
    return Lark(grammar, start=starts, parser="lalr", maybe_placeholders=False)


def expand_macros(search: str, macros: Mapping[str, Macro]) -> str:
    """Expand backtick macros (recursively) as Splunk does, textually, dropping comments."""
    for _ in range(MAX_MACRO_DEPTH):
        search = COMMENT.sub(" ", search)
        expanded = MACRO_CALL.sub(lambda m: _expand_one(m, macros), search)
        if expanded == search:
            return expanded
        search = expanded
    raise RuleError(f"macros nest deeper than {MAX_MACRO_DEPTH} levels", stage="macros")


def _expand_one(call: re.Match[str], macros: Mapping[str, Macro]) -> str:
    name, raw_args = call.group(1), call.group(2)
    args = [a.strip() for a in raw_args.split(",")] if raw_args else []
    macro = macros.get(name) or macros.get(f"{name}({len(args)})")
    if macro is None:
        raise RuleError(f"unknown macro `{name}`", stage="macros")
    if len(args) != len(macro.arguments):
        raise RuleError(
            f"macro `{name}` takes {len(macro.arguments)} argument(s), got {len(args)}",
            stage="macros",
        )
    text = macro.definition
    for placeholder, value in zip(macro.arguments, args, strict=True):
        text = text.replace(f"${placeholder}$", value)
    return text


def split_stages(search: str) -> list[str]:
    """Split a search on ``|`` outside double quotes."""
    stages: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in search:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "|" and not quoted:
            stages.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    stages.append("".join(current).strip())
    return stages


def _unquote(node: Token | Tree[Token]) -> str:
    r"""Return the text of a value node: quotes dropped, ``\\``, ``\"`` and ``\|`` unescaped
    (a backslash before any other character stays, as in Splunk)."""
    token = node.children[0] if isinstance(node, Tree) else node
    text = str(token)
    if isinstance(token, Token) and token.type == "STRING":
        text = text[1:-1]
    return _ESCAPED.sub(r"\1", text)


@dataclass
class _Builder:
    """Mutable state while the stages of one search are compiled in order."""

    dataset_prefix: str = ""
    predicate: Expr = ALWAYS
    event_steps: list[Step] = field(default_factory=list)
    row_steps: list[Step] = field(default_factory=list)
    group_by: tuple[GroupField, ...] | None = None
    group_fill: str | None = None
    aggregations: tuple[Aggregation, ...] = ()
    pending_fillnull: str | None = None
    table: tuple[str, ...] = ()
    window_seconds: int | None = None
    time_buckets: bool = False  # _time is bucketed by the window (bucket/bin span=)
    lookups: Lookups | None = None

    def resolve(self, name: str) -> str:
        """Return the event field behind a search field (tstats drops ``Processes.``)."""
        return name.removeprefix(self.dataset_prefix) if self.dataset_prefix else name

    @property
    def steps(self) -> list[Step]:
        return self.event_steps if self.group_by is None else self.row_steps

    def expr(self, tree: Tree[Token] | Token) -> Expr:
        """Compile an expression tree with search semantics."""
        if isinstance(tree, Token):
            raise RuleError(f"unexpected token {tree!r}")
        kind = tree.data
        if kind in ("and_expr", "search_args"):
            return _joined(All, [self.expr(child) for child in tree.children])
        if kind == "or_expr":
            return any_of(self.expr(child) for child in tree.children)
        if kind == "negation":
            return Not(self.expr(tree.children[0]))
        if kind == "keyword":
            return Keyword(Wildcard.compile(_unquote(tree.children[0])))
        if kind == "membership":
            name, *values = tree.children
            target = self.resolve(_unquote(name))
            return any_of(Match(target, Wildcard.compile(_unquote(v))) for v in values)
        if kind == "comparison":
            name, op, value = tree.children
            return self.comparison(self.resolve(_unquote(name)), str(op), _unquote(value))
        raise RuleError(f"unsupported expression {kind}")

    @staticmethod
    def comparison(name: str, op: str, value: str) -> Expr:
        if op in ("=", "=="):
            return Match(name, Wildcard.compile(value))
        if op == "!=":
            return Differs(name, Wildcard.compile(value))
        return Ordering(name, op, value)

    def filter(self, expr: Expr, *, first: bool) -> None:
        if first:
            self.predicate = expr
        else:
            self.steps.append(Filter(expr))

    def set_stats(self, tree: Tree[Token]) -> None:
        """Take the aggregations and by-fields of a stats or tstats command.

        ``by _time span=S`` counts per span of time: the span becomes the rule's window (our
        windows are those buckets), and ``_time`` leaves the group.
        """
        if self.group_by is not None:
            raise RuleError("only one stats/tstats per search is supported")
        by_lists = _subtrees(tree, "by_list")
        by = [w for fl in by_lists for w in _words(fl)]
        span = next((_options(fl)["span"] for fl in by_lists if "span" in _options(fl)), None)
        if span is not None:
            if "_time" not in by:
                raise RuleError("span= is supported with by _time only")
            self.window_seconds, self.time_buckets = span_seconds(span), True
        if self.time_buckets:
            by = [w for w in by if w != "_time"]
        self.aggregations = tuple(
            _aggregation(a, self.event_steps) for a in _subtrees(tree, "aggregation")
        )
        self.group_by = tuple(GroupField(name, self.resolve(name)) for name in by)
        if self.pending_fillnull is not None:
            self.event_steps.append(Fillnull(self.pending_fillnull, tuple(by)))


_SPAN = re.compile(r"(\d+)(s|sec|m|min|h|hr|d|day)?", re.IGNORECASE)
_SPAN_UNITS = {
    "s": 1,
    "sec": 1,
    "m": 60,
    "min": 60,
    "h": 3600,
    "hr": 3600,
    "d": 86400,
    "day": 86400,
}


def span_seconds(span: str) -> int:
    """Return a ``span=`` value (``30m``, ``1h``, ``1d``, ``600``) in seconds."""
    found = _SPAN.fullmatch(span.strip())
    if found is None or int(found[1]) == 0:
        raise RuleError(f"span={span}: use a whole number of s, m, h or d")
    return int(found[1]) * _SPAN_UNITS[(found[2] or "s").lower()]


def _joined(join: type[All] | type[Any], operands: list[Expr]) -> Expr:
    """Return the operands joined, or the one operand alone."""
    return operands[0] if len(operands) == 1 else join(tuple(operands))


def _aggregation(tree: Tree[Token], event_steps: list[Step]) -> Aggregation:
    """Compile one stats function; ``fn(eval(x))`` computes x per event into a field of its
    own (a condition: "1" when true, else null) which ``fn`` then reads."""
    function, *rest = (_aggregated(child, event_steps) for child in tree.children)
    written = function.lower()
    argument = rest[0] if rest else ""
    output = rest[1] if len(rest) > 1 else (f"{written}({argument})" if argument else written)
    function = _SAME_AS.get((written, argument), _SAME_AS.get((written, ""), written))
    if function not in AGGREGATIONS:
        raise RuleError(f"unsupported stats function {written}()")
    if function in ("min", "max") and argument != "_time":
        raise RuleError(f"{function}() is supported on _time only")
    if function in PER_FIELD and not argument:
        raise RuleError(f"{function}() needs a field")
    return Aggregation(function, argument, output)


def _aggregated(node: Tree[Token] | Token, event_steps: list[Step]) -> str:
    """Return the text of a stats function's part, compiling an ``eval(…)`` argument."""
    if not isinstance(node, Tree):
        return str(node)
    if node.data != "aggregated_eval":
        return _unquote(node)
    expression = node.children[0]
    name = f"eval({_text_of(expression)})#{len(event_steps)}"  # unique in the search
    event_steps.append(Assign(((name, _value_or_truth(expression)),), _fields_read(expression)))
    return name


_CONDITION_KINDS = frozenset({"e_or", "e_and", "e_negation", "e_compare", "e_member"})


def _value_or_truth(node: Tree[Token] | Token) -> evaluation.Operand:
    """Compile an expression as a value, or a condition as "1" when true (null otherwise)."""
    kind, children = _parts(node)
    is_call = kind == "e_call" and str(children[0]).lower() in functions.CONDITIONS
    if kind not in _CONDITION_KINDS and not is_call:
        return _value(node)
    condition = _condition(node)
    return lambda fields: "1" if condition(fields) is True else None


def _options(tree: Tree[Token]) -> dict[str, str]:
    return {
        str(child.children[0]).lower(): _unquote(child.children[1])
        for child in tree.children
        if isinstance(child, Tree) and child.data == "option"
    }


def _subtrees(tree: Tree[Token], name: str) -> list[Tree[Token]]:
    return [c for c in tree.children if isinstance(c, Tree) and c.data == name]


def _words(tree: Tree[Token]) -> list[str]:
    """Return the names among a node's tokens, quoted ones unquoted (``"Filesystem.dest"``)."""
    return [_unquote(c) for c in tree.children if isinstance(c, Token)]


def _search(tree: Tree[Token], builder: _Builder, first: bool) -> None:
    builder.filter(builder.expr(tree) if tree.children else ALWAYS, first=first)


def _where(tree: Tree[Token], builder: _Builder, first: bool) -> None:
    """``where A AND B …``: one condition per side of a top-level AND (each true only when
    true, as the whole is), so that a filter pushed before stats can take some of them."""
    node = tree.children[0]
    sides = node.children if isinstance(node, Tree) and node.data == "e_and" else [node]
    wheres = [Where(_condition(side), _fields_read(side)) for side in sides]
    builder.filter(wheres[0] if len(wheres) == 1 else All(tuple(wheres)), first=first)


def _eval(tree: Tree[Token], builder: _Builder, first: bool) -> None:
    """``eval name=expression, …``."""
    assignments, reading = [], frozenset[str]()
    for assignment in _subtrees(tree, "e_assignment"):
        target, expression = assignment.children
        assignments.append((str(target).strip("'"), _value(expression)))
        reading |= _fields_read(expression)
    builder.steps.append(Assign(tuple(assignments), reading))


def _fields_read(node: Tree[Token] | Token) -> frozenset[str]:
    """Return the fields an eval expression reads."""
    if not isinstance(node, Tree):
        return frozenset()
    return frozenset(str(found.children[0]).strip("'") for found in node.find_data("e_field"))


_LOGIC = {"e_or": evaluation.disjunction, "e_and": evaluation.conjunction}


def _condition(node: Tree[Token] | Token) -> evaluation.Condition:
    """Compile an eval expression that must give true, false or null."""
    kind, children = _parts(node)
    if kind in _LOGIC:
        return _LOGIC[kind]([_condition(child) for child in children])
    if kind == "e_negation":
        return evaluation.negation(_condition(children[0]))
    if kind == "e_compare":
        left, op, right = children
        return evaluation.comparison(_value(left), str(op), _value(right))
    if kind == "e_member":
        return functions.condition_call("in", [_Argument(child) for child in children])
    if kind == "e_call":
        name, *arguments = children
        return functions.condition_call(str(name), [_Argument(a) for a in arguments])
    raise RuleError(f"{_text_of(node)} is a value, not a condition")


def _value(node: Tree[Token] | Token) -> evaluation.Operand:
    """Compile an eval expression that gives a value (or null)."""
    kind, children = _parts(node)
    if kind == "e_string":
        return evaluation.literal(_unquote(node))
    if kind == "e_number":
        return evaluation.literal(str(children[0]))
    if kind == "e_field":
        return evaluation.field(str(children[0]).strip("'"))
    if kind == "e_arithmetic":
        left, op, right = children
        return evaluation.arithmetic(_value(left), str(op), _value(right))
    if kind == "e_minus":
        return evaluation.negative(_value(children[-1]))
    if kind == "e_call":
        name, *arguments = children
        return functions.value_call(str(name), [_Argument(a) for a in arguments])
    raise RuleError("a condition cannot be a value: fields cannot be assigned a boolean result")


def _parts(node: Tree[Token] | Token) -> tuple[str, list[Tree[Token] | Token]]:
    """Return an eval node's kind and children (a bare token has no kind)."""
    return (node.data, node.children) if isinstance(node, Tree) else ("", [])


def _text_of(node: Tree[Token] | Token) -> str:
    tokens = node.scan_values(lambda _: True) if isinstance(node, Tree) else [node]
    return " ".join(str(token) for token in tokens)


@dataclass(frozen=True, slots=True)
class _Argument:
    """A call's argument, compiled when its function says how."""

    node: Tree[Token] | Token

    def value(self) -> evaluation.Operand:
        return _value(self.node)

    def condition(self) -> evaluation.Condition:
        return _condition(self.node)

    def constant(self) -> str | None:
        node = self.node
        return _unquote(node) if isinstance(node, Tree) and node.data == "e_string" else None


def _tstats(tree: Tree[Token], builder: _Builder, first: bool) -> None:
    if not first:
        raise RuleError("tstats must be the first command")
    tokens = [c for c in tree.children if isinstance(c, Token)]
    datamodel = _unquote(tokens[0])
    dataset = SUPPORTED_DATAMODELS.get(datamodel)
    if dataset is None:
        raise RuleError(f"unsupported datamodel {datamodel}")
    prefix = f"{dataset}."
    builder.dataset_prefix = prefix
    where = [
        c
        for c in tree.children
        if isinstance(c, Tree) and c.data not in ("option", "aggregation", "by_list")
    ]
    condition = Match(DATAMODEL_FIELD, Wildcard.compile(datamodel))
    builder.predicate = All((condition, *(builder.expr(w) for w in where)))
    builder.set_stats(tree)
    fill = _options(tree).get("fillnull_value")
    builder.group_fill = fill


def _stats(tree: Tree[Token], builder: _Builder, first: bool) -> None:
    builder.set_stats(tree)


def _name(token: Token | Tree[Token]) -> str:
    """Return a field name that may be quoted, in whole or in part (``"Processes".*``)."""
    text = str(token)
    if isinstance(token, Token) and token.type == "GLUED":
        quoted, _, rest = text[1:].partition('"')
        return _ESCAPED.sub(r"\1", quoted) + rest
    return _unquote(token)


def _rename(tree: Tree[Token], builder: _Builder, first: bool) -> None:
    pairs = tuple(
        (_name(p.children[0]), _name(p.children[1])) for p in _subtrees(tree, "rename_pair")
    )
    for source, target in pairs:
        if source.count("*") > 1 or target.count("*") != source.count("*"):
            raise RuleError(f"rename {source} as {target}: use at most one * on both sides")
    builder.steps.append(Rename(pairs))


def _table(tree: Tree[Token], builder: _Builder, first: bool) -> None:
    names = tuple(w for fl in _subtrees(tree, "field_list") for w in _words(fl))
    builder.table = names


def _fillnull(tree: Tree[Token], builder: _Builder, first: bool) -> None:
    value = _options(tree).get("value", "0")
    names = tuple(_words(tree))
    if names:
        builder.steps.append(Fillnull(value, names))
    elif builder.group_by is None:
        builder.pending_fillnull = value
    else:
        builder.steps.append(Fillnull(value, tuple(g.row_name for g in builder.group_by)))


def _rex(tree: Tree[Token], builder: _Builder, first: bool) -> None:
    options = _options(tree)
    source = _unquote(next(c for c in tree.children if isinstance(c, Token)))
    pattern = pcre(source, "rex")
    if not pattern.groupindex:
        raise RuleError("rex: the expression names no group (?<name>...)")
    builder.steps.append(Rex(options.get("field", "_raw"), pattern))


def _convert(tree: Tree[Token], builder: _Builder, first: bool) -> None:
    timeformat = _options(tree).get("timeformat", "%m/%d/%Y %H:%M:%S")
    for conversion in _subtrees(tree, "conversion"):
        function, name, *alias = (str(c) for c in conversion.children)
        if function != "ctime":
            raise RuleError(f"convert: unsupported function {function}()")
        builder.steps.append(Convert(name, alias[0] if alias else name, timeformat))


def _regex(tree: Tree[Token], builder: _Builder, first: bool) -> None:
    """``regex [field=|field!=]"re"``: keep the rows whose field the expression matches."""
    *target, source = tree.children
    field, op = (str(target[0]), str(target[1])) if target else ("_raw", "=")
    if op not in ("=", "!="):
        raise RuleError(f"regex: use = or !=, not {op}")
    builder.steps.append(Filter(Regex(field, pcre(_unquote(source), "regex"), op == "!=")))


def _bucket(tree: Tree[Token], builder: _Builder, first: bool) -> None:
    """``bucket``/``bin _time span=S``: a later ``stats … by _time`` counts per span."""
    span = _options(tree).get("span")
    if _words(tree) != ["_time"] or span is None:
        raise RuleError("only bucket/bin _time span=… is supported")
    builder.window_seconds, builder.time_buckets = span_seconds(span), True


def _lookup(tree: Tree[Token], builder: _Builder, first: bool) -> None:
    """``lookup name field [AS f]… [OUTPUT|OUTPUTNEW column [AS f]…]`` against a CSV table."""
    if builder.lookups is None:
        raise RuleError("lookup needs the rules folder's lookups")
    name = str(next(c for c in tree.children if isinstance(c, Token)))
    table = builder.lookups.table(name)
    inputs, *outputs = (_pairs(fields) for fields in _subtrees(tree, "lookup_fields"))
    mode = next(
        (str(c).upper() for c in tree.children if isinstance(c, Token) and c.type == "OUTPUT_MODE"),
        "OUTPUT",
    )
    missing = [
        column
        for column, _ in (*inputs, *(outputs[0] if outputs else ()))
        if column not in table.columns
    ]
    if missing:
        raise RuleError(f"lookup {name} has no column {', '.join(missing)}")
    used = {column for column, _ in inputs}
    written = outputs[0] if outputs else tuple((c, c) for c in table.columns if c not in used)
    builder.steps.append(Lookup(table, inputs, written, new_only=mode == "OUTPUTNEW"))


def _pairs(tree: Tree[Token]) -> tuple[tuple[str, str], ...]:
    """Return ``column [AS field]`` pairs as (column, field)."""
    return tuple(
        (words[0], words[-1])
        for words in (_words(pair) for pair in _subtrees(tree, "lookup_field"))
    )


Command = Callable[[Tree[Token], _Builder, bool], None]
COMMANDS: dict[str, Command] = {
    "search": _search,
    "where": _where,
    "eval": _eval,
    "tstats": _tstats,
    "stats": _stats,
    "rename": _rename,
    "table": _table,
    "fillnull": _fillnull,
    "rex": _rex,
    "convert": _convert,
    "regex": _regex,
    "lookup": _lookup,
    "bucket": _bucket,
    "bin": _bucket,
}


def compile_search(
    search: str, macros: Mapping[str, Macro], lookups: Lookups | None = None
) -> Plan:
    """Compile SPL text into a Plan; raise RuleError naming the stage on any problem."""
    stages = split_stages(expand_macros(search, macros))
    builder = _Builder(lookups=lookups)
    if stages and not stages[0]:
        stages = stages[1:]  # a leading pipe: the first stage is a generating command
    elif stages:
        stages[0] = f"search {stages[0]}"
    for number, text in enumerate(stages, start=1):
        command, _, arguments = text.partition(" ")
        label = f"search stage {number} ({command or 'empty'})"
        if command not in COMMANDS:
            raise RuleError(f"unsupported command '{command}'", stage=label)
        try:
            tree = _parser().parse(arguments, start=f"{command}_args")
            COMMANDS[command](tree, builder, number == 1)
        except LarkError as error:
            raise RuleError(f"cannot parse: {describe(error)}", stage=label) from None
        except RuleError as error:
            raise error.at(stage=label) from None
    return _finish(builder)


def _finish(builder: _Builder) -> Plan:
    group_by, aggregations = builder.group_by, builder.aggregations
    if group_by is None:
        if not builder.table:
            raise RuleError("the search must end in stats, tstats or table", stage="search")
        group_by = tuple(GroupField(n, n) for n in builder.table if n != "_time")
        aggregations = (
            Aggregation("count", "", "count"),
            Aggregation("min", "_time", "firstTime"),
            Aggregation("max", "_time", "lastTime"),
        )
        builder.group_fill = ""
    return Plan(
        predicate=builder.predicate,
        event_steps=tuple(builder.event_steps),
        group_by=group_by,
        group_fill=builder.group_fill,
        aggregations=aggregations,
        row_steps=tuple(builder.row_steps),
        window_seconds=builder.window_seconds,
        group_steps=group_steps(group_by, aggregations, builder.row_steps),
    )

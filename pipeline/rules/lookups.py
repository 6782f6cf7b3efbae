"""CSV lookups (``| lookup``): their definitions, their tables, and the step that reads them.

A rules folder may hold ``lookups.yml`` (definitions shaped like security_content's lookup
YAMLs) and the CSV files they name in ``lookups/``. A table is read once, when the first rule
using it is compiled; a definition or file that is missing is a start-up error naming it.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.rules.errors import RuleError, describe
from pipeline.rules.evaluation import MULTIVALUE_SEPARATOR
from pipeline.rules.expr import Reads
from pipeline.wildcard import Wildcard
from pipeline.yamlfile import load_yaml

LOOKUPS_FILE = "lookups.yml"
LOOKUPS_FOLDER = "lookups"
MAX_TABLE_BYTES = 64 * 1024 * 1024
_WILDCARD_FIELDS = re.compile(r"WILDCARD\(([^)]+)\)", re.IGNORECASE)
Row = dict[str, str]


class LookupSpec(BaseModel):
    """A CSV lookup definition (Splunk's transforms.conf stanza, as security_content writes it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    filename: str = Field(pattern=r"^[\w.-]+\.csv$")
    match_type: str = ""  # WILDCARD(field)[,WILDCARD(field)]: those fields hold patterns
    case_sensitive_match: bool = True
    min_matches: int = Field(default=0, ge=0)
    max_matches: int = Field(default=1000, ge=1)
    default_match: str | None = None
    description: str = ""

    def wildcard_fields(self) -> frozenset[str]:
        """Return the fields whose table values are ``*`` patterns."""
        return frozenset(_WILDCARD_FIELDS.findall(self.match_type))


class LookupsFile(BaseModel):
    """The whole ``lookups.yml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lookups: dict[str, LookupSpec]


@dataclass(frozen=True)
class Table:
    """A lookup's definition and its rows, each field as a test of an input value, and for
    each exact (not wildcard) column looked up by, the rows holding each value: a lookup by
    such a column tests those rows only, not the whole table."""

    spec: LookupSpec
    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    tests: tuple[dict[str, Callable[[str], bool]], ...] = ()
    exact: frozenset[str] = frozenset()  # the columns that can be indexed
    index: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # built when used

    @classmethod
    def of(cls, spec: LookupSpec, columns: tuple[str, ...], rows: tuple[Row, ...]) -> Table:
        """Build the table, compiling each field's test once."""
        tests = tuple(_tests(spec, row) for row in rows)
        return cls(spec, columns, rows, tests, frozenset(columns) - spec.wildcard_fields())

    def matching(self, inputs: Mapping[str, str]) -> list[Row]:
        """Return the rows (at most ``max_matches``) whose fields match ``inputs``."""
        exact = next((name for name in inputs if name in self.exact), None)
        if exact is None:
            candidates: Iterable[int] = range(len(self.rows))
        else:
            candidates = self._indexed(exact).get(_key(self.spec, inputs[exact]), ())
        found = [
            self.rows[number]
            for number in candidates
            if all(
                name in self.tests[number] and self.tests[number][name](value)
                for name, value in inputs.items()
            )
        ]
        return found[: self.spec.max_matches]

    def _indexed(self, column: str) -> dict[str, list[int]]:
        """Return the numbers of the rows holding each value of ``column``, indexed when the
        table is first looked up by it (only the columns looked up by take memory)."""
        if column not in self.index:
            by_value = self.index[column] = {}
            for number, row in enumerate(self.rows):
                if column in row:
                    by_value.setdefault(_key(self.spec, row[column]), []).append(number)
        return self.index[column]


def _key(spec: LookupSpec, value: str) -> str:
    """Return the index key of an exact column's value (casefolded unless case-sensitive)."""
    return value if spec.case_sensitive_match else value.casefold()


def _tests(spec: LookupSpec, row: Row) -> dict[str, Callable[[str], bool]]:
    """Return a test per field of a table row: a pattern, or an (in)sensitive equality."""
    wildcards = spec.wildcard_fields()
    return {
        name: Wildcard.compile(written).matches if name in wildcards else _equal(spec, written)
        for name, written in row.items()
    }


def _equal(spec: LookupSpec, written: str) -> Callable[[str], bool]:
    """Return the test of an exact field: equal keys (the index's)."""
    key = _key(spec, written)
    return lambda value: _key(spec, value) == key


@dataclass
class Lookups:
    """The lookup definitions of a rules folder, their tables read when first used."""

    folder: Path
    specs: Mapping[str, LookupSpec] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)
    files: Mapping[str, Path] = field(default_factory=dict)  # CSVs kept elsewhere, by lookup

    @classmethod
    def of(cls, folder: Path) -> Lookups:
        """Read ``folder/lookups.yml`` (none: no lookups)."""
        path = folder / LOOKUPS_FILE
        if not path.exists():
            return cls(folder)
        try:
            specs = LookupsFile.model_validate(load_yaml(path)).lookups
        except (OSError, yaml.YAMLError, ValidationError) as error:
            message = f"cannot read the lookups: {describe(error)}"
            raise RuleError(message, path=str(path)) from None
        return cls(folder, specs)

    def table(self, name: str) -> Table:
        """Return the table of lookup ``name``, reading its CSV file the first time."""
        if name not in self.tables:
            spec = self.specs.get(name)
            if spec is None:
                raise RuleError(f"unknown lookup {name} (define it in {LOOKUPS_FILE})")
            self.tables[name] = read_table(spec, self.file(name))
        return self.tables[name]

    def file(self, name: str) -> Path:
        """Return where the CSV file of lookup ``name`` is read from."""
        return self.files.get(name) or self.folder / LOOKUPS_FOLDER / self.specs[name].filename


def read_table(spec: LookupSpec, path: Path) -> Table:
    """Read a lookup's CSV file (header row first); a missing or unreadable file is an error."""
    try:
        if path.stat().st_size > MAX_TABLE_BYTES:
            raise RuleError(f"lookup file {path} is larger than {MAX_TABLE_BYTES} bytes")
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = tuple({k: v for k, v in row.items() if k is not None} for row in reader)
            columns = tuple(reader.fieldnames or ())
    except FileNotFoundError:
        raise RuleError(f"lookup file {path} not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise RuleError(f"cannot read lookup file {path}: {error}") from None
    return Table.of(spec, columns, rows)


@dataclass(frozen=True)
class Lookup:
    """``lookup name f [AS g]… [OUTPUT|OUTPUTNEW out [AS name]…]``: add the matching rows'
    fields; with several matches a field holds their distinct values as a multivalue.

    With no match, a definition with ``min_matches`` and ``default_match`` gives that value;
    otherwise ``OUTPUT`` removes the output fields and ``OUTPUTNEW`` leaves them.
    """

    table: Table
    inputs: tuple[tuple[str, str], ...]  # (table column, row field)
    outputs: tuple[tuple[str, str], ...]  # (table column, row field)
    new_only: bool = False

    def apply(self, row: Row) -> bool:
        """Add the lookup's outputs to ``row``; the row is always kept."""
        if self.new_only and all(name in row for _, name in self.outputs):
            return True
        given = {column: row[name] for column, name in self.inputs if name in row}
        found = self.table.matching(given) if len(given) == len(self.inputs) else []
        for column, name in self.outputs:
            if self.new_only and name in row:
                continue
            value = _joined(r.get(column, "") for r in found) or self._default()
            if value is None:
                row.pop(name, None)
            else:
                row[name] = value
        return True

    def reads(self, names: frozenset[str]) -> Reads:
        """Return the input fields (and, for ``OUTPUTNEW``, the outputs: whether present)."""
        outputs = (name for _, name in self.outputs) if self.new_only else ()
        return frozenset((*(name for _, name in self.inputs), *outputs))

    def writes(self, names: frozenset[str]) -> frozenset[str]:
        """Return the output fields."""
        return frozenset(name for _, name in self.outputs)

    def _default(self) -> str | None:
        spec = self.table.spec
        return spec.default_match if spec.min_matches > 0 else None


def _joined(values: Iterable[str]) -> str | None:
    distinct = list(dict.fromkeys(v for v in values if v))
    return MULTIVALUE_SEPARATOR.join(distinct) if distinct else None

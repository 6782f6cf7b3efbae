"""CSV lookups: definitions, tables, and the lookup step, against Splunk's documented rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.rules import lookups as lookups_module
from pipeline.rules.compiler import compile_search
from pipeline.rules.errors import RuleError
from pipeline.rules.lookups import Lookups, LookupSpec, Table, read_table
from pipeline.rules.steps import run_steps

TOOLS = (
    "name,description,family\n"
    "mimikatz.exe,dumps credentials,creds\n"
    "psexe*.exe,runs remotely,lateral\n"
    "PsExec.exe,Sysinternals,lateral\n"
)


def lookups(tmp_path: Path, csv: str = TOOLS, **spec: object) -> Lookups:
    """Return lookups with one table, ``tools``, of ``csv``."""
    (tmp_path / "lookups").mkdir(exist_ok=True)
    (tmp_path / "lookups" / "tools.csv").write_text(csv)
    return Lookups(
        tmp_path, {"tools": LookupSpec.model_validate({"filename": "tools.csv", **spec})}
    )


def looked_up(found: Lookups, command: str, **fields: str) -> dict[str, str] | None:
    """Return a row of ``fields`` after ``| <command>``, or None when a later step drops it."""
    plan = compile_search(f"x=1 | {command} | stats count", {}, found)
    row = dict(fields)
    return row if run_steps(plan.event_steps, row) else None


def test_exact_matches_are_case_sensitive_unless_the_definition_says_otherwise(
    tmp_path: Path,
) -> None:
    sensitive = lookups(tmp_path)
    command = "lookup tools name AS process_name OUTPUT description"
    assert looked_up(sensitive, command, process_name="mimikatz.exe") == {
        "process_name": "mimikatz.exe",
        "description": "dumps credentials",
    }
    assert looked_up(sensitive, command, process_name="MIMIKATZ.exe") == {
        "process_name": "MIMIKATZ.exe"
    }
    insensitive = lookups(tmp_path, case_sensitive_match="false")
    assert looked_up(insensitive, command, process_name="MIMIKATZ.exe")["description"] == (  # type: ignore[index]
        "dumps credentials"
    )


def test_wildcard_fields_hold_patterns_and_several_matches_give_a_multivalue(
    tmp_path: Path,
) -> None:
    found = lookups(tmp_path, match_type="WILDCARD(name)", case_sensitive_match="false")
    row = looked_up(found, "lookup tools name AS p OUTPUT description AS d, family", p="psexec.exe")
    assert row == {"p": "psexec.exe", "d": "runs remotely\nSysinternals", "family": "lateral"}


def test_no_output_clause_adds_every_other_column(tmp_path: Path) -> None:
    row = looked_up(lookups(tmp_path), "lookup tools name", name="mimikatz.exe")
    assert row == {"name": "mimikatz.exe", "description": "dumps credentials", "family": "creds"}


def test_without_a_match_output_removes_outputnew_keeps_and_a_default_fills(
    tmp_path: Path,
) -> None:
    found = lookups(tmp_path)
    assert looked_up(
        found, "lookup tools name OUTPUT description", name="x", description="old"
    ) == {"name": "x"}
    assert looked_up(
        found, "lookup tools name OUTPUTNEW description", name="mimikatz.exe", description="old"
    ) == {"name": "mimikatz.exe", "description": "old"}
    defaulted = lookups(tmp_path, min_matches=1, default_match="false")
    command = "lookup tools name OUTPUT description | search description!=false"
    assert looked_up(defaulted, command, name="notepad.exe") is None
    assert looked_up(defaulted, command, name="mimikatz.exe") is not None
    assert looked_up(defaulted, "lookup tools name OUTPUT description")["description"] == "false"  # type: ignore[index]


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("lookup other name", "unknown lookup other (define it in lookups.yml)"),
        ("lookup tools nom OUTPUT description", "lookup tools has no column nom"),
    ],
)
def test_lookup_refusals_are_located(tmp_path: Path, command: str, problem: str) -> None:
    with pytest.raises(RuleError) as refused:
        compile_search(f"x=1 | {command} | stats count", {}, lookups(tmp_path))
    assert str(refused.value) == f"search stage 2 (lookup): {problem}"


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    found = Lookups(tmp_path, {"tools": LookupSpec(filename="tools.csv")})
    with pytest.raises(RuleError) as refused:
        compile_search("x=1 | lookup tools name | stats count", {}, found)
    assert str(refused.value) == (
        f"search stage 2 (lookup): lookup file {tmp_path / 'lookups' / 'tools.csv'} not found"
    )


def test_a_rules_folder_reads_its_definitions(tmp_path: Path) -> None:
    assert Lookups.of(tmp_path).specs == {}  # no lookups.yml: no lookups
    (tmp_path / "lookups.yml").write_text("lookups:\n  tools:\n    filename: tools.csv\n")
    assert Lookups.of(tmp_path).specs == {"tools": LookupSpec(filename="tools.csv")}
    (tmp_path / "lookups.yml").write_text("lookups:\n  tools:\n    filename: ../etc/passwd\n")
    with pytest.raises(RuleError, match="cannot read the lookups"):
        Lookups.of(tmp_path)


def test_a_table_file_is_read_within_its_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tools.csv"
    path.write_bytes("\ufeffname,description\nnc.exe,netcat\n".encode())  # Excel's BOM
    table = read_table(LookupSpec(filename="tools.csv"), path)
    assert table.columns == ("name", "description") and table.rows[0]["name"] == "nc.exe"
    monkeypatch.setattr(lookups_module, "MAX_TABLE_BYTES", 10)
    with pytest.raises(RuleError) as refused:
        read_table(LookupSpec(filename="tools.csv"), path)
    assert str(refused.value) == f"lookup file {path} is larger than 10 bytes"
    monkeypatch.undo()
    path.write_bytes(b"name\n\xff\xfe\n")
    with pytest.raises(RuleError) as unreadable:
        read_table(LookupSpec(filename="tools.csv"), path)
    assert str(unreadable.value).startswith(f"cannot read lookup file {path}: ")


def test_matches_stop_at_max_matches_and_empty_values_add_nothing(tmp_path: Path) -> None:
    found = lookups(
        tmp_path,
        "name,description\nx,first\nx,\nx,third\n",
        max_matches=2,
    )
    assert looked_up(found, "lookup tools name OUTPUT description", name="x") == {
        "name": "x",
        "description": "first",  # the second row's value is empty; the third is past the limit
    }


def test_a_default_needs_min_matches(tmp_path: Path) -> None:
    found = lookups(tmp_path, min_matches=0, default_match="none")
    assert looked_up(found, "lookup tools name OUTPUT description", name="x") == {"name": "x"}


def test_an_unreadable_definitions_file_is_named_with_its_first_problem(tmp_path: Path) -> None:
    (tmp_path / "lookups.yml").write_text("lookups: [unclosed\n")
    with pytest.raises(RuleError) as refused:
        Lookups.of(tmp_path)
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'lookups.yml'}: cannot read the lookups: ")
    assert "\n" not in message


@settings(max_examples=400)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["a", "A", "b", "a*", ""]), st.sampled_from(["x", "X", "y"])),
        max_size=12,
    ),
    inputs=st.dictionaries(
        st.sampled_from(["k", "v", "other"]),
        st.sampled_from(["a", "A", "b", "x", "X", "ab"]),
        min_size=1,
        max_size=2,
    ),
    case_sensitive=st.booleans(),
    wildcard=st.sampled_from(["", "WILDCARD(k)", "WILDCARD(v)"]),
    max_matches=st.integers(1, 3),
)
def test_a_lookup_by_an_exact_column_finds_the_rows_a_scan_finds(
    rows: list[tuple[str, str]],
    inputs: dict[str, str],
    case_sensitive: bool,
    wildcard: str,
    max_matches: int,
) -> None:
    spec = LookupSpec(
        filename="t.csv",
        match_type=wildcard,
        case_sensitive_match=case_sensitive,
        max_matches=max_matches,
    )
    table = Table.of(spec, ("k", "v"), tuple({"k": k, "v": v} for k, v in rows))
    scanned = [
        row
        for row, tests in zip(table.rows, table.tests, strict=True)
        if all(name in tests and tests[name](value) for name, value in inputs.items())
    ]
    assert table.matching(inputs) == scanned[:max_matches]

"""The command line: rules list, detect output, start-up failures."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from pipeline.cli import app, screened_by
from tests import PROJECT_ROOT

runner = CliRunner()
SEEDS = PROJECT_ROOT / "tests" / "fixtures" / "demo"


def test_version_prints_the_installed_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"wmiwatch {version('wmiwatch')}\n"


def test_rules_list_names_all_rules() -> None:
    result = runner.invoke(app, ["rules", "list"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    assert result.stdout.count("T1047") >= 10
    assert "WMI Permanent Event Subscription - Sysmon" in result.stdout


def test_rules_list_shows_the_words_that_screen_each_rule() -> None:
    result = runner.invoke(app, ["rules", "list"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    cells = [line.split("\u2502") for line in result.stdout.splitlines()]
    screened = {row[1].strip(): row[6].strip() for row in cells if len(row) == 8}
    assert screened["Remote WMI Command Attempt"] == "wmic.exe and node"
    assert screened["PowerShell Invoke WmiExec Usage"] == "invoke-wmiexec"
    assert screened["Detect WMI Event Subscription Persistence"] == "nothing: every event parsed"


def test_screened_by_shows_three_words_of_a_clause_and_counts_the_rest() -> None:
    words = frozenset({b"d.exe", b"a.exe", b"c.exe", b"b.exe", b"e.exe"})
    assert screened_by((words,)) == "a.exe/b.exe/c.exe (+2 more)"
    assert screened_by((frozenset({b"wmic.exe"}), frozenset({b"node:"}))) == "wmic.exe and node:"
    assert screened_by(()) == "nothing: every event parsed"


def test_detect_jsonl_prints_only_findings_on_stdout() -> None:
    result = runner.invoke(
        app, ["detect", "--format", "jsonl", *map(str, sorted(SEEDS.glob("*.*")))]
    )
    assert result.exit_code == 0
    findings = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert sorted(f["rule_name"] for f in findings) == [
        "PowerShell Invoke WmiExec Usage",
        "Process Execution via WMI",
        "Remote Process Instantiation via WMI",
        "Remote Process Instantiation via WMI and PowerShell Script Block",
        "Remote WMI Command Attempt",
        "Windows WMI Process Call Create",
    ]


def test_detect_exits_zero_when_nothing_fires() -> None:
    result = runner.invoke(app, ["detect", str(SEEDS / "SOURCES.md")])
    assert result.exit_code == 0


def test_a_bad_rules_directory_stops_start_up_with_status_2(tmp_path: Path) -> None:
    (tmp_path / "macros.yml").write_text("macros: {}\n")
    (tmp_path / "bad.yml").write_text("name: x\n")
    result = runner.invoke(app, ["detect", "--rules", str(tmp_path), str(SEEDS / "SOURCES.md")])
    assert result.exit_code == 2
    assert str(tmp_path / "bad.yml") in result.stderr


def suppress_add(*options: str) -> tuple[int, str]:
    """Run ``suppress add`` (refused before it connects); return exit code and output."""
    result = runner.invoke(
        app,
        ["suppress", "add", "k1", "--reason", "pen test", "--author", "alice", *options],
        env={"COLUMNS": "300"},
    )
    return result.exit_code, " ".join(result.output.split())


def test_suppress_add_refuses_broad_entries_without_the_flag() -> None:
    code, output = suppress_add("--rule", "*", "--field", "dest", "--value", "build-*")
    assert code == 2 and "this entry silences every rule: set broad to true" in output
    wmic = "272df6de-61f1-4784-877c-1fbc3e2d0838"
    code, output = suppress_add("--rule", wmic, "--field", "dest", "--value", "*")
    assert code == 2 and "this entry silences every match of its rule" in output


def test_suppress_add_refuses_unknown_rules_fields_and_bad_expiry() -> None:
    code, output = suppress_add("--rule", "no-such-rule", "--field", "dest", "--value", "x")
    assert (code, output) == (2, "suppression refused: unknown rule id 'no-such-rule'")
    wmic = "272df6de-61f1-4784-877c-1fbc3e2d0838"
    code, output = suppress_add("--rule", wmic, "--field", "dset", "--value", "x")
    assert (code, output) == (2, "suppression refused: no rule's events carry field 'dset'")
    code, output = suppress_add(
        "--rule", wmic, "--field", "dest", "--value", "x", "--expires", "soon"
    )
    assert code == 2 and output.startswith("suppression refused: Input should be a valid datetime")


def test_the_apache_kafka_engine_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent/cache")  # nothing fetched there
    result = runner.invoke(app, ["broker", "--engine", "apache-kafka"], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert "Apache Kafka needs Java 17+ and Maven; missing: java, mvn" in result.output


def test_help_shows_the_environment_variable_of_an_option() -> None:
    result = runner.invoke(app, ["suppress", "remove", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "WMIWATCH_BOOTSTRAP_SERVERS" in result.stdout


def test_detect_refuses_an_output_format_it_does_not_have() -> None:
    result = runner.invoke(app, ["detect", "--format", "json", str(SEEDS)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "'json' is not one of 'table', 'jsonl'" in result.output


def test_rules_import_reports_and_its_rules_list_and_self_test(tmp_path: Path) -> None:
    escu = PROJECT_ROOT / "tests" / "fixtures" / "escu" / "detections" / "endpoint"
    imported = runner.invoke(app, ["rules", "import", str(escu), "--out", str(tmp_path)])
    assert imported.exit_code == 0, imported.output
    lines = imported.stdout.splitlines()
    assert lines[-1] == f"imported 8 of 9 into {tmp_path}"
    assert sum(line.startswith("not imported: ") for line in lines) == 1
    listed = runner.invoke(app, ["rules", "list", "--rules", str(tmp_path)], env={"COLUMNS": "300"})
    assert listed.exit_code == 0 and "Credential Dumping via Copy Command from Shadow Copy" in (
        listed.stdout
    )
    screens = [line.split("\u2502")[6].strip() for line in listed.stdout.splitlines()[3:-1]]
    assert screens.count("nothing: every event parsed") == 1  # Attacker Tools On Endpoint
    tested = runner.invoke(app, ["test-rules", "--rules", str(tmp_path)])
    assert tested.exit_code == 0 and "0 passed, 0 failed, 8 untested" in tested.output


@pytest.mark.parametrize("how", ["environment", "option"])
def test_detect_renders_the_configured_output_format(how: str) -> None:
    paths = [str(p) for p in sorted(SEEDS.glob("*.*"))]
    if how == "environment":
        result = runner.invoke(
            app, ["detect", "--format", "jsonl", *paths], env={"WMIWATCH_OUTPUT_FORMAT": "ocsf"}
        )
    else:
        result = runner.invoke(
            app, ["detect", "--format", "jsonl", "--output-format", "ocsf", *paths]
        )
    assert result.exit_code == 0
    findings = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(findings) == 6
    assert {(f["class_uid"], f["metadata"]["version"]) for f in findings} == {(2004, "1.8.0")}

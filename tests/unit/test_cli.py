"""The command line: rules list, detect output, start-up failures."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from pipeline import PROJECT_ROOT
from pipeline.cli import app

runner = CliRunner()
SEEDS = PROJECT_ROOT / "tests" / "fixtures" / "demo"


def test_rules_list_names_all_rules() -> None:
    result = runner.invoke(app, ["rules", "list"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    assert result.stdout.count("T1047") >= 10
    assert "WMI Permanent Event Subscription - Sysmon" in result.stdout


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

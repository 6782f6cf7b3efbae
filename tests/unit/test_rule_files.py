"""The rules directory: all detections load, pass their own tests, and bad files are reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.policy import WindowPolicy
from pipeline.rules.errors import RuleErrors
from pipeline.rules.loader import load_rules
from pipeline.selftest import run_rule_tests
from tests import PROJECT_ROOT

RULES = PROJECT_ROOT / "rules"
STORY = {
    "Detect WMI Event Subscription Persistence",
    "PowerShell Invoke WmiExec Usage",
    "Process Execution via WMI",
    "Remote Process Instantiation via WMI",
    "Remote WMI Command Attempt",
    "Script Execution via WMI",
    "Windows WMI Process Call Create",
    "WMI Permanent Event Subscription",
    "WMI Permanent Event Subscription - Sysmon",
    "WMI Temporary Event Subscription",
    "WMIC XSL Execution via URL",
    "XSL Script Execution With WMIC",
}
RELATED = {
    "Remote Process Instantiation via WMI and PowerShell",
    "Remote Process Instantiation via WMI and PowerShell Script Block",
}


def test_the_story_and_related_rules_load() -> None:
    rules = load_rules(RULES)
    assert {rule.spec.name for rule in rules} == STORY | RELATED
    by_name = {rule.spec.name: rule for rule in rules}
    assert by_name["PowerShell Invoke WmiExec Usage"].spec.version == 12
    assert by_name["Remote WMI Command Attempt"].routes == {
        ("sysmon", "1"),
        ("security", "4688"),
        ("crowdstrike", "ProcessRollup2"),
    }
    assert by_name["WMI Permanent Event Subscription"].routes == {("wmi_activity", "5861")}


def test_every_rule_passes_its_tests_section() -> None:
    results = run_rule_tests(load_rules(RULES), WindowPolicy(), PROJECT_ROOT)
    assert [r for r in results if not r.passed] == []
    assert {r.rule for r in results if r.expected > 0} == STORY | RELATED
    assert {r.rule for r in results if r.expected == 0} == STORY | RELATED


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    shutil.copytree(RULES, folder)
    return folder


def edit(path: Path, **changes: object) -> None:
    document = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if value is None:
            del document[key]
        else:
            document[key] = value
    path.write_text(yaml.safe_dump(document))


def problems(folder: Path) -> list[str]:
    """Return the located problems loading ``folder`` reports (it must report some)."""
    with pytest.raises(RuleErrors) as caught:
        load_rules(folder)
    return [str(error) for error in caught.value.errors]


@pytest.mark.parametrize(
    ("file", "changes", "problem"),
    [
        (
            "remote_wmi_command_attempt.yml",
            {"search": "a=1 | join x | stats count"},
            "search stage 2 (join): unsupported command 'join'",
        ),
        (
            "script_execution_via_wmi.yml",
            {"search": "a=1 | rename a.* as b | stats count"},
            "search stage 2 (rename): rename a.* as b: use at most one * on both sides",
        ),
        (
            "process_execution_via_wmi.yml",
            {"search": "`no_such_macro` | stats count"},
            "macros: unknown macro `no_such_macro`",
        ),
        ("wmi_temporary_event_subscription.yml", {"finding": None}, "finding: Field required"),
        (
            "wmi_permanent_event_subscription.yml",
            {"severity": "high"},
            "severity: Extra inputs are not permitted",
        ),
        (
            "xsl_script_execution_with_wmic.yml",
            {"search": "EventCode=99999 | stats count"},
            "the search matches no supported source and EventCode",
        ),
    ],
)
def test_a_bad_rule_file_is_named_with_its_problem(
    rules_copy: Path, file: str, changes: dict[str, object], problem: str
) -> None:
    edit(rules_copy / file, **changes)
    assert problems(rules_copy) == [f"{rules_copy / file}: {problem}"]


def test_every_problem_is_reported_at_once(rules_copy: Path) -> None:
    edit(rules_copy / "remote_wmi_command_attempt.yml", search="a=1 | join x")
    edit(rules_copy / "script_execution_via_wmi.yml", id=None)
    (rules_copy / "broken.yml").write_text("name: [unclosed")
    with pytest.raises(RuleErrors) as caught:
        load_rules(rules_copy)
    assert len(caught.value.errors) == 3
    assert "3 problem(s)" in str(caught.value)
    assert f"  - {rules_copy / 'broken.yml'}: while parsing a flow sequence" in str(caught.value)


def test_a_rule_file_that_is_not_a_mapping_is_named(rules_copy: Path) -> None:
    (rules_copy / "list.yml").write_text("- a\n")
    assert problems(rules_copy) == [
        f"{rules_copy / 'list.yml'}: file: Input should be a valid dictionary or instance of"
        " RuleSpec"
    ]


def test_a_duplicate_id_names_both_files(rules_copy: Path) -> None:
    shutil.copy(rules_copy / "remote_wmi_command_attempt.yml", rules_copy / "copy.yml")
    assert problems(rules_copy) == [
        f"{rules_copy / 'remote_wmi_command_attempt.yml'}: id "
        f"272df6de-61f1-4784-877c-1fbc3e2d0838 is also used by {rules_copy / 'copy.yml'}"
    ]


@pytest.mark.parametrize(
    ("macros", "problem"),
    [
        ("x: [", "while parsing a flow node"),
        (
            "macros: {x: {definition: a, bogus: 2}}",
            "macros.x.bogus: Extra inputs are not permitted",
        ),
        ("x: 1", "macros: Field required; x: Extra inputs are not permitted"),
    ],
)
def test_a_bad_macros_file_is_named_with_its_problem(
    rules_copy: Path, macros: str, problem: str
) -> None:
    (rules_copy / "macros.yml").write_text(macros)
    assert problems(rules_copy) == [f"{rules_copy / 'macros.yml'}: {problem}"]


def test_a_folder_without_rule_files_is_an_error(tmp_path: Path) -> None:
    shutil.copy(RULES / "macros.yml", tmp_path / "macros.yml")
    assert problems(tmp_path) == [f"{tmp_path}: no rule files (*.yml) found"]


def test_every_rule_knows_its_file() -> None:
    assert {Path(rule.path).name for rule in load_rules(RULES)} == {
        path.name for path in RULES.glob("*.yml") if path.name != "macros.yml"
    }

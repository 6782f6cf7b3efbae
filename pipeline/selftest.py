"""Run each rule's ``tests`` section: fixtures that must (or must not) produce findings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.offline import detect_files
from pipeline.policy import WindowPolicy
from pipeline.rules.model import Rule


@dataclass(frozen=True)
class RuleTestResult:
    """The outcome of one rule test."""

    rule: str
    test: str
    expected: int
    actual: int

    @property
    def passed(self) -> bool:
        """Return True when the rule produced exactly the expected number of findings."""
        return self.expected == self.actual


def run_rule_tests(
    rules: tuple[Rule, ...], policy: WindowPolicy, root: Path
) -> list[RuleTestResult]:
    """Run every test of every rule, each rule alone over its fixture.

    Fixture paths are relative to ``root``: the parent of the rules folder.
    """
    results = []
    for rule in rules:
        for test in rule.spec.tests:
            report = detect_files([root / test.fixture], (rule,), policy)
            results.append(
                RuleTestResult(rule.spec.name, test.name, test.findings, len(report.findings))
            )
    return results

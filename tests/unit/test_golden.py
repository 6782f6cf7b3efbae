"""Golden files: ``wmiwatch detect`` over real logs gives exactly the committed findings."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests import PROJECT_ROOT
from tests.conftest import schema_validator

GOLDEN = PROJECT_ROOT / "tests" / "golden"
INPUTS = {
    path.name: path
    for folder in ("demo", "rules")
    for path in (PROJECT_ROOT / "tests" / "fixtures" / folder).iterdir()
    if (GOLDEN / f"{path.name}.jsonl").exists()
}


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_detect_output_matches_the_golden_file(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    relative = INPUTS[name].relative_to(PROJECT_ROOT)
    result = CliRunner().invoke(app, ["detect", "--format", "jsonl", str(relative)])
    assert result.exit_code == 0, result.output
    expected = (GOLDEN / f"{name}.jsonl").read_bytes()
    assert result.stdout.encode() == expected
    validator = schema_validator("wmiwatch.findings")
    for line in expected.splitlines():
        finding = orjson.loads(line)
        validator.validate(finding)
        assert finding["evidence"][0]["topic"] == str(relative)


def test_there_are_golden_files_for_positives_and_negatives() -> None:
    sizes = [len(Path(GOLDEN / f"{name}.jsonl").read_bytes().splitlines()) for name in INPUTS]
    assert len(sizes) >= 6 and 0 in sizes and sum(sizes) >= 10

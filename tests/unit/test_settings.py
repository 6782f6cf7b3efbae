"""Settings: every problem reported at once, secrets never shown."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.settings import Settings

SECRET = "s3cr3t-Pa55word"


def test_the_password_never_appears_in_repr_dump_or_config_printouts() -> None:
    settings = Settings(sasl_password=SECRET, security_protocol="SASL_SSL")
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())
    assert SECRET not in settings.model_dump_json()
    assert settings.librdkafka_config()["sasl.password"] == SECRET  # only handed to the client


def test_invalid_settings_list_every_problem_and_hide_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WMIWATCH_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("WMIWATCH_METRICS_PORT", "99999")
    monkeypatch.setenv("WMIWATCH_SECURITY_PROTOCOL", "SASL_MAYBE")
    monkeypatch.setenv("WMIWATCH_WINDOW_SECONDS", "0")
    result = CliRunner().invoke(app, ["rules", "list"])
    assert result.exit_code == 2
    for name in ("metrics_port", "security_protocol", "window_seconds"):
        assert name in result.stderr
    assert SECRET not in result.output + result.stderr

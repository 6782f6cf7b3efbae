"""Settings: every problem reported at once, secrets never shown."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest
from aiokafka import codec
from pydantic import ValidationError
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.settings import Settings, security_problems, unknown_variables
from pipeline.topics import load_topics
from tests import PROJECT_ROOT

SECRET = "s3cr3t-Pa55word"


def test_the_password_never_appears_in_repr_dump_or_config_printouts() -> None:
    settings = Settings(
        sasl_password=SECRET,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="wmiwatch",
    )
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


def test_the_prefix_names_only_the_topics_wmiwatch_owns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WMIWATCH_TOPIC_PREFIX", "soc1.")
    monkeypatch.setenv("WMIWATCH_RAW_TOPICS", '{"sysmon": "edr.sysmon.xml", "crowdstrike": ""}')
    topics = Settings().topics()
    assert topics.findings == "soc1.wmiwatch.findings"
    assert topics.name("windows.security") == "windows.security"  # a raw default, no prefix
    assert topics.raw()["sysmon"] == "edr.sysmon.xml"
    assert "crowdstrike" not in topics.raw()  # switched off: not read, not created
    created = {topics.name(spec.name) for spec in topics.deployed(raw=True)}
    assert "edr.sysmon.xml" in created and "" not in created
    assert {topics.name(spec.name) for spec in topics.deployed(raw=False)} == {
        f"soc1.{spec.name}" for spec in topics.specs if spec.role != "raw"
    }


def test_raw_topics_of_an_unknown_source_are_refused() -> None:
    with pytest.raises(ValueError, match=r"raw topics for unknown sources \['sysmom'\]"):
        Settings(raw_topics={"sysmom": "x"})


def test_min_insync_replicas_cannot_exceed_the_replication_factor() -> None:
    with pytest.raises(ValueError, match="every write would fail"):
        Settings(replication_factor=1, min_insync_replicas=2)
    assert Settings(replication_factor=3, min_insync_replicas=2).topic_config() == {
        "min.insync.replicas": "2"
    }


def test_a_state_topic_must_have_its_input_topic_s_partitions(tmp_path: Path) -> None:
    for path in (PROJECT_ROOT / "topics").glob("*.yaml"):
        text = path.read_text()
        if path.stem == "wmiwatch.risk-state":
            text = text.replace("partitions: 6\n", "partitions: 4\n")
        (tmp_path / path.name).write_text(text)
    with pytest.raises(
        ValueError, match=r"wmiwatch.risk-state: 4 partitions.*wmiwatch.risk-batches \(6\)"
    ):
        load_topics(tmp_path)
    assert load_topics(PROJECT_ROOT / "topics").spec("wmiwatch.risk-state").partitions == 6


def test_each_intake_process_gets_its_own_static_member_id() -> None:
    static = Settings(instance_id="wmiwatch-0", intake_processes=3)
    ids = [static.intake_settings(n).instance_id for n in range(3)]
    assert ids == ["wmiwatch-0", "wmiwatch-0-1", "wmiwatch-0-2"]
    dynamic = Settings(intake_processes=2)
    assert dynamic.intake_settings(1).instance_id is None  # each gets a random transactional id


def test_a_mistyped_variable_is_an_error_with_a_guess(monkeypatch: pytest.MonkeyPatch) -> None:
    assert unknown_variables(
        {"WMIWATCH_BOOTSTRAP_SERVER": "x", "WMIWATCH_TEST_BROKER": "y", "WMIWATCH_GROUP_ID": "g"}
    ) == ["WMIWATCH_BOOTSTRAP_SERVER is no setting (did you mean WMIWATCH_BOOTSTRAP_SERVERS?)"]
    assert unknown_variables({"WMIWATCH_ZZZ": "1", "HOME": "/"}) == ["WMIWATCH_ZZZ is no setting"]
    monkeypatch.setenv("WMIWATCH_BOOTSTRAP_SERVER", "kafka:9092")
    result = CliRunner().invoke(app, ["rules", "list"])
    assert result.exit_code == 2
    assert "did you mean WMIWATCH_BOOTSTRAP_SERVERS?" in result.stderr


@pytest.mark.parametrize(
    ("values", "problems"),
    [
        (
            {"security_protocol": "SASL_SSL"},
            [
                "SASL_SSL needs sasl_mechanism",
                "SASL_SSL needs sasl_username",
                "SASL_SSL needs sasl_password",
            ],
        ),
        (
            {"sasl_mechanism": "PLAIN", "ssl_ca_location": Path("ca.pem")},
            [
                "sasl_mechanism is set but PLAINTEXT uses no SASL",
                "ssl_ca_location is set but PLAINTEXT uses no TLS",
            ],
        ),
        (
            {"security_protocol": "SSL", "ssl_certificate_location": Path("c.pem")},
            ["ssl_certificate_location and ssl_key_location go together (mTLS)"],
        ),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "u",
                "sasl_password": SECRET,
                "ssl_ca_location": Path("ca.pem"),
            },
            [],
        ),
    ],
)
def test_sasl_and_tls_settings_must_fit_the_protocol(
    values: dict[str, object], problems: list[str]
) -> None:
    settings = Settings.model_construct(**{**Settings().model_dump(), **values})
    assert security_problems(settings) == problems
    if problems:
        with pytest.raises(ValueError, match=re.escape(problems[0])):
            Settings(**values)  # type: ignore[arg-type]


def test_the_aggregation_s_static_member_id_changes_with_its_subscription() -> None:
    """An upgrade that subscribes to other topics joins as a new static member: the old one's
    assignment, naming a topic no longer read, is never handed to it."""
    worker = Settings(instance_id="wmiwatch-0")
    before = worker.member_id(["wmiwatch.matches", "wmiwatch.risk"])
    after = worker.member_id(["wmiwatch.risk-batches", "wmiwatch.matches"])
    assert before is not None and after is not None
    assert before.startswith("wmiwatch-0-") and after.startswith("wmiwatch-0-")
    assert before != after
    assert after == worker.member_id(["wmiwatch.matches", "wmiwatch.risk-batches"])  # any order
    assert Settings().member_id(["wmiwatch.matches"]) is None  # dynamic membership


def test_every_compression_type_is_one_both_kafka_clients_read() -> None:
    """The worker's Faust consumer (aiokafka) must decode what its producers (librdkafka) send."""
    readable = {
        "none": True,
        "gzip": codec.has_gzip(),
        "snappy": codec.has_snappy(),
        "lz4": codec.has_lz4(),
        "zstd": codec.has_zstd(),
    }
    offered = get_args(Settings.model_fields["compression_type"].annotation)
    assert set(offered) == set(readable)
    assert all(readable[name] for name in offered)
    assert Settings().compression_type == "lz4"
    with pytest.raises(ValidationError):
        Settings(compression_type="brotli")  # type: ignore[arg-type]

"""Settings read from ``WMIWATCH_*`` environment variables."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline import CONTENT
from pipeline.logs import LogFormat
from pipeline.policy import MAX_EVENT_BYTES, MAX_OPEN_DESTS, RiskPolicy, TimePolicy, WindowPolicy
from pipeline.topics import Topics, load_topics

WINDOW, RISK, TIME = WindowPolicy(), RiskPolicy(), TimePolicy()


class Settings(BaseSettings):
    """Worker and client configuration; secrets are SecretStr and never printed."""

    model_config = SettingsConfigDict(env_prefix="WMIWATCH_", frozen=True, extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    topic_prefix: str = ""  # for the topics wmiwatch owns, not the raw ones
    raw_topics: dict[str, str] = Field(default_factory=dict)  # source -> name; "" switches off
    group_id: str = "wmiwatch"
    instance_id: str | None = None
    rules_dir: Path = CONTENT / "rules"
    topics_dir: Path = CONTENT / "topics"
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    data_dir: Path = Path(".wmiwatch")
    window_seconds: int = Field(default=WINDOW.window_seconds, gt=0)
    allowed_lateness_seconds: int = Field(default=WINDOW.allowed_lateness_seconds, ge=0)
    update_interval_seconds: float = Field(default=WINDOW.update_interval_seconds, ge=0)
    tick_interval_seconds: float = Field(default=1.0, gt=0)
    risk_score_threshold: int = Field(default=RISK.score_threshold, gt=0)
    risk_score_window_seconds: int = Field(default=RISK.score_window_seconds, gt=0)
    risk_tactics_threshold: int = Field(default=RISK.tactics_threshold, gt=0)
    risk_tactics_window_seconds: int = Field(default=RISK.tactics_window_seconds, gt=0)
    output_format: Literal["native", "ocsf"] = "native"
    intake_batch_size: int = Field(default=5000, gt=0)
    max_event_bytes: int = Field(default=MAX_EVENT_BYTES, gt=0)
    max_open_dests: int = Field(default=MAX_OPEN_DESTS, gt=0)
    max_event_future_seconds: float = Field(default=TIME.max_future_seconds, ge=0)
    max_event_age_seconds: float | None = Field(default=TIME.max_age_seconds, gt=0)
    processing_guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    commit_interval_seconds: float = Field(default=0.1, gt=0)
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    log_format: LogFormat = "text"
    intake_stall_seconds: float = Field(default=90.0, gt=0)
    intake_processes: int = Field(default=1, gt=0)
    replication_factor: int = Field(default=1, gt=0)
    min_insync_replicas: int = Field(default=1, gt=0)

    @model_validator(mode="after")
    def _raw_topics_name_known_sources(self) -> Settings:
        self.topics()  # raises ValueError naming an unknown source
        return self

    @model_validator(mode="after")
    def _security_settings_fit_the_protocol(self) -> Settings:
        misfits = security_problems(self)
        if misfits:
            raise ValueError("; ".join(misfits))
        return self

    @model_validator(mode="after")
    def _in_sync_within_replicas(self) -> Settings:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) exceeds"
                f" replication_factor ({self.replication_factor}): every write would fail"
            )
        return self

    def intake_settings(self, number: int) -> Settings:
        """Return the settings of this worker's intake process ``number`` (from 0).

        Each intake is a member of the raw topics' group: with a static instance id, the
        processes after the first get ``<id>-<number>`` (so their transactional ids differ too).
        """
        if number == 0 or self.instance_id is None:
            return self
        return self.model_copy(update={"instance_id": f"{self.instance_id}-{number}"})

    def member_id(self, subscribed: Iterable[str]) -> str | None:
        """Return the aggregation's static member id: the instance id and a digest of the
        topics it subscribes to.

        A static member that rejoins within its session timeout is handed its old assignment,
        and the Faust consumer refuses one naming a topic it no longer subscribes to (it then
        waits with no partitions). A version whose subscription differs joins as a new member,
        and the old one leaves when its session times out.
        """
        if self.instance_id is None:
            return None
        digest = hashlib.blake2b("\n".join(sorted(subscribed)).encode(), digest_size=4)
        return f"{self.instance_id}-{digest.hexdigest()}"

    def topic_config(self) -> dict[str, str]:
        """Return the replication config every topic wmiwatch creates gets."""
        return {"min.insync.replicas": str(self.min_insync_replicas)}

    def topics(self) -> Topics:
        """Return the topic definitions with this deployment's names."""
        return load_topics(self.topics_dir, self.topic_prefix, self.raw_topics)

    def window_policy(self) -> WindowPolicy:
        """Return the aggregation window policy."""
        return WindowPolicy(
            self.window_seconds, self.allowed_lateness_seconds, self.update_interval_seconds
        )

    def time_policy(self) -> TimePolicy:
        """Return how far event times are trusted."""
        return TimePolicy(self.max_event_future_seconds, self.max_event_age_seconds)

    def risk_policy(self) -> RiskPolicy:
        """Return the risk incident policy."""
        return RiskPolicy(
            self.risk_score_threshold,
            self.risk_score_window_seconds,
            self.risk_tactics_threshold,
            self.risk_tactics_window_seconds,
        )

    def librdkafka_config(self) -> dict[str, Any]:
        """Return connection settings for confluent-kafka clients."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        config.update({key: str(value) for key, value in optional.items() if value is not None})
        return config


PREFIX = "WMIWATCH_"
TEST_PREFIX = "WMIWATCH_TEST_"  # the test suite's own variables, not settings


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """Return a message for each ``WMIWATCH_*`` variable that names no setting, with a guess."""
    known = [name.upper() for name in Settings.model_fields]
    messages = []
    for name in sorted(environ):
        setting = name.removeprefix(PREFIX)
        if setting == name or name.startswith(TEST_PREFIX) or setting in known:
            continue
        guess = [PREFIX + g for g in difflib.get_close_matches(setting, known, n=1, cutoff=0.75)]
        messages.append(f"{name} is no setting" + (f" (did you mean {guess[0]}?)" if guess else ""))
    return messages


def problems(error: ValidationError) -> list[str]:
    """Return each problem of a refused configuration as ``setting: message``, no input values.

    pydantic's own text repeats the input, which may hold the password.
    """
    found = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        location = ".".join(map(str, item["loc"]))
        found.append(f"{location}: {message}" if location else message)
    return found


def security_problems(settings: Settings) -> list[str]:
    """Return what does not fit together in the SASL and TLS settings."""
    protocol = settings.security_protocol
    sasl = {
        "sasl_mechanism": settings.sasl_mechanism,
        "sasl_username": settings.sasl_username,
        "sasl_password": settings.sasl_password,
    }
    tls = {
        "ssl_ca_location": settings.ssl_ca_location,
        "ssl_certificate_location": settings.ssl_certificate_location,
        "ssl_key_location": settings.ssl_key_location,
    }
    misfits = []
    if protocol.startswith("SASL_"):
        misfits += [f"{protocol} needs {name}" for name, value in sasl.items() if value is None]
    else:
        misfits += [f"{name} is set but {protocol} uses no SASL" for name, v in sasl.items() if v]
    if not protocol.endswith("SSL"):
        misfits += [f"{name} is set but {protocol} uses no TLS" for name, v in tls.items() if v]
    if (settings.ssl_certificate_location is None) != (settings.ssl_key_location is None):
        misfits.append("ssl_certificate_location and ssl_key_location go together (mTLS)")
    return misfits

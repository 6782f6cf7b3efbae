"""SASL_SSL with SCRAM-SHA-512 and TLS against Apache Kafka enforcing ACLs (StandardAuthorizer).

The worker's principal may use only the topics under the deployment's prefix and its own
groups and Faust topics; with those rights the seed findings arrive, and a principal without
rights (or a wrong password) stops the worker at start-up with a one-line reason.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from pydantic import SecretStr

from pipeline.apache_kafka import KafkaCluster, Sasl
from pipeline.broker import free_port
from pipeline.kafka import create_topics
from pipeline.settings import Settings
from tests.conftest import (
    apache_kafka,
    isolated_raw_topics,
    settings_env,
)
from tests.integration.test_commands import run_check
from tests.integration.test_stream import SEED_FINDINGS, seed_findings
from tests.tls import make_certificates

pytestmark = pytest.mark.cluster
ADMIN_PASSWORD = "admin-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KafkaCluster, Path]]:
    """Yield a single Apache Kafka node that takes only SASL_SSL clients, and its CA file."""
    folder = tmp_path_factory.mktemp("secure")
    ca, keystore = make_certificates(folder)
    with apache_kafka(folder / "kafka", 1, sasl=Sasl(keystore, ca, ADMIN_PASSWORD)) as cluster:
        yield cluster, ca


def login(cluster: KafkaCluster, ca: Path, user: str, password: str, tag: str) -> Settings:
    """Return the settings of principal ``user`` for a deployment of its own."""
    return Settings(
        bootstrap_servers=cluster.bootstrap,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=user,
        sasl_password=SecretStr(password),
        ssl_ca_location=ca,
        topic_prefix=f"s{tag}.",
        raw_topics=isolated_raw_topics(f"s{tag}."),
        group_id=f"wmiwatch-{tag}",
        metrics_port=free_port(),
    )


def add_user(admin: AdminClient, user: str, password: str) -> None:
    """Create SCRAM-SHA-512 credentials for ``user``."""
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    upsert = UserScramCredentialUpsertion(user, info, password.encode())
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result()


def grant_wmiwatch(admin: AdminClient, user: str, settings: Settings) -> None:
    """Allow ``user`` exactly what a worker of ``settings`` needs, by name prefix."""
    principal = f"User:{user}"
    rights = [
        (ResourceType.TOPIC, settings.topic_prefix, AclOperation.READ),
        (ResourceType.TOPIC, settings.topic_prefix, AclOperation.WRITE),
        (ResourceType.TOPIC, settings.topic_prefix, AclOperation.DESCRIBE),
        (ResourceType.TOPIC, f"{settings.group_id}-", AclOperation.ALL),  # Faust's own topics
        (ResourceType.GROUP, settings.group_id, AclOperation.READ),
        (ResourceType.GROUP, settings.group_id, AclOperation.DESCRIBE),
        (ResourceType.TRANSACTIONAL_ID, f"{settings.group_id}-", AclOperation.WRITE),
        (ResourceType.TRANSACTIONAL_ID, f"{settings.group_id}-", AclOperation.DESCRIBE),
    ]
    bindings = [
        AclBinding(
            kind,
            name,
            ResourcePatternType.PREFIXED,
            principal,
            "*",
            operation,
            AclPermissionType.ALLOW,
        )
        for kind, name, operation in rights
    ]
    for future in admin.create_acls(bindings).values():
        future.result()


def worker_exit(settings: Settings, tmp_path: Path) -> tuple[int, str]:
    """Run ``wmiwatch worker`` as ``settings``' principal; return its exit code and output."""
    env = settings_env(settings.model_copy(update={"data_dir": tmp_path / "refused"}))
    command = [sys.executable, "-m", "pipeline", "worker"]
    done = subprocess.run(command, env=env, capture_output=True, timeout=120, check=False)
    return done.returncode, " ".join((done.stdout + done.stderr).decode().split())


def deployment(secure: tuple[KafkaCluster, Path], name: str) -> tuple[Settings, Settings]:
    """Create a deployment's topics as admin and a SCRAM user ``name-<tag>`` with no rights.

    Return the admin's settings and the user's.
    """
    cluster, ca = secure
    tag = uuid.uuid4().hex[:8]
    admin_settings = login(cluster, ca, "admin", ADMIN_PASSWORD, tag)
    create_topics(admin_settings, admin_settings.topics(), raw=True)
    user, password = f"{name}-{tag}", uuid.uuid4().hex
    add_user(AdminClient(admin_settings.librdkafka_config()), user, password)
    return admin_settings, login(cluster, ca, user, password, tag)


def test_a_principal_with_prefixed_acls_gets_the_seed_findings(
    secure: tuple[KafkaCluster, Path], tmp_path: Path
) -> None:
    admin_settings, settings = deployment(secure, "wmiwatch")
    admin = AdminClient(admin_settings.librdkafka_config())
    grant_wmiwatch(admin, str(settings.sasl_username), settings)
    worker = settings.model_copy(update={"data_dir": tmp_path / "worker"})
    log = tmp_path / "worker.log"
    assert seed_findings(worker, admin_settings, admin_settings.topics(), log) >= SEED_FINDINGS
    assert settings.sasl_password is not None
    assert settings.sasl_password.get_secret_value() not in log.read_text()


def test_a_principal_without_rights_is_stopped_at_start_up(
    secure: tuple[KafkaCluster, Path], tmp_path: Path
) -> None:
    _, settings = deployment(secure, "nobody")
    user, tag = str(settings.sasl_username), settings.topic_prefix

    code, output = worker_exit(settings, tmp_path)
    assert code == 2, output
    assert f"{user} may not use these topics (grant it ACLs on them): " in output
    assert f"{tag}wmiwatch.findings" in output

    wrong = settings.model_copy(update={"sasl_password": SecretStr("wrong")})
    code, output = worker_exit(wrong, tmp_path)
    assert code == 2, output
    assert f"Kafka refused the login of {user}" in output


def test_check_names_the_rights_a_principal_lacks(secure: tuple[KafkaCluster, Path]) -> None:
    admin_settings, settings = deployment(secure, "checked")
    findings = f"{settings.topic_prefix}wmiwatch.findings"
    code, lines = run_check(settings)
    assert code == 1
    assert f"FAIL topic {findings}: the principal may not describe it (grant it ACLs)" in lines

    admin = AdminClient(admin_settings.librdkafka_config())
    grant_wmiwatch(admin, str(settings.sasl_username), settings)
    code, lines = run_check(settings)
    assert code == 0, lines
    assert f"ok   access {findings}: may write" in lines
    assert f"ok   access {settings.topic_prefix}wmiwatch.matches: may read and write" in lines

    suppressions = f"{settings.topic_prefix}wmiwatch.suppressions"
    only_describe = AclBinding(
        ResourceType.TOPIC,
        suppressions,
        ResourcePatternType.LITERAL,
        f"User:{settings.sasl_username}",
        "*",
        AclOperation.READ,
        AclPermissionType.DENY,
    )
    for future in admin.create_acls([only_describe]).values():
        future.result()
    code, lines = run_check(settings)
    assert code == 1
    assert f"FAIL access {suppressions}: may not read (grant it ACLs)" in lines

    wrong = settings.model_copy(update={"sasl_password": SecretStr("wrong")})
    code, lines = run_check(wrong)
    assert code == 1
    assert any(line.startswith("FAIL broker: ") and "SASL" in line for line in lines), lines

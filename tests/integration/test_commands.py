"""The README's demo command and the broker command, run as a user runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from pipeline.apache_kafka import fetch
from pipeline.broker import BrokerUnavailable, free_port, wait_for_port
from pipeline.kafka import create_topics, producer
from pipeline.settings import Settings
from pipeline.topics import Topics
from tests.conftest import settings_env, tool

pytestmark = pytest.mark.integration


def log_tails(folder: Path) -> str:
    """Return the end of every log file under ``folder``, each under its name."""
    return "\n".join(
        f"--- {log}\n{log.read_text(errors='replace')[-2000:]}"
        for log in sorted(folder.rglob("*.log"))
    )


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_demo_prints_the_seed_findings_and_cleans_up(tmp_path: Path) -> None:
    broker_port, metrics_port = free_port(), free_port()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "demo",
            "--port",
            str(broker_port),
            "--metrics-port",
            str(metrics_port),
            "--stop-after",
            "6",
        ],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    findings = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert {f["rule_name"] for f in findings} >= {
        "Remote WMI Command Attempt",
        "Remote Process Instantiation via WMI and PowerShell Script Block",
        "PowerShell Invoke WmiExec Usage",
    }
    assert b"metrics: http://127.0.0.1:" in result.stderr
    assert port_is_free(broker_port) and port_is_free(metrics_port)


@pytest.mark.parametrize(
    ("engine", "brokers"), [("embedded", 1), ("apache-kafka", 2)], ids=["embedded", "kafka"]
)
def test_broker_command_stops_its_brokers_on_sigterm(
    engine: str, brokers: int, tmp_path: Path
) -> None:
    if engine == "apache-kafka":
        for name in ("java", "mvn"):
            tool(name)
        fetch()  # once per machine (Maven); the timed part below is the start
    port = free_port()
    command = [sys.executable, "-m", "pipeline", "broker", "--port", str(port)]
    command += ["--data-dir", str(tmp_path / "data"), "--engine", engine, "--brokers", str(brokers)]
    with (tmp_path / "broker.log").open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=120)
    except BrokerUnavailable as error:
        pytest.fail(f"{error}\n{log_tails(tmp_path)}")
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
    deadline = time.monotonic() + 120
    while len(admin.list_topics(timeout=10).brokers) < brokers:
        assert time.monotonic() < deadline, "not every broker joined"
        time.sleep(0.5)
    ports = [int(b.port) for b in admin.list_topics(timeout=10).brokers.values()]
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert all(port_is_free(p) for p in ports)


def test_the_forwarding_example_posts_findings_to_a_webhook(
    settings: Settings, topics: Topics
) -> None:
    received: list[bytes] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    finding = {"status": "new", "rule_name": "r", "dest": "h1", "title": "t", "finding_id": "f"}
    client = producer(settings)
    client.produce(topics.findings, orjson.dumps(finding), key=b"h1")
    client.flush(10)
    webhook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    result = subprocess.run(
        [
            sys.executable,
            "examples/forward_findings.py",
            "--bootstrap",
            settings.bootstrap_servers,
            "--webhook",
            webhook,
            "--max",
            "1",
        ],
        cwd=Path(__file__).parents[2],
        env={**os.environ, "WMIWATCH_TOPIC_PREFIX": settings.topic_prefix},
        capture_output=True,
        timeout=60,
        check=False,
    )
    server.shutdown()
    assert result.returncode == 0, result.stderr.decode()
    assert [orjson.loads(body) for body in received] == [finding]


def run_check(settings: Settings) -> tuple[int, list[str]]:
    """Run ``wmiwatch check`` as ``settings``; return its exit code and output lines."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "check"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout.splitlines()


def test_check_passes_on_a_ready_deployment_and_names_what_is_missing(
    settings: Settings,
) -> None:
    code, lines = run_check(settings)
    assert code == 1
    findings = f"{settings.topic_prefix}wmiwatch.findings"
    assert f"FAIL topic {findings}: missing: create it" in "\n".join(lines)
    assert lines[:2] == [
        "ok   settings: valid",
        f"ok   rules: 14 rules compiled from {settings.rules_dir}",
    ]

    created = settings.topics()
    create_topics(settings, created, raw=True)
    code, lines = run_check(settings)
    assert code == 0, lines
    shapes = [line for line in lines if line.startswith("ok   topic ")]
    assert len(shapes) == len(created.deployed(raw=True))
    assert f"ok   topic {findings}: partitions 6, replication 1" in lines

    wrong = settings.model_copy(update={"replication_factor": 3, "min_insync_replicas": 2})
    code, lines = run_check(wrong)
    assert code == 1
    assert f"FAIL topic {findings}: partitions 6, replication 1; expected replication 3" in lines

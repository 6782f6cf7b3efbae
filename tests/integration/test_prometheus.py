"""A real Prometheus server scrapes a real worker and sees its series."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from pipeline.broker import free_port, wait_for_port
from pipeline.settings import Settings
from tests.conftest import WorkerProcess, tool
from tests.unit.test_deploy import dashboard_targets

pytestmark = pytest.mark.integration


def query(port: int, promql: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(promql)}"
    body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert body["status"] == "success"
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def ready(port: int) -> bool:
    try:
        return bool(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5).status == 200
        )
    except urllib.error.URLError:
        return False


def assert_counters_start_at_zero_for_every_source_and_rule(port: int, settings: Settings) -> None:
    """Silence alerts can fire after a restart: the series exist before the first event."""
    topics = query(port, "sum by (topic) (wmiwatch_events_consumed_total)")
    assert {t["metric"]["topic"] for t in topics} >= set(settings.topics().raw().values())  # type: ignore[index]
    for series in ("wmiwatch_rule_matches_total", 'wmiwatch_findings_emitted_total{status="new"}'):
        assert len(query(port, f"sum by (rule) ({series})")) == 14


def assert_every_dashboard_query_answers(port: int) -> None:
    """Each dashboard query is valid PromQL; the rule panels' legends get rule names."""
    for title, target in dashboard_targets():
        expr = target["expr"].replace("$namespace", "wmiwatch").replace("$pod", "wmiwatch-0")
        rows = query(port, expr)
        if "{{rule_name}}" in target["legendFormat"] and "matches_total" in expr:
            names = {r["metric"]["rule_name"] for r in rows}  # type: ignore[index]
            assert "Process Execution via WMI" in names, title


def test_prometheus_scrapes_the_worker(
    settings: Settings, worker: WorkerProcess, tmp_path: Path
) -> None:
    prometheus = tool("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: wmiwatch\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{settings.metrics_port}'],"
        " labels: {namespace: wmiwatch, pod: wmiwatch-0}}]\n"  # as the ServiceMonitor gives
    )
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        deadline = time.monotonic() + 60
        while not ready(port):  # the API answers 503 until the TSDB is open
            assert time.monotonic() < deadline, "Prometheus never became ready"
            time.sleep(0.5)
        while not query(port, "wmiwatch_rules_loaded"):
            assert time.monotonic() < deadline, "Prometheus never got the worker's series"
            time.sleep(1)
        (rules,) = query(port, "wmiwatch_rules_loaded")
        assert rules["value"][1] == "14"  # type: ignore[index]
        (up,) = query(port, 'up{job="wmiwatch"}')
        assert up["value"][1] == "1"  # type: ignore[index]
        while not query(port, 'count_over_time(up{job="wmiwatch"}[1m]) >= 3'):
            assert time.monotonic() < deadline, "Prometheus stopped scraping the worker"
            time.sleep(1)  # rate() needs two samples
        assert_counters_start_at_zero_for_every_source_and_rule(port, settings)
        assert_every_dashboard_query_answers(port)
        processes = query(port, 'process_resident_memory_bytes{job="wmiwatch"}')
        assert len({p["metric"]["pid"] for p in processes}) == 2  # type: ignore[index]
    finally:
        server.terminate()
        server.wait(timeout=30)

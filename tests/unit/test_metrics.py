"""Metrics served in multiprocess mode: forgotten lag series go, every process shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

SERVE = """
import multiprocessing, os, sys
from prometheus_client import generate_latest
from pipeline import metrics

def child(ready, done):
    metrics.consumer_lag.labels("windows.security", "0").set(3)
    ready.set()
    done.wait(30)

if __name__ == "__main__":
    spawn = multiprocessing.get_context("spawn")
    ready, done = spawn.Event(), spawn.Event()
    other = spawn.Process(target=child, args=(ready, done))
    other.start()
    ready.wait(30)
    metrics.consumer_lag.labels("windows.sysmon", "0").set(5)
    metrics.consumer_lag.labels("windows.sysmon", "1").set(7)
    metrics.forget_lag("windows.sysmon", 1)
    sys.stdout.write(f"{os.getpid()} {other.pid}\\n")
    sys.stdout.write(generate_latest(metrics.exposed_registry()).decode())
    done.set()
    other.join()
"""


def test_revoked_lag_is_not_served_and_each_process_has_its_process_metrics(
    tmp_path: Path,
) -> None:
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    (tmp_path / "metrics").mkdir()
    output = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
        cwd=Path(__file__).parents[2],
        timeout=120,
    ).stdout
    pids, exposition = output.split("\n", 1)
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    lag = {
        (s.labels["topic"], s.labels["partition"]): s.value
        for s in families["wmiwatch_consumer_lag"].samples
    }
    assert lag == {("windows.sysmon", "0"): 5, ("windows.security", "0"): 3}
    memory = families["process_resident_memory_bytes"].samples
    assert {s.labels["pid"] for s in memory} == set(pids.split())
    assert all(s.value > 0 for s in memory)

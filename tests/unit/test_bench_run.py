"""The benchmark reads a worker's progress from its processes' metric files."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict, mmap_key

from bench.run import counted


def write_counter(path: Path, metric: str, labels: dict[str, str], value: float) -> None:
    """Write one series of counter ``metric`` as prometheus_client's multiprocess mode does."""
    stored = MmapedDict(str(path))
    key = mmap_key(metric.removesuffix("_total"), metric, list(labels), list(labels.values()), "")
    stored.write_value(key, value, 0.0)
    stored.close()


def test_a_counter_is_summed_over_series_processes_and_workers(tmp_path: Path) -> None:
    workers = [tmp_path / "worker0", tmp_path / "worker1"]
    for worker in workers:
        (worker / "metrics").mkdir(parents=True)
    aggregated = "wmiwatch_matches_aggregated_total"
    write_counter(workers[0] / "metrics/counter_11.db", aggregated, {"rule": "a"}, 3)
    write_counter(workers[0] / "metrics/counter_12.db", aggregated, {"rule": "b"}, 4)
    write_counter(workers[1] / "metrics/counter_21.db", aggregated, {"rule": "a"}, 5)
    write_counter(workers[1] / "metrics/counter_21.db", "wmiwatch_matches_aggregated", {}, 100)
    write_counter(workers[1] / "metrics/counter_22.db", "wmiwatch_late_matches_total", {}, 7)
    assert counted(workers, aggregated) == 12
    assert counted(workers[1:], "wmiwatch_late_matches_total") == 7
    assert counted(workers, "wmiwatch_events_consumed_total") == 0

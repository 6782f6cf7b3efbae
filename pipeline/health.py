"""Worker health for Kubernetes probes, served beside /metrics on the metrics port."""

from __future__ import annotations

import ctypes
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server

from pipeline import metrics
from pipeline.metrics import exposed_registry

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

STALL_SECONDS = 60.0
HTTP_CONNECTIONS = 32
HTTP_IDLE_SECONDS = 10
_ERROR_BYTES = 512
_SPAWN = multiprocessing.get_context("spawn")


class IntakeStatus:
    """The intake's side of health, in shared memory so the intake can run in its own process."""

    def __init__(self) -> None:
        self._heartbeat = _SPAWN.RawValue(ctypes.c_double, time.monotonic())
        self._joined = _SPAWN.RawValue(ctypes.c_bool, False)
        self._broker_error = _SPAWN.RawArray(ctypes.c_char, _ERROR_BYTES)

    def beat(self) -> None:
        """Record that the intake loop went round."""
        self._heartbeat.value = time.monotonic()

    @property
    def heartbeat(self) -> float:
        """Return the monotonic time of the last beat (one clock for all processes)."""
        return float(self._heartbeat.value)

    @heartbeat.setter
    def heartbeat(self, moment: float) -> None:
        self._heartbeat.value = moment

    @property
    def joined(self) -> bool:
        """Return whether the intake has been assigned its partitions."""
        return bool(self._joined.value)

    @joined.setter
    def joined(self, joined: bool) -> None:
        self._joined.value = joined

    @property
    def broker_error(self) -> str | None:
        """Return the last error reaching the brokers, or None once they answer again."""
        return self._broker_error.value.decode("utf-8", "replace") or None

    @broker_error.setter
    def broker_error(self, error: str | None) -> None:
        encoded = (error or "").encode()[: _ERROR_BYTES - 1]
        self._broker_error.value = encoded


CRASH_WINDOW_SECONDS = 300.0
CRASH_LIMIT = 3


@dataclass
class AgentStatus:
    """The Faust side of health: the aggregation keeps handling records, agents stop crashing.

    Every intake sends a tick to every partition of the matches topic each tick interval, so
    an aggregation that owns partitions of it hears something every second: when it handles
    nothing for ``STALL_SECONDS``, matches are arriving and not being aggregated (a crashed or
    hung agent, a blocked event loop, a stuck consumer).
    """

    owns_partitions: bool = False
    progress: float = field(default_factory=time.monotonic)
    crashes: deque[float] = field(default_factory=lambda: deque(maxlen=64))

    def handled(self) -> None:
        """Record that the aggregation handled a record of the matches topic."""
        self.progress = time.monotonic()

    def assigned(self, owns_partitions: bool) -> None:
        """Record whether this worker owns matches partitions; a change restarts the clock."""
        if owns_partitions != self.owns_partitions:
            self.owns_partitions = owns_partitions
            self.progress = time.monotonic()

    def crashed(self) -> None:
        """Record that an agent raised out of its loop (Faust restarts it)."""
        self.crashes.append(time.monotonic())

    def idle_seconds(self) -> float:
        """Return how long matches have arrived without being handled (0 if none should)."""
        return time.monotonic() - self.progress if self.owns_partitions else 0.0

    def recent_crashes(self) -> int:
        """Return the crashes within the last ``CRASH_WINDOW_SECONDS``."""
        since = time.monotonic() - CRASH_WINDOW_SECONDS
        return sum(1 for moment in self.crashes if moment > since)


@dataclass
class Health:
    """What the probes check: intake and aggregation progress, broker, group join, recovery."""

    intakes: tuple[IntakeStatus, ...] = field(default_factory=lambda: (IntakeStatus(),))
    agents: AgentStatus = field(default_factory=AgentStatus)
    recovered: Callable[[], bool] = lambda: False

    def problems(self, *, ready: bool) -> list[str]:
        """Return why the worker is not live (or, with ``ready``, not ready); empty if fine."""
        found = []
        if self.intake_idle_seconds() > STALL_SECONDS:
            found.append(f"intake loop stalled for over {STALL_SECONDS:.0f}s")
        if self.recovered() and self.agents.idle_seconds() > STALL_SECONDS:
            found.append(f"matches arrive but none was aggregated for over {STALL_SECONDS:.0f}s")
        if (crashes := self.agents.recent_crashes()) >= CRASH_LIMIT:
            found.append(f"agents crashed {crashes} times in {CRASH_WINDOW_SECONDS:.0f}s")
        if ready:
            if errors := {i.broker_error for i in self.intakes if i.broker_error}:
                found.append(f"broker: {'; '.join(sorted(errors))}")
            if not all(intake.joined for intake in self.intakes):
                found.append("intake has not joined its consumer group")
            if not self.recovered():
                found.append("the Faust consumer has not been assigned its partitions")
        return found

    def intake_idle_seconds(self) -> float:
        """Return how long ago the slowest intake loop last went round."""
        return time.monotonic() - min(intake.heartbeat for intake in self.intakes)

    def export(self) -> None:
        """Set the health gauges, so alerts see what the probes see."""
        metrics.intake_idle_seconds.set(self.intake_idle_seconds())
        idle = self.agents.idle_seconds() if self.recovered() else 0.0
        metrics.aggregation_idle_seconds.set(idle)


def serve(port: int, health: Health, host: str = "0.0.0.0") -> BaseWSGIServer | MultiSocketServer:
    """Serve /metrics, /healthz and /readyz on ``port`` from a daemon thread.

    waitress reads requests without tying up a thread per connection, closes connections idle
    for ``HTTP_IDLE_SECONDS`` and accepts at most ``HTTP_CONNECTIONS`` at once.
    """
    registry = exposed_registry()

    def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/metrics"):
            health.export()
            status, body, kind = 200, generate_latest(registry), CONTENT_TYPE_LATEST
        elif path in ("/healthz", "/readyz"):
            problems = health.problems(ready=path == "/readyz")
            status, kind = (503 if problems else 200), "text/plain"
            body = ("\n".join(problems) or "ok").encode() + b"\n"
        else:
            status, body, kind = 404, b"not found\n", "text/plain"
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", kind), ("Content-Length", str(len(body)))],
        )
        return [body]

    server = create_server(
        application,
        host=host,
        port=port,
        threads=2,
        connection_limit=HTTP_CONNECTIONS,
        channel_timeout=HTTP_IDLE_SECONDS,
        cleanup_interval=HTTP_IDLE_SECONDS,
        max_request_header_size=16_384,
        max_request_body_size=0,
        ident="wmiwatch",
    )
    threading.Thread(target=server.run, name="wmiwatch-http", daemon=True).start()
    return server

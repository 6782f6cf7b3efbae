"""Worker health for Kubernetes probes, served beside /metrics on the metrics port."""

from __future__ import annotations

import ctypes
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.metrics import exposed_registry

STALL_SECONDS = 60.0
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


@dataclass
class Health:
    """What the probes check: intake loop heartbeat, broker reachability, group join, recovery."""

    intake: IntakeStatus = field(default_factory=IntakeStatus)
    recovered: Callable[[], bool] = lambda: False

    def problems(self, *, ready: bool) -> list[str]:
        """Return why the worker is not live (or, with ``ready``, not ready); empty if fine."""
        found = []
        if time.monotonic() - self.intake.heartbeat > STALL_SECONDS:
            found.append(f"intake loop stalled for over {STALL_SECONDS:.0f}s")
        if ready:
            if self.intake.broker_error:
                found.append(f"broker: {self.intake.broker_error}")
            if not self.intake.joined:
                found.append("intake has not joined its consumer group")
            if not self.recovered():
                found.append("table recovery has not finished")
        return found


def serve(port: int, health: Health, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz on ``port`` from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path in ("/healthz", "/readyz"):
                problems = health.problems(ready=self.path == "/readyz")
                body = ("\n".join(problems) or "ok").encode() + b"\n"
                self._reply(503 if problems else 200, body, "text/plain")
            else:
                self._reply(404, b"not found\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            """Keep probe requests out of the worker log."""

    registry = exposed_registry()
    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="wmiwatch-http", daemon=True).start()
    return server

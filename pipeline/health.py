"""Worker health for Kubernetes probes, served beside /metrics on the metrics port."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

STALL_SECONDS = 60.0


@dataclass
class Health:
    """What the probes check: intake loop heartbeat, broker reachability, group join, recovery."""

    heartbeat: float = field(default_factory=time.monotonic)
    broker_error: str | None = None
    joined: bool = False
    recovered: Callable[[], bool] = lambda: False

    def beat(self) -> None:
        """Record that the intake loop went round."""
        self.heartbeat = time.monotonic()

    def problems(self, *, ready: bool) -> list[str]:
        """Return why the worker is not live (or, with ``ready``, not ready); empty if fine."""
        found = []
        if time.monotonic() - self.heartbeat > STALL_SECONDS:
            found.append(f"intake loop stalled for over {STALL_SECONDS:.0f}s")
        if ready:
            if self.broker_error:
                found.append(f"broker: {self.broker_error}")
            if not self.joined:
                found.append("intake has not joined its consumer group")
            if not self.recovered():
                found.append("table recovery has not finished")
        return found


def serve(port: int, health: Health, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz on ``port`` from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                self._reply(200, generate_latest(), CONTENT_TYPE_LATEST)
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

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="wmiwatch-http", daemon=True).start()
    return server

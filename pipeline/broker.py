"""Run a local Kafka-protocol broker (the noida-db wheel's Kafka service) for demos and tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

STOP_TIMEOUT_SECONDS = 15.0
LISTEN_PORTS_FROM = 20000  # local brokers and metrics ports are chosen from here up
DEFAULT_FIRST_EPHEMERAL = 32768  # Linux's default; below every system's (IANA's is 49152)
_given: set[int] = set()


class BrokerUnavailable(RuntimeError):
    """The local broker could not be found or did not start."""


def broker_binary() -> Path:
    """Return the path of the broker binary shipped in the noida-db wheel."""
    spec = find_spec("noida_db")
    if spec is None or spec.origin is None:
        raise BrokerUnavailable("the local broker needs: pip install 'wmiwatch[local]'")
    return Path(spec.origin).parent / "noida-db"


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 now, below the kernel's range for client sockets.

    A port the kernel hands out (bind to port 0) is one it may give to any client connection
    before the server binds it; below that range only a listener takes a port. No port is
    returned twice by one process.
    """
    first_ephemeral = _first_ephemeral_port()
    while True:
        port = random.randrange(LISTEN_PORTS_FROM, first_ephemeral)
        if port not in _given and _bindable(port):
            _given.add(port)
            return port


def _first_ephemeral_port() -> int:
    """Return the first port of the range the kernel gives client sockets (Linux's setting)."""
    setting = Path("/proc/sys/net/ipv4/ip_local_port_range")
    first = int(setting.read_text().split()[0]) if setting.exists() else DEFAULT_FIRST_EPHEMERAL
    return max(first, LISTEN_PORTS_FROM + 1000)


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    """Block until 127.0.0.1:port accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise BrokerUnavailable(f"no broker listening on 127.0.0.1:{port} after {timeout:.0f}s")


def start_broker(port: int, data_dir: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the broker in its own process group and wait until it listens."""
    data_dir.mkdir(parents=True, exist_ok=True)
    output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    command = [
        str(broker_binary()),
        "start",
        "--only",
        "kafka",
        "--kafka-port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    process = subprocess.Popen(
        command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_for_port(port)
    except BrokerUnavailable:
        stop_broker(process)
        raise
    return process


def stop_broker(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """Stop the broker's whole process group (SIGTERM, then SIGKILL after ``timeout``)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


@contextmanager
def running_broker(port: int, data_dir: Path, log: Path | None = None) -> Iterator[str]:
    """Run a broker for the duration of the block; yield its bootstrap address."""
    process = start_broker(port, data_dir, log)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_broker(process)

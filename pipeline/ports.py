"""A free port on 127.0.0.1 that no other process is likely to take before its server binds it."""

from __future__ import annotations

import random
import socket
from pathlib import Path

# Ray's workers take ports 10002-19999 unless told otherwise (`ray start --max-worker-port`).
RAY_WORKER_PORTS_END = 20000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that nothing holds now, drawn from the ports nobody is handed without asking
    for them by number: above Ray's worker ports and below the kernel's ephemeral range, where
    every bind to port 0 lands (each raylet, agent and gRPC server of another Ray on the machine,
    each outgoing connection). Port 0's own answer can be taken in the seconds before a slow
    server binds it: once, in the test suite, another Ray's gRPC server took the port an MLflow
    server was about to bind and answered its health check. Falls back to port 0's answer on a
    machine whose ephemeral range leaves no room below it."""
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: the usual start of the ephemeral range
        low = 32768
    draw = random.SystemRandom()
    for _ in range(100 if low - RAY_WORKER_PORTS_END >= 1000 else 0):
        port = draw.randrange(RAY_WORKER_PORTS_END, low)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]

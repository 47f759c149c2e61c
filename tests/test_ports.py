"""pipeline.ports: ports for servers recur and its tests start, away from where the kernel hands
out ports to whoever binds port 0 (a Ray on the same machine)."""

from __future__ import annotations

import socket

from pipeline import ports


def test_a_port_is_drawn_between_rays_worker_ports_and_the_ephemeral_range(tmp_path, monkeypatch):
    # a port from free_port() is one the kernel would not give to a bind to port 0
    span = tmp_path / "ip_local_port_range"
    span.write_text("32768\t60999\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE", span)
    drawn = {ports.free_port() for _ in range(20)}
    assert all(ports.RAY_WORKER_PORTS_END <= p < 32768 for p in drawn)
    assert len(drawn) > 1  # drawn at random: two tests' servers rarely want the same one
    # and it is free: a server can bind it
    with socket.socket() as s:
        s.bind(("127.0.0.1", drawn.pop()))


def test_a_port_someone_holds_is_not_drawn(tmp_path, monkeypatch):
    held = socket.socket()
    held.bind(("127.0.0.1", ports.free_port()))
    port = held.getsockname()[1]
    span = tmp_path / "ip_local_port_range"
    span.write_text(f"{port + 1} 60999\n")  # the gap below the range: Ray's end .. port, which is held
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE", span)
    monkeypatch.setattr(ports, "RAY_WORKER_PORTS_END", port - 999)
    try:
        assert all(ports.free_port() != port for _ in range(50))
    finally:
        held.close()


def test_without_a_gap_below_the_ephemeral_range_the_kernel_picks(tmp_path, monkeypatch):
    span = tmp_path / "ip_local_port_range"
    span.write_text("20500 60999\n")  # under 1000 ports between Ray's worker ports and this range
    real = ports.EPHEMERAL_RANGE
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE", span)
    port = ports.free_port()  # the kernel's pick for port 0: in its own ephemeral range
    if real.exists():
        low, high = map(int, real.read_text().split())
        assert low <= port <= high
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE", tmp_path / "absent")  # not Linux: 32768 assumed
    assert ports.RAY_WORKER_PORTS_END <= ports.free_port() < 32768

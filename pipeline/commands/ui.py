"""`recur ui`: the MLflow UI over the configured store, on 127.0.0.1, stopped with recur."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commands.common import (
    add_store_args,
    tracking_uri,
)


def cmd_ui(args: argparse.Namespace) -> int:
    from pipeline.tracking.store import server_command

    _port_free(args.port)
    uri = tracking_uri(args)
    # the store URI (with a database password) goes in the server's environment, not its argv (ps)
    command, env = server_command(uri, port=args.port, runs_dir=Path(args.runs_dir or "recur-runs").resolve())
    from pipeline.tracking.redact import redact_text

    print(f"MLflow UI on http://127.0.0.1:{args.port} over {redact_text(uri)} (Ctrl-C stops it)", flush=True)
    from pipeline.children import run_until_stopped

    # the server and its workers stop with recur (Ctrl-C, kill PID), by their process group
    return run_until_stopped(command, env=env)


def _port_free(port: int) -> None:
    """Refuse a port something on 127.0.0.1 already holds, before the server starts: MLflow's
    server logs the failed bind and still exits 0, and whatever holds the port would answer the
    browser instead."""
    import errno
    import socket

    from pipeline.errors import CommandError

    if not 0 < port < 65536:
        raise CommandError(f"--port {port}: expected a port number from 1 to 65535")
    with socket.socket() as s:
        # as the server will bind: a connection of a UI stopped a moment ago, left in TIME_WAIT,
        # does not hold the port; a listening socket does
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise CommandError(f"--port {port}: cannot listen on 127.0.0.1:{port} "
                                   f"({exc.strerror})") from exc
            raise CommandError(f"--port {port}: 127.0.0.1:{port} is in use (another `recur ui` or "
                               "MLflow server?); stop it or choose another port with --port") from exc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="MLflow UI over the configured store, on 127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    add_store_args(p)
    p.set_defaults(func=cmd_ui)

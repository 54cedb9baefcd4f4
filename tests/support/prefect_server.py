"""A local Prefect server for tests that need one (deployments, artifacts): start it on a free
loopback port, wait for its health check, call its REST API, stop its process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(method: str, url: str, body: dict | None = None):
    import httpx

    response = httpx.request(method, url, json=body, timeout=30)
    response.raise_for_status()
    return response.json() if response.content else None


def kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def server_env(home: Path, port: int, **extra: str) -> dict[str, str]:
    """:func:`tests.support.runs.child_env` pointed at the server on ``port``, without analytics."""
    from tests.support.runs import child_env

    return child_env(home, f"http://127.0.0.1:{port}/api", PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)


def start_server(port: int, *, cwd: Path, env: dict, log: IO, timeout_s: float = 180) -> subprocess.Popen:
    """``prefect server start`` on 127.0.0.1:``port`` in its own process group, once it answers."""
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            api("GET", f"http://127.0.0.1:{port}/api/health")
            return server
        except Exception:  # noqa: BLE001 - not up yet
            if server.poll() is not None:
                log.flush()
                raise AssertionError(f"the server exited: {Path(log.name).read_text()[-3000:]}") from None
            if time.monotonic() > deadline:
                kill_group(server)
                raise AssertionError(f"the server did not come up in {timeout_s:.0f} s") from None
            time.sleep(1)

"""One run per work directory: the lock names its owner, a live owner keeps it, a dead one loses it."""

from __future__ import annotations

import json
import socket
import time

import pytest

from pipeline.core.lock import LOCK_NAME, WorkDirLocked, WorkLock


def test_second_holder_fails_fast_naming_the_owner(tmp_path):
    with WorkLock(tmp_path, "build"):
        started = time.monotonic()
        with pytest.raises(WorkDirLocked) as err:
            WorkLock(tmp_path, "reextract").acquire()
        assert time.monotonic() - started < 5  # fails at once, does not wait
    message = str(err.value)
    assert "'build'" in message and socket.gethostname() in message and "pid" in message and "started" in message
    assert not (tmp_path / LOCK_NAME).exists()  # released on exit
    with WorkLock(tmp_path, "release"):  # free again
        pass


def test_heartbeat_keeps_a_long_run_alive(tmp_path):
    with WorkLock(tmp_path, "build", heartbeat_s=0.1, stale_s=0.5):
        time.sleep(1.2)  # more than twice the staleness limit: only the heartbeat keeps it fresh
        with pytest.raises(WorkDirLocked):
            WorkLock(tmp_path, "build", heartbeat_s=0.1, stale_s=0.5).acquire()


def test_a_stale_lock_of_another_host_is_taken_over(tmp_path, caplog):
    owner = {"host": "node-17", "pid": 4242, "command": "build", "started": "2026-11-30T03:00:00+00:00"}
    (tmp_path / LOCK_NAME).write_text(json.dumps({**owner, "heartbeat": time.time() - 3600, "token": "dead"}))
    with WorkLock(tmp_path, "build") as lock:
        held = json.loads((tmp_path / LOCK_NAME).read_text())
        assert held["token"] == lock.token and held["host"] == socket.gethostname()
    assert "node-17" in caplog.text and "stale" in caplog.text


def test_a_fresh_lock_of_another_host_is_respected(tmp_path):
    owner = {"host": "node-17", "pid": 1, "command": "build", "started": "x", "heartbeat": time.time(), "token": "t"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(owner))
    with pytest.raises(WorkDirLocked, match="node-17"):
        WorkLock(tmp_path, "build").acquire()


def test_a_lock_of_a_dead_process_on_this_host_is_stale_at_once(tmp_path):
    """A build killed a moment ago (fresh heartbeat, but its pid is gone) does not block a restart."""
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = {"host": socket.gethostname(), "pid": int(gone.stdout), "command": "build", "started": "x"}
    (tmp_path / LOCK_NAME).write_text(json.dumps({**owner, "heartbeat": time.time(), "token": "killed"}))
    with WorkLock(tmp_path, "build") as lock:
        assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == lock.token

"""Stopping a run: Ctrl-C and SIGTERM, SIGKILL, a busy work directory, silent workers.

The builds run as subprocesses (``python -m cli build``) in a session of their own, with SIGINT
at its default disposition (a background job of a shell inherits it ignored, and would pass a
Ctrl-C test without being stopped by it: the child's caught-signal mask is checked).
``tests/support/pause_in_write`` holds the one clip's shard write open, so the signal lands
while the clip is in flight: its attempt mark is on disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_sample_run

from cli.flows import SERVER_RECORD, stop_left_server
from pipeline.core.attempts import DIRNAME
from pipeline.core.lock import LOCK_NAME, WorkLock
from pipeline.core.provenance import sha256_file
from pipeline.core.stopping import start_time
from tests.support.runs import child_env, sample_clips, small_config

ROOT = Path(__file__).resolve().parents[1]
CLIP = "tfjs_pose_1.mp4"  # the shortest sample clip (4 s)
# child_env is given no Prefect server: each build starts its temporary one, whose end is checked


def _build(root: Path, config: str = small_config("pose"), *extra: str) -> list[str]:
    raw, pairing, config_path = write_sample_run(root, sample_clips(CLIP), config)
    return [
        sys.executable, "-m", "cli", "build", str(raw), "--pairing", str(pairing), "--config", str(config_path),
        "--work", str(root / "work"), "--modalities", "pose", "--workers", "1", *extra,
    ]  # fmt: skip


def _start(command: list[str], env: dict) -> subprocess.Popen:
    """``command`` in a session of its own, SIGINT at its default disposition (not inherited ignored)."""
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _signal_mask(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (zombies count: nobody reaped them)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 400) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if not path.exists():
        proc.kill()
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"{path.name} never appeared: {out[-2000:]}{err[-3000:]}")


def _stop_in_extraction(tmp_path: Path, signum: int) -> None:
    """Start a build, send ``signum`` while its clip is in flight, check how it ends."""
    command = _build(tmp_path)
    clip_id = sha256_file(tmp_path / "raw" / "clips" / CLIP)
    marker = tmp_path / "in_write"
    env = child_env(
        tmp_path, VDV_TEST_PAUSE_IN_WRITE=str(marker), VDV_TEST_PAUSE_MATCH=f"features/pose/pose.{clip_id[:16]}"
    )
    proc = _start(command, env)
    work = tmp_path / "work"
    try:
        _wait_for(marker, proc)
        assert list((work / DIRNAME / clip_id).glob("*.attempt"))  # the clip is in flight
        assert (work / LOCK_NAME).exists()
        server = json.loads((work / SERVER_RECORD).read_text())
        sigint = 1 << (signal.SIGINT - 1)
        assert not _signal_mask(proc.pid, "SigIgn") & sigint and _signal_mask(proc.pid, "SigCgt") & sigint
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)  # a Ctrl-C in a terminal reaches the whole foreground group
        else:
            os.kill(proc.pid, signum)  # `kill PID`
        sent = time.monotonic()
        out, err = proc.communicate(timeout=60)
        print(f"stopped {time.monotonic() - sent:.1f} s after {signal.Signals(signum).name}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"vdv build: stopped by {signal.Signals(signum).name}"), err[-3000:]
    assert "extract: 0 of 1 clip(s) finished" in last and "run the same command again" in last, last
    assert "Traceback" not in err
    assert not (work / LOCK_NAME).exists() and not (work / DIRNAME).exists()  # released; marks cleared
    assert not (work / SERVER_RECORD).exists()
    assert _group(proc.pid) == []  # no worker, decoder or server process left in the build's group
    assert start_time(server["pid"]) is None  # the temporary server, in a session of its own, is gone too


@pytest.mark.slow
def test_ctrl_c_stops_a_build_in_extraction(tmp_path):
    _stop_in_extraction(tmp_path, signal.SIGINT)


@pytest.mark.slow
def test_sigterm_stops_a_build_in_extraction(tmp_path):
    _stop_in_extraction(tmp_path, signal.SIGTERM)


@pytest.mark.slow
def test_a_killed_builds_temporary_server_dies_with_it(tmp_path):
    """SIGKILL cannot be caught: the kernel kills the server when the build dies."""
    proc = _start(_build(tmp_path), child_env(tmp_path))
    record = tmp_path / "work" / SERVER_RECORD
    try:
        _wait_for(record, proc)
        server = json.loads(record.read_text())
        assert start_time(server["pid"]) is not None
    finally:
        proc.kill()  # the build alone, not its group: the server is in a session of its own anyway
        proc.wait()
    deadline = time.monotonic() + 30
    while start_time(server["pid"]) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert start_time(server["pid"]) is None, "the temporary server outlived its killed build"
    for pid in _group(proc.pid):
        os.kill(pid, signal.SIGKILL)


def test_the_next_run_stops_a_left_server_by_pid_and_start_time_only(tmp_path):
    """A server a killed run left (its parent gone) is stopped by the next run; a record whose pid
    now belongs to another process (another start time) leaves that process alone."""
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_parent = int(gone.stdout)
    try:
        record = tmp_path / SERVER_RECORD
        for proc, started in ((orphan, start_time(orphan.pid)), (unrelated, start_time(unrelated.pid) - 3600)):
            owner = {"host": os.uname().nodename, "pid": proc.pid, "started": started, "parent": dead_parent}
            record.write_text(json.dumps(owner))
            stopped = stop_left_server(tmp_path)
            assert not record.exists()
            if proc is orphan:
                assert stopped == orphan.pid and orphan.wait(timeout=10) is not None
            else:
                assert stopped is None and unrelated.poll() is None  # a reused pid: not ours to stop
    finally:
        for proc in (orphan, unrelated):
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("command", ["build", "reextract"])
def test_a_busy_work_directory_is_refused_at_once(tmp_path, command):
    """The lock is checked before anything slow: no temporary Prefect server is started (its
    database would appear under PREFECT_HOME), one line, no traceback."""
    args = _build(tmp_path)
    if command == "reextract":
        args = [sys.executable, "-m", "cli", "reextract", "--work", str(tmp_path / "work"), "--modalities", "pose"]
    with WorkLock(tmp_path / "work", "vdv build"):
        done = subprocess.run(args, cwd=ROOT, env=child_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vdv {command}: error: work directory "), done.stderr[-3000:]
    assert "'vdv build'" in lines[0] and f"pid {os.getpid()}" in lines[0]
    assert not (tmp_path / "prefect" / "prefect.db").exists()  # refused before a server started


# A command whose orderly stop never comes: its body swallows the first signal's exception and
# waits on, holding the lock, an attempt mark and a child process (what a run stuck in a worker
# looks like from the signal's side).
_DEAF_CHILD = (
    "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('up', flush=True); time.sleep(300)"
)

_STUCK = """
import subprocess, sys, time
import cli.flows
from cli.flows import stoppable
from pipeline.core.attempts import AttemptLedger
from pipeline.core.lock import WorkLock

work = sys.argv[1]
DEAF_CHILD = sys.argv[3]
cli.flows.STOP_GRACE_S = float(sys.argv[2])

def body():
    with WorkLock(work, "vdv build", shared=True):
        ledger = AttemptLedger.fresh(work)
        with ledger.attempt("c" * 64, "test:1"):
            # a child that ignores SIGINT, so only the forced stop ends it; it says when it is up
            # (a SIGINT that reaches a Python still starting prints "Fatal Python error")
            child = subprocess.Popen([sys.executable, "-c", DEAF_CHILD], stdout=subprocess.PIPE, text=True)
            assert child.stdout.readline().strip() == "up"
            told = False
            while True:
                try:  # the pid is told inside the try: a signal right after it is swallowed too
                    if not told:
                        told = True
                        print(child.pid, flush=True)
                    time.sleep(300)
                except KeyboardInterrupt:
                    print("swallowed", flush=True)

stoppable("build", body)
"""


@pytest.mark.parametrize("second", [False, True])
def test_a_stuck_stop_is_forced_and_a_second_ctrl_c_exits_at_once(tmp_path, second):
    """The first SIGINT's orderly stop is stuck: the timer (STOP_GRACE_S, 6 s) forces it; a second
    SIGINT forces it at once (the timer is set to 600 s there, past the wait's bound). Either way:
    exit 130, one line, the child process, the lock and the mark gone."""
    from cli.flows import STOP_GRACE_S

    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    grace = 600.0 if second else STOP_GRACE_S
    proc = _start([sys.executable, "-c", _STUCK, str(work), str(grace), _DEAF_CHILD], env)
    try:
        child = int(proc.stdout.readline())
        assert (work / LOCK_NAME).exists() and list((work / DIRNAME).glob("*/*.attempt"))
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.stdout.readline().strip() == "swallowed"  # the orderly stop is stuck
        sent = time.monotonic()
        if second:
            os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    print(f"ended {took:.1f} s after the {'second' if second else 'first'} SIGINT (timer {grace:.0f} s)")
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines() == [err.strip().splitlines()[-1]]
    assert err.startswith("vdv build: stopped by SIGINT (Ctrl-C);"), err
    assert start_time(child) is None
    assert not (work / LOCK_NAME).exists() and not (work / DIRNAME).exists()


def test_the_silence_bound_is_checked_with_the_configuration(tmp_path):
    """``[runner] worker_silence_s`` shorter than three heartbeats of a running clip would fail
    healthy runs: refused when the file is loaded, naming the key."""
    from flows.runners import register_config
    from pipeline.core.config import ConfigError
    from pipeline.sections import load_config

    register_config()
    path = tmp_path / "run.toml"
    path.write_text("[runner]\nworker_silence_s = 20\n")
    assert load_config(path)["runner"] == {"worker_silence_s": 20}
    path.write_text("[runner]\nworker_silence_s = 10\n")
    with pytest.raises(ConfigError, match=r"\[runner\] worker_silence_s must be at least 15"):
        load_config(path)

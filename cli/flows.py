"""Starting a Prefect flow from the command line: the ephemeral mode's settings, then the flow."""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path


def prefect_defaults() -> None:
    """Settings for Prefect's ephemeral mode, before Prefect is imported; an explicit setting wins.

    Offline: the temporary server would otherwise try to send telemetry and log a failure on
    every run where there is no network. Patient: on a busy machine the temporary server can
    take longer than Prefect's 20 s to start.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def load_flow(name: str):
    """The flow ``flows.<name>.<name>`` (build, reextract, release), imported in Prefect's offline
    and patient ephemeral mode."""
    prefect_defaults()  # before Prefect is imported
    if name == "build":
        from flows.build import build as flow
    elif name == "reextract":
        from flows.reextract import reextract as flow
    elif name == "release":
        from flows.release import release as flow
    else:
        raise ValueError(f"unknown flow {name!r}")
    _quiet_http()
    _plain_expected_failures()
    return flow


def _quiet_http() -> None:
    """Prefect's client logs every API request at INFO through httpx; keep the run's own log readable."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


class _NoTraceback(logging.Filter):
    """Drops the traceback from Prefect's log record of a failure the run explains in one line
    (bad input, missing weights, a release or build that cannot go on); the message stays. Any
    other exception keeps its traceback, and -vv keeps them all."""

    def __init__(self, expected: tuple[type[BaseException], ...]):
        super().__init__()
        self.expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, self.expected) and not logging.getLogger().isEnabledFor(logging.DEBUG):
            record.exc_info, record.exc_text = None, None
        return True


def _plain_expected_failures() -> None:
    from flows.build import BuildError
    from pipeline.core.errors import DiskFull, InputError, WeightsError
    from pipeline.release import ReleaseError

    expected = (BuildError, DiskFull, InputError, ReleaseError, WeightsError)
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTraceback) for f in logger.filters):
            logger.addFilter(_NoTraceback(expected))


# -- the run's temporary Prefect server ------------------------------------------------------------

SERVER_RECORD = ".vdv.prefect-server.json"  # <work>/: the temporary server of the run that holds the lock

# Runs the server: asks the kernel to kill it when the process that started it ends, however it
# ends (PR_SET_PDEATHSIG survives the exec; Linux), then becomes uvicorn. argv: parent pid, uvicorn's.
_LAUNCHER = """\
import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != int(sys.argv[1]):
        os._exit(1)  # the parent ended before the request
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


class TemporaryServer:
    """The run's temporary Prefect API, started here instead of by Prefect on first use, so that
    its lifetime is the command's: in a session of its own (a Ctrl-C in the terminal does not stop
    it under the flow that is still reporting to it), killed by the kernel when the command dies
    (even by SIGKILL), stopped last when the command ends, and recorded in the work directory
    (pid and start time) so that a later run stops one that outlived its command."""

    def __init__(self, work: str | os.PathLike):
        self.record = Path(work) / SERVER_RECORD
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout_s: float) -> None:
        for _ in range(5):
            port = _free_port()
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *_uvicorn(port)],
                env=_server_env(),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
            )
            self.url = f"http://127.0.0.1:{port}/api"
            if _wait_healthy(self.proc, self.url, timeout_s):
                break
            if self.proc.returncode != 3:  # 3: uvicorn found the port taken, try another
                raise RuntimeError(f"the temporary Prefect server exited with code {self.proc.returncode}")
        else:
            raise RuntimeError("the temporary Prefect server found no free port in 5 tries")
        from pipeline.core import stopping, tables

        started = stopping.start_time(self.proc.pid)
        owner = {"host": socket.gethostname(), "pid": self.proc.pid, "started": started, "parent": os.getpid()}
        tables.atomic_write(self.record, lambda tmp: tmp.write_text(json.dumps(owner)))
        stopping.spare(self.proc.pid)

    def stop(self, grace_s: float = 5.0) -> None:
        from pipeline.core import stopping

        if self.proc is not None:
            stopping.spare(None)
            stopping.stop_processes(_as_process(self.proc.pid), grace_s)
            self.proc.wait(timeout=5)
            self.proc = None
        self.record.unlink(missing_ok=True)


def stop_left_server(work: str | os.PathLike) -> int | None:
    """Stop the temporary server a killed run left behind in ``work`` (held under its lock, so
    that run is over): the process its record names by pid *and* start time, still running
    without the process that started it. A pid reused by another process is left alone. Returns
    the pid stopped, or None."""
    from pipeline.core import stopping

    path = Path(work) / SERVER_RECORD
    try:
        owner = json.loads(path.read_text())
        pid, started, parent = int(owner["pid"]), float(owner["started"]), int(owner["parent"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    stopped = None
    if owner.get("host") == socket.gethostname() and stopping.same_process(pid, started):
        alive = stopping.start_time(parent) is not None and _parent_of(pid) == parent
        if not alive:
            logging.getLogger("cli").warning("stopping the temporary Prefect server (pid %d) a killed run left", pid)
            stopping.stop_processes(_as_process(pid), 5.0)
            stopped = pid
    path.unlink(missing_ok=True)
    return stopped


@contextmanager
def temporary_server(work: str | os.PathLike):
    """The run's :class:`TemporaryServer` from here to the end of the process, when Prefect
    would start one (no API URL set, ephemeral mode on); else None. Call it with the work
    directory's lock held.

    The server outlives the body: Prefect's log and event workers send what they hold when the
    interpreter exits, and the server is stopped after them (``atexit``, as Prefect stops its
    own), or by :func:`stoppable` when a signal ends the command.
    """
    global _server
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if _server is not None or settings.api.url or not settings.server.ephemeral.enabled:
        yield _server
        return
    stop_left_server(work)
    server = _server = TemporaryServer(work)
    atexit.register(server.stop)
    server.start(float(settings.server.ephemeral.startup_timeout_seconds))
    os.environ["PREFECT_API_URL"] = server.url  # for this process and the workers it starts
    refresh_global_settings_context()
    yield server


def _uvicorn(port: int) -> list[str]:
    """uvicorn's arguments for Prefect's API on ``port``: those Prefect's own ephemeral server uses."""
    import prefect

    return [
        "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent),
        "--factory", "prefect.server.api.server:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on",
    ]  # fmt: skip


def _server_env() -> dict[str, str]:
    from prefect.settings import get_current_settings

    return {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float) -> bool:
    """True once the server at ``url`` answers its health check; False when it exited first."""
    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5) as client:
        while proc.poll() is None:
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"the temporary Prefect server did not answer within {timeout_s:.0f} s")
            time.sleep(0.1)
    return False


def _as_process(pid: int) -> list:
    import psutil

    try:
        return [psutil.Process(pid)]
    except psutil.Error:
        return []


def _parent_of(pid: int) -> int | None:
    import psutil

    try:
        return psutil.Process(pid).ppid()
    except psutil.Error:
        return None


# -- Ctrl-C and SIGTERM ----------------------------------------------------------------------------

STOP_GRACE_S = 6.0  # after the first signal: the longest the orderly stop may take before the forced one
WORKER_GRACE_S = 1.5  # a worker process told to stop (SIGTERM) gets this long before SIGKILL


class _Stop:
    """The signal handlers of one command (see :func:`stoppable`).

    Two views of each signal: Python's handler (:meth:`handle`, in the main thread, between
    bytecodes; during a flow run Prefect's own SIGTERM handler comes first) raises
    :class:`~pipeline.core.stopping.Stopped`; a watcher thread reads the signal numbers the
    interpreter writes to its wakeup descriptor the moment a signal arrives, whoever handles it
    and whatever the main thread is doing, and starts the timer of the forced stop (a second
    signal: the forced stop at once).
    """

    def __init__(self, command: str):
        self.command = command
        self.signum: int | None = None  # the first signal Python's handler saw
        self.seen: list[int] = []  # the signals the watcher saw
        self._ending = threading.RLock()

    def handle(self, signum: int, _frame) -> None:
        from pipeline.core.stopping import Stopped

        if self.signum is not None:
            self.end(forced=True)  # a second signal: out at once
        self.signum = signum
        raise Stopped(signum)

    def watch(self, wakeup: socket.socket, watched: set[int]) -> None:
        while True:
            try:
                data = wakeup.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum not in watched:
                    continue
                self.seen.append(signum)
                if len(self.seen) == 1:  # the orderly stop may not take longer than this
                    timer = threading.Timer(STOP_GRACE_S, self.end, kwargs={"forced": True})
                    timer.daemon = True
                    timer.start()
                else:
                    self.end(forced=True)

    def end(self, *, forced: bool = False) -> None:
        """Stop every process this one started, clear the attempt marks, release the work
        directory's lock, stop the temporary server, say so in one line and exit (130 or 143)."""
        from pipeline.core import attempts, lock, stopping

        with self._ending:  # the main thread, the timer or the watcher: one of them ends the process
            logging.disable(logging.CRITICAL)  # the run's late complaints about what is being stopped
            grace = 0.0 if forced else WORKER_GRACE_S
            stopping.stop_processes(stopping.descendants(), grace)
            attempts.clear_open()
            lock.release_all()
            if _server is not None:
                _server.stop(grace_s=grace)
            signum = self.signum or (self.seen or [signal.SIGINT])[0]
            during = stopping.under_way()
            line = (
                f"vdv {self.command}: stopped by {stopping.NAMES.get(signum, signum)}"
                f"{f' during {during}' if during else ''}; the clips in flight were abandoned and the work "
                f"directory released; run the same command again to resume (finished work is kept)"
            )
            sys.stdout.flush()
            print(line, file=sys.stderr, flush=True)
            os._exit(stopping.EXIT_CODES.get(signum, 128 + signum))


_server: TemporaryServer | None = None  # the running command's temporary server, stopped last


def stoppable(command: str, body):
    """``body()``, with Ctrl-C (SIGINT) and SIGTERM stopping it: the first signal raises
    :class:`pipeline.core.stopping.Stopped` in the main thread, and the command ends within
    :data:`STOP_GRACE_S` seconds with every process it started stopped, its clips in flight
    abandoned (their attempt marks cleared), the lock released, one line on stderr and exit code
    130 (SIGINT) or 143 (SIGTERM); a second signal ends it at once. A signal this process
    inherited as ignored stays ignored. Returns ``body()``'s value."""
    if threading.current_thread() is not threading.main_thread():
        return body()  # signals reach the main thread only: its caller handles them
    stop = _Stop(command)
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # ignored: a background job of a shell, nohup
            previous[sig] = signal.signal(sig, stop.handle)
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    old_wakeup = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    threading.Thread(target=stop.watch, args=(reader, set(previous)), name="vdv-signals", daemon=True).start()
    try:
        return body()
    except BaseException:
        if stop.signum is None and not stop.seen:
            raise
        stop.end()
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        writer.close()
        reader.close()

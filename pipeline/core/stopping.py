"""A run stopped by a signal: what was under way, and the processes it leaves to stop.

Ctrl-C (SIGINT) and SIGTERM stop a long command (``build``, ``reextract``, ``extract``,
``release``); the command line installs the handlers (``cli/flows.py``) and this module holds
what they need, below the layers that do the work:

- :class:`Stopped`, raised in the main thread by the first signal (a ``KeyboardInterrupt``, so
  every ``finally`` and ``except BaseException`` on the way up runs as for a Ctrl-C);
- what was under way when it came: the innermost progress bar's stage and counts
  (:func:`pipeline.core.progress.progress` reports them here), for the one line the command prints;
- the processes to stop: this process's descendants (:func:`descendants`), and a process named
  by the pid *and* start time a run recorded (:func:`same_process`), never by a process name.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number, as shells report it
NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}

_bars: list = []  # the open progress bars, innermost last: (desc, unit, bar)
_interrupted: tuple | None = None  # the innermost bar an exception closed: (desc, unit, counts)
_spared: set[int] = set()  # child processes that outlive the work (the run's temporary Prefect server)


class Stopped(KeyboardInterrupt):
    """The run was told to stop by ``signum`` (SIGINT or SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(NAMES.get(signum, f"signal {signum}"))
        self.signum = signum


def bar_opened(desc: str, unit: str, bar) -> None:
    _bars.append((desc, unit, bar))


def bar_interrupted(bar) -> None:
    """``bar`` closes on an exception: the first such is what a stopped run was doing."""
    global _interrupted
    if _interrupted is None:
        _interrupted = next(((d, u, _Count(b.n, b.total)) for d, u, b in _bars if b is bar), None)


class _Count:
    def __init__(self, n, total):
        self.n, self.total = n, total


def bar_closed(bar) -> None:
    for i in range(len(_bars) - 1, -1, -1):
        if _bars[i][2] is bar:
            del _bars[i]
            return


def under_way() -> str:
    """What the innermost open progress bar counted: ``"extract pose: 3 of 12 clip(s) finished"``;
    empty when none is open."""
    if not _bars and _interrupted is None:
        return ""
    desc, unit, bar = _bars[-1] if _bars else _interrupted
    total = f" of {int(bar.total)}" if bar.total else ""
    return f"{desc}: {int(bar.n)}{total} {unit}(s) finished"


def spare(pid: int | None) -> None:
    """Leave the child ``pid`` (and its children) out of :func:`descendants` (None: spare none):
    the run's temporary Prefect server, which records the run's end and is stopped last."""
    _spared.clear()
    if pid is not None:
        _spared.add(pid)


def descendants(pid: int | None = None) -> list:
    """The live descendants of ``pid`` (default: this process) as ``psutil.Process``, less the
    spared ones (:func:`spare`) and theirs."""
    import psutil

    try:
        found = psutil.Process(pid or os.getpid()).children(recursive=True)
    except psutil.Error:
        return []
    spared = set(_spared)
    for proc in found:
        if proc.pid in spared:
            try:
                spared.update(p.pid for p in proc.children(recursive=True))
            except psutil.Error:
                pass
    return [p for p in found if p.pid not in spared]


def stop_processes(procs: Iterable, grace_s: float) -> list[int]:
    """SIGTERM (with SIGCONT, so that a stopped process gets it) each of ``procs``, then SIGKILL
    those still alive after ``grace_s`` seconds; the pids that had to be killed."""
    import psutil

    procs = list(procs)
    for proc in procs:
        for sig in (signal.SIGTERM, signal.SIGCONT):
            try:
                proc.send_signal(sig)
            except psutil.Error:
                break
    _gone, alive = psutil.wait_procs(procs, timeout=grace_s) if procs else ([], [])
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    if alive:
        psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in alive]


def start_time(pid: int) -> float | None:
    """The start time of process ``pid`` (seconds since the epoch, as the kernel counts it), or
    None when there is no such process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def same_process(pid: int, started: float) -> bool:
    """True when process ``pid`` exists and started at ``started`` (a recorded :func:`start_time`):
    the pid was not reused by another process since it was recorded."""
    found = start_time(pid)
    return found is not None and abs(found - started) < 0.05


def wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for process ``pid`` to end; True when it has."""
    deadline = time.monotonic() + timeout_s
    while start_time(pid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True

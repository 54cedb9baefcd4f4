"""Which clips a build started and never finished: the trace a dead worker process leaves.

A worker killed by the kernel (out of memory, a crash in native code) raises nothing: its task
is handed to another worker by the scheduler, and Dask counts the death against *every* task the
worker held, the one it was running and the ones waiting in its queue. Those counts cannot tell
the clip that killed the worker from the clips that queued behind it, so they are only a backstop
(``distributed.scheduler.allowed-failures`` is set above :data:`MAX_DEATHS`).

The ledger is what tells them apart. A task marks a clip *before* it starts the clip's work and
removes the mark when the work ends, however it ends, short of the process dying. A mark that is
still there when the clip is handed out again is an attempt that died. A clip with
:data:`MAX_DEATHS` dead attempts is not run again: it is rejected ``worker_died``, naming the
workers that died on it. A clip that only waited in a dead worker's queue has no mark and runs.

Layout: ``<work>/attempts/<clip_id>/<random>.attempt``, one small file per attempt in flight,
holding the worker's ``host:pid``. The directory is per build run: the build clears it (under
the work directory's lock) when its extraction starts and when it ends. It must be on the
storage the workers share, like the feature shards.

A mark is also a heartbeat: while its attempt runs, a thread of the worker process touches it
every :data:`BEAT_S` seconds, so the build waiting on its workers can tell a clip being worked
on from a worker gone silent (:meth:`AttemptLedger.last_beat`; ``flows/runners.py`` bounds its
wait by it). A run stopped by a signal clears every ledger it opened (:func:`clear_open`).

A process that is *told* to stop is not killed by its clip. A process pool whose worker dies
stops all the others with SIGTERM, whatever they are working on; a worker of such a pool runs
:func:`release_marks_on_sigterm` when it starts, so that it removes its marks before it goes and
only the clip of the worker that died keeps one. A kill that cannot be caught (SIGKILL: the
kernel's out-of-memory killer) or a crash in native code leaves the mark, as it should.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MAX_DEATHS = 2  # a clip is given a second worker after its first dies, and rejected after that
DIRNAME = "attempts"
BEAT_S = 5.0  # a running attempt's mark is touched this often

_in_flight: set[Path] = set()  # this process's marks whose attempt is running
_in_flight_lock = threading.RLock()  # re-entrant: the SIGTERM handler runs on the main thread, which may hold it
_beater: threading.Thread | None = None
_open: set[Path] = set()  # the ledgers this process opened (AttemptLedger.fresh) and has not cleared


def _beat_forever() -> None:
    """Touch every running attempt's mark of this process every :data:`BEAT_S` seconds."""
    while True:
        time.sleep(BEAT_S)
        with _in_flight_lock:
            marks = list(_in_flight)
        for mark in marks:
            try:
                os.utime(mark)
            except OSError:
                pass  # ended in between, or its ledger was cleared


def _start_beating() -> None:
    global _beater
    with _in_flight_lock:
        if _beater is None or not _beater.is_alive():
            _beater = threading.Thread(target=_beat_forever, name="vdv-attempt-heartbeat", daemon=True)
            _beater.start()


def clear_open() -> int:
    """Clear every ledger this process opened and has not cleared (a run stopped by a signal
    abandons its clips in flight); how many there were."""
    roots = list(_open)
    for root in roots:
        AttemptLedger(root).clear()
    return len(roots)


def _drop_marks_and_stop(signum: int, _frame) -> None:
    """SIGTERM: remove this process's marks, then stop as SIGTERM stops a process."""
    with _in_flight_lock:
        marks = list(_in_flight)
    for mark in marks:
        mark.unlink(missing_ok=True)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def release_marks_on_sigterm() -> None:
    """Make this process remove its in-flight marks when it is stopped with SIGTERM (see the
    module docstring). For the workers of a process pool; a Dask worker does not run it, since
    its nanny stops a worker that exceeded its memory with SIGTERM, and that is the clip's doing."""
    signal.signal(signal.SIGTERM, _drop_marks_and_stop)


class AttemptLedger:
    """The unfinished attempts of one build run, under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def fresh(cls, work: str | Path) -> AttemptLedger:
        """The ledger of a run that starts now: ``<work>/attempts``, emptied."""
        ledger = cls(Path(work) / DIRNAME)
        ledger.clear()
        _open.add(ledger.root)
        return ledger

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        _open.discard(self.root)

    def last_beat(self) -> float | None:
        """The latest time (``time.time()``) a mark of this ledger was written or touched; None
        when no attempt is marked."""
        latest = None
        for mark in self.root.glob("*/*.attempt"):
            try:
                t = mark.stat().st_mtime
            except OSError:
                continue  # ended in between
            latest = t if latest is None else max(latest, t)
        return latest

    def dead(self, clip_id: str) -> list[str]:
        """``host:pid`` of each attempt at ``clip_id`` that started and never ended."""
        directory = self.root / clip_id
        if not directory.is_dir():
            return []
        return sorted(p.read_text().strip() or p.stem for p in directory.glob("*.attempt"))

    @contextmanager
    def attempt(self, clip_id: str, worker: str) -> Iterator[None]:
        """Mark ``clip_id`` as in flight on ``worker`` for the body; the mark outlives only a death."""
        directory = self.root / clip_id
        directory.mkdir(parents=True, exist_ok=True)
        mark = directory / f"{uuid.uuid4().hex}.attempt"
        with _in_flight_lock:
            _in_flight.add(mark)  # before the file exists: a SIGTERM from here on removes it
        _start_beating()
        try:
            with open(mark, "w") as fh:
                fh.write(worker)
                fh.flush()
                os.fsync(fh.fileno())  # on shared storage, the next worker must see it
            yield
        finally:
            mark.unlink(missing_ok=True)
            with _in_flight_lock:
                _in_flight.discard(mark)

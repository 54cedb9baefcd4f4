"""One run at a time per work directory: a lock file naming its owner, kept alive by a heartbeat.

Two builds on one work directory would both compute every shard, and each one's sweep of
temporary files could delete the other's files in flight. So every flow (build, reextract,
release; started by ``vdv`` or by a deployment) and every command that writes a work directory
holds ``<work>/.vdv.lock`` while it runs:

- the lock is created atomically (``O_CREAT | O_EXCL``) and holds the owner's host, pid,
  command, start time and a heartbeat time, as JSON;
- the owner rewrites the heartbeat every ``heartbeat_s`` seconds from a daemon thread;
- a second run fails at once with :class:`WorkDirLocked`, whose message names the owner;
- a lock whose heartbeat is older than ``stale_s`` is stale (its owner died or was killed):
  it is taken over, with a warning. Staleness is judged by the heartbeat, not by the pid,
  because a pid cannot be checked from another host (a cluster shares the work directory over
  a network file system); hosts are assumed to keep their clocks within a few seconds. The one
  shortcut: a lock written on this same host by a process that no longer exists is stale at
  once, so a build killed a moment ago can be restarted without waiting for its heartbeat to age.

A lock taken with ``shared=True`` is joined by a later ``WorkLock`` on the same directory in
the same process, which leaves its release to the first: ``vdv build`` takes the lock before
anything slow (a busy directory is refused at once), and the flow it runs joins it.
:func:`release_all` releases every lock this process holds (a run stopped by a signal).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".vdv.lock"
HEARTBEAT_S = 10.0
STALE_S = 60.0


_held: dict[Path, WorkLock] = {}  # the locks this process holds, by the lock file's absolute path
_held_lock = threading.Lock()


class WorkDirLocked(RuntimeError):
    """Another live run holds the work directory; the message names it."""


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="seconds")


class WorkLock:
    """``with WorkLock(work, "vdv build"):`` holds ``<work>/.vdv.lock`` (see the module docstring)."""

    def __init__(
        self,
        work: str | os.PathLike,
        command: str,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        stale_s: float = STALE_S,
        shared: bool = False,
    ):
        if stale_s <= 2 * heartbeat_s:
            raise ValueError("stale_s must exceed two heartbeats")
        self.path = Path(work) / LOCK_NAME
        self.command = command
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.token = uuid.uuid4().hex
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.shared = shared  # a later WorkLock of this process on the directory joins this one
        self._joined = False  # joined a shared lock of this process: released by its first holder

    def _owner(self) -> dict:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": self.command,
            "started": _stamp(self.started),
            "heartbeat": time.time(),
            "token": self.token,
        }

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or damaged: judged by its age below

    def _age(self, owner: dict) -> float:
        beat = owner.get("heartbeat")
        if not isinstance(beat, int | float):
            try:
                beat = self.path.stat().st_mtime
            except OSError:
                return 0.0
        return time.time() - beat

    def _write(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{self.token}.tmp")
        try:
            tmp.write_text(json.dumps(self._owner()))
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk leaves no stray file
            raise

    def acquire(self) -> WorkLock:
        key = self.path.absolute()
        with _held_lock:
            if key in _held and _held[key].shared:
                self._joined = True
                return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._read()
                if owner is None:
                    continue  # released in between: try again
                age = self._age(owner)
                if age <= self.stale_s and not _dead_here(owner):
                    raise WorkDirLocked(describe(self.path.parent, owner, age)) from None
                log.warning("taking over a stale lock: %s", describe(self.path.parent, owner, age))
                self._write()
                time.sleep(0.2)  # two runs taking over at once: the last rename wins, the other sees it
                if (self._read() or {}).get("token") != self.token:
                    owner = self._read() or {}
                    raise WorkDirLocked(describe(self.path.parent, owner, self._age(owner))) from None
                break
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(json.dumps(self._owner()))
                break
        else:
            raise WorkDirLocked(f"{self.path.parent}: could not take the lock {self.path}")
        self._thread = threading.Thread(target=self._beat, name="vdv-lock-heartbeat", daemon=True)
        self._thread.start()
        with _held_lock:
            _held[key] = self
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            owner = self._read()
            if not owner or owner.get("token") != self.token:
                log.error("lost the lock %s to another run", self.path)
                return
            try:
                self._write()
            except OSError as err:  # a full disk: the run stops on its own writes; the beat tries again
                log.warning("cannot renew the lock %s: %s", self.path, err)

    def release(self) -> None:
        if self._joined:
            return
        with _held_lock:
            if _held.get(self.path.absolute()) is self:
                del _held[self.path.absolute()]
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        if (self._read() or {}).get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> WorkLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def release_all() -> int:
    """Release every work directory lock this process holds; how many it held."""
    with _held_lock:
        locks = list(_held.values())
    for lock in locks:
        lock.release()
    return len(locks)


def _dead_here(owner: dict) -> bool:
    """True when ``owner`` is a process of this host that no longer exists."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


def describe(work: Path, owner: dict, age: float) -> str:
    return (
        f"work directory {work} is in use by {owner.get('command', '?')!r} on host {owner.get('host', '?')}, "
        f"pid {owner.get('pid', '?')}, started {owner.get('started', '?')} (last heartbeat {age:.0f} s ago); "
        f"wait for it to finish, or use another --work"
    )

"""Frames of many clips in one forward: a per-process server in front of a step function.

A clip's frames are sequential (tracking), so a batch is one frame from each of many clips. The
clips in flight in a process (the extraction threads of a thread runner or of a Dask worker)
each hold a :class:`Handle` and call it with their next frame; the call blocks until a worker
thread has run the step that contains it. The worker takes whatever is pending: it runs as soon
as every open handle has a frame waiting (no clip can add one while it waits), or when
``max_batch`` frames are pending, or ``max_wait_s`` after the first one arrived (a clip busy with
its other modalities is not waited for longer than that).

The step function must make each handle's result independent of which other handles share its
steps (:class:`pipeline.blazepose.engine.PoseEngine` does, to 1e-4 px): batching changes speed,
never a shard. An exception in a step is raised in every call of that step.

A server's user closes it when done (:func:`close_servers`, called by the extraction driver
and by the build once its pixel-rule tasks are over): it takes no new handle, and its worker
thread ends as soon as the handles still open are closed. The next user of the key gets a new
server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any

_SERVERS: dict[Hashable, BatchServer] = {}
_SERVERS_LOCK = threading.Lock()


class BatchServer:
    """Runs ``step(slots, items)`` on batches of items, one per open slot at most.

    ``open_slot()`` / ``close_slot(slot)`` manage the stepper's per-clip state; they and ``step``
    are never called at the same time. :meth:`close` ends the server once its handles are closed.
    """

    def __init__(
        self,
        step: Callable[[list[int], list[Any]], list[Any]],
        open_slot: Callable[[], int],
        close_slot: Callable[[int], None],
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.005,
        name: str = "batch-server",
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._step, self._open_slot, self._close_slot = step, open_slot, close_slot
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self._cond = threading.Condition()
        self._state_lock = threading.Lock()  # held by step, open and close
        self._pending: list[tuple[int, Any, Future]] = []
        self._open = 0
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    @property
    def closing(self) -> bool:
        """True once :meth:`close` was called: no new handle."""
        return self._closing

    @property
    def running(self) -> bool:
        """True while the worker thread runs (until closed with no handle open)."""
        return self._thread.is_alive()

    def open(self) -> Handle:
        with self._cond:
            if self._closing:
                raise RuntimeError("this batch server is closed")
            self._open += 1
        try:
            with self._state_lock:
                slot = self._open_slot()
        except BaseException:
            self._close_count()
            raise
        return Handle(self, slot)

    def close(self, wait_s: float = 10.0) -> None:
        """Take no new handle; the worker thread ends once every open handle is closed. Waits up
        to ``wait_s`` for it when no handle is open (it then has nothing left to run)."""
        with self._cond:
            self._closing = True
            idle = self._open == 0
            self._cond.notify_all()
        if idle and threading.current_thread() is not self._thread:
            self._thread.join(wait_s)

    def _close_count(self) -> None:
        with self._cond:
            self._open -= 1
            self._cond.notify_all()

    def _close(self, slot: int) -> None:
        with self._state_lock:
            self._close_slot(slot)
        self._close_count()

    def _submit(self, slot: int, item: Any) -> Any:
        future: Future = Future()
        with self._cond:
            self._pending.append((slot, item, future))
            self._cond.notify()
        return future.result()

    def _take(self) -> list[tuple[int, Any, Future]] | None:
        """The next batch; None once the server is closed and no handle is left open."""
        with self._cond:
            while not self._pending:
                if self._closing and self._open == 0:
                    return None
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait_s
            while len(self._pending) < min(self.max_batch, self._open):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            return batch

    def _serve(self) -> None:
        while (batch := self._take()) is not None:
            try:
                with self._state_lock:
                    results = self._step([slot for slot, _, _ in batch], [item for _, item, _ in batch])
            except BaseException as err:  # noqa: BLE001 - every waiting clip gets the step's error
                for _, _, future in batch:
                    future.set_exception(err)
                continue
            for (_, _, future), result in zip(batch, results, strict=True):
                future.set_result(result)


class Handle:
    """One clip's place on a :class:`BatchServer`: call it with an item, get its result."""

    def __init__(self, server: BatchServer, slot: int):
        self.server, self.slot = server, slot
        self._closed = False

    def __call__(self, item: Any) -> Any:
        if self._closed:
            raise RuntimeError("this handle is closed")
        return self.server._submit(self.slot, item)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.server._close(self.slot)


def shared_server(key: Hashable, make: Callable[[], BatchServer]) -> BatchServer:
    """The process's server for ``key`` (created by ``make`` the first time, and again after
    :func:`close_servers`)."""
    with _SERVERS_LOCK:
        if key not in _SERVERS or _SERVERS[key].closing:
            _SERVERS[key] = make()
        return _SERVERS[key]


def close_servers() -> int:
    """Close every batch server of this process (:meth:`BatchServer.close`: each ends once its
    open handles are closed); returns how many there were. The clips of a user still running keep
    their handles to the end; a later user gets new servers."""
    with _SERVERS_LOCK:
        servers = list(_SERVERS.values())
        _SERVERS.clear()
    for server in servers:
        server.close()
    return len(servers)

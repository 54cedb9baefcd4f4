"""The batch servers of a process: batched steps, and closing them once their user is done."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.core import batching
from pipeline.core.batching import BatchServer, close_servers, shared_server
from pipeline.extraction.stage import ExtractionPlan, run_extraction

WAIT_S = 30.0  # generous: a loaded 2-core machine may be slow to schedule the worker thread


class Adder:
    """A stepper with per-slot state: each slot adds up the items it was given."""

    def __init__(self):
        self.totals: dict[int, int] = {}
        self.steps: list[list[int]] = []

    def open(self) -> int:
        slot = len(self.totals)
        self.totals[slot] = 0
        return slot

    def close(self, slot: int) -> None:
        del self.totals[slot]

    def step(self, slots: list[int], items: list[int]) -> list[int]:
        self.steps.append(list(slots))
        for slot, item in zip(slots, items, strict=True):
            self.totals[slot] += item
        return [self.totals[slot] for slot in slots]


def _server(adder: Adder, **kw) -> BatchServer:
    return BatchServer(adder.step, adder.open, adder.close, name="test-batch", **kw)


def _ended(server: BatchServer) -> bool:
    deadline = time.monotonic() + WAIT_S
    while server.running and time.monotonic() < deadline:
        time.sleep(0.01)
    return not server.running


@pytest.fixture(autouse=True)
def _no_servers_left():
    yield
    close_servers()


def test_handles_on_threads_share_steps_and_keep_their_own_state():
    adder = Adder()
    server = _server(adder, max_wait_s=1.0)
    handles = [server.open(), server.open()]
    results: dict[int, list[int]] = {0: [], 1: []}

    def run(i: int) -> None:
        for item in (1, 2, 3):
            results[i].append(handles[i](item * (i + 1)))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert results == {0: [1, 3, 6], 1: [2, 6, 12]}
    # both handles were waiting for every step (max_wait_s is far above the time between frames)
    assert all(sorted(step) == [0, 1] for step in adder.steps), adder.steps
    for h in handles:
        h.close()
    server.close()
    assert _ended(server)


def test_a_closed_server_serves_its_open_handles_then_ends():
    adder = Adder()
    server = _server(adder)
    handle = server.open()
    assert handle(5) == 5
    server.close(wait_s=0.0)
    with pytest.raises(RuntimeError, match="closed"):
        server.open()
    assert handle(2) == 7  # a clip still running keeps its handle to its end
    assert server.running
    handle.close()
    assert _ended(server)
    assert adder.totals == {}  # its slot was closed in the stepper too


def test_close_servers_ends_them_and_the_next_user_gets_a_new_one():
    made: list[BatchServer] = []

    def make() -> BatchServer:
        made.append(_server(Adder()))
        return made[-1]

    first = shared_server("key", make)
    assert shared_server("key", make) is first
    assert close_servers() == 1
    assert _ended(first)
    again = shared_server("key", make)
    assert again is not first and again.running
    assert len(made) == 2


def test_the_extraction_driver_closes_the_servers_its_clips_used(tmp_path):
    used: list[BatchServer] = []

    def run_clips(jobs):
        for job in jobs:
            server = shared_server(("test", "extraction"), lambda: _server(Adder()))
            used.append(server)
            handle = server.open()
            handle(1)
            handle.close()
            yield job["clip"], []

    clips = [{"clip_id": "a" * 64, "path": "unused.mp4"}, {"clip_id": "b" * 64, "path": "unused.mp4"}]
    run_extraction(tmp_path, clips, ExtractionPlan(("pose",), "{}"), run_clips=run_clips)
    assert len(used) == 2 and used[0] is used[1]  # the clips of the run shared one server
    assert _ended(used[0])
    assert not batching._SERVERS

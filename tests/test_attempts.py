"""The attempt ledger: a mark outlives only a process that died (``pipeline/core/attempts.py``)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from flows import tasks
from pipeline.core.attempts import MAX_DEATHS, AttemptLedger
from pipeline.extraction.stage import ExtractionPlan


def _die_during(root, clip_id: str, worker: str) -> None:
    """A process that starts an attempt at ``clip_id`` and exits inside it, as the OOM killer leaves it."""
    code = textwrap.dedent(
        f"""
        import os
        from pipeline.core.attempts import AttemptLedger
        with AttemptLedger({str(root)!r}).attempt({clip_id!r}, {worker!r}):
            os._exit(137)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 137, done.stderr


def test_an_attempt_that_ends_leaves_no_mark_and_one_that_dies_does(tmp_path):
    ledger = AttemptLedger(tmp_path / "attempts")
    with ledger.attempt("a" * 64, "host:1"):
        assert ledger.dead("a" * 64) == ["host:1"]  # in flight: visible to a scheduler's next try
    assert ledger.dead("a" * 64) == []
    with pytest.raises(ValueError), ledger.attempt("a" * 64, "host:2"):
        raise ValueError("a bad clip ends the attempt as well")
    assert ledger.dead("a" * 64) == []

    _die_during(ledger.root, "b" * 64, "node-3:4242")
    _die_during(ledger.root, "b" * 64, "node-7:99")
    assert ledger.dead("b" * 64) == ["node-3:4242", "node-7:99"]
    assert ledger.dead("a" * 64) == [] and ledger.dead("c" * 64) == []


def test_a_fresh_ledger_forgets_the_last_runs_deaths(tmp_path):
    _die_during(tmp_path / "attempts", "b" * 64, "node-3:4242")
    assert AttemptLedger(tmp_path / "attempts").dead("b" * 64) == ["node-3:4242"]
    assert AttemptLedger.fresh(tmp_path).dead("b" * 64) == []


def test_a_clip_its_workers_died_on_is_rejected_without_running_again(tmp_path):
    clip = {"clip_id": "d" * 64, "path": str(tmp_path / "never_opened.mp4"), "video_id": "v1"}
    ledger = AttemptLedger(tmp_path / "attempts")
    for pid in range(MAX_DEATHS):
        _die_during(ledger.root, clip["clip_id"], f"node:{pid + 10}")
    # the plan names a modality that does not exist: loading it would raise, so nothing is loaded
    plan = ExtractionPlan(modalities=("no_such_modality",), sections="{}", untrained=True, device="cpu")
    items = tasks.extract_clip.fn(
        {"work": str(tmp_path), "clip": clip, "plan": plan, "decode": {}, "attempts": str(ledger.root)}
    )
    assert [(i["modality"], i["status"], i["reason"], i["video_id"]) for i in items] == [
        ("no_such_modality", "rejected", "worker_died", "v1")
    ]
    assert "node:10" in items[0]["message"] and "node:11" in items[0]["message"]


def _in_flight_until_stopped(root, clip_id: str, stop: signal.Signals) -> int:
    """A process-pool worker (its start-up hook run) with an attempt in flight, stopped by ``stop``
    from outside; returns its exit code."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pipeline.core.attempts import AttemptLedger, release_marks_on_sigterm
        release_marks_on_sigterm()
        with AttemptLedger({str(root)!r}).attempt({clip_id!r}, "node:1"):
            print("in flight", flush=True)
            time.sleep(60)
        """
    )
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert worker.stdout.readline().strip() == "in flight"
    worker.send_signal(stop)
    return worker.wait(timeout=30)


def test_a_worker_the_pool_stops_clears_its_mark_and_one_that_is_killed_does_not(tmp_path):
    """When one worker of a process pool dies the pool stops the others with SIGTERM: their clips
    are not to blame. A SIGKILL (the out-of-memory killer) leaves the mark, as a crash does."""
    ledger = AttemptLedger(tmp_path / "attempts")
    assert _in_flight_until_stopped(ledger.root, "e" * 64, signal.SIGTERM) == -signal.SIGTERM
    assert ledger.dead("e" * 64) == []
    assert _in_flight_until_stopped(ledger.root, "f" * 64, signal.SIGKILL) == -signal.SIGKILL
    assert ledger.dead("f" * 64) == ["node:1"]

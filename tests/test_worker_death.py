"""A clip whose worker process dies is given one more worker, then recorded as rejected.

Dask: the build runs on a local Dask cluster of one worker process, which its nanny restarts when
it dies. ``tests/support/die_on_clip.py`` (a Dask worker preload) makes any worker that is handed
one chosen clip exit on the spot. The clip must be tried twice, by two different processes, then
be rejected ``worker_died``, while the other clips are computed and the build succeeds.

With one worker, the clips submitted after the doomed one wait in the queue of the worker that
dies, both times. Dask counts those deaths against them too, so this is also the test that a clip
which only waited behind the doomed one is not blamed for it (``pipeline/core/attempts.py``).

The process runner: a pool whose worker dies fails every clip it held. The test kills the worker
process that works on one chosen clip (SIGKILL, as the kernel's out-of-memory killer does), found
by the clip's attempt mark; the pool's lost clips go to a fresh pool, and the same holds: two
tries by two processes, then ``worker_died`` for that clip alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import write_sample_run

from pipeline.core import tables
from pipeline.core.attempts import DIRNAME, MAX_DEATHS
from pipeline.core.provenance import sha256_file
from pipeline.modalities.features import current_shards
from tests.support.runs import child_env, sample_clips, small_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CLIPS = sample_clips("stgcn_ta_chi.mp4", "stgcn_clean_and_jerk.mp4", "tfjs_pose_1.mp4")
DOOMED = "stgcn_clean_and_jerk.mp4"
# a build that waits on silent workers fails after this instead of hanging (flows/runners.py);
# well above a worker's restart and model loading on a loaded machine
CONFIG = small_config("pose") + "\n[runner]\nworker_silence_s = 300\n"


def test_a_clip_whose_worker_dies_is_retried_once_then_rejected(tmp_path, prefect_server):
    raw, pairing, config = write_sample_run(tmp_path, CLIPS, CONFIG)
    deaths = tmp_path / "deaths.log"
    env = child_env(
        tmp_path,
        prefect_server,
        DASK_DISTRIBUTED__WORKER__PRELOAD=json.dumps([str(ROOT / "tests" / "support" / "die_on_clip.py")]),
        VDV_TEST_DIE_ON_CLIP=DOOMED,
        VDV_TEST_DIE_LOG=str(deaths),
    )
    command = [
        sys.executable, "-m", "cli", "build", str(raw),
        "--pairing", str(pairing), "--config", str(config),
        "--work", str(tmp_path / "work"), "--modalities", "pose",
        "--runner", "dask", "--workers", "1", "--threads-per-worker", "1", "--json",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout[done.stdout.index("{") :])

    attempts = deaths.read_text().split()
    assert len(attempts) == 2 and len(set(attempts)) == 2, attempts  # two tries, two processes
    _only_the_doomed_clip_blamed(report, DOOMED, attempts)
    assert len(current_shards(tmp_path / "work", "pose")) == 2
    rejected = [
        r
        for f in tables.table_files(tmp_path / "work", "rejections")
        for r in tables.read_file(f, tables.REJECTIONS).to_pylist()
        if r["reason"] == "worker_died"
    ]
    assert [(Path(r["path"]).name, r["stage"]) for r in rejected] == [(DOOMED, "extract:pose")]
    assert not (tmp_path / "work" / "attempts").exists()  # the run's ledger goes with the run


# the doomed clip is the longest, so the pool is handed it first and the others wait behind it
# (the records are the demo pairing's, data/demo/pairing.csv)
POOL_CLIPS = {
    "hybrik_taiji.mp4": ("6897248745218444549", "#dancechallenge"),
    "stgcn_ta_chi.mp4": ("6899121222454463749", "#dancechallenge"),
    "tfjs_pose_1.mp4": ("6898094572598037766", "#dancechallenge"),
}
POOL_DOOMED = "hybrik_taiji.mp4"


def _kill_workers_on(attempts: Path, stop: threading.Event, killed: list[int]) -> None:
    """Kill (SIGKILL) each process that marks ``attempts`` (one clip's directory of the ledger)
    as its work in flight, up to MAX_DEATHS of them, the moment its mark appears."""
    while not stop.is_set() and len(killed) < MAX_DEATHS:
        for mark in attempts.glob("*.attempt") if attempts.is_dir() else []:
            try:
                pid = int(mark.read_text().rsplit(":", 1)[1])
            except (OSError, IndexError, ValueError):
                continue  # being written
            if pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.01)


def test_process_runner_blames_only_the_clip_a_killed_worker_was_on(tmp_path, prefect_server):
    raw, pairing, config = write_sample_run(tmp_path, POOL_CLIPS, CONFIG)
    work = tmp_path / "work"
    doomed_id = sha256_file(raw / "clips" / POOL_DOOMED)
    env = child_env(tmp_path, prefect_server)
    command = [
        sys.executable, "-m", "cli", "build", str(raw),
        "--pairing", str(pairing), "--config", str(config), "--work", str(work), "--modalities", "pose",
        "--runner", "process", "--workers", "1", "--json",
    ]  # fmt: skip
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_workers_on, args=(work / DIRNAME / doomed_id, stop, killed))
    killer.start()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    finally:
        stop.set()
        killer.join()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout[done.stdout.index("{") :])

    assert len(killed) == MAX_DEATHS and len(set(killed)) == MAX_DEATHS, killed  # two tries, two processes
    # the clips that waited in the broken pools were computed by a later pool, not blamed
    others = _only_the_doomed_clip_blamed(report, POOL_DOOMED, killed)
    assert not {int(i["worker"].rsplit(":", 1)[1]) for i in others} & set(killed)  # by a live worker
    assert len(current_shards(work, "pose")) == 2
    rejected = [
        r
        for f in tables.table_files(work, "rejections")
        for r in tables.read_file(f, tables.REJECTIONS).to_pylist()
        if r["reason"] == "worker_died"
    ]
    assert [(Path(r["path"]).name, r["stage"]) for r in rejected] == [(POOL_DOOMED, "extract:pose")]
    assert not (work / DIRNAME).exists()


def test_a_build_whose_worker_freezes_fails_instead_of_hanging(tmp_path, prefect_server):
    """A Dask worker that freezes on a clip (SIGSTOP: its nanny sees it alive, the scheduler waits
    minutes for its heartbeat) holds the build's wait; after ``[runner] worker_silence_s`` without
    a sign of life the build fails with one line, and stops the frozen worker on its way out."""
    config = small_config("pose") + "\n[runner]\nworker_silence_s = 20\n"
    raw, pairing, config_path = write_sample_run(tmp_path, sample_clips("tfjs_pose_1.mp4"), config)
    frozen = tmp_path / "frozen.log"
    env = child_env(
        tmp_path,
        prefect_server,
        DASK_DISTRIBUTED__WORKER__PRELOAD=json.dumps([str(ROOT / "tests" / "support" / "die_on_clip.py")]),
        VDV_TEST_DIE_ON_CLIP="tfjs_pose_1.mp4",
        VDV_TEST_DIE_HOW="freeze",
        VDV_TEST_DIE_LOG=str(frozen),
    )
    command = [
        sys.executable, "-m", "cli", "build", str(raw),
        "--pairing", str(pairing), "--config", str(config_path),
        "--work", str(tmp_path / "work"), "--modalities", "pose",
        "--runner", "dask", "--workers", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # the run ends either way, never waits on: the silence bound fails it (exit 1, one line), or,
    # on a loaded machine, Dask itself gives the frozen worker up first and the clip is failed
    silent = "no worker showed a sign of life for 20 s ([runner] worker_silence_s) with 1 of 1 clip(s)" in err
    given_up = proc.returncode == 0 and "total: 0 computed, 0 skipped (shard current), 1 failed" in out
    assert (proc.returncode == 1 and silent) or given_up, out[-2000:] + err[-3000:]
    pid = int(frozen.read_text().split()[0])
    assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
    assert not (tmp_path / "work" / DIRNAME).exists() and not (tmp_path / "work" / ".vdv.lock").exists()


def _only_the_doomed_clip_blamed(report: dict, doomed_file: str, pids) -> list[dict]:
    """The doomed clip is rejected ``worker_died`` naming every dead process; the two others were
    computed. Returns the others' report items."""
    by_file = {Path(i["path"]).name: i for i in report["items"]}
    doomed = by_file[doomed_file]
    assert (doomed["status"], doomed["reason"]) == ("rejected", "worker_died"), doomed
    assert all(f":{pid}" in doomed["message"] for pid in pids), doomed["message"]  # names both
    others = [i for name, i in by_file.items() if name != doomed_file]
    assert len(others) == 2 and all(i["status"] == "computed" for i in others), others
    return others

"""Crash safety: SIGKILL the build while a feature shard is being written, then build again.

The build runs as a subprocess (``python -m cli build``) in its own process group, against the
test process's Prefect server (what becomes of a killed build's own temporary server is
tests/test_stopping.py's). ``tests/support/pause_in_write`` goes on the child's ``PYTHONPATH``:
when the destination of a rename matches ``VDV_TEST_PAUSE_MATCH`` it writes the temporary file's
name to the marker and sleeps before the rename, so the kill lands mid-write.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import write_sample_run

from pipeline import release
from pipeline.core import tables
from pipeline.core.provenance import sha256_file
from tests.support.runs import child_env, sample_clips, small_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CLIPS = sample_clips("stgcn_ta_chi.mp4", "tfjs_pose_1.mp4")
CONFIG = small_config("pose", "release")


def setup_run(root: Path) -> list[str]:
    raw, pairing, config = write_sample_run(root, CLIPS, CONFIG)
    return [
        sys.executable,
        "-m",
        "cli",
        "build",
        str(raw),
        "--pairing",
        str(pairing),
        "--config",
        str(config),
        "--work",
        str(root / "work"),
        "--modalities",
        "pose",
        "--release-out",
        str(root / "release"),
        "--salt",
        "crash-test",
        "--workers",
        "1",  # one clip at a time
        "--json",
    ]


def test_sigkill_mid_write_then_rebuild(tmp_path, prefect_server):
    command = setup_run(tmp_path)
    ids = sorted(sha256_file(SHARED / "clips" / name) for name in CLIPS)
    marker = tmp_path / "in_write"
    # one clip at a time, longest first: stgcn_ta_chi (10 s, ids[0]), then tfjs_pose_1 (4 s,
    # ids[1]); let the first shard land, pause in the second
    env = child_env(
        tmp_path,
        prefect_server,
        VDV_TEST_PAUSE_IN_WRITE=str(marker),
        VDV_TEST_PAUSE_MATCH=f"features/pose/pose.{ids[1][:16]}",
    )
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), (
            f"the build never reached the shard write: {proc.communicate(timeout=30)[0].decode()[-3000:]}"
        )
        tmp_file = Path(marker.read_text())
        assert tmp_file.exists() and tmp_file.name.startswith(".")  # the write is in progress
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the build and every process it started
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    pose_dir = tmp_path / "work" / "features" / "pose"
    visible = tables.table_files(tmp_path / "work", "features/pose")
    assert [p.name.split(".")[1] for p in visible] == [ids[0][:16]]  # the finished shard only
    assert tmp_file.exists()  # the partial file is hidden, not renamed into place
    assert not (tmp_path / "release").exists()

    done = subprocess.run(
        command, cwd=ROOT, env=child_env(tmp_path, prefect_server), capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout[done.stdout.index("{") :])
    pose = report["extract"]["pose"]
    assert (pose["computed"], pose["skipped"], pose["failed"], report["partial_removed"]) == (1, 1, 0, 1)
    assert not list(pose_dir.glob(".*"))  # the leftover was swept
    assert not (tmp_path / "work" / ".vdv.lock").exists()  # the killed run's lock was taken over, then released
    shards = tables.table_files(tmp_path / "work", "features/pose")
    rows = [pq.read_table(p) for p in shards]
    assert sorted(r.column("clip_id")[0].as_py() for r in rows) == ids  # no duplicate, none missing
    assert all(r.num_rows == 1 for r in rows)
    for r in rows:  # no partial rows: every sample of the clip is there
        assert len(r.column("timestamps")[0]) == len(r.column("features")[0]) == len(r.column("valid")[0]) > 10
    result = release.verify_release(report["release"]["path"])
    assert result.ok, result.problems
    assert result.counts["pose"]["train"] + result.counts["pose"]["test"] == 2

"""A clip whose worker process dies is given one more worker, then recorded as rejected.

The build runs on a local Dask cluster of one worker process, which its nanny restarts when it
dies. ``tests/support/die_on_clip.py`` (a Dask worker preload) makes any worker that is handed one
chosen clip exit on the spot. The clip must be tried twice, by two different processes, then be
rejected ``worker_died``, while the other clips are computed and the build succeeds.

With one worker, the clips submitted after the doomed one wait in the queue of the worker that
dies, both times. Dask counts those deaths against them too, so this is also the test that a clip
which only waited behind the doomed one is not blamed for it (``pipeline/attempts.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_sample_run

from pipeline import tables
from pipeline.features import current_shards
from tests.support.runs import sample_clips, small_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CLIPS = sample_clips("stgcn_ta_chi.mp4", "stgcn_clean_and_jerk.mp4", "tfjs_pose_1.mp4")
DOOMED = "stgcn_clean_and_jerk.mp4"
CONFIG = small_config("pose")


def test_a_clip_whose_worker_dies_is_retried_once_then_rejected(tmp_path):
    raw, pairing, config = write_sample_run(tmp_path, CLIPS, CONFIG)
    deaths = tmp_path / "deaths.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DASK_"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_LOGGING_LEVEL="WARNING",
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
    by_file = {Path(i["path"]).name: i for i in report["items"]}
    doomed = by_file[DOOMED]
    assert (doomed["status"], doomed["reason"]) == ("rejected", "worker_died"), doomed
    assert all(f":{pid}" in doomed["message"] for pid in attempts), doomed["message"]  # names both
    others = [i for name, i in by_file.items() if name != DOOMED]
    assert len(others) == 2 and all(i["status"] == "computed" for i in others), others
    assert len(current_shards(tmp_path / "work", "pose")) == 2
    rejected = [
        r
        for f in tables.table_files(tmp_path / "work", "rejections")
        for r in tables.read_file(f, tables.REJECTIONS).to_pylist()
        if r["reason"] == "worker_died"
    ]
    assert [(Path(r["path"]).name, r["stage"]) for r in rejected] == [(DOOMED, "extract:pose")]
    assert not (tmp_path / "work" / "attempts").exists()  # the run's ledger goes with the run

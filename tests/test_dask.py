"""The build on a Dask LocalCluster of two worker processes (prefect-dask's DaskTaskRunner).

The build runs as ``vdv build --runner dask`` in a subprocess, as a user would start it. It maps
one extraction task per clip; every item of the report names the process that computed it, which
must not be the flow's process (arguments and results crossed a process boundary), and both
workers must have computed some of one modality's clips (the cluster is kept busy, not one
worker per modality).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_sample_run

from pipeline import release
from pipeline.core import tables
from pipeline.modalities.features import current_shards
from tests.support.runs import SAMPLE_CLIPS, child_env, small_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CLIPS = dict(SAMPLE_CLIPS)
CONFIG = small_config("pose", "scenic", "release")


def test_build_on_a_local_dask_cluster_of_two_processes(tmp_path, prefect_server):
    raw, pairing, config = write_sample_run(tmp_path, CLIPS, CONFIG)
    env = child_env(tmp_path, prefect_server)
    command = [
        sys.executable, "-m", "cli", "build", str(raw),
        "--pairing", str(pairing), "--config", str(config),
        "--work", str(tmp_path / "work"), "--modalities", "pose", "scenic", "--untrained",
        # the GPU-node layout on the CPU: two worker processes, two clips in flight in each
        "--runner", "dask", "--workers", "2", "--threads-per-worker", "2", "--device", "cpu",
        "--release-out", str(tmp_path / "release"), "--allow-untrained", "--json",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout[done.stdout.index("{") :])
    workers = {i["worker"] for i in report["items"]}
    assert str(report["pid"]) not in {w.split(":")[1] for w in workers}  # ran on worker processes
    assert sorted(report["workers"]) == sorted(workers)  # every worker was checked before mapping
    assert report["ingest"]["probed_by"] == sorted(workers)  # both workers probed some of the clips
    pose_workers = {i["worker"] for i in report["items"] if i["modality"] == "pose" and i["status"] == "computed"}
    assert len(pose_workers) == 2, report["items"]  # both workers computed some of pose's clips
    for modality in ("pose", "scenic"):
        e = report["extract"][modality]
        assert (e["computed"], e["skipped"], e["failed"]) == (4, 0, 0)
        assert len(current_shards(tmp_path / "work", modality)) == 4
    scenic = tables.read_file(
        next(iter(current_shards(tmp_path / "work", "scenic").values())), tables.feature_spec("scenic", 512)
    )
    assert scenic.column("untrained")[0].as_py() is True
    assert release.verify_release(report["release"]["path"]).ok

"""Deployments from ``prefect.yaml`` on a real local Prefect server and a process work pool.

Starts ``prefect server start`` on a free port of 127.0.0.1 with its own PREFECT_HOME, creates
the process pool, runs ``prefect deploy --all`` from the repository root, creates a run of the
``build`` deployment on two short real clips (pose only, no pixel screening), lets a worker
execute it (``--run-once``) and waits for Completed. Everything it started is killed in the end
(process groups), and every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_sample_run

from pipeline import release
from tests.support.prefect_server import api, free_port, kill_group, server_env, start_server
from tests.support.runs import sample_clips, small_config

pytestmark = [pytest.mark.server, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "vdv-process"
CLIPS = sample_clips("stgcn_ta_chi.mp4", "tfjs_pose_1.mp4")
CONFIG = small_config("pose", "release")


def test_deploy_and_run_build_through_a_worker(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = server_env(tmp_path, port, PREFECT_LOGGING_LEVEL="WARNING")
    raw, pairing, config = write_sample_run(tmp_path, CLIPS, CONFIG)
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed in finally
    started: list[subprocess.Popen] = []

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run([PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"prefect {' '.join(args)}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
        return done

    try:
        started.append(start_server(port, cwd=tmp_path, env=env, log=log))

        run("work-pool", "create", POOL, "--type", "process")
        run("--no-prompt", "deploy", "--all", timeout=240)
        names = {d["name"] for d in api("POST", f"{url}/deployments/filter", {})}
        assert names == {"build", "reextract-nightly", "release"}
        nightly = api("GET", f"{url}/deployments/name/reextract/reextract-nightly")
        assert nightly["schedules"][0]["schedule"]["cron"] == "0 3 * * *"

        deployment = api("GET", f"{url}/deployments/name/build/build")
        assert deployment["global_concurrency_limit"]["limit"] == 1  # one run at a time; more wait in the queue
        schema = deployment["parameter_openapi_schema"]["properties"]
        assert {"runner", "workers", "threads_per_worker", "dask_address", "precision"} <= set(schema)
        parameters = {
            "raw_dir": str(raw),
            "work": str(tmp_path / "work"),
            "config_path": str(config),
            "pairing": str(pairing),
            "modalities": ["pose"],
            "release_out": str(tmp_path / "release"),
            "runner": "thread",  # the task runner is a run parameter like any other
            "workers": 1,
        }
        flow_run = api("POST", f"{url}/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters})

        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", POOL, "--run-once"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        started.append(worker)
        deadline = time.monotonic() + 360
        state = None
        while time.monotonic() < deadline:
            state = api("GET", f"{url}/flow_runs/{flow_run['id']}")["state"]
            if state and state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(2)
        assert state and state["type"] == "COMPLETED", f"{state}\n{(tmp_path / 'server.log').read_text()[-4000:]}"
        report = json.loads((tmp_path / "work" / "flow_state" / "build_report.json").read_text())
        assert report["extract"]["pose"]["computed"] == 2
        assert report["runner"] == {"name": "thread", "workers": 1, "dask_address": None}
        assert release.verify_release(report["release"]["path"]).ok
    finally:
        for proc in reversed(started):
            kill_group(proc)
        log.close()

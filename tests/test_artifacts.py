"""Prefect artifacts and the logging bridge, on a real local Prefect server (127.0.0.1).

The server is the test process's own temporary one (conftest's ``prefect_server``: the server a
build starts for itself; tests/test_deploy.py runs ``prefect server start``). A tiny flow, run in
its own process against the server, calls ``flows.artifacts`` on a report shaped like the one
``flows.build`` returns (taken from a real demo build) and logs through the ``pipeline.*`` and
``models.*`` loggers, one record inside a task and one in the flow. The test then reads the
artifacts and the logs back through Prefect's client. The row builders are also
checked without a server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows import artifacts
from tests.support.runs import child_env

ROOT = Path(__file__).resolve().parents[1]

# the keys and values of a real `make demo` build report (flow_state/build_report.json), trimmed
REPORT = {
    "raw_dir": "../shared/data",
    "work": "out/demo/work",
    "ingest": {"clips": 19, "rejected": 46, "reasons": {"no_clip": 46}},
    "screen": {
        "screened": 19,
        "skipped": 0,
        "kept": 5,
        "rejected": 14,
        "reasons": {
            "camera_motion": 1,
            "multiple_people": 1,
            "no_dancer": 3,
            "shot_cut": 1,
            "too_long": 1,
            "too_short": 6,
            "upper_body_not_visible": 6,
        },
        "notes": ["follower rule DISABLED (max_followers = 0): clips are kept whatever their uploader's reach"],
    },
    "score": {"scored": 5, "rejected": 0, "challenges": {"#dancechallenge": {"n_clips": 3}}},
    "extract": {
        "pose": {"computed": 5, "skipped": 0, "failed": 0, "seconds": 159.62},
        "holistic": {"computed": 5, "skipped": 0, "failed": 0, "seconds": 148.78},
        "facial": {"computed": 4, "skipped": 0, "failed": 1, "seconds": 57.34},
        "scenic": {"computed": 0, "skipped": 5, "failed": 0, "seconds": 1.86},
    },
    "extract_totals": {"computed": 14, "skipped": 5, "failed": 1},
    "release": {
        "path": "out/demo/release/vdv-0.1.0",
        "counts": {"scores": {"train": 4, "test": 1}, "pose": {"train": 4, "test": 1}},
        "untrained_modalities": ["facial", "holistic", "scenic"],
        "missing": {},
        "verified": True,
    },
    "seconds": 214.3,
}

FLOW = """
import json, logging, sys
from prefect import flow, task
from flows.artifacts import bridge_loggers, publish_artifacts

@task
def package_like():
    logging.getLogger("pipeline.release").warning("release: features of scenic come from UNTRAINED weights")

@flow(name="artifacts-check")
def tiny(report: dict):
    bridge_loggers()
    package_like()
    logging.getLogger("models.data").warning("pose: 2 kept clip(s) have no shard and are skipped")
    publish_artifacts(report, "build")
    publish_artifacts(report["release"], "release")

state = tiny(json.loads(sys.argv[1]), return_state=True)
print("FLOW_RUN", state.state_details.flow_run_id)
"""


def test_rows_from_a_build_report():
    assert artifacts.screening_rows(REPORT)[:2] == [
        {"reason": "too_short", "clips": 6},
        {"reason": "upper_body_not_visible", "clips": 6},
    ]
    assert artifacts.screening_rows(REPORT)[-1] == {"reason": "(kept)", "clips": 5}
    rows = {r["modality"]: r for r in artifacts.extraction_rows(REPORT)}
    assert rows["facial"] == {"modality": "facial", "computed": 4, "skipped": 0, "failed": 1, "seconds": 57.34}
    assert rows["(total)"]["computed"] == REPORT["extract_totals"]["computed"]
    assert rows["(total)"]["skipped"] == REPORT["extract_totals"]["skipped"]
    assert rows["(total)"]["failed"] == REPORT["extract_totals"]["failed"]
    assert artifacts.release_rows(REPORT) == artifacts.release_rows(REPORT["release"])
    assert {(r["config"], r["train"], r["test"]) for r in artifacts.release_rows(REPORT)} == {
        ("scores", 4, 1),
        ("pose", 4, 1),
    }
    md = artifacts.summary_markdown(REPORT)
    assert "UNTRAINED" in md and "follower rule DISABLED" in md and "out/demo/release/vdv-0.1.0" in md
    # a re-extraction without raw_dir has no screening and no release
    reextract = {"work": "w", "modalities": ["pose"], "extract": {"pose": REPORT["extract"]["pose"]}}
    assert artifacts.screening_rows(reextract) == [] and artifacts.release_rows(reextract) == []
    # a modality that failed as a whole is a row too
    failed = dict(reextract, failed_modalities={"holistic": "WeightsError: missing"})
    assert [r["modality"] for r in artifacts.extraction_rows(failed)] == ["pose", "holistic", "(total)"]
    assert "extraction of holistic FAILED" in artifacts.summary_markdown(failed, "reextract")


@pytest.mark.server
@pytest.mark.slow
def test_artifacts_and_logs_reach_a_local_server(tmp_path, prefect_server):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    url = prefect_server
    env = child_env(tmp_path, url, PREFECT_LOGGING_LEVEL="INFO")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    script = tmp_path / "tiny_flow.py"
    script.write_text(FLOW)
    done = subprocess.run(
        [sys.executable, str(script), json.dumps(REPORT)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    flow_run_id = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("FLOW_RUN"))

    with SyncPrefectClient(api=url) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    by_key = {a.key: a for a in found}
    assert set(by_key) == {
        "build-summary",
        "build-screening",
        "build-extraction",
        "build-release",
        "release-summary",
        "release-release",
    }
    assert by_key["build-summary"].type == "markdown"
    assert "5 kept, 14 rejected" in by_key["build-summary"].data
    assert "UNTRAINED" in by_key["release-summary"].data
    screening = json.loads(by_key["build-screening"].data)
    assert {r["reason"]: r["clips"] for r in screening} == {**REPORT["screen"]["reasons"], "(kept)": 5}
    extraction = {r["modality"]: r for r in json.loads(by_key["build-extraction"].data)}
    for modality, s in REPORT["extract"].items():
        assert (extraction[modality]["computed"], extraction[modality]["skipped"]) == (
            s["computed"],
            s["skipped"],
        )
    release_table = json.loads(by_key["build-release"].data)
    assert {r["config"]: (r["train"], r["test"]) for r in release_table} == {"scores": (4, 1), "pose": (4, 1)}
    # the pipeline's and the models' loggers reached the run logs, from a task and from the flow
    messages = {(entry.name, entry.message) for entry in logs}
    assert ("pipeline.release", "release: features of scenic come from UNTRAINED weights") in messages
    assert ("models.data", "pose: 2 kept clip(s) have no shard and are skipped") in messages
    task_logged = [e for e in logs if e.name == "pipeline.release"]
    assert task_logged[0].task_run_id is not None


def test_a_stage_driven_outside_a_flow_publishes_no_artifact(prefect_server, recwarn):
    """Prefect deprecates artifacts without a run: a stage driven directly (``open_run`` as a
    library call, as tests and scripts do) creates none and warns of nothing."""
    assert artifacts.publish_artifacts(REPORT, "build") == {}
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]

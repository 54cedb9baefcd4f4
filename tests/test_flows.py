"""The Prefect flows on short real clips: tasks through ``.fn``, one end-to-end build under
``prefect_test_harness``, incremental rebuilds and a parameter change that recomputes one
modality only."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

# Prefect reads these when it first loads its settings: keep its state out of the home directory
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="vdv-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)

from conftest import write_sample_run  # noqa: E402

from flows import tasks  # noqa: E402
from flows.build import build, make_task_runner  # noqa: E402
from flows.reextract import reextract  # noqa: E402
from pipeline import release, tables  # noqa: E402
from pipeline.features import current_shards  # noqa: E402
from pipeline.provenance import sha256_file  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# three short real clips: two static single-person clips (Kinetics) and the rendered dancer
CLIPS = {
    "stgcn_ta_chi.mp4": ("6911379416308305158", "#taichi"),
    "stgcn_clean_and_jerk.mp4": ("6894714574797393158", "#taichi"),
    "tfjs_pose_1.mp4": ("6898094572598037766", "#dance"),
}
MODALITIES = ["pose", "holistic", "facial", "scenic"]
# small grids and sizes keep the test within seconds on two cores; the shapes of the real
# pipeline are unchanged (the demo and the default configuration use the SPEC's rates)
CONFIG = """
[ingest]
crawl_time = "2021-01-06T15:51:49Z"  # the sample file's name stamp (SPEC section 1)

[screen]
max_followers = 0  # the sample's only creator has 398,700 followers
min_duration_s = 3.0  # tfjs_pose_1 lasts 4 s
visual = {visual}

[pose]
fps = {pose_fps}
max_side = 256

[holistic]
fps = 5.0
short_side = 64
crop = 64
max_seconds = 2.0

[facial]
fps = 1.0
max_side = 320
detect_max_side = 320
end_s = 3.0

[scenic]
fps = 5.0
short_side = 48
window = 10
hop = 5

[release]
group_by_uploader = false  # every record has the same uploader
"""


def config_text(*, visual: bool = True, pose_fps: float = 5.0) -> str:
    return CONFIG.format(visual=str(visual).lower(), pose_fps=pose_fps)


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# -- tasks through .fn ----------------------------------------------------------------------------


def test_extract_task_records_a_bad_clip_and_goes_on(tmp_path):
    work = tmp_path / "work"
    bad = tmp_path / "not_a_video.mp4"
    bad.write_text("this is text, not a video")
    good = SHARED / "clips" / "tfjs_pose_1.mp4"
    clips = [
        {"clip_id": sha256_file(bad), "path": str(bad)},
        {"clip_id": sha256_file(good), "path": str(good)},
    ]
    config = {"pose": {"fps": 5.0, "max_side": 256}}
    summary = tasks.extract.fn("pose", str(work), clips, config)
    assert (summary["computed"], summary["skipped"], summary["failed"]) == (1, 0, 1)
    rejected = tables.read_file(tasks.extraction_rejections_path(work, "pose"), tables.REJECTIONS).to_pylist()
    assert [(r["stage"], r["clip_id"]) for r in rejected] == [("extract:pose", clips[0]["clip_id"])]
    assert rejected[0]["reason"] in ("not_a_video", "unreadable_video", "zero_frames")
    shard = pq.read_table(current_shards(work, "pose")[clips[1]["clip_id"][:16]])
    assert shard.column("clip_id").to_pylist() == [clips[1]["clip_id"]]
    assert len(shard.column("timestamps")[0]) == 20  # 4 s at 5 fps
    # a second call on the same clips skips the good one and records the bad one again
    again = tasks.extract.fn("pose", str(work), clips, config)
    assert (again["computed"], again["skipped"], again["failed"]) == (0, 1, 1)


def test_task_runners_by_name():
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert isinstance(make_task_runner("thread"), ThreadPoolTaskRunner)
    assert isinstance(make_task_runner("process"), ProcessPoolTaskRunner)
    assert isinstance(make_task_runner("dask", dask_address="tcp://127.0.0.1:1"), DaskTaskRunner)
    with pytest.raises(ValueError):
        make_task_runner("cluster")


def test_extraction_tasks_carry_the_gpu_tag():
    assert "gpu" in tasks.extract.tags
    assert tasks.ingest.retries > 0 and tasks.package.retries > 0  # I/O
    assert tasks.extract.retries == 0 and tasks.screen.retries == 0 and tasks.score.retries == 0


# -- end to end -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(prefect_harness, tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    raw, pairing, config = write_sample_run(root, CLIPS, config_text())
    kwargs = dict(
        raw_dir=str(raw),
        work=str(root / "work"),
        config_path=str(config),
        pairing=str(pairing),
        modalities=MODALITIES,
        untrained=True,
        release_out=str(root / "release"),
        allow_untrained=True,
        salt="flow-test",
    )
    first = build(**kwargs)
    return root, kwargs, first


def test_build_end_to_end(built):
    root, _, report = built
    assert report["ingest"]["clips"] == 3
    assert report["screen"]["kept"] == 3 and report["screen"]["screened"] == 3
    assert report["score"]["scored"] == 3
    for modality in MODALITIES:
        e = report["extract"][modality]
        assert (e["computed"], e["skipped"], e["failed"]) == (3, 0, 0), (modality, e)
    assert report["release"]["verified"]
    path = Path(report["release"]["path"])
    assert release.verify_release(path).ok
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["configs"]) == {"scores", *MODALITIES}
    assert manifest["untrained"] and set(manifest["untrained_modalities"]) == {"holistic", "facial", "scenic"}
    assert manifest["build"]["extract"]["pose"]["computed"] == 3
    assert manifest["configs"]["pose"]["num_rows"] == {"train": 2, "test": 1}


def test_second_build_does_no_extraction_work(built):
    root, kwargs, first = built
    before = {
        m: {p.name: p.stat().st_mtime_ns for p in (root / "work" / "features" / m).glob("*.parquet")}
        for m in MODALITIES
    }
    second = build(**kwargs)
    assert second["extract_totals"] == {"computed": 0, "skipped": 12, "failed": 0}
    assert second["screen"]["screened"] == 0 and second["screen"]["skipped"] == 3
    after = {
        m: {p.name: p.stat().st_mtime_ns for p in (root / "work" / "features" / m).glob("*.parquet")}
        for m in MODALITIES
    }
    assert before == after  # no shard rewritten
    assert second["release"]["verified"]


def test_changing_one_parameter_recomputes_that_modality_only(built):
    root, kwargs, _ = built
    work = root / "work"
    old_pose = {p.name for p in (work / "features" / "pose").glob("*.parquet")}
    config = root / "config_pose4.toml"
    config.write_text(config_text(pose_fps=4.0))
    report = reextract(work=str(work), modalities=MODALITIES, config_path=str(config), untrained=True)
    assert report["extract"]["pose"]["computed"] == 3 and report["extract"]["pose"]["skipped"] == 0
    for modality in ("holistic", "facial", "scenic"):
        assert report["extract"][modality]["computed"] == 0 and report["extract"][modality]["skipped"] == 3
    new_pose = {p.name for p in (work / "features" / "pose").glob("*.parquet")}
    assert len(new_pose) == 3 and not new_pose & old_pose  # replaced, stale shards removed
    shard = pq.read_table(next((work / "features" / "pose").glob("*.parquet")))
    assert json.loads(shard.column("params")[0].as_py())["fps"] == 4.0


def test_release_flow_packages_the_work_directory(built, tmp_path):
    from flows.release import release as release_flow

    root, kwargs, _ = built
    # the release checks shard identities against its configuration: use the one that made the
    # current shards (an earlier test may have re-extracted pose with another configuration)
    config_path = root / "config_pose4.toml"
    config_path = str(config_path) if config_path.exists() else kwargs["config_path"]
    result = release_flow(
        work=kwargs["work"], out=str(tmp_path), config_path=config_path, allow_untrained=True, salt="x"
    )
    assert result["verified"] and Path(result["path"]).parent == tmp_path
    manifest = json.loads((Path(result["path"]) / "manifest.json").read_text())
    assert manifest["build"]["screen"]["kept"] == 3  # the last build's report travels with it
    with pytest.raises(Exception, match="untrained"):
        release_flow(work=kwargs["work"], out=str(tmp_path / "refused"), config_path=config_path)


def test_a_modality_without_weights_fails_the_run_with_a_report(built, tmp_path, monkeypatch):
    from flows.build import BuildError

    root, kwargs, _ = built
    monkeypatch.setenv("VDV_WEIGHTS_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(BuildError, match="holistic"):
        reextract(
            work=kwargs["work"], modalities=["pose", "holistic"], config_path=kwargs["config_path"], untrained=False
        )
    report = tasks.read_state(kwargs["work"], "reextract_report")
    assert "vdv weights" in report["failed_modalities"]["holistic"]  # the error names the fix
    pose = report["extract"]["pose"]  # the other modality still ran to the end
    assert (pose["computed"] + pose["skipped"], pose["failed"]) == (3, 0)

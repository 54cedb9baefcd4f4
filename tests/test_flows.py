"""The Prefect flows on short real clips: tasks through ``.fn``, one end-to-end build against the
test process's temporary Prefect server, incremental rebuilds and a parameter change that
recomputes one modality only."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import av
import pyarrow.parquet as pq
import pytest
from conftest import write_sample_run

from flows import tasks
from flows.build import build
from flows.reextract import reextract
from flows.runners import make_task_runner
from pipeline import release
from pipeline.core import tables
from pipeline.core.provenance import sha256_file
from pipeline.modalities import registry as modalities
from pipeline.modalities.features import current_shards
from tests.support.runs import sample_clips, small_config

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# three short real clips: two static single-person clips (Kinetics) and the rendered dancer
CLIPS = sample_clips("stgcn_ta_chi.mp4", "stgcn_clean_and_jerk.mp4", "tfjs_pose_1.mp4")
MODALITIES = list(modalities.names())
# small grids and sizes keep the test within seconds on two cores; the shapes of the real
# pipeline are unchanged (the demo and the default configuration use the SPEC's rates)
CONFIG = small_config("pose", "holistic", "facial", "scenic", "release", visual="{visual}", pose_fps="{pose_fps}")


def config_text(*, visual: bool = True, pose_fps: float = 5.0) -> str:
    return CONFIG.format(visual=str(visual).lower(), pose_fps=pose_fps)


# -- tasks through .fn ----------------------------------------------------------------------------


def test_extract_clip_task_records_a_bad_clip_and_goes_on(tmp_path):
    from pipeline.extraction.stage import ExtractionPlan

    work = tmp_path / "work"
    bad = tmp_path / "not_a_video.mp4"
    bad.write_text("this is text, not a video")
    good = SHARED / "clips" / "tfjs_pose_1.mp4"
    clips = [
        {"clip_id": sha256_file(bad), "path": str(bad)},
        {"clip_id": sha256_file(good), "path": str(good)},
    ]
    plan = ExtractionPlan.make(["pose"], {"pose": {"fps": 5.0, "max_side": 256}})
    items = [
        it
        for clip in clips
        for it in tasks.extract_clip.fn(
            {"work": str(work), "clip": clip, "plan": plan, "decode": {}, "attempts": str(work / "attempts")}
        )
    ]
    assert [(i["clip_id"], i["status"]) for i in items] == [
        (clips[0]["clip_id"], "rejected"),
        (clips[1]["clip_id"], "computed"),
    ]
    assert items[0]["reason"] in ("not_a_video", "unreadable_video", "zero_frames")
    shard = pq.read_table(current_shards(work, "pose")[clips[1]["clip_id"][:16]])
    assert shard.column("clip_id").to_pylist() == [clips[1]["clip_id"]]
    assert len(shard.column("timestamps")[0]) == 20  # 4 s at 5 fps
    again = [
        it
        for clip in clips
        for it in tasks.extract_clip.fn(
            {"work": str(work), "clip": clip, "plan": plan, "decode": {}, "attempts": str(work / "attempts")}
        )
    ]
    assert [i["status"] for i in again] == ["rejected", "skipped"]


def test_task_runners_by_name():
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert isinstance(make_task_runner("thread"), ThreadPoolTaskRunner)
    assert isinstance(make_task_runner("process"), ProcessPoolTaskRunner)
    assert isinstance(make_task_runner("dask", dask_address="tcp://127.0.0.1:1"), DaskTaskRunner)
    with pytest.raises(ValueError):
        make_task_runner("cluster")


def test_per_clip_tasks_and_retries_only_for_io():
    # no "gpu" tag: a concurrency limit of 1 on it would serialise a GPU node to one clip at a time
    assert "extract" in tasks.extract_clip.tags and "gpu" not in tasks.extract_clip.tags
    assert tasks.ingest.retries > 0 and tasks.package.retries > 0  # I/O
    assert tasks.ingest.retry_condition_fn is tasks.transient_io
    assert tasks.extract_clip.retries == 0 and tasks.screen.retries == 0 and tasks.score.retries == 0


# -- end to end -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(prefect_server, tmp_path_factory):
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
    opened: list[str] = []  # every container open in this process (the probe's child opens once more)
    real_open = av.open

    def counting(path, *args, **kw):
        opened.append(str(path))
        return real_open(path, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(av, "open", counting)
        first = build(**kwargs)
    (root / "opens.json").write_text(json.dumps(opened))
    return root, kwargs, first


def test_build_end_to_end(built):
    root, _, report = built
    assert report["ingest"]["clips"] == 3
    assert report["screen"]["kept"] == 3 and report["screen"]["screened"] == 3
    assert report["screen"]["pixel_rules"] == {"computed": 3, "reused": 0, "changed": 0}
    assert report["score"]["scored"] == 3
    items = report["items"]  # one per clip and modality, with the process that did it
    assert sorted((i["modality"], i["status"]) for i in items) == sorted(
        (m, "computed") for m in MODALITIES for _ in range(3)
    )
    assert all(i["worker"].count(":") == 1 and i["seconds"] > 0 for i in items)
    assert report["precision"] in ("float32", "bfloat16") and report["workers"]
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


def test_a_kept_clip_is_opened_at_most_three_times_in_a_whole_build(built, tmp_path):
    """probe (in its child process), pixel rules, and one extraction pass for four modalities."""
    from pipeline.ingest.probe import probe

    root, kwargs, report = built
    opened = Counter(json.loads((root / "opens.json").read_text()))
    kept = tables.read_table(kwargs["work"], tables.CLIPS).to_pylist()
    assert len(kept) == 3
    in_process = {Path(c["path"]).name: opened[c["path"]] for c in kept}
    assert in_process == dict.fromkeys(in_process, 2), in_process  # screening + extraction
    with pytest.MonkeyPatch.context() as mp:  # the probe itself: one open
        probe_opens: list[str] = []
        real_open = av.open
        mp.setattr(av, "open", lambda p, *a, **k: probe_opens.append(p) or real_open(p, *a, **k))
        probe(kept[0]["path"])
    assert len(probe_opens) == 1


def test_the_report_counts_every_decode_of_a_kept_clip(built):
    """On the CPU a kept clip is decoded by its pixel rules, then by its extraction: twice."""
    report = built[2]
    assert report["decoding"]["one_pass"] is False and report["decoding"]["clips"] == 3
    assert report["decoding"]["ratio"] == 2.0 and report["decoding"]["max_ratio"] == 2.0


def test_second_build_does_no_extraction_work(built):
    root, kwargs, first = built
    before = {
        m: {p.name: p.stat().st_mtime_ns for p in (root / "work" / "features" / m).glob("*.parquet")}
        for m in MODALITIES
    }
    second = build(**kwargs)
    assert second["extract_totals"] == {"computed": 0, "skipped": 12, "failed": 0}
    assert second["screen"]["pixel_rules"] == {"computed": 0, "reused": 3, "changed": 0}
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
    # the re-extraction has its page: the build report shows this run's counts and names it
    page = Path(report["report"]).read_text()
    assert report["kind"] == "reextract" and "counts of the last run, <b>reextract</b>" in page


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


def test_a_modality_without_weights_fails_the_run_with_one_message(built, tmp_path, monkeypatch):
    """Missing weights are the run's failure, found before any clip is mapped: no clip is
    rejected for it, and the message names the command that fixes it."""
    from flows.build import BuildError

    root, kwargs, _ = built
    rejections = Path(kwargs["work"]) / "rejections" / "rejections.extract-holistic.parquet"
    before = tables.read_file(rejections, tables.REJECTIONS).num_rows if rejections.exists() else 0
    monkeypatch.setenv("VDV_WEIGHTS_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(BuildError, match="vdv weights"):
        reextract(
            work=kwargs["work"], modalities=["pose", "holistic"], config_path=kwargs["config_path"], untrained=False
        )
    report = tasks.read_state(kwargs["work"], "reextract_report")
    assert "holistic" in report["failed"] and "WeightsError" in report["failed"]
    after = tables.read_file(rejections, tables.REJECTIONS).num_rows if rejections.exists() else 0
    assert after == before  # not one rejection per clip


def test_a_full_disk_stops_the_run_in_one_line_blames_no_clip_and_a_rerun_continues(built, monkeypatch):
    """A full disk under the work directory is the machine's fault: the run stops with one line
    naming the directory, no clip gets a rejection, no attempt stays marked; with space again the
    same run goes through."""
    from flows.build import BuildError
    from tests.support.full_disk import FullDisk

    _, kwargs, _ = built
    work = Path(kwargs["work"])
    rejections = work / "rejections" / "rejections.extract-pose.parquet"
    before = tables.read_file(rejections, tables.REJECTIONS).num_rows if rejections.exists() else 0
    disk = FullDisk(work / "features" / "pose", monkeypatch, mount=False)  # it holds the shards of the build
    disk.fill()
    run = dict(work=kwargs["work"], modalities=["pose"], config_path=kwargs["config_path"], untrained=True, force=True)
    with pytest.raises(BuildError) as caught:
        reextract(**run)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"no space left on the device of {work / 'features' / 'pose'}")
    assert tasks.read_state(work, "reextract_report")["failed"] == message
    after = tables.read_file(rejections, tables.REJECTIONS).num_rows if rejections.exists() else 0
    assert after == before and not list((work / "attempts").rglob("*.attempt"))  # no attempt counts as a death
    disk.free()
    report = reextract(**run)
    assert report["extract"]["pose"]["computed"] == len(CLIPS) and report["extract"]["pose"]["failed"] == 0


def test_screening_follows_changed_metadata_without_rerunning_pixel_rules(built, tmp_path):
    """A re-crawl that raises a clip's followers re-evaluates the cheap rule at once, while the
    pixel rules of every clip are reused (same bytes, settings and code)."""
    root, kwargs, _first = built
    config = root / "config_followers.toml"
    config.write_text(config_text().replace("max_followers = 0", "max_followers = 1000"))
    common = dict(work=kwargs["work"], modalities=["pose"], raw_dir=kwargs["raw_dir"], pairing=kwargs["pairing"])
    report = reextract(config_path=str(config), **common)
    assert report["screen"]["kept"] == 0  # the sample's creator has 398,700 followers
    assert report["screen"]["reasons"] == {"too_many_followers": 3}
    assert report["screen"]["pixel_rules"] == {"computed": 0, "reused": 0, "changed": 0}  # not run: a cheap rule failed
    report = reextract(config_path=kwargs["config_path"], **common)
    assert report["screen"]["kept"] == 3 and report["screen"]["pixel_rules"] == {
        "computed": 0,
        "reused": 3,
        "changed": 0,
    }


def test_two_flows_on_one_work_directory_the_second_fails_fast_naming_the_first(built, monkeypatch):
    import threading
    import time

    from pipeline.core.lock import LOCK_NAME, WorkDirLocked
    from pipeline.extraction import stage as extraction

    root, kwargs, _ = built
    lock = Path(kwargs["work"]) / LOCK_NAME
    outcome: dict = {}
    # the first flow's clips wait until the second flow has been refused: three short clips are
    # otherwise extracted before the second flow is up, and the lock is gone by then
    second_refused = threading.Event()
    extract = extraction.extract_clip

    def extract_after_the_second(*args, **kwargs):
        second_refused.wait(120)
        return extract(*args, **kwargs)

    monkeypatch.setattr(extraction, "extract_clip", extract_after_the_second)

    def first():
        outcome["report"] = reextract(
            work=kwargs["work"], modalities=["pose"], config_path=kwargs["config_path"], force=True
        )

    runner = threading.Thread(target=first)
    runner.start()
    deadline = time.monotonic() + 120
    while not lock.exists() and runner.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.exists(), "the first flow never took the lock"
    try:
        with pytest.raises(WorkDirLocked, match="'reextract'.*pid"):
            build(**kwargs)
    finally:
        second_refused.set()
    runner.join(300)
    assert outcome["report"]["extract"]["pose"]["computed"] == 3  # the first run finished undisturbed
    assert not lock.exists()


# -- the placement reaches the pixel rules --------------------------------------------------------


@pytest.mark.slow
def test_device_and_precision_flags_reach_the_pixel_rules(prefect_server, tmp_path, monkeypatch):
    """``vdv build --device cpu --precision float32`` on a machine where torch finds a GPU: the
    people counter runs mediapipe's BlazePose on the CPU, as extraction does, not torch on CUDA."""
    import torch

    from flows.build import open_run, run_rule_stages
    from pipeline.core.placement import Placement, read_placement
    from pipeline.core.runtime import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU node, as far as the rules go
    assert resolve_device(None) == "cuda"  # where the counter ran before, whatever the flags
    raw, pairing, config = write_sample_run(tmp_path, sample_clips("stgcn_ta_chi.mp4"), config_text())
    work = str(tmp_path / "work")
    with open_run("build", work, str(config), ["pose"], "thread", 1, 1, None, "cpu", "float32") as state:
        run_rule_stages(state, str(raw), str(pairing), None, None)
    wanted = Placement("cpu", "float32", "mediapipe", "numpy", "float32")
    assert read_placement(work) == wanted
    (shard,) = (Path(work) / "pixel_rules").rglob("*.parquet")  # fanned out by clip id
    results = json.loads(pq.read_table(shard).to_pylist()[0]["results"])
    counter = next(r for r in results if r["rule"] == "one_dancer")["details"]["people_counter"]
    assert counter == {"backend": "mediapipe", "device": "cpu", "precision": "float32"}

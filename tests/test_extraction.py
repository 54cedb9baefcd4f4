"""The per-clip extraction loop of pipeline.extraction.stage on real clips: one decode pass feeds every
modality, identities do not depend on which modalities ran together, a bad clip is a rejection."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.core import tables
from pipeline.core.provenance import sha256_file
from pipeline.extraction import stage as extraction
from pipeline.extraction.stage import ExtractionPlan, extract_clip, load_extractors
from pipeline.modalities.features import read_features

CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clips"
# small grids keep this within seconds; the code path is the build's
CONFIG = {
    "pose": {"fps": 5.0, "max_side": 256},
    "holistic": {"fps": 5.0, "short_side": 64, "crop": 64, "end_s": 2.0},
    "facial": {"fps": 1.0, "max_side": 320, "detect_max_side": 320, "end_s": 3.0},
    # the mask's grid is pose's, so the two share one BlazePose track in a pass
    "scenic": {"fps": 5.0, "short_side": 48, "mask_max_side": 256, "window": 10, "hop": 5},
}
ALL = ("pose", "holistic", "facial", "scenic")


def _plan(modalities) -> ExtractionPlan:
    return ExtractionPlan.make(modalities, CONFIG, untrained=True, device="cpu", precision="float32")


def _clip(name: str) -> dict:
    path = CLIPS / name
    return {"clip_id": sha256_file(path), "path": str(path), "video_id": name.split(".")[0]}


@pytest.fixture
def count_opens(monkeypatch):
    opened: list[str] = []
    real = av.open

    def counting(path, *args, **kwargs):
        opened.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr("av.open", counting)
    return opened


def test_one_open_feeds_every_modality_and_a_rerun_skips(tmp_path, count_opens):
    clip = _clip("tfjs_pose_1.mp4")
    extractors = load_extractors(_plan(ALL))
    items = extract_clip(clip, extractors, tmp_path)
    assert [(i.modality, i.status) for i in items] == [(m, "computed") for m in ALL]
    assert count_opens == [clip["path"]]  # one container open for the four modalities
    assert all(i.worker.endswith(f":{__import__('os').getpid()}") and i.seconds > 0 for i in items)
    again = extract_clip(clip, extractors, tmp_path)
    assert [i.status for i in again] == ["skipped"] * 4 and len(count_opens) == 1  # nothing decoded
    assert load_extractors(_plan(ALL)) is extractors  # a worker builds its models once


def _backend_config(backend: str, weights: Path) -> dict:
    """CONFIG with ``[pose] backend`` (also scenic's mask's) and the BlazePose weights cache."""
    config = {m: dict(section) for m, section in CONFIG.items()}
    config["pose"].update(backend=backend, weights_dir=str(weights))
    config["scenic"]["weights_dir"] = str(weights)
    return config


@pytest.mark.parametrize("backend", ["mediapipe", "torch"])
def test_shards_do_not_depend_on_which_modalities_shared_the_pass(tmp_path, backend, blazepose_weights):
    clip = _clip("stgcn_ta_chi.mp4")
    config = _backend_config(backend, blazepose_weights)

    def plan(modalities):
        return ExtractionPlan.make(modalities, config, untrained=True, device="cpu", precision="float32")

    together, alone = tmp_path / "together", tmp_path / "alone"
    extract_clip(clip, load_extractors(plan(ALL)), together)
    for modality in ALL:
        extract_clip(clip, load_extractors(plan([modality])), alone)
    for modality in ALL:
        (a,) = sorted((together / "features" / modality).glob("*.parquet"))
        (b,) = sorted((alone / "features" / modality).glob("*.parquet"))
        assert a.name == b.name  # same identity
        ra, rb = read_features(a, modality).to_pylist()[0], read_features(b, modality).to_pylist()[0]
        assert ra["identity"] == rb["identity"] and ra["timestamps"] == rb["timestamps"]
        np.testing.assert_array_equal(np.asarray(ra["features"]), np.asarray(rb["features"]))


@pytest.mark.parametrize("backend", ["mediapipe", "torch"])
def test_pose_and_scenic_on_one_grid_run_blazepose_once_per_frame(tmp_path, monkeypatch, backend, blazepose_weights):
    from pipeline.blazepose.backends import BlazePose
    from pipeline.blazepose.engine import PoseEngine

    runs: list[tuple[int, int]] = []
    if backend == "mediapipe":
        real = BlazePose.process

        def counting(self, image, mask_size=None):
            runs.append(image.shape[:2])
            return real(self, image, mask_size)

        monkeypatch.setattr(BlazePose, "process", counting)
    else:
        real = PoseEngine.step

        def counting(self, slots, images, mask_sizes=None):
            runs.extend(image.shape[:2] for image in images)
            return real(self, slots, images, mask_sizes)

        monkeypatch.setattr(PoseEngine, "step", counting)
    config = _backend_config(backend, blazepose_weights)

    def plan(modalities):
        return ExtractionPlan.make(modalities, config, untrained=True, device="cpu", precision="float32")

    clip = _clip("stgcn_ta_chi.mp4")
    items = extract_clip(clip, load_extractors(plan(["pose", "scenic"])), tmp_path)
    assert [i.status for i in items] == ["computed", "computed"]
    (shard,) = (tmp_path / "features" / "pose").glob("*.parquet")
    row = read_features(shard, "pose").to_pylist()[0]
    frames = len(row["timestamps"])
    assert frames > 50 and len(runs) == frames  # one run per grid frame for both, not two
    assert max(max(shape) for shape in runs) == 256  # on the pose grid, longer side 256
    assert json.loads(row["params"])["backend"] == backend  # part of the identity
    (scenic,) = (tmp_path / "features" / "scenic").glob("*.parquet")
    assert json.loads(read_features(scenic, "scenic").to_pylist()[0]["params"])["person_mask"]["backend"] == backend

    runs.clear()
    extract_clip(clip, load_extractors(plan(["scenic"])), tmp_path / "alone")
    assert len(runs) == frames  # alone, scenic runs its own track on the same grid


def test_pose_and_scenic_on_different_grids_are_named_in_a_warning(caplog):
    load_extractors(_plan(["pose", "scenic"]))  # one grid: nothing to say
    assert "BlazePose runs twice" not in caplog.text
    config = {**CONFIG, "scenic": {**CONFIG["scenic"], "mask_max_side": 320}}
    load_extractors(ExtractionPlan.make(["pose", "scenic"], config, untrained=True, device="cpu"))
    assert "BlazePose runs twice" in caplog.text and "mask_max_side" in caplog.text


def test_a_bad_clip_is_a_rejection_for_each_modality_and_the_next_clip_goes_on(tmp_path):
    bad = tmp_path / "not_a_video.mp4"
    bad.write_text("this is text, not a video")
    clips = [{"clip_id": sha256_file(bad), "path": str(bad)}, _clip("tfjs_pose_1.mp4")]
    extractors = load_extractors(_plan(["pose", "scenic"]))
    items = [it for clip in clips for it in extract_clip(clip, extractors, tmp_path / "w")]
    assert [(i.clip_id, i.modality, i.status) for i in items] == [
        (clips[0]["clip_id"], "pose", "rejected"),
        (clips[0]["clip_id"], "scenic", "rejected"),
        (clips[1]["clip_id"], "pose", "computed"),
        (clips[1]["clip_id"], "scenic", "computed"),
    ]
    assert items[0].reason == "not_a_video"
    written = extraction.record_rejections(tmp_path / "w", items)
    rows = tables.read_file(written["pose"], tables.REJECTIONS).to_pylist()
    assert [(r["stage"], r["clip_id"], r["reason"]) for r in rows] == [
        ("extract:pose", clips[0]["clip_id"], "not_a_video")
    ]
    shard = pq.read_table(next((tmp_path / "w" / "features" / "pose").glob("*.parquet")))
    assert len(shard.column("timestamps")[0]) == 20  # 4 s at 5 fps
    # the bad file replaced by nothing: a rerun that attempts only the good clip drops its old row
    extraction.record_rejections(tmp_path / "w", [it for it in items if it.clip_id == clips[1]["clip_id"]])
    assert len(tables.read_file(written["pose"], tables.REJECTIONS)) == 1


def test_one_modality_failing_on_a_clip_leaves_the_others(tmp_path):
    """A clip shorter than one scenic window is rejected for scenic only, in the same pass."""
    clip = _clip("tfjs_pose_1.mp4")
    config = {**CONFIG, "scenic": {**CONFIG["scenic"], "end_s": 0.5}}  # 2 grid frames < hop 5
    plan = ExtractionPlan.make(["pose", "scenic"], config, untrained=True, device="cpu", precision="float32")
    items = extract_clip(clip, load_extractors(plan), tmp_path)
    assert [(i.modality, i.status, i.reason) for i in items] == [
        ("pose", "computed", None),
        ("scenic", "rejected", "too_short"),
    ]


def test_decode_budget_counts_only_the_decoder(tmp_path):
    """A budget far below the models' time but above the decoder's keeps the clip (the old
    per-clip deadline, which also counted inference, rejected it)."""
    clip = _clip("stgcn_ta_chi.mp4")  # 10 s, 340x256: decodes in about 0.3 s, a fifth of the budget
    config = {"holistic": {"fps": 2.0}}  # 21 frames through ResNet-50 at 224 px: about 4 s, 2.7 budgets
    plan = ExtractionPlan.make(["holistic"], config, untrained=True, device="cpu", precision="float32")
    [item] = extract_clip(clip, load_extractors(plan), tmp_path, decode=extraction.DecodeConfig(time_budget_s=1.5))
    assert item.status == "computed"
    assert item.seconds > 1.5  # the model alone took longer than the whole budget


def test_missing_weights_fail_the_worker_check_not_the_clips(tmp_path, monkeypatch):
    from pipeline.core.errors import WeightsError

    monkeypatch.setenv("VDV_WEIGHTS_DIR", str(tmp_path / "empty"))
    plan = ExtractionPlan.make(["holistic"], CONFIG, untrained=False, device="cpu", precision="float32")
    with pytest.raises(WeightsError, match="vdv weights"):
        load_extractors(plan)

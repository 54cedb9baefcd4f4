"""Pose skeletons: the 33 -> MPII-16 mapping, the feature shard, and agreement with another estimator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.blazepose.backends import model_path, model_sha256
from pipeline.core.config import ConfigError
from pipeline.core.provenance import sha256_file
from pipeline.modalities.features import read_features
from pipeline.modalities.pose import MODALITY
from pipeline.modalities.skeleton import DERIVED_SOURCES, MPII_INDEX, blazepose_to_mpii
from tests.support.video import write_clip

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLIPS = DATA / "clips"

# COCO keypoint name -> MPII joint, for the joints both formats share
COCO_TO_MPII = {
    "right_ankle": "r_ankle",
    "right_knee": "r_knee",
    "right_hip": "r_hip",
    "left_hip": "l_hip",
    "left_knee": "l_knee",
    "left_ankle": "l_ankle",
    "right_wrist": "r_wrist",
    "right_elbow": "r_elbow",
    "right_shoulder": "r_shoulder",
    "left_shoulder": "l_shoulder",
    "left_elbow": "l_elbow",
    "left_wrist": "l_wrist",
}


def _landmarks(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lm = np.zeros((33, 3))
    lm[:, :2] = rng.uniform(0, 500, size=(33, 2))
    lm[:, 2] = rng.uniform(0.6, 1.0, size=33)
    return lm


def test_direct_joints_are_copied():
    lm = _landmarks()
    mpii = blazepose_to_mpii(lm)
    # SPEC section 4 order; BlazePose indices from the module table
    for joint, blaze in {"r_ankle": 28, "r_knee": 26, "r_hip": 24, "l_hip": 23, "l_knee": 25, "l_ankle": 27,
                         "r_wrist": 16, "r_elbow": 14, "r_shoulder": 12, "l_shoulder": 11, "l_elbow": 13,
                         "l_wrist": 15}.items():  # fmt: skip
        np.testing.assert_array_equal(mpii[MPII_INDEX[joint]], lm[blaze])


def test_derived_joints_positions():
    lm = _landmarks(1)
    mpii = blazepose_to_mpii(lm)
    np.testing.assert_allclose(mpii[MPII_INDEX["pelvis"], :2], (lm[23, :2] + lm[24, :2]) / 2)
    np.testing.assert_allclose(mpii[MPII_INDEX["thorax"], :2], (lm[11, :2] + lm[12, :2]) / 2)
    mouth, eyes = (lm[9, :2] + lm[10, :2]) / 2, (lm[2, :2] + lm[5, :2]) / 2
    np.testing.assert_allclose(mpii[MPII_INDEX["upper_neck"], :2], (mouth + mpii[MPII_INDEX["thorax"], :2]) / 2)
    np.testing.assert_allclose(mpii[MPII_INDEX["head_top"], :2], eyes + 2 * (eyes - mouth))


@pytest.mark.parametrize("joint", ["pelvis", "thorax", "upper_neck", "head_top"])
def test_derived_joint_takes_lowest_source_confidence(joint):
    """SPEC section 2: a derived joint cannot borrow confidence from a well-seen neighbour."""
    sources = DERIVED_SOURCES[MPII_INDEX[joint]]
    for weak in sources:
        lm = _landmarks(2)
        lm[:, 2] = 0.99
        lm[weak, 2] = 0.05
        assert blazepose_to_mpii(lm)[MPII_INDEX[joint], 2] == pytest.approx(0.05)
    lm = _landmarks(3)
    assert blazepose_to_mpii(lm)[MPII_INDEX[joint], 2] == pytest.approx(lm[list(sources), 2].min())


def test_mapping_rejects_wrong_shape():
    with pytest.raises(ValueError, match="33"):
        blazepose_to_mpii(np.zeros((17, 3)))


def test_weights_identity_is_the_model_file():
    assert model_path().name == "pose_landmark_full.tflite"
    assert model_sha256() == sha256_file(model_path())
    extractor = MODALITY.build()
    assert extractor.weights_sha256 == model_sha256() and not extractor.untrained
    assert extractor.params()["fps"] == 25.0 and extractor.dim == 48


def test_config_section_is_checked():
    with pytest.raises(ConfigError, match="fsp"):
        MODALITY.build({"fsp": 30})
    assert MODALITY.build({"fps": 30}).config.fps == 30


@pytest.fixture(scope="module")
def tfjs_sequence():
    """tfjs_pose_1 on a 30 fps grid: one sample per native frame (120 frames, 576x576)."""
    return MODALITY.build({"fps": 30.0}).compute(CLIPS / "tfjs_pose_1.mp4", "tfjs_pose_1")


def test_pck_against_independent_estimator(tfjs_sequence):
    """PCK@0.2 of torso size against tfjs-models' COCO keypoints of the same frames >= 0.8."""
    seq = tfjs_sequence
    reference = json.loads((DATA / "keypoints" / "tfjs_pose_1.json").read_text())
    assert (seq.frame_width, seq.frame_height) == (576, 576)
    joints = seq.features.reshape(-1, 16, 3)
    hits = []
    matched = 0
    for t, valid, frame in zip(seq.timestamps, seq.valid, joints, strict=True):
        k = int(round(t * 30))  # native frame k sits at k / 30 s
        assert abs(t - k / 30) < 1e-6
        ref = reference[k]
        if not valid or len(ref) < 17:
            continue
        matched += 1
        # torso size: left shoulder to right hip, the usual PCK torso diameter
        torso = np.hypot(
            ref["left_shoulder"]["x"] - ref["right_hip"]["x"], ref["left_shoulder"]["y"] - ref["right_hip"]["y"]
        )
        for coco, mpii in COCO_TO_MPII.items():
            x, y, _ = frame[MPII_INDEX[mpii]]
            hits.append(np.hypot(x - ref[coco]["x"], y - ref[coco]["y"]) <= 0.2 * torso)
    pck = float(np.mean(hits))
    print(f"PCK@0.2 torso over {matched} frames x {len(COCO_TO_MPII)} joints: {pck:.3f}")
    assert matched >= 100
    assert pck >= 0.8


@pytest.fixture(scope="module")
def person_then_nobody(tmp_path_factory):
    """10 real frames of a dancer, then 10 empty frames: a clip where the person leaves."""
    from pipeline.core.decode import DecodeParams, iter_samples

    dancer = [s.image for s in iter_samples(CLIPS / "tfjs_pose_1.mp4", DecodeParams(fps=10, end_s=1.0))]
    empty = [np.full_like(dancer[0], 128) for _ in range(10)]
    path = tmp_path_factory.mktemp("pose") / "leaves.mp4"
    write_clip(path, dancer + empty)
    return path


def test_frames_without_a_person_are_masked(person_then_nobody, tmp_path):
    extractor = MODALITY.build({"fps": 10.0})
    shard, computed = extractor.extract_to(tmp_path, person_then_nobody, "c" * 64)
    assert computed and shard.exists()
    row = read_features(shard, "pose").to_pylist()[0]
    valid = np.array(row["valid"])
    feats = np.array(row["features"], dtype=np.float32)
    assert feats.shape == (20, 48)
    assert valid[:10].all() and not valid[10:].any()
    assert np.all(feats[10:] == 0)
    # coordinates are pixels of the 576x576 frame, inside it
    xy = feats[:10].reshape(10, 16, 3)[:, :, :2]
    assert 0 < xy.min() and xy.max() < 576
    assert row["frame_width"] == 576 and row["frame_height"] == 576
    assert row["weights_sha256"] == model_sha256() and row["extractor"] == "mediapipe-blazepose-full"
    assert json.loads(row["params"])["fps"] == 10.0
    # a second run finds the current shard and skips the clip
    assert extractor.extract_to(tmp_path, person_then_nobody, "c" * 64) == (shard, False)


def test_coordinates_are_native_pixels_whatever_the_decode_size(tfjs_sequence):
    """The estimator may see a shrunk frame; the shard still speaks native pixels."""
    small = MODALITY.build({"fps": 30.0, "max_side": 288}).compute(CLIPS / "tfjs_pose_1.mp4", "tfjs_pose_1")
    both = small.valid & tfjs_sequence.valid
    a = small.features.reshape(-1, 16, 3)[both][:, :, :2]
    b = tfjs_sequence.features.reshape(-1, 16, 3)[both][:, :, :2]
    assert both.sum() > 100
    assert np.median(np.abs(a - b)) < 6.0  # pixels of the 576 frame, not of the 288 one


def test_cli_extracts_kept_clips_and_records_failures(tmp_path, capsys):
    """``vdv extract pose``: kept clips only, a missing file recorded as a rejection, re-runs skip."""
    from cli import main
    from pipeline.core import tables

    work = tmp_path / "work"
    from pipeline.core.provenance import sha256_file

    # the kept clip's id is its file's sha256, as ingest records it (extraction confirms the file)
    good, missing, dropped = sha256_file(CLIPS / "tfjs_pose_1.mp4"), "b" * 64, "c" * 64
    clips = [
        {"clip_id": good, "video_id": "1", "path": str(CLIPS / "tfjs_pose_1.mp4")},
        {"clip_id": missing, "video_id": "2", "path": str(tmp_path / "gone.mp4")},
        {"clip_id": dropped, "video_id": "3", "path": str(CLIPS / "stgcn_ta_chi.mp4")},
    ]
    tables.replace_table(clips, tables.CLIPS, work)
    screening = [
        {
            "clip_id": cid,
            "kept": kept,
            "automatic_kept": kept,
            "reasons": [] if kept else ["no_dancer"],
            "rules_evaluated": [],
        }
        for cid, kept in ((good, True), (missing, True), (dropped, False))
    ]
    tables.replace_table(screening, tables.SCREENING, work)
    config = tmp_path / "config.toml"
    config.write_text("[pose]\nfps = 5.0\n")
    argv = ["extract", "pose", "--work", str(work), "--config", str(config), "--no-progress"]

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 computed, 0 skipped (already current), 1 failed" in out
    shards = tables.table_files(work, "features/pose")
    assert len(shards) == 1 and shards[0].name.startswith(f"pose.{good[:16]}.")
    row = read_features(shards[0], "pose").to_pylist()[0]
    assert row["fps"] == 5.0 and len(row["timestamps"]) == 20
    rejections = tables.read_file(
        work / "rejections" / "rejections.extract-pose.parquet", tables.REJECTIONS
    ).to_pylist()
    assert [(r["stage"], r["clip_id"], r["reason"]) for r in rejections] == [("extract:pose", missing, "no_clip")]

    assert main(argv) == 0
    assert "0 computed, 1 skipped (already current), 1 failed" in capsys.readouterr().out
    assert len(tables.read_table(work, tables.REJECTIONS, "rejections")) == 1  # merged, not duplicated


def _set_display_matrix(path: Path, a: int, b: int, c: int, d: int) -> None:
    """Write a rotation into the video track's ``tkhd`` matrix, as phones do for portrait video."""
    import struct

    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    offset = at + (44 if data[at + 4] == 0 else 56)  # the matrix field of a version 0 / 1 box
    data[offset : offset + 36] = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))


def test_rotated_clip_gives_upright_pixels(tmp_path):
    """A clip stored sideways with a 90 degree display matrix gives the skeleton of the upright clip."""
    from pipeline.core.decode import DecodeParams, iter_samples

    upright = [s.image[:, 64:512] for s in iter_samples(CLIPS / "tfjs_pose_1.mp4", DecodeParams(fps=10, end_s=1.0))]
    plain, rotated = tmp_path / "plain.mp4", tmp_path / "rotated.mp4"
    write_clip(plain, upright)
    write_clip(rotated, [np.ascontiguousarray(np.rot90(image, 1)) for image in upright])  # stored turned left
    one = 1 << 16
    _set_display_matrix(rotated, 0, one, -one, 0)  # play it turned 90 degrees clockwise
    extractor = MODALITY.build({"fps": 10.0})
    a = extractor.compute(plain, "plain")
    b = extractor.compute(rotated, "rotated")
    assert (a.frame_width, a.frame_height) == (b.frame_width, b.frame_height) == (448, 576)
    assert a.valid.all() and b.valid.all()
    xy_a = a.features.reshape(-1, 16, 3)[:, :, :2]
    xy_b = b.features.reshape(-1, 16, 3)[:, :, :2]
    assert np.median(np.abs(xy_a - xy_b)) < 4.0


def test_silencing_native_stderr_restores_it_when_blocks_overlap_across_threads(tmp_path):
    """Extraction threads start BlazePose graphs concurrently: overlapping quiet blocks must
    leave file descriptor 2 pointing where it did before, not at /dev/null."""
    import os
    import threading

    from pipeline.blazepose.backends import _native_stderr_silenced

    before = os.fstat(2)
    inside, release = threading.Barrier(3), threading.Event()

    def quiet():
        with _native_stderr_silenced():
            inside.wait(timeout=10)
            release.wait(timeout=10)

    threads = [threading.Thread(target=quiet) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait(timeout=10)  # both threads are inside their blocks at once
    assert os.fstat(2).st_rdev == os.stat(os.devnull).st_rdev
    release.set()
    for t in threads:
        t.join(timeout=10)
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


def test_landmarks_do_not_depend_on_the_segmentation():
    """Scenic's person mask shares pose's tracking BlazePose with the segmentation on; that must
    leave pose's landmarks bit for bit as they are with it off (so a pose shard never depends on
    whether scenic shared its pass)."""
    from pipeline.blazepose.backends import BlazePose
    from pipeline.blazepose.settings import TrackOptions
    from pipeline.core.decode import DecodeParams, iter_samples

    frames = [s.image for s in iter_samples(CLIPS / "hybrik_taiji.mp4", DecodeParams(fps=25, max_side=640, end_s=3.0))]
    runs = {}
    for segmentation in (False, True):
        with BlazePose(TrackOptions(segmentation=segmentation)) as pose:
            runs[segmentation] = [pose.process(f) for f in frames]
    assert all(r.segmentation is None for r in runs[False])
    masks = [r.segmentation for r in runs[True]]
    assert all(m is not None and m.shape == frames[0].shape[:2] for m in masks)
    found = 0
    for off, on in zip(runs[False], runs[True], strict=True):
        assert (off.landmarks is None) == (on.landmarks is None)
        if off.landmarks is not None:
            np.testing.assert_array_equal(off.landmarks, on.landmarks)
            found += 1
    assert found >= 0.9 * len(frames)  # the dancer is tracked: the comparison is not vacuous

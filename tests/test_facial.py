"""Facial features (pipeline.modalities.facial): MTCNN on real clips, face following, crops, shards.

The MTCNN weights ship with facenet-pytorch, so detection is checked on real footage. The
embedding network's weights cannot be fetched in the test environment: it is seeded and
untrained, and the tests check shapes, validity, provenance and determinism.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.core import tables
from pipeline.core.config import ConfigError
from pipeline.modalities import facial
from pipeline.modalities.features import read_features

CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clips"


@pytest.fixture(scope="module")
def extractor():
    # the first 4 s at 3 fps: 12 samples per clip keeps detection quick on a small CPU
    return facial.MODALITY.build({"end_s": 4.0}, untrained=True, device="cpu")


# Faces on "most" frames: at least 90 % of the samples (measured: 12/12 on both excerpts, and
# 22/22 and 35/36 on the whole clips). No face at all on the clips without a person: the car
# park has nothing face-like, and the kitten's face-like patterns score at most 0.956 (measured
# on every sample of the whole clip), below the 0.98 a face needs (FacialConfig.min_confidence).
@pytest.mark.parametrize(
    "clip, least, most",
    [
        ("liveportrait_d18_face", 0.9, 1.0),
        ("musepose_dance", 0.9, 1.0),
        ("intel_car-detection", 0.0, 0.0),
        ("trackanything_test-sample2_cat", 0.0, 0.0),
    ],
)
def test_faces_found_where_there_are_faces(extractor, clip, least, most):
    seq = extractor.compute(CLIPS / f"{clip}.mp4", clip)
    assert len(seq.valid) == 12
    np.testing.assert_allclose(seq.timestamps, np.arange(12) / 3, atol=1e-9)
    assert least <= seq.valid.mean() <= most
    assert (seq.features[~seq.valid] == 0).all()
    # InceptionResnetV1 ends with an L2 normalisation, trained or not
    # unit length (the embedder normalises), to bfloat16 resolution when the CPU runs it in bf16
    np.testing.assert_allclose(np.linalg.norm(seq.features[seq.valid], axis=1), 1.0, atol=2e-3)


def test_shard_provenance_and_skip(tmp_path):
    clip_id = "e" * 64
    path = CLIPS / "liveportrait_d18_face.mp4"
    extractor = facial.MODALITY.build({"end_s": 1.5}, untrained=True, device="cpu")
    shard, computed = extractor.extract_to(tmp_path, path, clip_id)
    assert computed and shard.parent == tmp_path / "features" / "facial"
    row = read_features(shard, "facial").to_pylist()[0]
    assert len(row["features"]) == 5 and len(row["features"][0]) == 512
    assert row["valid"] == [True] * 5
    assert row["untrained"] is True and row["weights_sha256"] == "untrained"
    assert row["extractor"] == "mtcnn-inception-resnet-v1-vggface2"
    assert row["precision"] == "float32" and row["fps"] == 3.0  # the embedder stays fp32
    assert (row["frame_width"], row["frame_height"]) == (480, 480)
    params = json.loads(row["params"])
    assert params["fps"] == 3.0 and params["end_s"] == 1.5
    assert params["detector"]["min_confidence"] == 0.98
    assert set(params["detector"]["weights_sha256"]) == {"pnet", "rnet", "onet"}
    assert params["crop"]["size"] == 160 and params["normalise"]["mean"] == [127.5] * 3
    assert extractor.extract_to(tmp_path, path, clip_id) == (shard, False)


def test_deterministic_and_seeded():
    path = CLIPS / "musepose_dance.mp4"
    short = facial.MODALITY.build({"end_s": 1.0}, untrained=True, device="cpu")
    a, b = short.compute(path, "f" * 64), short.compute(path, "f" * 64)
    np.testing.assert_array_equal(a.features, b.features)
    other = facial.MODALITY.build({"end_s": 1.0, "seed": 3}, untrained=True, device="cpu")
    c = other.compute(path, "f" * 64)
    np.testing.assert_array_equal(a.valid, c.valid)  # detection does not depend on the seed
    assert not np.array_equal(a.features, c.features)
    assert other.identity("f" * 64) != short.identity("f" * 64)


def test_resnet50_option_gives_2048_d_shards(tmp_path):
    ex = facial.MODALITY.build({"end_s": 0.7, "model": "resnet50_vggface2"}, untrained=True, device="cpu")
    assert ex.dim == 2048 and ex.spec() == tables.feature_spec("facial", 2048)
    shard, _ = ex.extract_to(tmp_path, CLIPS / "liveportrait_d18_face.mp4", "9" * 64)
    row = read_features(shard, "facial", 2048).to_pylist()[0]
    assert row["valid"] == [True, True, True] and len(row["features"][0]) == 2048
    params = json.loads(row["params"])
    assert params["crop"]["protocol"] == "vggface2" and params["normalise"]["channels"] == "BGR"


def _box(cx, cy, side):
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def test_follow_face_picks_then_follows_the_main_face():
    config = facial.FacialConfig()
    boxes = np.array([_box(100, 100, 40), _box(300, 120, 80), _box(500, 100, 90)])
    scores = np.array([0.999, 0.999, 0.95])  # the largest is below min_confidence
    # first pick: largest area x score among confident faces
    assert facial.follow_face(boxes, scores, None, config) == 1
    # a bigger face appears elsewhere: the followed face (near the previous one) is kept
    moved = np.array([_box(700, 300, 120), _box(330, 130, 80)])
    assert facial.follow_face(moved, np.array([0.999, 0.99]), boxes[1], config) == 1
    # the followed face is gone: fall back to the largest confident face
    assert facial.follow_face(moved[:1], np.array([0.999]), boxes[1], config) == 0
    # nothing confident, or nothing at all
    assert facial.follow_face(boxes, np.array([0.5, 0.9, 0.97]), None, config) is None
    assert facial.follow_face(None, [None], boxes[1], config) is None


def test_crops_keep_the_published_geometry():
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    image[50:150, 100:200] = 255  # the "face"
    box = np.array([100.0, 50.0, 200.0, 150.0])
    crop = facial.crop_facenet(image, box)
    assert crop.shape == (160, 160, 3)
    # facenet margin of 20 px at 160: 10 px of context on each side
    assert crop[80, :8].max() == 0 and crop[80, 12:148].min() == 255
    near_edge = facial.crop_vggface2(image, np.array([0.0, 0.0, 120.0, 100.0]))
    assert near_edge.shape == (224, 224, 3)


def test_configuration_is_checked():
    with pytest.raises(ConfigError):
        facial.MODALITY.build({"min_confidance": 0.5}, untrained=True, device="cpu")
    with pytest.raises(ValueError):
        facial.FacialConfig(model="vgg16")
    with pytest.raises(ValueError):
        facial.FacialConfig(min_confidence=1.5)

"""Holistic (TSN ResNet-50) features on a short real excerpt, with seeded untrained weights and
with weights imported from an mmaction2-format checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.decode import grid_times
from pipeline.core.errors import ClipError, Reason, WeightsError
from pipeline.core.runtime import resolve_precision
from pipeline.modalities import holistic
from pipeline.modalities.features import read_features
from pipeline.weights import fetch, registry

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLIP = DATA / "clips" / "stgcn_ta_chi.mp4"  # 340x256, 29.97 fps, 10 s
CLIP_ID = "0a65dcd054bd8539aa6af91f8cfdf00c43a33cdf8eae74210b186da1cfd243c7"  # its sha256
SECONDS = 1.2


@pytest.fixture(scope="module")
def untrained():
    return holistic.MODALITY.build({"end_s": SECONDS, "batch_size": 16}, untrained=True, device="cpu")


@pytest.fixture(scope="module")
def sequence(untrained):
    return untrained.compute(CLIP, CLIP_ID)


def test_shape_grid_and_values(sequence):
    expected = grid_times(SECONDS, 25.0)  # 30 samples: 0, 0.04, ... 1.16
    assert sequence.features.shape == (len(expected), 2048) == (30, 2048)
    np.testing.assert_allclose(sequence.timestamps, expected, atol=1e-9)
    assert sequence.valid.all() and sequence.fps == 25.0
    assert abs(sequence.source_fps - 29.97) < 0.01
    assert (sequence.frame_width, sequence.frame_height) == (340, 256)
    assert np.isfinite(sequence.features).all()
    # after ReLU and average pooling every component is non-negative, and frames differ
    assert (sequence.features >= 0).all() and sequence.features.std(axis=0).mean() > 0


def test_deterministic_and_batch_independent(sequence):
    again = holistic.MODALITY.build({"end_s": SECONDS, "batch_size": 7}, untrained=True, device="cpu")
    other = again.compute(CLIP, CLIP_ID)
    np.testing.assert_allclose(other.features, sequence.features, rtol=1e-4, atol=1e-4)
    assert again.identity(CLIP_ID) != holistic.MODALITY.build({"end_s": 1.0}, untrained=True, device="cpu").identity(
        CLIP_ID
    )


def test_shard_provenance_says_untrained(untrained, sequence, tmp_path, monkeypatch):
    monkeypatch.setattr(untrained, "compute", lambda path, clip_id: sequence)
    shard, computed = untrained.extract_to(tmp_path, CLIP, CLIP_ID)
    assert computed and shard.parent == tmp_path / "features" / "holistic"
    row = read_features(shard, "holistic").to_pylist()[0]
    assert row["untrained"] is True and row["weights_sha256"] == "untrained"
    assert (
        row["extractor"] == "tsn-r50-kinetics400"
        and row["precision"] == resolve_precision(None, "cpu")
        and row["device"] == "cpu"
    )
    assert row["extractor_version"] == untrained.version and len(untrained.version) == 16
    params = json.loads(row["params"])
    assert params["fps"] == 25.0 and params["short_side"] == 256 and params["crop"] == 224
    assert params["mean"] == [123.675, 116.28, 103.53] and params["std"] == [58.395, 57.12, 57.375]
    assert len(row["features"]) == 30 and len(row["features"][0]) == 2048
    np.testing.assert_allclose(np.asarray(row["features"], dtype=np.float32), sequence.features)
    # the current shard is skipped on a re-run
    assert untrained.extract_to(tmp_path, CLIP, CLIP_ID) == (shard, False)


def test_preprocessing_matches_tsn():
    pre = registry.get_spec("tsn_r50_kinetics400").preprocess
    image = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    image[..., :] = (124, 116, 104)
    x = pre.normalise(torch.from_numpy(image))
    assert x.shape == (1, 3, 2, 2)
    np.testing.assert_allclose(
        x[0, :, 0, 0].numpy(), [(124 - 123.675) / 58.395, (116 - 116.28) / 57.12, (104 - 103.53) / 57.375], atol=1e-6
    )
    frame = np.arange(256 * 340 * 3, dtype=np.int64).reshape(256, 340, 3)
    crop = holistic.centre_crop(frame, 224)
    assert crop.shape == (224, 224, 3) and (crop[0, 0] == frame[16, 58]).all()


def test_missing_weights_are_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="vdv weights fetch tsn_r50_kinetics400"):
        holistic.MODALITY.build({"weights_dir": str(tmp_path)}, device="cpu")


def test_imported_weights_are_used_and_recorded(tmp_path):
    from test_weights import _reference, write_published

    src = tmp_path / "tsn.pth"
    write_published("tsn_r50_kinetics400", src, _reference("tsn_r50_kinetics400"))
    lock = fetch.import_weights("tsn_r50_kinetics400", src, cache_dir=tmp_path, allow_other_source=True)
    config = {"weights_dir": str(tmp_path), "end_s": 0.2}
    trained = holistic.MODALITY.build(config, device="cpu")
    assert trained.weights_sha256 == lock["sha256"] and not trained.untrained
    assert "weights_seed" not in trained.params()
    seq = trained.compute(CLIP, CLIP_ID)
    assert seq.features.shape == (5, 2048)
    random = holistic.MODALITY.build(config, untrained=True, device="cpu").compute(CLIP, CLIP_ID)
    assert not np.allclose(seq.features, random.features)
    assert trained.identity(CLIP_ID) != holistic.MODALITY.build(config, untrained=True, device="cpu").identity(CLIP_ID)


def test_bad_input_is_a_clip_error(untrained, tmp_path):
    fake = tmp_path / "not_a_video.mp4"
    fake.write_bytes(b"this is not a video" * 100)
    with pytest.raises(ClipError) as err:
        untrained.compute(fake, "f" * 64)
    assert err.value.reason in (Reason.NOT_A_VIDEO, Reason.UNREADABLE)


def test_config_is_validated():
    from pipeline.core.config import ConfigError

    with pytest.raises(ConfigError, match="unknown keys"):
        holistic.MODALITY.build({"crop_size": 224}, untrained=True)
    with pytest.raises(ValueError, match="crop"):
        holistic.HolisticConfig(short_side=200, crop=224)

"""The extractor base shared by the four modalities: identity, one shard per clip, skipping."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import ClipError, Reason
from pipeline.modalities.features import FeatureExtractor, FeatureSequence, current_shards, read_features

CLIP = "ab" * 32


class Toy(FeatureExtractor):
    modality = "pose"
    name = "toy"
    dim = 48
    version = "v1"

    def __init__(self, scale: float = 1.0):
        self.scale = scale
        self.calls = 0

    def params(self) -> dict:
        return {"fps": 25.0, "scale": self.scale}

    def compute(self, path, clip_id) -> FeatureSequence:
        self.calls += 1
        t = 5
        features = np.arange(t * 48, dtype=np.float32).reshape(t, 48) * self.scale
        return FeatureSequence(np.arange(t) / 25, np.array([1, 1, 0, 1, 1], bool), features, 25.0, 30.0, 640, 360)


def test_shard_round_trip_and_skip_when_current(tmp_path):
    toy = Toy()
    shard, computed = toy.extract_to(tmp_path, "clip.mp4", CLIP)
    assert computed and toy.calls == 1
    assert shard.name == f"pose.{CLIP[:16]}.{toy.identity(CLIP)[:12]}.parquet"
    _, again = toy.extract_to(tmp_path, "clip.mp4", CLIP)
    assert not again and toy.calls == 1  # the current shard is reused, nothing recomputed
    row = read_features(shard, "pose").to_pylist()[0]
    assert row["valid"] == [True, True, False, True, True]
    assert np.array(row["features"]).shape == (5, 48) and row["features"][1][0] == 48.0
    assert row["weights_sha256"] == "untrained" and row["untrained"] is True
    assert row["identity"] == toy.identity(CLIP) and row["source_fps"] == 30.0


def test_a_parameter_change_replaces_the_shard(tmp_path):
    old, _ = Toy(1.0).extract_to(tmp_path, "clip.mp4", CLIP)
    new, computed = Toy(2.0).extract_to(tmp_path, "clip.mp4", CLIP)
    assert computed and new != old and not old.exists()
    assert list(current_shards(tmp_path, "pose").values()) == [new]


def test_non_finite_features_are_a_clip_error_and_write_nothing(tmp_path):
    toy = Toy(float("nan"))
    with pytest.raises(ClipError) as err:
        toy.extract_to(tmp_path, "clip.mp4", CLIP)
    assert err.value.reason is Reason.EXTRACT_FAILED and err.value.clip_id == CLIP
    assert current_shards(tmp_path, "pose") == {}
    assert not list(tmp_path.rglob("*.parquet")) and not list(tmp_path.rglob(".*.tmp"))

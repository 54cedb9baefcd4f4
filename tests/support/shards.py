"""Feature shards from arrays computed elsewhere, written through the pipeline's own writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core import checksums
from pipeline.modalities import registry as modalities
from pipeline.modalities.features import FeatureExtractor, FeatureSequence


class ArrayShardWriter(FeatureExtractor):
    """Writes arrays computed elsewhere (test fixtures) as feature shards through the pipeline's
    own writer, with provenance naming their origin."""

    def __init__(
        self, modality: str, dim: int, *, name: str, params: dict | None = None, weights_sha256: str = "untrained"
    ):
        self.modality = modality
        self.dim = dim
        self.name = name
        self.version = "arrays"
        self.weights_sha256 = weights_sha256
        self._params = dict(params or {})

    def params(self) -> dict:
        return self._params

    def write(self, work: str | Path, clip_id: str, seq: FeatureSequence) -> Path:
        return checksums.write_shard(work, self.shard_path(work, clip_id), self.table(clip_id, seq))


def write_stream(
    work: str | Path,
    stream: str,
    clip_id: str,
    features: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    fps: float = 25.0,
    name: str = "arrays",
    params: dict | None = None,
) -> Path:
    """Write ``features`` (T, D) of ``stream`` (pose, holistic, ...; an older name such as skeletal
    too) as the clip's shard."""
    features = np.asarray(features, dtype=np.float32)
    valid = np.ones(len(features), bool) if valid is None else np.asarray(valid, bool)
    seq = FeatureSequence(timestamps=np.arange(len(features)) / fps, valid=valid, features=features, fps=fps)
    return ArrayShardWriter(modalities.canonical(stream), features.shape[1], name=name, params=params).write(
        work, clip_id, seq
    )

"""A toy sixth modality: the mean brightness of each frame at 1 fps, one value a sample.

It is the whole of what a new modality takes besides one registry entry
(``pipeline.modalities.register(MODALITY)``, or a line in ``BUILT_IN``): a config dataclass, an
extractor with its per-clip consumer, a builder and the ``MODALITY`` record. ``tests/test_modalities.py``
registers it, runs it through extraction, a release and a training step, and removes it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline import decode
from pipeline.config import section_config
from pipeline.decode import DecodeParams, Sample, StreamInfo
from pipeline.errors import ClipError, Reason
from pipeline.features import FeatureExtractor, FeatureSequence, Modality, PassShared
from pipeline.provenance import code_version


@dataclass(frozen=True)
class BrightnessConfig:
    """Configuration section ``[brightness]``."""

    fps: float = 1.0  # one sample a second
    max_side: int = 64  # brightness needs no detail


class BrightnessExtractor(FeatureExtractor):
    name = "mean-brightness"
    weights_sha256 = "none"  # no network

    def __init__(self, config: BrightnessConfig, *, load: bool = True):
        self.declare(MODALITY)
        self.config, self.loaded = config, load
        self.version = code_version(sys.modules[__name__], decode)

    def decode_params(self) -> DecodeParams:
        return DecodeParams(fps=self.config.fps, max_side=self.config.max_side)

    def params(self) -> dict:
        return {**self.decode_params().as_dict(), "value": "mean of RGB over the frame, 0-255"}

    def consumer(self, clip_id: str, shared: PassShared | None = None) -> _BrightnessClip:
        self.require_loaded()
        return _BrightnessClip(self, clip_id)


class _BrightnessClip:
    def __init__(self, extractor: BrightnessExtractor, clip_id: str):
        self.extractor, self.clip_id = extractor, clip_id
        self.times: list[float] = []
        self.values: list[float] = []

    def push(self, sample: Sample) -> None:
        self.times.append(sample.t)
        self.values.append(float(sample.image.mean()))

    def finish(self, source: StreamInfo) -> FeatureSequence:
        if not self.times:
            raise ClipError(self.clip_id, Reason.ZERO_FRAMES, "the clip gave no grid sample")
        return FeatureSequence.on_grid(source, self.times, np.array(self.values)[:, None], self.extractor.config.fps)

    def close(self) -> None:
        pass


def build_extractor(
    config: BrightnessConfig | Mapping[str, Any] | None = None,
    *,
    untrained: bool = False,
    device: str | None = None,
    precision: str | None = None,
    load: bool = True,
) -> BrightnessExtractor:
    return BrightnessExtractor(section_config(BrightnessConfig, config, "brightness"), load=load)


MODALITY = Modality(
    name="brightness",
    dim=1,
    config=BrightnessConfig,
    build=build_extractor,
    rate=lambda c: c.fps,
    span_s=8.0,
)

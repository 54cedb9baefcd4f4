"""A toy fifth modality: per sample, the frame's mean brightness, whether BlazePose found a person,
and a tiny network's answer on the frame.

It is the whole of what a new modality takes besides one registry entry
(``pipeline.modalities.registry.register(MODALITY)``, or a line in ``BUILT_IN``), with each thing a real
modality may need: a configuration section (``[brightness]``, its dataclass), a network of its
own in the weights registry (the record's ``weights``: run from seeded random weights here), the
placement's backend for its BlazePose (``placed``: it follows the build's, as scenic's mask does)
and the tracking BlazePose it shares with pose when both run on one grid (``shares``). No other
file is edited. ``tests/test_modalities.py`` registers it, runs it through ``vdv extract``, a
release and a training step, checks that it shares pose's BlazePose run, and removes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.blazepose import track as blazepose_track
from pipeline.blazepose.backends import NETWORKS, weights_sha256
from pipeline.blazepose.settings import BACKENDS, TrackOptions, track_settings
from pipeline.core import decode
from pipeline.core.decode import DecodeParams, PassShared, Sample, SharedRun, StreamInfo
from pipeline.core.errors import ClipError, Reason
from pipeline.core.placement import placed
from pipeline.modalities.features import FeatureSequence, Modality, NetworkExtractor, Placed
from pipeline.weights.preprocess import Preprocess
from pipeline.weights.registry import ModelSpec

NETWORK = "toy_rgb_mean"


def _build_network():
    """RGB mean of the image, then one linear unit: (N, 3, H, W) -> (N, 1)."""
    import torch

    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 1))


SPEC = ModelSpec(
    name=NETWORK,
    architecture="global average pool + linear (3 -> 1)",
    build=_build_network,
    feature_dim=1,
    source_file="none",
    url=None,
    source_sha256=None,
    license="none (a test's toy)",
    preprocess=Preprocess(input_size=64, resize_short=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), value_range=1.0),
    checkpoint_format="",  # no published weights: it runs untrained
)


@dataclass(frozen=True)
class BrightnessConfig:
    """Configuration section ``[brightness]``."""

    fps: float = 1.0  # one sample a second
    max_side: int = 64  # brightness needs no detail
    backend: str = "auto"  # its BlazePose's: auto follows the build's ([pose] backend)
    weights_dir: str | None = None
    seed: int = 0

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"[brightness] backend must be one of {list(BACKENDS)}, got {self.backend!r}")


class BrightnessExtractor(NetworkExtractor):
    name = "mean-brightness"
    network = NETWORK
    code = (decode,)  # and this module, added by NetworkExtractor
    fixed_precision = "float32"  # the toy network runs in float32 whatever the build's precision
    config: BrightnessConfig

    def __init__(self, config: BrightnessConfig, **kwargs):
        where = placed(kwargs.get("device"), kwargs.get("precision"), pose_backend=config.backend)
        # pose's default options: with pose's grid the two share one track
        self.track = track_settings(TrackOptions(), where, config.weights_dir)
        self.code = type(self).code + blazepose_track.backend_code(self.track.backend)
        super().__init__(MODALITY, config, **kwargs)
        self.landmark_sha256 = weights_sha256(self.track, load=self.loaded)[0]

    def decode_params(self) -> DecodeParams:
        return DecodeParams(fps=self.config.fps, max_side=self.config.max_side)

    def params(self) -> dict:
        return {
            **self.decode_params().as_dict(),
            "values": ["mean of RGB over the frame, 0-255", "BlazePose found a person (0 or 1)", NETWORK],
            "blazepose": {"backend": self.track.backend, "landmark_sha256": self.landmark_sha256},
            "weights_seed": self.config.seed,
        }

    def shared_run(self) -> SharedRun:
        return blazepose_track.shared_run(self.decode_params(), self.track)

    def consumer(self, clip_id: str, shared: PassShared | None = None) -> _BrightnessClip:
        self.require_loaded()
        return _BrightnessClip(self, clip_id, shared)


class _BrightnessClip:
    def __init__(self, extractor: BrightnessExtractor, clip_id: str, shared: PassShared | None):
        self.extractor, self.clip_id = extractor, clip_id
        self.track = blazepose_track.pose_track(shared, extractor.shared_run(), segmentation=False)
        self.times: list[float] = []
        self.values: list[list[float]] = []

    def push(self, sample: Sample) -> None:
        import torch

        found = self.track.process(sample.image, sample.index).landmarks is not None
        spec = self.extractor.weights_spec.preprocess
        with torch.no_grad():
            net = self.extractor.model(spec.normalise(torch.from_numpy(sample.image[None])))
        self.times.append(sample.t)
        self.values.append([float(sample.image.mean()), float(found), float(net[0, 0])])

    def finish(self, source: StreamInfo) -> FeatureSequence:
        if not self.times:
            raise ClipError(self.clip_id, Reason.ZERO_FRAMES, "the clip gave no grid sample")
        return FeatureSequence.on_grid(source, self.times, np.array(self.values), self.extractor.config.fps)

    def close(self) -> None:
        if self.track is not None:
            self.track.leave()
            self.track = None


MODALITY = Modality(
    name="brightness",
    dim=3,
    config=BrightnessConfig,
    extractor=BrightnessExtractor,
    rate=lambda c: c.fps,
    span_s=8.0,
    networks=(NETWORK, *NETWORKS),  # its own, and BlazePose's on the torch backend
    weights=(SPEC,),
    placed=(Placed("backend", "pose_backend", decides=False),),
    shares=(blazepose_track.KIND,),
)

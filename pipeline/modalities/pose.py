"""2D pose skeletons on the 16 MPII joints (SPEC section 4, skeletal modality).

The estimator is BlazePose (:mod:`pipeline.blazepose`: its backends in
:mod:`pipeline.blazepose.backends`, the one record of a track's settings in
:mod:`pipeline.blazepose.settings`, the track pose shares with scenic's person mask in
:mod:`pipeline.blazepose.track`). It returns the 33 BlazePose landmarks of the most prominent
person per frame, with BlazePose's landmark ``visibility`` as confidence;
:func:`pipeline.modalities.skeleton.blazepose_to_mpii` turns those into the 16 MPII joints. The paper used
AlphaPose and the design names mmpose's inferencer; mmpose (and its mmcv build) cannot be
installed in this environment, so no adapter for it exists: a backend returning the same
``(33, 3)`` landmarks, or MPII joints directly, can be added beside BlazePose's two.
``[pose] backend`` (``auto`` | ``torch`` | ``mediapipe``) is resolved once per build by its
placement (:mod:`pipeline.core.placement`) and recorded in every pose and scenic shard's identity.

The 33 -> 16 mapping (which landmarks each MPII joint copies or is derived from, and the
confidence a derived joint gets) is documented and defined in :mod:`pipeline.modalities.skeleton`.

Feature rows
------------
One row per clip (``tables.feature_spec("pose")``): a clip's skeleton sequence is what the
skeleton stream reads as one ``(T, 16, 3)`` tensor, and a per-clip shard is written atomically and
re-extracted on its own when the code or parameters change. Samples lie on the 25 fps grid of
:mod:`pipeline.core.decode`; each sample is 16 x (x, y, confidence), joint-major (48 values), in
pixels of the upright frame at its native size (``frame_width`` x ``frame_height``) although
the estimator sees a frame shrunk to ``max_side``; ``valid[t]`` is False where no person was
found, and the features are zero there.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import numpy as np

from pipeline.blazepose import track as blazepose_track
from pipeline.blazepose.backends import NETWORKS, BlazePose, TorchBlazePose, weights_sha256
from pipeline.blazepose.settings import BACKENDS, Batching, TrackOptions, track_settings
from pipeline.core import decode
from pipeline.core.decode import DecodeParams, PassShared, Sample, SharedRun, StreamInfo, check_grid
from pipeline.core.placement import placed
from pipeline.core.provenance import code_version
from pipeline.modalities import skeleton
from pipeline.modalities.features import FeatureExtractor, FeatureSequence, Modality, Placed
from pipeline.modalities.skeleton import blazepose_to_mpii

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoseConfig:
    """Configuration section ``[pose]``."""

    fps: float = 25.0  # time grid of the skeletal modality (SPEC section 4)
    max_side: int | None = 640  # the estimator sees frames shrunk to this longer side (it works at 256 px inside)
    model_complexity: int = 1  # BlazePose full; 0 lite and 2 heavy are not in the wheel
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    smooth_landmarks: bool = True  # mediapipe's temporal landmark filter in tracking mode
    # auto | torch | mediapipe (module docstring); also the people counter's and scenic's mask's
    backend: str = "auto"
    # torch backend: frames of different clips per forward, and how long a step waits for a
    # clip busy with its other modalities; speed and memory only, never the features
    max_batch: int = 64
    max_wait_ms: float = 5.0
    weights_dir: str | None = None  # torch backend's weights cache; None: $VDV_WEIGHTS_DIR or ~/.cache/vdv/weights

    def __post_init__(self):
        check_grid("pose", fps=self.fps, max_side=self.max_side)
        if self.backend not in BACKENDS:
            raise ValueError(f"[pose] backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.max_batch < 1 or self.max_wait_ms < 0:
            raise ValueError(
                f"[pose] needs max_batch >= 1 and max_wait_ms >= 0, got {self.max_batch}, {self.max_wait_ms}"
            )

    def batching(self) -> Batching:
        return Batching(self.max_batch, self.max_wait_ms)

    def track_options(self) -> TrackOptions:
        return TrackOptions(self.min_detection_confidence, self.min_tracking_confidence, self.smooth_landmarks)


class PoseExtractor(FeatureExtractor):
    """The pose extractor of a ``[pose]`` section. BlazePose's weights ship inside the mediapipe
    wheel, so there is no untrained variant: ``untrained`` is accepted for a uniform CLI and the real
    model is used. ``device`` and ``precision`` are the build's: they resolve ``auto`` and place the
    torch backend (:func:`pipeline.blazepose.settings.track_settings`); mediapipe's runs on the CPU
    in float32. ``load=False`` describes it without loading the torch backend's networks."""

    def __init__(
        self,
        config: PoseConfig = PoseConfig(),
        *,
        untrained: bool = False,
        device: str | None = None,
        precision: str | None = None,
        load: bool = True,
    ):
        if config.model_complexity != 1:
            raise ValueError("only model_complexity=1 (BlazePose full) ships in the mediapipe wheel")
        if untrained and load:
            log.warning("pose: BlazePose weights ship with mediapipe; extracting with the real model")
        self.declare(MODALITY)
        self.config, self.loaded = config, load
        placement = placed(device, precision, pose_backend=config.backend)
        self.track = track_settings(config.track_options(), placement, config.weights_dir)
        self.backend, self.device, self.precision = self.track.backend, self.track.device, self.track.precision
        if self.backend == "mediapipe" and device not in (None, "cpu"):
            # mediapipe's BlazePose runs on the CPU in float32 whatever the build's device and precision
            log.warning("mediapipe BlazePose runs on the CPU; ignoring device %r", device)
        self.name = TorchBlazePose.name if self.backend == "torch" else BlazePose.name
        self.version = code_version(
            sys.modules[__name__], skeleton, decode, *blazepose_track.backend_code(self.backend)
        )
        self.weights_sha256, self.detector_sha256 = weights_sha256(self.track, load=load)

    def decode_params(self) -> DecodeParams:
        return DecodeParams(fps=self.config.fps, max_side=self.config.max_side)

    def params(self) -> dict:
        c = self.config
        return {
            **self.decode_params().as_dict(),
            "backend": self.backend,
            "detector_sha256": self.detector_sha256,
            "model_complexity": c.model_complexity,
            "min_detection_confidence": c.min_detection_confidence,
            "min_tracking_confidence": c.min_tracking_confidence,
            "smooth_landmarks": c.smooth_landmarks,
            "tracking": True,
            "confidence": "visibility",
            "coordinates": "pixels of the native upright frame",
        }

    def shared_run(self) -> SharedRun:
        """The tracking BlazePose on this grid (what a shared track is keyed by)."""
        return blazepose_track.shared_run(self.decode_params(), self.track)

    def consumer(self, clip_id: str, shared: PassShared | None = None) -> _PoseClip:
        self.require_loaded()
        return _PoseClip(self, shared)


class _PoseClip:
    """One clip: a tracking BlazePose (shared with scenic's person mask when both run on this
    grid in one pass), joints kept in the estimator's pixels until the native size is known."""

    def __init__(self, extractor: PoseExtractor, shared: PassShared | None = None):
        self.config = extractor.config
        self.track = blazepose_track.pose_track(
            shared, extractor.shared_run(), segmentation=False, batching=extractor.config.batching()
        )
        self.times: list[float] = []
        self.joints: list[np.ndarray | None] = []  # (16, 3) in pixels of the estimator's frame
        self.size: tuple[int, int] | None = None  # (width, height) the estimator saw

    def push(self, sample: Sample) -> None:
        h, w = sample.image.shape[:2]
        self.size = (w, h)
        lm = self.track.process(sample.image, sample.index).landmarks
        self.times.append(sample.t)
        self.joints.append(None if lm is None else blazepose_to_mpii(lm))

    def finish(self, source: StreamInfo) -> FeatureSequence:
        feats = np.zeros((len(self.times), 48), dtype=np.float32)
        valid = np.array([j is not None for j in self.joints], dtype=bool)
        for t, joints in enumerate(self.joints):
            if joints is None:
                continue
            joints = joints.copy()
            # back to native pixels: the estimator saw a shrunk frame
            joints[:, 0] *= source.width / self.size[0]
            joints[:, 1] *= source.height / self.size[1]
            feats[t] = joints.astype(np.float32).reshape(-1)
        return FeatureSequence.on_grid(source, self.times, feats, self.config.fps, valid=valid)

    def close(self) -> None:
        if self.track is not None:
            self.track.leave()
            self.track = None


MODALITY = Modality(
    name="pose",
    dim=48,  # 16 MPII joints x (x, y, confidence), joint-major (pipeline.modalities.skeleton)
    config=PoseConfig,
    extractor=PoseExtractor,
    rate=lambda c: c.fps,
    span_s=10.24,  # 256 samples at 25 fps, the middle of VDV's usual 5-15 s
    networks=NETWORKS,  # the torch backend's
    stream="skeleton",
    aliases=("skeletal",),  # the models' name for it before one name served both layers
    placed=(Placed("backend", "pose_backend"),),  # [pose] backend decides the build's BlazePose backend
    shares=(blazepose_track.KIND,),  # one tracking BlazePose with scenic's person mask on a common grid
)

"""2D pose skeletons on the 16 MPII joints (SPEC section 4, skeletal modality).

Estimator interface
-------------------
A :class:`PoseEstimator` takes one upright RGB ``uint8`` image and returns the 33 BlazePose
landmarks of the most prominent person as a ``(33, 3)`` array of (x, y, confidence) in pixels of
that image, or ``None`` when it finds nobody. :func:`pipeline.skeleton.blazepose_to_mpii` turns
those into the 16 MPII joints. The default (and only) backend is mediapipe 0.10.21's legacy BlazePose
(``mp.solutions.pose``, ``model_complexity=1``: the "full" landmark model, which ships inside
the wheel, so extraction works offline). The paper used AlphaPose and the design names mmpose's
inferencer; mmpose (and its mmcv build) cannot be installed in this environment, so no adapter
for it exists: a backend returning the same ``(33, 3)`` landmarks, or MPII joints directly, can
be added beside :class:`BlazePose`.

Confidence is BlazePose's landmark ``visibility``. The legacy solution leaves ``presence`` at 0
for every landmark, so ``min(visibility, presence)`` would be 0 everywhere.

The 33 -> 16 mapping (which landmarks each MPII joint copies or is derived from, and the
confidence a derived joint gets) is documented and defined in :mod:`pipeline.skeleton`.

Feature rows
------------
One row per clip (``tables.feature_spec("pose")``): a clip's skeleton sequence is what the
skeleton stream reads as one ``(T, 16, 3)`` tensor, and a per-clip shard is written atomically and
re-extracted on its own when the code or parameters change. Samples lie on the 25 fps grid of
:mod:`pipeline.decode`; each sample is 16 x (x, y, confidence), joint-major (48 values), in
pixels of the upright frame at its native size (``frame_width`` x ``frame_height``) although
the estimator sees a frame shrunk to ``max_side``; ``valid[t]`` is False where no person was
found, and the features are zero there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from pipeline.config import section_config
from pipeline.decode import DecodeParams, Sample, StreamInfo, check_grid
from pipeline.features import FeatureExtractor, FeatureSequence, PassShared
from pipeline.provenance import code_version, sha256_file
from pipeline.skeleton import blazepose_to_mpii

log = logging.getLogger(__name__)

# the "full" landmark model that model_complexity=1 loads
_MODEL_FILE = ("modules", "pose_landmark", "pose_landmark_full.tflite")


class PoseEstimator(Protocol):
    """One image in, the most prominent person's 33 landmarks (pixels, confidence) out."""

    name: str

    def landmarks(self, image: np.ndarray) -> np.ndarray | None: ...

    def close(self) -> None: ...


@cache
def model_path() -> Path:
    import mediapipe as mp

    return Path(os.path.dirname(mp.__file__)).joinpath(*_MODEL_FILE)


@cache
def model_sha256() -> str:
    """sha256 of the BlazePose full landmark model inside the installed mediapipe wheel."""
    return sha256_file(model_path())


class Tracked(NamedTuple):
    """BlazePose's answer for one image: the 33 landmarks (x, y, visibility) in pixels of that
    image or None, and the segmentation (H, W) float32 probabilities when asked for, else None."""

    landmarks: np.ndarray | None
    segmentation: np.ndarray | None


class BlazePose:
    """mediapipe's legacy BlazePose (full model) behind the :class:`PoseEstimator` interface.

    ``static=True`` runs the person detector on every image (no tracking between calls), which
    the people counter needs because it masks people out and calls again on the same frame;
    ``static=False`` tracks the person across consecutive frames of one clip, which is faster
    and steadier for extraction. Use one instance per clip in tracking mode. ``segmentation``
    adds the person's segmentation (smoothed across frames in tracking mode); the landmarks do
    not depend on it (``tests/test_pose.py`` checks them bit for bit on a real clip).
    """

    name = "mediapipe-blazepose-full"

    def __init__(
        self,
        *,
        static: bool,
        model_complexity: int = 1,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        smooth_landmarks: bool = True,
        segmentation: bool = False,
    ):
        import mediapipe as mp

        self._pose = mp.solutions.pose.Pose(
            static_image_mode=static,
            model_complexity=model_complexity,
            smooth_landmarks=smooth_landmarks,
            enable_segmentation=segmentation,
            smooth_segmentation=segmentation,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )
        self._first_call = True

    def process(self, image: np.ndarray) -> Tracked:
        height, width = image.shape[:2]
        if self._first_call:
            # the graph's first run prints native start-up notices (XNNPACK, feedback tensors)
            # straight to file descriptor 2; they say nothing a user can act on
            with _native_stderr_silenced():
                result = self._pose.process(np.ascontiguousarray(image))
            self._first_call = False
        else:
            result = self._pose.process(np.ascontiguousarray(image))
        lm = None
        if result.pose_landmarks is not None:
            lm = np.array([(p.x * width, p.y * height, p.visibility) for p in result.pose_landmarks.landmark])
        seg = getattr(result, "segmentation_mask", None)
        return Tracked(lm, None if seg is None else np.array(seg, dtype=np.float32))

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        return self.process(image).landmarks

    def close(self) -> None:
        self._pose.close()

    def __enter__(self) -> BlazePose:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class TrackSettings:
    """What decides a tracking BlazePose's landmarks (the grid aside)."""

    model_complexity: int = 1
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    smooth_landmarks: bool = True


class PoseTrack:
    """One clip's tracking BlazePose, shared by the consumers of one grid in a decode pass.

    Pose (landmarks) and scenic (the person mask: segmentation) both track the dancer with the
    same model on the same 25 fps grid; in one pass they share one track, so the model runs once
    per grid sample instead of twice. Each consumer joins (:meth:`join`) before the first frame, saying
    whether it needs the segmentation; the graph is built at the first :meth:`process` with the
    segmentation on if anyone asked for it. That never changes the landmarks (see
    :class:`BlazePose`), so a pose shard is the same whether or not scenic shared its pass, and
    scenic's mask is the same whether or not pose did: neither identity depends on the other.
    ``process(image, key)`` returns the result of the last call again when ``key`` (the grid
    sample's index) repeats. The graph is closed when the last consumer leaves (:meth:`leave`).
    """

    def __init__(self, settings: TrackSettings = TrackSettings()):
        self.settings = settings
        self.segmentation = False
        self._pose: BlazePose | None = None
        self._users = 0
        self._last: tuple[object, Tracked] | None = None

    def join(self, *, segmentation: bool) -> PoseTrack:
        if self._pose is not None and segmentation and not self.segmentation:
            raise RuntimeError("a consumer asked for the segmentation after the track started")
        self.segmentation = self.segmentation or segmentation
        self._users += 1
        return self

    def process(self, image: np.ndarray, key: object = None) -> Tracked:
        if key is not None and self._last is not None and self._last[0] == key:
            return self._last[1]
        if self._pose is None:
            s = self.settings
            self._pose = BlazePose(
                static=False,
                model_complexity=s.model_complexity,
                min_detection_confidence=s.min_detection_confidence,
                min_tracking_confidence=s.min_tracking_confidence,
                smooth_landmarks=s.smooth_landmarks,
                segmentation=self.segmentation,
            )
        out = self._pose.process(image)
        self._last = (key, out)
        return out

    def leave(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._pose is not None:
            self._pose.close()
            self._pose = None


def pose_track(shared: PassShared | None, key: tuple[DecodeParams, TrackSettings], *, segmentation: bool) -> PoseTrack:
    """The pass's track for ``key`` (grid, settings; a new one when no pass is shared), joined."""
    settings = key[1]
    if shared is None:
        return PoseTrack(settings).join(segmentation=segmentation)
    track = shared.get(("blazepose", *key), lambda: PoseTrack(settings))
    return track.join(segmentation=segmentation)


_SILENCE_LOCK = threading.Lock()
_silenced = {"depth": 0, "saved": -1}


@contextlib.contextmanager
def _native_stderr_silenced():
    """Point file descriptor 2 at /dev/null for the block (native libraries bypass ``sys.stderr``).

    Reference-counted across threads: the first block to enter redirects, the last to leave
    restores, so overlapping blocks in extraction threads never restore a redirected descriptor.
    """
    with _SILENCE_LOCK:
        if _silenced["depth"] == 0:
            sys.stderr.flush()
            _silenced["saved"] = os.dup(2)
            with open(os.devnull, "wb") as devnull:
                os.dup2(devnull.fileno(), 2)
        _silenced["depth"] += 1
    try:
        yield
    finally:
        with _SILENCE_LOCK:
            _silenced["depth"] -= 1
            if _silenced["depth"] == 0:
                os.dup2(_silenced["saved"], 2)
                os.close(_silenced["saved"])


@dataclass(frozen=True)
class PoseConfig:
    """Configuration section ``[pose]``."""

    fps: float = 25.0  # time grid of the skeletal modality (SPEC section 4)
    max_side: int | None = 640  # the estimator sees frames shrunk to this longer side (it works at 256 px inside)
    model_complexity: int = 1  # BlazePose full; 0 lite and 2 heavy are not in the wheel
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    smooth_landmarks: bool = True  # mediapipe's temporal landmark filter in tracking mode

    def __post_init__(self):
        check_grid("pose", fps=self.fps, max_side=self.max_side)


class PoseExtractor(FeatureExtractor):
    modality = "pose"
    name = BlazePose.name
    dim = 48

    def __init__(self, config: PoseConfig = PoseConfig(), *, device: str | None = None):
        # BlazePose runs on the CPU in float32 whatever the build's device and precision
        if config.model_complexity != 1:
            raise ValueError("only model_complexity=1 (BlazePose full) ships in the mediapipe wheel")
        self.config = config
        self.version = code_version("pipeline.pose", "pipeline.skeleton", "pipeline.decode")
        self.weights_sha256 = model_sha256()
        if device not in (None, "cpu"):
            log.warning("mediapipe BlazePose runs on the CPU; ignoring device %r", device)
        self.device = "cpu"
        self.precision = "float32"

    def decode_params(self) -> DecodeParams:
        return DecodeParams(fps=self.config.fps, max_side=self.config.max_side)

    def params(self) -> dict:
        c = self.config
        return {
            **self.decode_params().as_dict(),
            "backend": "mediapipe.solutions.pose",
            "model_complexity": c.model_complexity,
            "min_detection_confidence": c.min_detection_confidence,
            "min_tracking_confidence": c.min_tracking_confidence,
            "smooth_landmarks": c.smooth_landmarks,
            "tracking": True,
            "confidence": "visibility",
            "coordinates": "pixels of the native upright frame",
        }

    def track_key(self) -> tuple[DecodeParams, TrackSettings]:
        """The grid and settings of this extractor's tracking BlazePose (what a shared track is keyed by)."""
        c = self.config
        settings = TrackSettings(
            c.model_complexity, c.min_detection_confidence, c.min_tracking_confidence, c.smooth_landmarks
        )
        return self.decode_params(), settings

    def consumer(self, clip_id: str, shared: PassShared | None = None) -> _PoseClip:
        return _PoseClip(self, shared)


class _PoseClip:
    """One clip: a tracking BlazePose (shared with scenic's person mask when both run on this
    grid in one pass), joints kept in the estimator's pixels until the native size is known."""

    def __init__(self, extractor: PoseExtractor, shared: PassShared | None = None):
        self.config = extractor.config
        self.track = pose_track(shared, extractor.track_key(), segmentation=False)
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


def build_extractor(
    config: PoseConfig | Mapping[str, Any] | None = None,
    *,
    untrained: bool = False,
    device: str | None = None,
    precision: str | None = None,
) -> PoseExtractor:
    """The pose extractor from the ``[pose]`` section (a mapping) or a :class:`PoseConfig`.

    BlazePose's weights ship inside the mediapipe wheel, so there is no untrained variant:
    ``untrained`` is accepted for a uniform CLI and the real model is used; so is ``precision``
    (BlazePose always runs in float32).
    """
    config = section_config(PoseConfig, config, "pose")
    if untrained:
        log.warning("pose: BlazePose weights ship with mediapipe; extracting with the real model")
    return PoseExtractor(config, device=device)

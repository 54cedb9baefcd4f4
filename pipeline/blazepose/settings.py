"""The one record of a BlazePose track's settings, built in one place.

:class:`TrackOptions` is what decides the graph's output besides its frames (``mp.solutions.pose.Pose``'s
arguments: the two confidences, landmark smoothing, static mode, segmentation); :class:`TrackSettings`
adds where it runs (backend, device, precision, weights cache). :func:`track_settings` is the one place
that builds it, from the options and a build's :class:`~pipeline.core.placement.Placement`: the torch
backend runs on the placement's device in its BlazePose precision, mediapipe's on the CPU in float32
with the model inside its wheel. Pose's landmarks, scenic's person mask and the people counter all
build their settings here, so a track that two of them could share has one key.

:class:`Batching` says how the torch backend batches the clips in flight (speed only, never output).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.core.placement import POSE_BACKENDS, Placement

BACKENDS = POSE_BACKENDS  # auto | torch | mediapipe (pipeline.core.placement)


@dataclass(frozen=True)
class TrackOptions:
    """What decides a track's output besides its frames (``mp.solutions.pose.Pose``'s arguments).

    ``segmentation`` is off in the settings the consumers build: a shared track
    (:class:`pipeline.blazepose.track.PoseTrack`) turns it on when one of them asks, which never
    changes the landmarks."""

    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    smooth_landmarks: bool = True
    static: bool = False  # detector on every frame, no smoothing (the people counter)
    segmentation: bool = False


@dataclass(frozen=True)
class TrackSettings:
    """What decides a BlazePose's landmarks (the grid aside): its options, backend and placement."""

    options: TrackOptions = field(default_factory=TrackOptions)
    backend: str = "mediapipe"  # resolved: torch | mediapipe
    device: str = "cpu"  # torch backend: where it runs
    precision: str = "float32"  # torch backend: the placement's BlazePose precision
    weights_dir: str | None = None  # torch backend: the weights cache


@dataclass(frozen=True)
class Batching:
    """How the torch backend batches the clips in flight in a process (speed only, never output)."""

    max_batch: int = 64  # frames of different clips in one forward
    max_wait_ms: float = 5.0  # how long a step waits for a busy clip's frame


TRACKING = TrackOptions()  # mp.solutions.pose.Pose's defaults: tracking, no segmentation
BATCHING = Batching()


def track_settings(options: TrackOptions, placement: Placement, weights_dir: str | None = None) -> TrackSettings:
    """The settings of a BlazePose with ``options`` in a build of ``placement``: the torch backend on
    the placement's device in its BlazePose precision (float16 for a 16-bit build on CUDA, float32
    on the CPU), mediapipe's on the CPU in float32 (its model ships in the wheel: no weights cache)."""
    if placement.pose_backend == "torch":
        return TrackSettings(options, "torch", placement.device, placement.blazepose_precision, weights_dir)
    if placement.pose_backend != "mediapipe":
        raise ValueError(f"unknown BlazePose backend {placement.pose_backend!r}")
    return TrackSettings(options, "mediapipe")

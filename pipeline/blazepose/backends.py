"""The BlazePose estimator: one image in, the most prominent person's 33 landmarks out.

A :class:`PoseEstimator` takes one upright RGB ``uint8`` image and returns the 33 BlazePose
landmarks of the most prominent person as a ``(33, 3)`` array of (x, y, confidence) in pixels of
that image, or ``None`` when it finds nobody. The estimator is BlazePose (``model_complexity=1``:
the "full" landmark model, which ships inside the mediapipe wheel, so extraction works offline),
with two backends that run the same graph (``[pose] backend``, resolved by the build's
:class:`~pipeline.core.placement.Placement`):

- ``mediapipe``: mediapipe 0.10.21's legacy solution (``mp.solutions.pose``), one frame at a time
  on the CPU (:class:`BlazePose`);
- ``torch``: the same two networks and tracking graph in torch (:mod:`pipeline.blazepose.engine`),
  on the build's device, batched across the clips in flight in a process (:class:`TorchBlazePose`);
- ``auto`` (default): ``torch`` where the build's device is CUDA, ``mediapipe`` on the CPU, where
  mediapipe is faster (``bench/bench_pose.py``); the rule is :func:`pipeline.core.placement.backend_for`.

:func:`open_blazepose` is the one way to build one from :class:`~pipeline.blazepose.settings.TrackSettings`
(pose, scenic's person mask and the people counter). On the real clips the torch backend agrees
with mediapipe's to PCK@0.05 of torso size 0.99 in float32 (``tests/test_blazepose.py``).

Confidence is BlazePose's landmark ``visibility``. The legacy solution leaves ``presence`` at 0
for every landmark, so ``min(visibility, presence)`` would be 0 everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from functools import cache
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from pipeline.blazepose.settings import BATCHING, TRACKING, Batching, TrackOptions, TrackSettings
from pipeline.core.provenance import sha256_file

log = logging.getLogger(__name__)

LANDMARK_NETWORK = "blazepose_landmark_full"  # the "full" landmark model that model_complexity=1 loads
DETECTOR_NETWORK = "blazepose_detector"
NETWORKS = (DETECTOR_NETWORK, LANDMARK_NETWORK)  # names in pipeline.weights.registry (the torch backend's)


class PoseEstimator(Protocol):
    """One image in, the most prominent person's 33 landmarks (pixels, confidence) out."""

    name: str

    def landmarks(self, image: np.ndarray) -> np.ndarray | None: ...

    def close(self) -> None: ...


@cache
def model_path() -> Path:
    """The BlazePose full landmark model inside the installed mediapipe wheel: the weights
    registry's bundled source of ``blazepose_landmark_full`` (located there only)."""
    from pipeline.weights.registry import get_spec

    return get_spec(LANDMARK_NETWORK).bundled()


@cache
def model_sha256() -> str:
    """sha256 of the BlazePose full landmark model inside the installed mediapipe wheel."""
    return sha256_file(model_path())


class Tracked(NamedTuple):
    """BlazePose's answer for one image: the 33 landmarks (x, y, visibility) in pixels of that
    image or None, and the segmentation float32 probabilities when asked for, else None: (H, W)
    of the image, or the ``mask_size`` asked for where the backend warps it there directly."""

    landmarks: np.ndarray | None
    segmentation: np.ndarray | None


# mediapipe's Python API keeps a calculator's graph options only when their protobuf module is
# imported in Python; it never imports these two, so the pose graph runs their defaults (heatmap
# kernel 9, no mask blending; pipeline.blazepose.calculators, HEATMAP_KERNEL). Importing either
# changes mediapipe's output, and the torch backend follows the default.
_OPTIONS_MEDIAPIPE_DROPS = (
    "mediapipe.calculators.util.refine_landmarks_from_heatmap_calculator_pb2",
    "mediapipe.calculators.image.segmentation_smoothing_calculator_pb2",
)


class BlazePose:
    """mediapipe's legacy BlazePose (full model) behind the :class:`PoseEstimator` interface.

    ``options.static`` runs the person detector on every image (no tracking between calls), which
    the people counter needs because it masks people out and calls again on the same frame;
    otherwise it tracks the person across consecutive frames of one clip, which is faster
    and steadier for extraction. Use one instance per clip in tracking mode. ``options.segmentation``
    adds the person's segmentation (smoothed across frames in tracking mode); the landmarks do
    not depend on it (``tests/test_pose.py`` checks them bit for bit on a real clip).
    """

    name = "mediapipe-blazepose-full"

    def __init__(self, options: TrackOptions = TRACKING):
        import mediapipe as mp

        loaded = [m.rsplit(".", 1)[1] for m in _OPTIONS_MEDIAPIPE_DROPS if m in sys.modules]
        if loaded:
            log.warning(
                "%s is imported in this process, so mediapipe's BlazePose now runs those graph options "
                "(heatmap kernel 7, mask blending) and its landmarks differ from the torch backend's and from "
                "shards made without it (by up to about 5 px)",
                " and ".join(loaded),
            )
        self._pose = mp.solutions.pose.Pose(
            static_image_mode=options.static,
            model_complexity=1,
            smooth_landmarks=options.smooth_landmarks,
            enable_segmentation=options.segmentation,
            smooth_segmentation=options.segmentation,
            min_detection_confidence=options.min_detection_confidence,
            min_tracking_confidence=options.min_tracking_confidence,
        )
        self._first_call = True

    def process(self, image: np.ndarray, mask_size: tuple[int, int] | None = None) -> Tracked:
        """``mask_size`` is ignored: mediapipe's mask has the image's size."""
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


def blazepose_sha256(cache_dir: str | None = None) -> tuple[str, str]:
    """(landmark, detector) weights sha256 the torch backend records, without loading its networks:
    the cache's, checked against their locks; a cache without them is filled from the mediapipe
    wheel first, as the first load does (:func:`pipeline.weights.fetch.ensure_bundled`)."""
    from pipeline.weights.cache import verify_weights
    from pipeline.weights.fetch import ensure_bundled

    found = []
    for name in (LANDMARK_NETWORK, DETECTOR_NETWORK):
        ensure_bundled(name, cache_dir=cache_dir)
        found.append(verify_weights(name, cache_dir=cache_dir))
    return found[0], found[1]


@cache
def shared_networks(device: str, precision: str, cache_dir: str | None = None):
    """The torch backend's two networks, loaded once per process, device and precision."""
    from pipeline.blazepose.engine import Networks

    return Networks(device, precision, cache_dir=cache_dir)


def weights_sha256(settings: TrackSettings, *, load: bool = True) -> tuple[str, str | None]:
    """(landmark, detector) sha256 of the networks a track of ``settings`` runs: the wheel's model
    for mediapipe (no detector recorded); for torch, the loaded networks' (``load``) or the cache's."""
    if settings.backend != "torch":
        return model_sha256(), None
    if load:
        nets = shared_networks(settings.device, settings.precision, settings.weights_dir)
        return nets.landmark_sha256, nets.detector_sha256
    return blazepose_sha256(settings.weights_dir)


class TorchBlazePose:
    """BlazePose in torch (:mod:`pipeline.blazepose.engine`) behind the :class:`BlazePose` interface.

    ``settings.options.static`` runs a private engine (the detector on every call), as the people
    counter needs. In tracking mode each instance is one clip's slot on the process's shared engine
    (:mod:`pipeline.core.batching`): clips tracked at once in this process share each
    forward, and a clip's landmarks do not depend on which others shared it.
    """

    name = "torch-blazepose-full"

    def __init__(self, settings: TrackSettings, batching: Batching = BATCHING):
        from pipeline.blazepose.engine import PoseEngine

        options = settings.options
        nets = shared_networks(settings.device, settings.precision, settings.weights_dir)
        self._engine: PoseEngine | None = None
        if options.static:
            # no state between calls: a private engine whose slots are only a batch's rows
            self._engine = engine = PoseEngine(nets, options, capacity=8)
            self._slots = [engine.open()]
            self._call = lambda item: engine.step(self._slots[:1], [item[0]], [item[1]])[0]
            self._close = lambda: None
        else:
            handle = _pose_server(nets, options, batching).open()
            self._call, self._close = handle, handle.close

    def process(self, image: np.ndarray, mask_size: tuple[int, int] | None = None) -> Tracked:
        result = self._call((image, mask_size))
        return Tracked(result.landmarks, result.segmentation)

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        return self.process(image).landmarks

    def landmarks_many(self, images: list[np.ndarray]) -> list[np.ndarray | None]:
        """Static mode: the landmarks of several independent images in one forward."""
        if self._engine is None:
            return [self.landmarks(image) for image in images]
        while len(self._slots) < len(images):
            self._slots.append(self._engine.open())
        results = self._engine.step(self._slots[: len(images)], images)
        return [r.landmarks for r in results]

    def close(self) -> None:
        self._close()

    def __enter__(self) -> TorchBlazePose:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pose_server(nets, options: TrackOptions, batching: Batching):
    """The process's batch server of tracking engines with ``options`` on ``nets`` (the process's
    networks for one device, precision and cache: :func:`shared_networks`)."""
    from pipeline.blazepose.engine import PoseEngine
    from pipeline.core.batching import BatchServer, shared_server

    def make():
        engine = PoseEngine(nets, options, capacity=batching.max_batch)
        return BatchServer(
            lambda slots, items: engine.step(slots, [i[0] for i in items], [i[1] for i in items]),
            engine.open,
            engine.close,
            max_batch=batching.max_batch,
            max_wait_s=batching.max_wait_ms / 1000.0,
            name="blazepose",
        )

    return shared_server(("blazepose", nets, options), make)


def open_blazepose(settings: TrackSettings, batching: Batching = BATCHING) -> BlazePose | TorchBlazePose:
    """The BlazePose of ``settings`` (its backend, options and placement): one construction path for
    every caller."""
    if settings.backend == "torch":
        return TorchBlazePose(settings, batching)
    if settings.backend != "mediapipe":
        raise ValueError(f"unknown BlazePose backend {settings.backend!r}")
    return BlazePose(settings.options)


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

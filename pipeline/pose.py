"""2D pose skeletons on the 16 MPII joints (SPEC section 4, skeletal modality).

Estimator interface
-------------------
A :class:`PoseEstimator` takes one upright RGB ``uint8`` image and returns the 33 BlazePose
landmarks of the most prominent person as a ``(33, 3)`` array of (x, y, confidence) in pixels of
that image, or ``None`` when it finds nobody. :func:`pipeline.skeleton.blazepose_to_mpii` turns
those into the 16 MPII joints. The estimator is BlazePose (``model_complexity=1``: the "full"
landmark model, which ships inside the mediapipe wheel, so extraction works offline), with two
backends that run the same graph (``[pose] backend``):

- ``mediapipe``: mediapipe 0.10.21's legacy solution (``mp.solutions.pose``), one frame at a time
  on the CPU (:class:`BlazePose`);
- ``torch``: the same two networks and tracking graph in torch (:mod:`pipeline.blazepose`), on the
  build's device, batched across the clips in flight in a process (:class:`TorchBlazePose`);
- ``auto`` (default): ``torch`` where the build's device is CUDA, ``mediapipe`` on the CPU, where
  mediapipe is faster (``bench/bench_pose.py``). Resolved once per build (:func:`resolve_backend`)
  and recorded in every pose and scenic shard's identity.

On the real clips the torch backend agrees with mediapipe's to PCK@0.05 of torso size 0.99 in
float32 (``tests/test_blazepose.py``). The paper used AlphaPose and the design names mmpose's
inferencer; mmpose (and its mmcv build) cannot be installed in this environment, so no adapter
for it exists: a backend returning the same ``(33, 3)`` landmarks, or MPII joints directly, can
be added beside these.

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
from types import ModuleType
from typing import Any, NamedTuple, Protocol

import numpy as np

from pipeline import decode, skeleton
from pipeline.config import section_config
from pipeline.decode import DecodeParams, Sample, StreamInfo, check_grid, target_size
from pipeline.features import FeatureExtractor, FeatureSequence, Modality, PassShared, SharedRun
from pipeline.provenance import code_version, sha256_file
from pipeline.skeleton import blazepose_to_mpii

log = logging.getLogger(__name__)

# the "full" landmark model that model_complexity=1 loads
_MODEL_FILE = ("modules", "pose_landmark", "pose_landmark_full.tflite")

BACKENDS = ("auto", "torch", "mediapipe")


def resolve_backend(backend: str, device: str | None) -> str:
    """``[pose] backend`` for a build on ``device``: the rule of
    :func:`pipeline.placement.pose_backend_for` (``auto``: torch on CUDA, else mediapipe)."""
    from pipeline.placement import pose_backend_for
    from pipeline.runtime import resolve_device

    if backend not in BACKENDS:
        raise ValueError(f"[pose] backend must be one of {list(BACKENDS)}, got {backend!r}")
    return backend if backend != "auto" else pose_backend_for(backend, resolve_device(device))


def blazepose_place(device: str | None, precision: str | None) -> tuple[str, str]:
    """Where and in what precision the torch BlazePose runs: :func:`pipeline.runtime.place`, then
    the rule of :func:`pipeline.placement.blazepose_precision_for` (float16 for a 16-bit build on
    CUDA, float32 on the CPU: PCK 0.94 in bf16 on the real clips, ``bench/bench_pose.py``)."""
    from pipeline.placement import blazepose_precision_for
    from pipeline.runtime import place

    device, precision = place(device, precision)
    return device, blazepose_precision_for(precision, device)


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

        loaded = [m.rsplit(".", 1)[1] for m in _OPTIONS_MEDIAPIPE_DROPS if m in sys.modules]
        if loaded:
            log.warning(
                "%s is imported in this process, so mediapipe's BlazePose now runs those graph options "
                "(heatmap kernel 7, mask blending) and its landmarks differ from the torch backend's and from "
                "shards made without it (by up to about 5 px)",
                " and ".join(loaded),
            )
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


@dataclass(frozen=True)
class TrackSettings:
    """What decides a tracking BlazePose's landmarks (the grid aside), the backend included."""

    model_complexity: int = 1
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    smooth_landmarks: bool = True
    backend: str = "mediapipe"  # resolved (resolve_backend)
    device: str = "cpu"  # torch backend: where it runs (blazepose_place)
    precision: str = "float32"
    weights_dir: str | None = None  # torch backend: the weights cache


@dataclass(frozen=True)
class Batching:
    """How the torch backend batches the clips in flight in a process (speed only, never output)."""

    max_batch: int = 64  # frames of different clips in one forward
    max_wait_ms: float = 5.0  # how long a step waits for a busy clip's frame


def blazepose_sha256(cache_dir: str | None = None) -> tuple[str, str]:
    """(landmark, detector) weights sha256 the torch backend records, without loading its networks:
    the cache's, checked against their locks; a cache without them is filled from the mediapipe
    wheel first, as the first load does (:func:`pipeline.weights.fetch.ensure_bundled`)."""
    from pipeline.weights.cache import verify_weights
    from pipeline.weights.fetch import ensure_bundled

    found = []
    for name in ("blazepose_landmark_full", "blazepose_detector"):
        ensure_bundled(name, cache_dir=cache_dir)
        found.append(verify_weights(name, cache_dir=cache_dir))
    return found[0], found[1]


@cache
def shared_networks(device: str, precision: str, cache_dir: str | None = None):
    """The torch backend's two networks, loaded once per process, device and precision."""
    from pipeline.blazepose.engine import Networks

    return Networks(device, precision, cache_dir=cache_dir)


class TorchBlazePose:
    """BlazePose in torch (:mod:`pipeline.blazepose`) behind the :class:`BlazePose` interface.

    ``static=True`` runs a private engine (the detector on every call), as the people counter
    needs. In tracking mode each instance is one clip's slot on the process's shared engine
    (:mod:`pipeline.batching`): clips tracked at once in this process share each
    forward, and a clip's landmarks do not depend on which others shared it.
    """

    name = "torch-blazepose-full"

    def __init__(
        self,
        *,
        static: bool,
        settings: TrackSettings = TrackSettings(backend="torch"),
        segmentation: bool = False,
        batching: Batching = Batching(),
    ):
        from pipeline.blazepose.engine import PoseEngine, TrackOptions

        options = TrackOptions(
            min_detection_confidence=settings.min_detection_confidence,
            min_tracking_confidence=settings.min_tracking_confidence,
            smooth_landmarks=settings.smooth_landmarks,
            static=static,
            segmentation=segmentation,
        )
        nets = shared_networks(settings.device, settings.precision, settings.weights_dir)
        self._engine: PoseEngine | None = None
        if static:
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


def _pose_server(nets, options, batching: Batching):
    """The process's batch server of tracking engines with ``options`` on ``nets`` (the process's
    networks for one device, precision and cache: :func:`shared_networks`)."""
    from pipeline.batching import BatchServer, shared_server
    from pipeline.blazepose.engine import PoseEngine

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


def open_blazepose(
    settings: TrackSettings, *, static: bool, segmentation: bool = False, batching: Batching = Batching()
) -> BlazePose | TorchBlazePose:
    """The BlazePose of ``settings.backend``: one construction path for every caller."""
    if settings.backend == "torch":
        return TorchBlazePose(static=static, settings=settings, segmentation=segmentation, batching=batching)
    if settings.backend != "mediapipe":
        raise ValueError(f"unknown BlazePose backend {settings.backend!r}")
    return BlazePose(
        static=static,
        model_complexity=settings.model_complexity,
        min_detection_confidence=settings.min_detection_confidence,
        min_tracking_confidence=settings.min_tracking_confidence,
        smooth_landmarks=settings.smooth_landmarks,
        segmentation=segmentation,
    )


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
    ``mask_short_side`` (scenic's): the torch backend warps the mask straight to the image's size
    at that short side (:func:`pipeline.decode.target_size`); mediapipe's mask has the image's size.
    """

    def __init__(self, settings: TrackSettings = TrackSettings(), batching: Batching = Batching()):
        self.settings, self.batching = settings, batching
        self.segmentation = False
        self.mask_short_side: int | None = None
        self._pose: BlazePose | TorchBlazePose | None = None
        self._users = 0
        self._last: tuple[object, Tracked] | None = None

    def join(self, *, segmentation: bool, mask_short_side: int | None = None) -> PoseTrack:
        if self._pose is not None and segmentation and not self.segmentation:
            raise RuntimeError("a consumer asked for the segmentation after the track started")
        if segmentation:
            if self.mask_short_side not in (None, mask_short_side):
                raise RuntimeError("two consumers asked for the segmentation at different sizes")
            self.mask_short_side = mask_short_side
        self.segmentation = self.segmentation or segmentation
        self._users += 1
        return self

    def process(self, image: np.ndarray, key: object = None) -> Tracked:
        if key is not None and self._last is not None and self._last[0] == key:
            return self._last[1]
        if self._pose is None:
            self._pose = open_blazepose(
                self.settings, static=False, segmentation=self.segmentation, batching=self.batching
            )
        mask_size = None
        if self.segmentation and self.mask_short_side:
            height, width = image.shape[:2]
            mask_size = target_size(width, height, DecodeParams(short_side=self.mask_short_side))
        out = self._pose.process(image, mask_size)
        self._last = (key, out)
        return out

    def leave(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._pose is not None:
            self._pose.close()
            self._pose = None


def pose_track(
    shared: PassShared | None,
    key: tuple[DecodeParams, TrackSettings],
    *,
    segmentation: bool,
    mask_short_side: int | None = None,
    batching: Batching = Batching(),
) -> PoseTrack:
    """The pass's track for ``key`` (grid, settings; a new one when no pass is shared), joined."""
    settings = key[1]
    if shared is None:
        return PoseTrack(settings, batching).join(segmentation=segmentation, mask_short_side=mask_short_side)
    track = shared.get(("blazepose", *key), lambda: PoseTrack(settings, batching))
    return track.join(segmentation=segmentation, mask_short_side=mask_short_side)


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


class PoseExtractor(FeatureExtractor):
    def __init__(
        self,
        config: PoseConfig = PoseConfig(),
        *,
        device: str | None = None,
        precision: str | None = None,
        load: bool = True,
    ):
        if config.model_complexity != 1:
            raise ValueError("only model_complexity=1 (BlazePose full) ships in the mediapipe wheel")
        self.declare(MODALITY)
        self.config, self.loaded = config, load
        self.backend = resolve_backend(config.backend, device)
        self.version = code_version(sys.modules[__name__], skeleton, decode, *backend_code(self.backend))
        if self.backend == "mediapipe":
            # mediapipe's BlazePose runs on the CPU in float32 whatever the build's device and precision
            if device not in (None, "cpu"):
                log.warning("mediapipe BlazePose runs on the CPU; ignoring device %r", device)
            self.name, self.device, self.precision = BlazePose.name, "cpu", "float32"
            self.weights_sha256, self.detector_sha256 = model_sha256(), None
        else:
            self.name = TorchBlazePose.name
            self.device, self.precision = blazepose_place(device, precision)
            if load:
                nets = shared_networks(self.device, self.precision, config.weights_dir)
                self.weights_sha256, self.detector_sha256 = nets.landmark_sha256, nets.detector_sha256
            else:
                self.weights_sha256, self.detector_sha256 = blazepose_sha256(config.weights_dir)

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

    def track_key(self) -> tuple[DecodeParams, TrackSettings]:
        """The grid and settings of this extractor's tracking BlazePose (what a shared track is keyed by)."""
        c = self.config
        settings = TrackSettings(
            c.model_complexity,
            c.min_detection_confidence,
            c.min_tracking_confidence,
            c.smooth_landmarks,
            self.backend,
            self.device,
            self.precision,
            c.weights_dir if self.backend == "torch" else None,
        )
        return self.decode_params(), settings

    def shared_run(self) -> SharedRun:
        return SharedRun("BlazePose", self.track_key(), TRACK_HINT)

    def consumer(self, clip_id: str, shared: PassShared | None = None) -> _PoseClip:
        self.require_loaded()
        return _PoseClip(self, shared)


class _PoseClip:
    """One clip: a tracking BlazePose (shared with scenic's person mask when both run on this
    grid in one pass), joints kept in the estimator's pixels until the native size is known."""

    def __init__(self, extractor: PoseExtractor, shared: PassShared | None = None):
        self.config = extractor.config
        self.track = pose_track(shared, extractor.track_key(), segmentation=False, batching=extractor.config.batching())
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
    load: bool = True,
) -> PoseExtractor:
    """The pose extractor from the ``[pose]`` section (a mapping) or a :class:`PoseConfig`.

    BlazePose's weights ship inside the mediapipe wheel, so there is no untrained variant:
    ``untrained`` is accepted for a uniform CLI and the real model is used. ``device`` and
    ``precision`` decide the backend (``auto``) and where the torch backend runs
    (:func:`blazepose_place`); mediapipe's runs on the CPU in float32. ``load=False`` describes
    it without loading the torch backend's networks (its identity only).
    """
    config = section_config(PoseConfig, config, "pose")
    if untrained and load:
        log.warning("pose: BlazePose weights ship with mediapipe; extracting with the real model")
    return PoseExtractor(config, device=device, precision=precision, load=load)


TRACK_HINT = (
    "set [scenic] mask_max_side to [pose] max_side (and the same fps, no end_s, the same detection and "
    "tracking confidences) so that pose and scenic's person mask share one BlazePose run"
)

MODALITY = Modality(
    name="pose",
    dim=48,  # 16 MPII joints x (x, y, confidence), joint-major (pipeline.skeleton)
    config=PoseConfig,
    build=build_extractor,
    rate=lambda c: c.fps,
    span_s=10.24,  # 256 samples at 25 fps, the middle of VDV's usual 5-15 s
    networks=("blazepose_detector", "blazepose_landmark_full"),  # the torch backend's
    stream="skeleton",
    aliases=("skeletal",),  # the models' name for it before one name served both layers
)


def backend_code(backend: str) -> tuple[ModuleType, ...]:
    """The modules that compute a backend's landmarks, beyond this one (part of the code version)."""
    if backend == "torch":
        from pipeline.blazepose import calculators, engine
        from pipeline.weights import graph_modules

        return (engine, calculators, *graph_modules())
    return ()

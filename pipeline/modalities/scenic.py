"""Scenic features: background images of the scene without the dancer, then ResNet-18 on Places365, 512-d.

Paper section 4 describes the scenic stream as scene features of the clip's background: the
background is extracted with ViBe and described by a ResNet-18 trained on Places365. The point
is a modality separate from the dancer, whom the other three streams describe.

Background images (SPEC section 4 sampling; person masking is a choice beyond the paper)
------------------------------------------------------------------------------------------
On the shared 25 fps grid, one background image every 12 frames, each from the preceding
120-frame window; the sample's timestamp is the grid time of the window's last frame. ViBe
(the paper's component, published parameters) runs over the clip's frames, and every frame
also gets a *person mask*: BlazePose (the full model that :mod:`pipeline.modalities.pose` uses,
shipped in the mediapipe wheel) with its segmentation output, thresholded at
``mask_threshold`` and dilated by ``mask_dilate`` of the frame's short side (segmentation edges
are soft and limbs blur). A pixel of a window's image is the mean of its values over the
window's frames in which neither ViBe's foreground mask nor the person mask covers it; pixels
covered throughout are inpainted from their surroundings and their share is recorded per image.
:mod:`pipeline.modalities.vibe` gives the rule and its reasons. Why: ViBe alone kept the dancer in every
image (measured before this design: BlazePose found a person in 45 of 45 background images of
``stgcn_ta_chi`` and ``musepose_dance``), so the scenic stream was a delayed copy of the
holistic one. The mask is computed here, from the frames this extractor receives, whether or not
pose runs in the same build, and all its parameters are in :meth:`ScenicExtractor.params`, so
they are part of scenic's identity. BlazePose rather than mediapipe's selfie segmentation
(whose models also ship in the wheel): on the sample clips at 256 px the selfie model missed
the legs of ``hybrik_taiji`` and the whole handstand of ``sports2d_demo``, and marked a quarter
of the cat clip (no person) as a person; BlazePose's mask did neither. It follows one person
(tracking across the clip's frames): a second dancer is for screening to reject, and whatever
else moves is in ViBe's mask.

Sizes (choice): scenic's grid is the pose grid (25 fps, longer side at most ``mask_max_side`` =
640 pixels, as ``[pose] max_side``), and BlazePose sees those frames. ViBe, the mask it is given
and the background images are at ``short_side`` = 256 pixels, resized from the grid frame (area
interpolation; the segmentation probabilities are resized before they are thresholded). 256 is
the size the Places365 preprocessing resizes to, so the background image is never enlarged on
its way to the network. Why the pose grid: when pose and scenic run in one pass they share one
tracking BlazePose (:class:`pipeline.blazepose.track.PoseTrack`), so the model runs once per frame for both
instead of twice (it is most of either modality's time). The mask is the same whether or not
pose ran beside it: BlazePose's landmarks, and so its tracking, do not depend on whether the
segmentation is on, and the mask's inputs are scenic's own grid and parameters.

Places365 preprocessing (as published)
---------------------------------------
The reference demo (CSAILVision/places365 ``run_placesCNN_basic.py``) resizes the image to
256 x 256, aspect not kept, centre-crops 224 and normalises RGB in [0, 1] with the ImageNet mean
and std; :func:`places_input` does the same (area interpolation when shrinking, bilinear when
enlarging). The ResNet-18 trunk's global average pool gives the 512-d vector; the 365-class
classifier is not used. Images are inferred in batches, channels_last, under bfloat16 autocast
when the build's precision is ``"bfloat16"`` (:mod:`pipeline.core.runtime`).
``bench/bench_vibe.py`` measures how far this input is from the reference applied to the native
frame, in pixels.

``save_backgrounds`` (a directory) writes every background image as ``DIR/<clip_id[:16]>.<ms>ms.png``
(``<ms>``: the sample's time in milliseconds, seven digits) and one table per clip
(``tables.SCENIC_BACKGROUNDS``, with each image's inpainted share), so that a user can see what
the scene network was given; it does not change the features.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq

from pipeline.blazepose import track as blazepose_track
from pipeline.blazepose.backends import NETWORKS, model_sha256, weights_sha256
from pipeline.blazepose.settings import BACKENDS, TrackOptions, TrackSettings, track_settings
from pipeline.core import decode, tables
from pipeline.core.decode import (
    DecodeParams,
    PassShared,
    Sample,
    SharedRun,
    StreamInfo,
    check_grid,
    iter_samples,
    target_size,
)
from pipeline.core.errors import ClipError, Reason
from pipeline.core.placement import VIBE_BACKENDS, placed
from pipeline.modalities import vibe
from pipeline.modalities.features import (
    Batches,
    FeatureSequence,
    Modality,
    NetworkExtractor,
    Placed,
    Preview,
)
from pipeline.modalities.vibe import ViBeParams, WindowBackgrounds, WindowImage, write_backgrounds
from pipeline.weights.inference import infer

log = logging.getLogger(__name__)

WEIGHTS = "resnet18_places365"
MASK_MODEL = "mediapipe-blazepose-full-segmentation"
TRACK_HINT = (
    "set [scenic] mask_max_side to [pose] max_side (and the same fps, no end_s, the same detection and "
    "tracking confidences) so that pose and scenic's person mask share one BlazePose run"
)


@dataclass(frozen=True)
class ScenicConfig:
    """Configuration section ``[scenic]``."""

    fps: float = 25.0  # shared time grid of SPEC section 4; ViBe sees every grid frame
    short_side: int = 256  # ViBe, the person mask and the background images, resized from the grid frame
    # the grid BlazePose sees (longer side); 640 = [pose] max_side, so both share one run
    mask_max_side: int | None = 640
    window: int = 120  # frames that make one background image (SPEC section 4)
    hop: int = 12  # one background image every `hop` frames (SPEC section 4); divides `window`
    # ViBe as published (Barnich and Van Droogenbroeck 2011)
    n_samples: int = 20
    radius: int = 20
    min_matches: int = 2
    subsampling: int = 16
    reset_share: float = 0.5  # re-initialise ViBe when this share of the scene is foreground (camera moved)
    # where ViBe runs: numpy (the CPU) or torch (the build's device, clips in flight batched);
    # auto: torch on CUDA, numpy on the CPU
    vibe_backend: str = "auto"
    # person mask: BlazePose segmentation (pipeline.modalities.vibe, module docstring of this file)
    mask_threshold: float = 0.5  # segmentation probability that counts as the person
    mask_dilate: float = 0.02  # dilation radius, share of the frame's short side (soft edges, motion blur)
    mask_detection_confidence: float = 0.5  # BlazePose's person detector
    mask_tracking_confidence: float = 0.5  # below this BlazePose re-runs its detector
    # BlazePose backend of the mask (pipeline.blazepose): auto | torch | mediapipe; auto is the
    # build's BlazePose backend ([pose] backend), so that both share one run
    mask_backend: str = "auto"
    inpaint_radius: int = 5  # cv2.inpaint neighbourhood (pixels) for pixels covered all window long
    seed: int = 0  # ViBe's random generator, and the initialisation of untrained weights
    batch_size: int = 32  # background images per forward pass; does not change the features
    weights_dir: str | None = None  # weights cache; None: $VDV_WEIGHTS_DIR or ~/.cache/vdv/weights
    end_s: float | None = None  # only the clip's first end_s seconds (previews, tests); None: all
    save_backgrounds: str | None = None  # directory for PNGs of the background images; None: not saved

    def __post_init__(self):
        check_grid("scenic", fps=self.fps, end_s=self.end_s)  # its sizes have their own limits below
        if self.hop < 1 or self.window < self.hop or self.window % self.hop:
            raise ValueError(
                f"[scenic] need 1 <= hop <= window, window a multiple of hop; got hop {self.hop}, window {self.window}"
            )
        if self.batch_size < 1:
            raise ValueError("[scenic] batch_size must be at least 1")
        if self.short_side < 16:
            raise ValueError(f"[scenic] short_side must be at least 16, got {self.short_side}")
        if self.mask_max_side is not None and self.mask_max_side < 64:
            raise ValueError(f"[scenic] mask_max_side must be at least 64 (or unset), got {self.mask_max_side}")
        for name in ("mask_threshold", "mask_detection_confidence", "mask_tracking_confidence"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"[scenic] {name} must be in (0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.mask_dilate < 0.5:
            raise ValueError(f"[scenic] mask_dilate must be in [0, 0.5), got {self.mask_dilate}")
        if self.inpaint_radius < 1:
            raise ValueError(f"[scenic] inpaint_radius must be at least 1, got {self.inpaint_radius}")
        if self.vibe_backend not in VIBE_BACKENDS:
            raise ValueError(f"[scenic] vibe_backend must be one of {list(VIBE_BACKENDS)}, got {self.vibe_backend!r}")
        if self.mask_backend not in BACKENDS:
            raise ValueError(f"[scenic] mask_backend must be one of {list(BACKENDS)}, got {self.mask_backend!r}")
        self.vibe_params()  # validates the ViBe parameters

    def vibe_params(self) -> ViBeParams:
        return ViBeParams(self.n_samples, self.radius, self.min_matches, self.subsampling, self.reset_share)

    def track_options(self) -> TrackOptions:
        """The person mask's BlazePose: its own confidences, landmarks smoothed as pose's by default."""
        return TrackOptions(self.mask_detection_confidence, self.mask_tracking_confidence)


def decode_params(config: ScenicConfig) -> DecodeParams:
    """Scenic's grid: every frame of the 25 fps grid, longer side at most ``mask_max_side`` (the
    pose grid); ViBe works on these frames resized to ``short_side`` (:func:`background_size`)."""
    return DecodeParams(fps=config.fps, max_side=config.mask_max_side, end_s=config.end_s)


def background_size(image: np.ndarray, config: ScenicConfig) -> tuple[int, int]:
    """(width, height) of ViBe's frames and the background images for a grid frame: the shorter
    side ``short_side``, even sizes (the decoder's rule, :func:`pipeline.core.decode.target_size`)."""
    h, w = image.shape[:2]
    return target_size(w, h, DecodeParams(short_side=config.short_side))


def resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` at ``size`` (width, height): area interpolation when shrinking, bilinear when enlarging."""
    if (image.shape[1], image.shape[0]) == size:
        return image
    shrink = size[0] < image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def mask_track(config: ScenicConfig, device: str | None = None, precision: str | None = None) -> TrackSettings:
    """The settings of the person mask's tracking BlazePose on a build's ``device`` and ``precision``
    (``[scenic] mask_backend``; a build resolves its ``auto`` to the build's BlazePose backend)."""
    placement = placed(device, precision, pose_backend=config.mask_backend)
    return track_settings(config.track_options(), placement, config.weights_dir)


def mask_params(config: ScenicConfig, settings=None, weights: dict | None = None) -> dict:
    """Everything that decides the person mask (part of scenic's identity): its backend and, for
    the torch backend, its networks' sha256, device and precision."""
    settings = settings or mask_track(config)
    params = {
        "model": MASK_MODEL,
        "backend": settings.backend,
        "model_complexity": 1,
        "tracking": True,
        "smooth_segmentation": True,
        "threshold": config.mask_threshold,
        "dilate_share_of_short_side": config.mask_dilate,
        "detection_confidence": config.mask_detection_confidence,
        "tracking_confidence": config.mask_tracking_confidence,
        "input": "the grid frame (longer side at most mask_max_side)",
        "resize": "segmentation probabilities to short_side (area), then thresholded and dilated",
    }
    if settings.backend == "mediapipe":
        params["landmark_model_sha256"] = model_sha256()
    else:  # the torch networks' sha256 in the weights cache (no mediapipe needed)
        params.update(
            weights or {},
            device=settings.device,
            precision=settings.precision,
            smooth_segmentation=False,  # the binary's blend is a no-op (pipeline.blazepose.engine)
            resize="warped from the 256 x 256 mask straight to short_side (bilinear), then thresholded and dilated",
        )
    return params


class PersonMasks:
    """Per-frame person masks of one clip: BlazePose (full) segmentation, tracked across frames.

    ``mask(image, size)`` returns a (height, width) bool mask of the frame at ``size`` (default:
    the image's), thresholded and dilated; all False when BlazePose finds nobody. One instance
    per clip (it tracks); ``track`` is the pass's shared :class:`~pipeline.blazepose.track.PoseTrack` on
    this grid (a private one when None), ``key`` the grid sample's index; ``close()`` frees it.
    """

    def __init__(self, config: ScenicConfig, track=None):
        self.config = config
        if track is None:
            track = blazepose_track.PoseTrack(mask_track(config))
            track.join(segmentation=True, mask_short_side=config.short_side)
        self.track = track
        self._kernels: dict[tuple[int, int], np.ndarray | None] = {}

    def mask(self, image: np.ndarray, size: tuple[int, int] | None = None, key: object = None) -> np.ndarray:
        size = size or (image.shape[1], image.shape[0])
        seg = self.track.process(image, key).segmentation
        if seg is None:
            return np.zeros((size[1], size[0]), dtype=bool)
        person = (resized(seg, size) > self.config.mask_threshold).astype(np.uint8)
        if size not in self._kernels:
            r = int(round(self.config.mask_dilate * min(size)))
            self._kernels[size] = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)) if r else None
        if self._kernels[size] is not None:
            person = cv2.dilate(person, self._kernels[size])
        return person.astype(bool)

    def close(self) -> None:
        if self.track is not None:
            self.track.leave()
            self.track = None


class SceneBackgrounds:
    """One clip's background images from its grid frames: person mask + ViBe windows (module docstring).

    ``push(image)`` takes a grid frame (``key``: its index, for a shared track) and returns a
    :class:`~pipeline.modalities.vibe.WindowImage` at ``short_side`` when the frame closes a window.
    Holds one ViBe model, ``window / hop`` block sums and the mask model: flat in clip length.
    """

    def __init__(self, config: ScenicConfig, track=None, *, vibe_device: str | None = None):
        self.config = config
        model = None
        if vibe_device is not None:  # the torch ViBe on that device (pipeline.modalities.vibe_torch)
            from pipeline.modalities.vibe_torch import vibe_model

            model = vibe_model(config.vibe_params(), config.seed, vibe_device)
        self.windows = WindowBackgrounds(
            window=config.window,
            hop=config.hop,
            params=config.vibe_params(),
            seed=config.seed,
            inpaint_radius=config.inpaint_radius,
            model=model,
        )
        self.masks = PersonMasks(config, track)
        self.last_person: np.ndarray | None = None

    def push(self, image: np.ndarray, key: object = None) -> WindowImage | None:
        size = background_size(image, self.config)
        self.last_person = self.masks.mask(image, size, key)
        return self.windows.push(resized(image, size), self.last_person)

    def close(self) -> None:
        self.masks.close()
        self.windows.close()


def backgrounds(
    path: str | Path, config: ScenicConfig = ScenicConfig(), clip_id: str | None = None
) -> Iterator[tuple[float, WindowImage]]:
    """``(time, WindowImage)`` of every window of a clip decoded alone (pure of the network).

    ``time`` is the grid time of the window's last frame; images are (H, W, 3) uint8 RGB at
    the grid's size, with their inpainted share.
    """
    scene = SceneBackgrounds(config)
    try:
        for sample in iter_samples(path, decode_params(config), clip_id):
            out = scene.push(sample.image, sample.index)
            if out is not None:
                yield sample.t, out
    finally:
        scene.close()


def places_input(image: np.ndarray, size: int, crop: int) -> np.ndarray:
    """Places365 reference geometry: resize to ``size`` x ``size`` (aspect not kept), then the central ``crop``."""
    h, w = image.shape[:2]
    interpolation = cv2.INTER_AREA if size <= min(h, w) else cv2.INTER_LINEAR
    resized = cv2.resize(image, (size, size), interpolation=interpolation)
    top = (size - crop) // 2
    return np.ascontiguousarray(resized[top : top + crop, top : top + crop])


def write_background_pngs(
    images: list[tuple[float, WindowImage]], directory: str | Path, clip_id: str, identity: str
) -> Path:
    """PNGs ``DIR/<clip_id[:16]>.<ms>ms.png`` and the clip's ``scenic_backgrounds`` table (atomic writes)."""
    paths = write_backgrounds([(t, w.image) for t, w in images], directory, clip_id[:16])
    rows = [
        {"clip_id": clip_id, "timestamp": t, "png": p.name, "filled_share": w.filled_share, "identity": identity}
        for (t, w), p in zip(images, paths, strict=True)
    ]
    table = tables.to_table(rows, tables.SCENIC_BACKGROUNDS, where=f"scenic backgrounds {clip_id[:16]}")
    target = tables.shard_path(directory, "scenic_backgrounds", clip_id[:16])
    return tables.atomic_write(target, lambda tmp: pq.write_table(table, tmp))


class ScenicExtractor(NetworkExtractor):
    """Person-masked ViBe backgrounds through ResNet-18 Places365. The Places365 weights missing from
    the cache are a :class:`~pipeline.core.errors.WeightsError` naming the fixing command, unless
    ``untrained`` (explicit only) asks for seeded random weights; ``load=False`` describes it
    without loading a network (its identity only)."""

    name = "vibe-personmask-resnet18-places365"
    network = WEIGHTS
    code = (vibe, decode)  # and this module, added by NetworkExtractor
    config: ScenicConfig

    def __init__(self, config: ScenicConfig, **kwargs):
        device, precision = kwargs.get("device"), kwargs.get("precision")
        self.vibe_backend = placed(device, precision, vibe_backend=config.vibe_backend).vibe_backend
        self.mask = mask_track(config, device, precision)
        # the code of the mask's backend and of the torch ViBe is part of the version
        vibe_code = ()
        if self.vibe_backend == "torch":
            from pipeline.modalities import vibe_torch

            vibe_code = (vibe_torch,)
        self.code = type(self).code + blazepose_track.backend_code(self.mask.backend) + vibe_code
        super().__init__(MODALITY, config, **kwargs)
        self.mask_weights = {}
        if self.mask.backend == "torch":
            landmark, detector = weights_sha256(self.mask, load=self.loaded)
            self.mask_weights = {"landmark_sha256": landmark, "detector_sha256": detector}

    def decode_params(self) -> DecodeParams:
        return decode_params(self.config)

    def shared_run(self) -> SharedRun:
        """The person mask's tracking BlazePose on this grid (as pose's)."""
        return blazepose_track.shared_run(self.decode_params(), self.mask, TRACK_HINT)

    def params(self) -> dict:
        c, pre = self.config, self.weights_spec.preprocess
        size = pre.resize_short or pre.input_size
        params = {
            **self.decode_params().as_dict(),
            "short_side": c.short_side,  # ViBe and the backgrounds, resized from the grid frame
            "short_side_resize": "cv2 area (bilinear when enlarging), even sizes",
            "end_s": c.end_s,
            "window": c.window,
            "hop": c.hop,
            "vibe": {
                **dataclasses.asdict(c.vibe_params()),
                "backend": self.vibe_backend,
                "seed": c.seed,
                "distance": "L1 over RGB <= 3 * radius",
                "model": "one per clip; person mask excluded from updates, re-drawn when uncovered",
            },
            "person_mask": mask_params(c, self.mask, self.mask_weights),
            "background": "per-pixel mean over the window's frames where neither ViBe nor the person mask covers it",
            "fill": {"method": "cv2.inpaint telea", "radius": c.inpaint_radius},
            "resize": [size, size],
            "keep_aspect": False,
            "crop": pre.input_size,
            "crop_mode": "centre",
            "mean": list(pre.mean),
            "std": list(pre.std),
            "value_range": pre.value_range,
            "weights": WEIGHTS,
            "pooling": "global average (ResNet-18 trunk output)",
        }
        if self.untrained:
            params["weights_seed"] = c.seed  # seeded random weights differ by seed
        return params

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Features of background images ``(N, H, W, 3)`` uint8 RGB -> ``(N, 512)`` float32."""
        import torch

        pre = self.weights_spec.preprocess
        crops = np.stack([places_input(im, pre.resize_short or pre.input_size, pre.input_size) for im in images])
        x = pre.normalise(torch.from_numpy(crops).to(self.device))
        return infer(self.model, x, self.precision)

    def consumer(self, clip_id: str, shared: PassShared | None = None) -> _ScenicClip:
        self.require_loaded()
        return _ScenicClip(self, clip_id, shared)


class _ScenicClip:
    """One clip: person masks and ViBe over the grid frames, backgrounds batched through the network."""

    def __init__(self, extractor: ScenicExtractor, clip_id: str, shared: PassShared | None = None):
        self.extractor, self.clip_id = extractor, clip_id
        config = extractor.config
        track = blazepose_track.pose_track(
            shared, extractor.shared_run(), segmentation=True, mask_short_side=config.short_side
        )
        vibe_device = extractor.device if extractor.vibe_backend == "torch" else None
        self.scene = SceneBackgrounds(config, track, vibe_device=vibe_device)
        self.times: list[float] = []
        self.filled: list[float] = []
        self.saved: list[tuple[float, WindowImage]] = []
        self.preview: tuple[float, np.ndarray] | None = None  # the first background of a whole window
        self.batches = Batches(
            extractor.config.batch_size,
            lambda images: extractor.embed(np.stack(images)),
            clip_id=clip_id,
            what="scenic",
        )

    def push(self, sample: Sample) -> None:
        out = self.scene.push(sample.image, sample.index)
        if out is None:
            return
        self.times.append(sample.t)
        self.filled.append(out.filled_share)
        self.batches.add(out.image)
        if self.preview is None or len(self.times) * self.extractor.config.hop <= self.extractor.config.window:
            self.preview = (sample.t, out.image)
        if self.extractor.config.save_backgrounds:
            self.saved.append((sample.t, out))

    def finish(self, source: StreamInfo) -> FeatureSequence:
        config = self.extractor.config
        chunks = self.batches.result()
        if not self.times:
            raise ClipError(
                self.clip_id, Reason.TOO_SHORT, f"the clip is shorter than one scenic window of {config.hop} frames"
            )
        if self.saved:
            write_background_pngs(
                self.saved, config.save_backgrounds, self.clip_id, self.extractor.identity(self.clip_id)
            )
        log.info(
            "scenic %s: %d backgrounds, inpainted share mean %.3f max %.3f, %d ViBe resets",
            self.clip_id[:16],
            len(self.times),
            float(np.mean(self.filled)),
            float(np.max(self.filled)),
            self.scene.windows.resets,
        )
        # one sample per `hop` grid frames
        return FeatureSequence.on_grid(
            source, self.times, np.concatenate(chunks), config.fps / config.hop, preview=self.preview
        )

    def close(self) -> None:
        self.scene.close()


MODALITY = Modality(
    name="scenic",
    dim=512,  # ResNet-18's pooled trunk (SPEC section 4)
    config=ScenicConfig,
    extractor=ScenicExtractor,
    rate=lambda c: c.fps / c.hop,  # one background every `hop` grid frames
    span_s=15.36,  # 32 backgrounds, one every 12 frames at 25 fps
    networks=(WEIGHTS, *NETWORKS),  # the mask's, on the torch backend
    preview=Preview("backgrounds", "scenic background (ViBe)"),  # one background image of each clip
    # ViBe's backend is the build's; the mask's BlazePose follows the build's BlazePose backend
    placed=(Placed("vibe_backend", "vibe_backend"), Placed("mask_backend", "pose_backend", decides=False)),
    shares=(blazepose_track.KIND,),  # the mask's tracking BlazePose, with pose's on a common grid
)

"""Scenic features: ViBe background images, then ResNet-18 pre-trained on Places365, 512-d.

Paper section 4 describes the scenic stream as scene features of the clip's background: the
background is extracted with ViBe and described by a ResNet-18 trained on Places365. SPEC
section 4 fixes the sampling (choice): on the shared 25 fps grid, one background image every 12
frames, each from the preceding 120-frame window, the image being the per-pixel mean of ViBe's
background samples at the window's end. The sample's timestamp is the grid time of the window's
last frame. :mod:`pipeline.vibe` documents the ViBe model and the windowing.

ViBe runs on frames shrunk by the decoder to ``short_side`` pixels (160 by default: ViBe's cost
is per pixel and every frame feeds up to ``window / hop`` = 10 live models, while a scene
descriptor needs no fine detail). Each background image then goes through the Places365
test-time preprocessing as the registry records it (``pipeline.weights``: short side resized
to 256, centre crop 224, ImageNet mean and std on RGB in [0, 1]) and the ResNet-18 trunk, whose
global average pool gives the 512-d vector; the 365-class classifier is not used. Images are
inferred in batches, channels_last, under bfloat16 autocast when the build's precision is
``"bfloat16"`` (:mod:`pipeline.runtime`).

``save_backgrounds`` (a directory) writes every background image as a PNG so that a user can see
what the scene network was given; it does not change the features.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline import weights
from pipeline.config import section_config
from pipeline.decode import DecodeParams, Sample, StreamInfo, iter_samples
from pipeline.errors import ClipError, Reason
from pipeline.features import Batches, FeatureExtractor, FeatureSequence
from pipeline.provenance import code_version
from pipeline.vibe import ViBeParams, WindowBackgrounds, write_backgrounds

log = logging.getLogger(__name__)

WEIGHTS = "resnet18_places365"


@dataclass(frozen=True)
class ScenicConfig:
    """Configuration section ``[scenic]``."""

    fps: float = 25.0  # shared time grid of SPEC section 4; ViBe sees every grid frame
    short_side: int = 160  # ViBe's working size (decoder resize); background images have this size
    window: int = 120  # frames that make one background image (SPEC section 4)
    hop: int = 12  # one background image every `hop` frames (SPEC section 4)
    # ViBe as published (Barnich and Van Droogenbroeck 2011)
    n_samples: int = 20
    radius: int = 20
    min_matches: int = 2
    subsampling: int = 16
    seed: int = 0  # ViBe's random generator, and the initialisation of untrained weights
    batch_size: int = 32  # background images per forward pass; does not change the features
    weights_dir: str | None = None  # weights cache; None: $VDV_WEIGHTS_DIR or ~/.cache/vdv/weights
    end_s: float | None = None  # only the clip's first end_s seconds (previews, tests); None: all
    save_backgrounds: str | None = None  # directory for PNGs of the background images; None: not saved

    def __post_init__(self):
        if self.hop < 1 or self.window < self.hop:
            raise ValueError(f"[scenic] need 1 <= hop <= window, got hop {self.hop}, window {self.window}")
        if self.batch_size < 1:
            raise ValueError("[scenic] batch_size must be at least 1")
        self.vibe_params()  # validates the ViBe parameters

    def vibe_params(self) -> ViBeParams:
        return ViBeParams(self.n_samples, self.radius, self.min_matches, self.subsampling)


def decode_params(config: ScenicConfig) -> DecodeParams:
    """ViBe's grid: every frame of the 25 fps grid at ViBe's working size."""
    return DecodeParams(fps=config.fps, short_side=config.short_side, end_s=config.end_s)


def window_maker(config: ScenicConfig) -> WindowBackgrounds:
    return WindowBackgrounds(window=config.window, hop=config.hop, params=config.vibe_params(), seed=config.seed)


def backgrounds(
    path: str | Path, config: ScenicConfig = ScenicConfig(), clip_id: str | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """``(time, background image)`` of every window of a clip decoded alone (pure of the network).

    ``time`` is the grid time of the window's last frame; images are (H, W, 3) uint8 RGB at
    ViBe's working size.
    """
    windows = window_maker(config)
    for sample in iter_samples(path, decode_params(config), clip_id):
        out = windows.push(sample.image)
        if out is not None:
            yield sample.t, out[1]


def places_input(image: np.ndarray, resize_short: int, crop: int) -> np.ndarray:
    """Places365 test-time geometry: short side to ``resize_short``, then the central ``crop``."""
    h, w = image.shape[:2]
    scale = resize_short / min(h, w)
    size = (max(crop, int(round(w * scale))), max(crop, int(round(h * scale))))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)
    top, left = (size[1] - crop) // 2, (size[0] - crop) // 2
    return np.ascontiguousarray(resized[top : top + crop, left : left + crop])


class ScenicExtractor(FeatureExtractor):
    modality = "scenic"
    name = "vibe-resnet18-places365"
    dim = 512

    def __init__(
        self,
        config: ScenicConfig = ScenicConfig(),
        *,
        untrained: bool = False,
        device: str | None = None,
        precision: str | None = None,
    ):
        self.config = config
        self.place(device, precision)
        self.version = code_version(
            "pipeline.scenic", "pipeline.vibe", "pipeline.decode", "pipeline.weights", "pipeline.runtime"
        )
        self.weights_spec = weights.get_spec(WEIGHTS)
        self.model, loaded = weights.load_model(
            WEIGHTS, cache_dir=config.weights_dir, untrained=untrained, seed=config.seed, device=self.device
        )
        self.weights_sha256 = loaded.sha256

    def decode_params(self) -> DecodeParams:
        return decode_params(self.config)

    def params(self) -> dict:
        c, pre = self.config, self.weights_spec.preprocess
        params = {
            **self.decode_params().as_dict(),
            "end_s": c.end_s,
            "window": c.window,
            "hop": c.hop,
            "vibe": {
                **dataclasses.asdict(c.vibe_params()),
                "seed": c.seed,
                "distance": "L1 over RGB <= 3 * radius",
                "background": "per-pixel mean of the samples at the window's end",
            },
            "resize_short": pre.resize_short,
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
        return weights.infer(self.model, x, self.precision)

    def consumer(self, clip_id: str) -> _ScenicClip:
        return _ScenicClip(self, clip_id)


class _ScenicClip:
    """One clip: ViBe windows over the grid frames, their backgrounds batched through the network."""

    def __init__(self, extractor: ScenicExtractor, clip_id: str):
        self.extractor, self.clip_id = extractor, clip_id
        self.windows = window_maker(extractor.config)
        self.times: list[float] = []
        self.saved: list[tuple[float, np.ndarray]] = []
        self.batches = Batches(
            extractor.config.batch_size,
            lambda images: extractor.embed(np.stack(images)),
            clip_id=clip_id,
            what="scenic",
        )

    def push(self, sample: Sample) -> None:
        out = self.windows.push(sample.image)
        if out is None:
            return
        self.times.append(sample.t)
        self.batches.add(out[1])
        if self.extractor.config.save_backgrounds:
            self.saved.append((sample.t, out[1]))

    def finish(self, source: StreamInfo) -> FeatureSequence:
        config = self.extractor.config
        chunks = self.batches.result()
        if not self.times:
            raise ClipError(
                self.clip_id, Reason.TOO_SHORT, f"the clip is shorter than one scenic window of {config.hop} frames"
            )
        if self.saved:
            write_backgrounds(self.saved, config.save_backgrounds, self.clip_id[:16])
        return FeatureSequence(
            timestamps=np.asarray(self.times, dtype=np.float64),
            valid=np.ones(len(self.times), dtype=bool),
            features=np.concatenate(chunks).astype(np.float32),
            fps=config.fps / config.hop,  # one sample per `hop` grid frames
            source_fps=source.fps,
            frame_width=source.width,
            frame_height=source.height,
        )

    def close(self) -> None:
        pass


def build_extractor(
    config: ScenicConfig | Mapping[str, Any] | None = None,
    *,
    untrained: bool = False,
    device: str | None = None,
    precision: str | None = None,
) -> ScenicExtractor:
    """The scenic extractor from the ``[scenic]`` section (a mapping) or a :class:`ScenicConfig`.

    Raises :class:`~pipeline.errors.WeightsError` naming the fixing command when the Places365
    weights are not in the cache, unless ``untrained`` (explicit only) asks for seeded random weights.
    """
    config = section_config(ScenicConfig, config, "scenic")
    return ScenicExtractor(config, untrained=untrained, device=device, precision=precision)

"""Holistic features: TSN ResNet-50 pre-trained on Kinetics-400, 2,048-d per frame at 25 fps.

Paper section 4 describes the holistic stream's input as per-frame appearance features of a TSN
model pre-trained on Kinetics; SPEC section 4 fixes the grid (25 fps, shared with the skeleton)
and the dimension (2,048). Each grid sample goes through TSN's test-time preprocessing as
mmaction2 configures it for Kinetics-400 (``Resize(scale=(-1, 256))``, ``CenterCrop(224)``,
``data_preprocessor`` mean [123.675, 116.28, 103.53] and std [58.395, 57.12, 57.375] on RGB
0-255), then the ResNet-50 backbone and TSN's global average pooling; the Kinetics classifier
is not used. The backbone loads from an mmaction2 TSN checkpoint through the key mapping
documented in :func:`pipeline.weights.convert.convert_mmaction2_tsn`.

Frames are resized by the decoder (swscale, to an even size whose short side is 256) so that
full-resolution frames are never held, and inferred in batches, channels_last, under bfloat16
autocast when the build's precision is ``"bfloat16"`` (:mod:`pipeline.core.runtime`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pipeline.core import decode
from pipeline.core.decode import DecodeParams, PassShared, Sample, StreamInfo, check_grid
from pipeline.core.errors import ClipError, Reason
from pipeline.modalities.features import Batches, FeatureSequence, Modality, NetworkExtractor
from pipeline.weights.inference import infer

log = logging.getLogger(__name__)

WEIGHTS = "tsn_r50_kinetics400"


@dataclass(frozen=True)
class HolisticConfig:
    """Configuration section ``[holistic]``."""

    fps: float = 25.0  # shared time grid of SPEC section 4
    short_side: int = 256  # TSN test pipeline: Resize(scale=(-1, 256))
    crop: int = 224  # TSN test pipeline: CenterCrop(224); the network input side
    batch_size: int = 32  # frames per forward pass; does not change the features
    seed: int = 0  # initialisation seed of untrained (--untrained) weights
    weights_dir: str | None = None  # weights cache; None: $VDV_WEIGHTS_DIR or ~/.cache/vdv/weights
    end_s: float | None = None  # only the clip's first end_s seconds (previews, tests); None: all

    def __post_init__(self):
        check_grid("holistic", fps=self.fps, end_s=self.end_s, short_side=self.short_side, crop=self.crop)
        if self.crop > self.short_side:
            raise ValueError(f"[holistic] crop {self.crop} must not exceed short_side {self.short_side}")
        if self.batch_size < 1:
            raise ValueError("[holistic] batch_size must be at least 1")


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` window of an (H, W, C) image (TSN's CenterCrop)."""
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


class _HolisticClip:
    """One clip: centre crops batched through the network as the samples arrive."""

    def __init__(self, extractor: HolisticExtractor, clip_id: str):
        self.extractor, self.clip_id = extractor, clip_id
        self.times: list[float] = []
        self.batches = Batches(extractor.config.batch_size, self._embed, clip_id=clip_id, what="holistic")

    def _embed(self, crops: list[np.ndarray]) -> np.ndarray:
        return self.extractor.embed(np.stack(crops))

    def push(self, sample: Sample) -> None:
        self.times.append(sample.t)
        self.batches.add(centre_crop(sample.image, self.extractor.config.crop))

    def finish(self, source: StreamInfo) -> FeatureSequence:
        chunks = self.batches.result()
        if not chunks:
            raise ClipError(self.clip_id, Reason.ZERO_FRAMES, "the clip gave no grid sample")
        return FeatureSequence.on_grid(source, self.times, np.concatenate(chunks), self.extractor.config.fps)

    def close(self) -> None:
        pass


class HolisticExtractor(NetworkExtractor):
    """TSN ResNet-50 on the ``[holistic]`` grid. Its weights missing from the cache are a
    :class:`~pipeline.core.errors.WeightsError` naming the fixing command, unless ``untrained``
    (explicit only) asks for seeded random weights; ``load=False`` describes it without loading
    the network (its identity only)."""

    name = "tsn-r50-kinetics400"
    network = WEIGHTS
    code = (decode,)
    config: HolisticConfig

    def __init__(self, config: HolisticConfig, **kwargs):
        super().__init__(MODALITY, config, **kwargs)

    def decode_params(self) -> DecodeParams:
        c = self.config
        return DecodeParams(fps=c.fps, short_side=c.short_side, end_s=c.end_s)

    def params(self) -> dict:
        pre = self.weights_spec.preprocess
        params = {
            **self.decode_params().as_dict(),
            "end_s": self.config.end_s,
            "crop": self.config.crop,
            "crop_mode": "centre",
            "resize": "decoder (swscale), short side to short_side, even sizes",
            "mean": list(pre.mean),
            "std": list(pre.std),
            "channels": pre.channels,
            "weights": WEIGHTS,
            "pooling": "global average (TSN backbone output)",
        }
        if self.untrained:
            params["weights_seed"] = self.config.seed  # seeded random weights differ by seed
        return params

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Features of a batch of cropped uint8 RGB images ``(N, crop, crop, 3)`` -> ``(N, 2048)``."""
        import torch

        x = torch.from_numpy(images).to(self.device)
        x = self.weights_spec.preprocess.normalise(x)
        return infer(self.model, x, self.precision)

    def consumer(self, clip_id: str, shared: PassShared | None = None) -> _HolisticClip:
        self.require_loaded()
        return _HolisticClip(self, clip_id)


MODALITY = Modality(
    name="holistic",
    dim=2048,  # TSN ResNet-50's pooled trunk (SPEC section 4)
    config=HolisticConfig,
    extractor=HolisticExtractor,
    rate=lambda c: c.fps,
    span_s=10.24,  # 256 samples at 25 fps, the middle of VDV's usual 5-15 s
    networks=(WEIGHTS,),
)

"""Holistic features: TSN ResNet-50 pre-trained on Kinetics-400, 2,048-d per frame at 25 fps.

Paper section 4 describes the holistic stream's input as per-frame appearance features of a TSN
model pre-trained on Kinetics; SPEC section 4 fixes the grid (25 fps, shared with the skeleton)
and the dimension (2,048). Each grid sample goes through TSN's test-time preprocessing as
mmaction2 configures it for Kinetics-400 (``Resize(scale=(-1, 256))``, ``CenterCrop(224)``,
``data_preprocessor`` mean [123.675, 116.28, 103.53] and std [58.395, 57.12, 57.375] on RGB
0-255), then the ResNet-50 backbone and TSN's global average pooling; the Kinetics classifier
is not used. The backbone loads from an mmaction2 TSN checkpoint through the key mapping
documented in :func:`pipeline.weights.convert_mmaction2_tsn`.

Frames are resized by the decoder (swscale, to an even size whose short side is 256) so that
full-resolution frames are never held, and inferred in batches. On CUDA the forward pass runs
under bfloat16 autocast (precision ``"bfloat16"``); on the CPU it is float32.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import weights
from pipeline.config import section_config
from pipeline.decode import DecodeParams, Sample, iter_samples, stream_info
from pipeline.errors import ClipError, Reason
from pipeline.features import FeatureExtractor, FeatureSequence
from pipeline.provenance import code_version

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
    time_budget_s: float | None = 600.0  # wall-clock decoding budget per clip
    max_seconds: float | None = None  # extract only the clip's first seconds (tests, benchmarks); None: all

    def __post_init__(self):
        if self.crop > self.short_side:
            raise ValueError(f"[holistic] crop {self.crop} must not exceed short_side {self.short_side}")
        if self.batch_size < 1:
            raise ValueError("[holistic] batch_size must be at least 1")


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` window of an (H, W, C) image (TSN's CenterCrop)."""
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def _batches(samples: Iterator[Sample], size: int, crop: int) -> Iterator[tuple[list[float], np.ndarray]]:
    times, images = [], []
    for sample in samples:
        times.append(sample.t)
        images.append(centre_crop(sample.image, crop))
        if len(images) == size:
            yield times, np.stack(images)
            times, images = [], []
    if images:
        yield times, np.stack(images)


class HolisticExtractor(FeatureExtractor):
    modality = "holistic"
    name = "tsn-r50-kinetics400"
    dim = 2048

    def __init__(
        self, config: HolisticConfig = HolisticConfig(), *, untrained: bool = False, device: str | None = None
    ):
        import torch

        self.config = config
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.precision = "bfloat16" if self.device.startswith("cuda") else "float32"
        self.version = code_version("pipeline.holistic", "pipeline.decode", "pipeline.weights")
        self.model_spec = weights.get_spec(WEIGHTS)
        self.model, loaded = weights.load_model(
            WEIGHTS, cache_dir=config.weights_dir, untrained=untrained, seed=config.seed, device=self.device
        )
        self.weights_sha256 = loaded.sha256

    def decode_params(self) -> DecodeParams:
        c = self.config
        return DecodeParams(fps=c.fps, short_side=c.short_side, end_s=c.max_seconds, time_budget_s=c.time_budget_s)

    def params(self) -> dict:
        pre = self.model_spec.preprocess
        params = {
            **self.decode_params().as_dict(),
            "max_seconds": self.config.max_seconds,
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
            params["seed"] = self.config.seed  # seeded random weights differ by seed
        return params

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Features of a batch of cropped uint8 RGB images ``(N, crop, crop, 3)`` -> ``(N, 2048)``."""
        import torch

        x = torch.from_numpy(images).to(self.device)
        x = self.model_spec.preprocess.normalise(x)
        return weights.infer(self.model, x, self.precision)

    def compute(self, path: str | Path, clip_id: str) -> FeatureSequence:
        info = stream_info(path, clip_id)  # native upright size, as every modality records it
        times: list[float] = []
        chunks: list[np.ndarray] = []
        samples = iter_samples(path, self.decode_params(), clip_id)
        for batch_times, images in _batches(samples, self.config.batch_size, self.config.crop):
            try:
                chunks.append(self.embed(images))
            except RuntimeError as err:  # e.g. out of device memory: this clip fails, the run goes on
                raise ClipError(clip_id, Reason.EXTRACT_FAILED, f"holistic inference failed: {err}") from err
            times.extend(batch_times)
        if not chunks:
            raise ClipError(clip_id, Reason.ZERO_FRAMES, f"{path} gave no grid sample")
        features = np.concatenate(chunks).astype(np.float32)
        return FeatureSequence(
            timestamps=np.asarray(times, dtype=np.float64),
            valid=np.ones(len(times), dtype=bool),
            features=features,
            fps=self.config.fps,
            source_fps=info.fps,
            frame_width=info.width,
            frame_height=info.height,
        )


def build_extractor(
    config: HolisticConfig | Mapping[str, Any] | None = None, *, untrained: bool = False, device: str | None = None
) -> HolisticExtractor:
    """The holistic extractor from the ``[holistic]`` section (a mapping) or a :class:`HolisticConfig`.

    Raises :class:`~pipeline.errors.WeightsError` naming the fixing command when the TSN weights
    are not in the cache, unless ``untrained`` (explicit only) asks for seeded random weights.
    """
    config = section_config(HolisticConfig, config, "holistic")
    return HolisticExtractor(config, untrained=untrained, device=device)

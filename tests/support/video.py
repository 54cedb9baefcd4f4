"""Small synthetic clips for tests: RGB frames encoded to H.264 with PyAV."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    """Encode ``frames`` (H, W, 3 uint8 RGB, all one size) to ``path`` as H.264 at ``fps``."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())

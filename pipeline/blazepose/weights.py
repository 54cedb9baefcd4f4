"""BlazePose's two networks from the verified weights cache, on a device and in a precision.

The weights are the cache's ``blazepose_detector`` and ``blazepose_landmark_full`` (float32
tensors, sha256 recorded at import and checked on every load, like every other network). Their
source is the .tflite file inside the installed mediapipe wheel, pinned by its sha256 in the
registry, so a cache without them is filled from the wheel on first use (no download; a warning
says so); a cached file that fails verification is never overwritten: it stops the run with the
command that fixes it.
"""

from __future__ import annotations

import torch


def load_network(name: str, device: torch.device, dtype: torch.dtype, cache_dir=None) -> tuple[torch.nn.Module, str]:
    """Network ``name`` in eval mode, channels_last, on ``device`` in ``dtype``; and its weights sha256."""
    from pipeline.weights.cache import load_weights
    from pipeline.weights.fetch import ensure_bundled
    from pipeline.weights.registry import get_spec

    spec = get_spec(name)
    ensure_bundled(name, cache_dir=cache_dir)
    loaded = load_weights(name, cache_dir=cache_dir)
    model = spec.build()
    model.load_state_dict(loaded.state_dict)
    model = model.eval().to(device=device, dtype=dtype, memory_format=torch.channels_last)
    return model, loaded.sha256

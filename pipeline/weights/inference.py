"""The networks at run time: the one loader of every registered network (the appearance
extractors' and BlazePose's two), and the appearance extractors' one forward pass.

This module, :mod:`~pipeline.weights.nets` and :mod:`~pipeline.weights.preprocess` are the code
that computes appearance features (:func:`pipeline.weights.compute_modules`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pipeline.weights.cache import LoadedWeights, load_weights
from pipeline.weights.registry import get_spec

if TYPE_CHECKING:
    import torch


def load_model(
    name: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    untrained: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> tuple[torch.nn.Module, LoadedWeights]:
    """The registered network ``name`` ready for inference (:func:`for_inference`: eval mode,
    BatchNorms folded), channels_last on ``device`` in ``dtype`` (None: as stored), and its
    weights identity.

    A network whose file ships inside an installed package (BlazePose's, in the mediapipe
    wheel) is imported into the cache first when the cache has none of it. Untrained networks
    are initialised under ``torch.manual_seed(seed)`` inside a forked RNG, so the same seed gives
    the same weights without disturbing the caller's random state.
    """
    import torch

    from pipeline.weights.fetch import ensure_bundled

    spec = get_spec(name)
    ensure_bundled(name, cache_dir=cache_dir)
    loaded = load_weights(name, cache_dir=cache_dir, untrained=untrained)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.build()
    if loaded.state_dict is not None:
        model.load_state_dict(loaded.state_dict)
    return for_inference(model).to(device=device, dtype=dtype, memory_format=torch.channels_last), loaded


def for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in eval mode with every BatchNorm folded into the convolution that feeds it (a
    network without BatchNorm, such as BlazePose's TFLite graphs, is only put in eval mode).

    Equal in float32 up to rounding (about 1e-6 relative, ``tests/test_weights.py``). Under
    bfloat16 autocast a BatchNorm runs in float32 between two casts, so folding it roughly
    doubles a ResNet-50's frames/s on this CPU (``bench/bench_build.py``). The model is then
    run channels_last: the convolution kernels of oneDNN (AMX, AVX512) and cuDNN are fastest in it.
    """
    from torch import nn
    from torch.fx.experimental.optimization import fuse

    if not any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d) for m in model.modules()):
        return model.eval()
    return fuse(model.eval())


def infer(model, x, precision: str):
    """``model(x)`` without autograd, in channels_last, under bfloat16 autocast when ``precision``
    says so (CPU or CUDA), returned as a float32 numpy array; the one forward pass the appearance
    extractors share."""
    import torch

    from pipeline.core.runtime import autocast

    if x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(x.device.type, precision):
        out = model(x)
    return out.float().cpu().numpy()

"""Pre-trained weights handled like a model zoo: a registry, a verified local cache, importers.

The networks of docs/BEHAVIOUR.md section 4 (holistic, facial, scenic; BlazePose for pose), one job per module:

* :mod:`~pipeline.weights.preprocess`: how each network expects its input (:class:`Preprocess`);
* :mod:`~pipeline.weights.nets`: the architecture builders, classifier head removed;
* :mod:`~pipeline.weights.convert`: published checkpoint -> the architecture's state dict;
* :mod:`~pipeline.weights.registry`: the networks described as data (:data:`REGISTRY`);
* :mod:`~pipeline.weights.cache`: the verified local cache and :func:`load_weights`;
* :mod:`~pipeline.weights.fetch`: reading, importing and downloading published checkpoints;
* :mod:`~pipeline.weights.inference`: the network at run time (:func:`load_model`, :func:`infer`);
* :mod:`~pipeline.weights.tflite` and :mod:`~pipeline.weights.graphnet`: BlazePose's two TFLite
  graphs (in the mediapipe wheel) read without tensorflow and run as torch modules, for the
  torch pose backend (:mod:`pipeline.blazepose`).

Only the modules of :func:`compute_modules` compute features: an appearance extractor's version
is derived from them (:class:`pipeline.modalities.features.NetworkExtractor`). The others decide which file
is loaded and check it: what they produce is pinned by the weights' sha256, and the registry's
preprocessing constants by the extractors' parameters, as far as those record them.
"""

from __future__ import annotations

from types import ModuleType


def compute_modules() -> tuple[ModuleType, ...]:
    """The modules that compute appearance features (part of those extractors' versions)."""
    from pipeline.weights import inference, nets, preprocess

    return (preprocess, nets, inference)


def graph_modules() -> tuple[ModuleType, ...]:
    """The code that runs BlazePose's graphs: part of the torch pose backend's version
    (:func:`pipeline.blazepose.track.backend_code`), not of the appearance extractors'."""
    from pipeline.weights import graphnet

    return (graphnet,)

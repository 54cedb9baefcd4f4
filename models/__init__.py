"""Virality models (paper section 4, SPEC section 5): registry, stream interface, checkpoints.

Every model is registered by name in :data:`MODELS` and built with
``build_model(name, **overrides)`` (:mod:`models.registry`, which also owns the one checkpoint
format of :func:`save_checkpoint` and :func:`load_checkpoint`)::

    model = build_model("psgcn", downsample=False)      # ablation: no graph down-sampling
    out = model(x, mask)                                 # StreamOutput(score (N,), feature (N, F))

The names below are loaded from their modules on first use, so ``import models`` itself is
cheap (no torch): the command line imports it while it builds its parser, to read
:mod:`models.ablations` and to register the models' configuration sections.

Configuration sections: ``[train]``, ``[data]``, ``[sports]`` and one per registered model
(``[psgcn]``, ``[rtcn]``, ...) are the models' (:data:`models.sections.SECTIONS`). Importing this
package registers them with :func:`pipeline.config.register_sections`, which imports them (and
torch) only when a configuration file has a section no pipeline stage reads.
"""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.config import register_sections

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        (
            "ARCHS",
            "CONFIGS",
            "MODELS",
            "build_from_config",
            "build_model",
            "config_dict",
            "config_dict_shallow",
            "load_checkpoint",
            "model_config",
            "parameter_count",
            "save_checkpoint",
        ),
        "models.registry",
    ),
    **dict.fromkeys(
        ("STREAMS", "AttentiveFusion", "FusionOutput", "MultiModalConfig", "MultiModalModel", "average_fusion"),
        "models.fusion",
    ),
    **dict.fromkeys(("LSTMConfig", "LSTMRegressor", "SVRBaseline"), "models.baselines"),
    **dict.fromkeys(("PSGCN", "PSGCNConfig"), "models.psgcn"),
    **dict.fromkeys(("RTCN", "RTCNConfig"), "models.rtcn"),
    **dict.fromkeys(("STGCN", "STGCNConfig"), "models.stgcn"),
    "StreamOutput": "models.units",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        # not an export: the import system then looks for a submodule of that name
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


register_sections("models.sections:SECTIONS")

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
(``[psgcn]``, ``[rtcn]``, ...) are the models' (:data:`models.sections.SECTIONS`).
:func:`register_config` names them to :func:`pipeline.core.config.register_sections` (a call, made
when this package is imported and again by the command line at start-up); they are imported
(with torch) only when a configuration file has a section no pipeline stage reads.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.config import register_sections

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        (
            "MODELS",
            "Model",
            "build_from_config",
            "build_model",
            "build_with",
            "config_dict",
            "load_checkpoint",
            "model_config",
            "parameter_count",
            "save_checkpoint",
        ),
        "registry",
    ),
    **dict.fromkeys(
        ("streams", "AttentiveFusion", "FusionOutput", "MultiModalConfig", "MultiModalModel", "average_fusion"),
        "fusion",
    ),
    **dict.fromkeys(("LSTMConfig", "LSTMRegressor", "SVRBaseline"), "baselines"),
    **dict.fromkeys(("PSGCN", "PSGCNConfig"), "psgcn"),
    **dict.fromkeys(("RTCN", "RTCNConfig"), "rtcn"),
    **dict.fromkeys(("STGCN", "STGCNConfig"), "stgcn"),
    "StreamOutput": "units",
}
__all__ = sorted(_EXPORTS)


def _module(name: str):
    """The submodule ``name`` of this package, imported now (named here, so the import graph shows it)."""
    from models import baselines, fusion, psgcn, registry, rtcn, stgcn, units

    return {
        "baselines": baselines,
        "fusion": fusion,
        "psgcn": psgcn,
        "registry": registry,
        "rtcn": rtcn,
        "stgcn": stgcn,
        "units": units,
    }[name]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        # not an export: the import system then looks for a submodule of that name
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def _sections() -> dict[str, type]:
    from models.sections import SECTIONS

    return SECTIONS


def register_config() -> None:
    """Register the models' configuration sections with the pipeline (downward, by a call)."""
    register_sections(_sections)


register_config()

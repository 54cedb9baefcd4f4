"""Virality models (paper section 4, SPEC section 5): registry, stream interface, checkpoints.

Every model is registered by name in :data:`MODELS` and built with
``build_model(name, **overrides)``, the overrides being fields of its config dataclass::

    model = build_model("psgcn", downsample=False)      # ablation: no graph down-sampling
    out = model(x, mask)                                 # StreamOutput(score (N,), feature (N, F))

Stream models have ``input_kind`` "skeleton" (``x`` (N, 3, T, 16)) or "sequence" (``x``
(N, T, D)) and take a frame mask (N, T); "multimodal" takes a dict of those and returns a
:class:`~models.fusion.FusionOutput`. Each model has ``config`` (its frozen dataclass),
``arch`` (the class it rebuilds from), ``feature_dim`` and ``shared_parameters()`` (the last
layer every loss term reaches, which GradNorm measures).

choice: a stream's score is the linear output of its head, with no sigmoid, although targets lie
in [0, 1] (SPEC section 3): a squashing function would starve the ranking terms of gradient for
clips near either end of the scale.

Checkpoints carry the architecture and its config, so :func:`load_checkpoint` rebuilds the
model exactly; they hold plain tensors and Python values and load with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.baselines import LSTMConfig, LSTMRegressor, SVRBaseline, build_lstm
from models.fusion import (
    STREAMS,
    AttentiveFusion,
    FusionOutput,
    MultiModalConfig,
    MultiModalModel,
    average_fusion,
    build_multimodal,
)
from models.psgcn import PSGCN, PSGCNConfig, build_psgcn
from models.rtcn import RTCN, RTCNConfig, build_rtcn, build_tcn
from models.stgcn import STGCN, STGCNConfig, build_stgcn
from models.units import StreamOutput

__all__ = [
    "ARCHS",
    "CONFIGS",
    "MODELS",
    "STREAMS",
    "AttentiveFusion",
    "FusionOutput",
    "LSTMConfig",
    "LSTMRegressor",
    "MultiModalConfig",
    "MultiModalModel",
    "PSGCN",
    "PSGCNConfig",
    "RTCN",
    "RTCNConfig",
    "STGCN",
    "STGCNConfig",
    "SVRBaseline",
    "StreamOutput",
    "average_fusion",
    "build_from_config",
    "build_model",
    "load_checkpoint",
    "parameter_count",
    "save_checkpoint",
]

# name -> builder(**config overrides). Baselines and ablations that are a switch of another
# model's config (tcn = rtcn without relational pooling) get their own name where the paper
# names them; the ablation switches themselves are config fields.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "psgcn": build_psgcn,
    "stgcn": build_stgcn,
    "rtcn": build_rtcn,
    "tcn": build_tcn,
    "lstm": build_lstm,
    "multimodal": build_multimodal,
}

# name -> config dataclass, for reading a model's [section] of a run's TOML file.
CONFIGS: dict[str, type] = {
    "psgcn": PSGCNConfig,
    "stgcn": STGCNConfig,
    "rtcn": RTCNConfig,
    "tcn": RTCNConfig,
    "lstm": LSTMConfig,
    "multimodal": MultiModalConfig,
}

# arch -> (model class, config class): what a checkpoint is rebuilt from.
ARCHS: dict[str, tuple[type[nn.Module], type]] = {
    "psgcn": (PSGCN, PSGCNConfig),
    "stgcn": (STGCN, STGCNConfig),
    "rtcn": (RTCN, RTCNConfig),
    "lstm": (LSTMRegressor, LSTMConfig),
    "multimodal": (MultiModalModel, MultiModalConfig),
}

CHECKPOINT_VERSION = 1


def _tuples(overrides: dict[str, Any]) -> dict[str, Any]:
    # TOML and JSON give lists; config dataclasses are frozen and hold tuples
    return {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with config fields ``overrides`` (unknown fields raise)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(MODELS)}")
    return MODELS[name](**_tuples(overrides))


def build_from_config(
    name: str, config: dict[str, Any] | None, section: str | None = None, **overrides: Any
) -> nn.Module:
    """Build ``name`` from the ``[section]`` table (default: the model's name) of a run's
    configuration (:func:`pipeline.config.load_config`), then ``overrides`` that are not None.

    Unknown keys raise :class:`pipeline.config.ConfigError` naming the section.
    """
    from pipeline.config import stage_config

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(MODELS)}")
    section = section or name
    values = dict((config or {}).get(section, {}))
    values.update({k: v for k, v in overrides.items() if v is not None})
    stage_config(CONFIGS[name], {section: values}, section)  # validates the keys against the dataclass
    return build_model(name, **values)


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain Python values (nested configs as dicts, tuples kept)."""
    return dataclasses.asdict(config)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: Any | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    epoch: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` with its architecture and config (``model.config`` by default), atomically.

    ``optimizer``, ``scheduler`` and ``epoch`` make the checkpoint resumable; ``extra`` holds any
    other plain values (metrics, loss-weight history, lineage).
    """
    path = Path(path)
    arch = getattr(model, "arch", None)
    if arch not in ARCHS:
        raise ValueError(f"model {type(model).__name__} has no registered architecture")
    config = model.config if config is None else config
    payload = {
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "config": config_dict(config),
        "state_dict": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "epoch": epoch,
        "extra": extra or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint and load its weights; returns (model, checkpoint dict).

    The dict keeps ``optimizer``, ``scheduler``, ``epoch`` and ``extra`` for resuming.
    """
    ckpt = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("arch") not in ARCHS:
        raise ValueError(f"{path} is not a vdv model checkpoint")
    model_cls, config_cls = ARCHS[ckpt["arch"]]
    config = config_cls(**_tuples(ckpt["config"]))
    model = model_cls(config)
    model.load_state_dict(ckpt["state_dict"])
    return model, ckpt

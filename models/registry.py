"""The model registry and the one checkpoint format (paper section 4, SPEC section 5).

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.baselines import LSTMConfig, LSTMRegressor, build_lstm
from models.fusion import MultiModalConfig, MultiModalModel, build_multimodal
from models.psgcn import PSGCN, PSGCNConfig, build_psgcn
from models.rtcn import RTCN, RTCNConfig, build_rtcn, build_tcn
from models.stgcn import STGCN, STGCNConfig, build_stgcn

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

CHECKPOINT_VERSION = 2  # 2: one format for every model and for training (architecture, configs, states)


def _tuples(overrides: dict[str, Any]) -> dict[str, Any]:
    # TOML and JSON give lists; config dataclasses are frozen and hold tuples
    return {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with config fields ``overrides`` (unknown fields raise)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(MODELS)}")
    return MODELS[name](**_tuples(overrides))


def model_config(name: str, config: dict[str, Any] | None = None, **overrides: Any) -> Any:
    """The config dataclass of model ``name`` from a run's configuration, then ``overrides``.

    ``config`` is the whole TOML mapping (:func:`pipeline.sections.load_config`); the model's own
    ``[<name>]`` table is read. The multi-modal model
    also takes its skeleton stream from ``[psgcn]`` and its appearance streams from ``[rtcn]``,
    a nested ``psgcn``/``rtcn`` table of ``[multimodal]`` winning key by key. ``overrides`` that
    are None are ignored; a dict override of a nested config is merged into it. Unknown keys
    raise :class:`pipeline.config.ConfigError` naming the section.
    """
    from pipeline.config import ConfigError, stage_config

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(MODELS)}")
    config = config or {}
    cls = CONFIGS[name]
    values = dict(config.get(name, {}))
    stage_config(cls, {name: values}, name)  # validates the keys against the dataclass
    if name == "multimodal":
        for nested, nested_cls in (("psgcn", PSGCNConfig), ("rtcn", RTCNConfig)):
            merged = dict(config.get(nested, {}))
            stage_config(nested_cls, {nested: merged}, nested)
            merged.update(values.get(nested, {}))
            merged.update(overrides.pop(nested, None) or {})
            values[nested] = _tuples(merged)
    if name == "tcn":
        values.setdefault("relational_pooling", False)  # TCN = RTCN without relational pooling
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls(**_tuples(values))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[{name}]: {err}") from err


def build_from_config(
    name: str, config: dict[str, Any] | None, section: str | None = None, **overrides: Any
) -> nn.Module:
    """Build ``name`` from a run's configuration (see :func:`model_config`), then ``overrides``.

    ``section`` reads another table than the model's name for its own keys.
    """
    if section is not None and section != name:
        config = {**(config or {}), name: dict((config or {}).get(section, {}))}
    cfg = model_config(name, config, **overrides)
    return MODELS[name](**config_dict_shallow(cfg))


def config_dict_shallow(config: Any) -> dict[str, Any]:
    """A config dataclass's fields, nested configs kept as they are."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain Python values (nested configs as dicts, tuples kept)."""
    return dataclasses.asdict(config)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    train_config: dict[str, Any] | None = None,
    data_config: dict[str, Any] | None = None,
    dims: dict[str, int] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    gradnorm: Any | None = None,
    epoch: int = 0,
    step: int = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the one checkpoint format, atomically: architecture, full model config, training
    and data configs, and the states.

    ``model.config`` is the model's full configuration (nested configs included), so
    :func:`load_checkpoint` rebuilds exactly this architecture whatever the defaults are later.
    ``train_config`` / ``data_config`` are plain dicts (:class:`models.train.TrainConfig`,
    :class:`models.data.DataConfig`); ``dims`` the appearance streams' feature sizes.
    ``optimizer``, ``scheduler``, ``gradnorm`` (:class:`models.losses.GradNorm`), ``epoch`` and
    ``step`` make it resumable; ``extra`` holds any other plain values (metrics, lineage).
    """
    from pipeline.tables import atomic_write

    arch = getattr(model, "arch", None)
    if arch not in ARCHS:
        raise ValueError(f"model {type(model).__name__} has no registered architecture")
    payload = {
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "config": config_dict(model.config),
        "train_config": _plain(train_config or {}),
        "data_config": _plain(data_config or {}),
        "dims": dict(dims or {}),
        "state_dict": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "gradnorm": None
        if gradnorm is None
        else {"module": gradnorm.state_dict(), "optimizer": gradnorm.optimizer.state_dict()},
        "epoch": int(epoch),
        "step": int(step),
        "rng": torch.get_rng_state(),
        "extra": _plain(extra or {}),
    }
    return atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    # tuples become lists and everything else must be JSON-like: what weights_only loads
    import json

    return json.loads(json.dumps(values))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint and load its weights; returns (model in eval mode, checkpoint dict).

    The dict keeps ``train_config``, ``data_config``, ``dims``, the optimizer, scheduler and
    GradNorm states, ``epoch`` and ``step`` for resuming. Refuses files of another format.
    """
    try:
        ckpt = torch.load(Path(path), map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is "not a checkpoint"
        raise ValueError(f"{path} is not a readable vdv model checkpoint: {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("arch") not in ARCHS:
        raise ValueError(f"{path} is not a vdv model checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint format {ckpt.get('version')}, this code reads {CHECKPOINT_VERSION}")
    ckpt = upgrade_checkpoint(ckpt)
    model_cls, config_cls = ARCHS[ckpt["arch"]]
    config = config_cls(**_tuples(ckpt["config"]))
    model = model_cls(config)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model.to(map_location), ckpt


def upgrade_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint as today's code names things. One written before the models and the pipeline
    shared one name per modality calls the skeleton stream ``skeletal`` (its streams, module
    names, train config and dims) and gives the fused model's widths as ``holistic_dim``,
    ``facial_dim`` and ``scenic_dim``; they are read as ``pose`` and ``dims``. A current
    checkpoint comes back unchanged."""
    from pipeline import modalities as registry

    def known(name: str) -> str | None:
        try:
            return registry.canonical(name)
        except ValueError:
            return None

    ckpt = dict(ckpt)
    config = dict(ckpt["config"])
    if ckpt["arch"] == "multimodal":
        renamed = {s: known(s) or s for s in config.get("streams", ())}
        config["streams"] = [renamed[s] for s in config.get("streams", ())]
        dims = dict(config.get("dims") or {})
        for key in [k for k in config if k.endswith("_dim") and known(k[: -len("_dim")])]:
            dims.setdefault(known(key[: -len("_dim")]), config.pop(key))
        config["dims"] = dims
        ckpt["state_dict"] = {_renamed_key(k, renamed): v for k, v in ckpt["state_dict"].items()}
    ckpt["config"] = config
    ckpt["dims"] = {known(m) or m: d for m, d in (ckpt.get("dims") or {}).items()}
    train = dict(ckpt.get("train_config") or {})
    if train.get("modalities"):
        train["modalities"] = [known(m) or m for m in train["modalities"]]
    ckpt["train_config"] = train
    return ckpt


def _renamed_key(key: str, renamed: dict[str, str]) -> str:
    """``streams.<old name>.…`` -> ``streams.<name>.…`` of a fused model's state dict."""
    parts = key.split(".")
    if len(parts) > 1 and parts[0] == "streams" and parts[1] in renamed:
        parts[1] = renamed[parts[1]]
    return ".".join(parts)

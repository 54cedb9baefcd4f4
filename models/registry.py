"""The model registry and the one checkpoint format (paper section 4, SPEC section 5).

Every model is registered once, by name, in :data:`MODELS` (a :class:`Model` record: its class,
its config dataclass, the config values its name implies) and built with
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.baselines import LSTMConfig, LSTMRegressor
from models.fusion import MultiModalConfig, MultiModalModel
from models.psgcn import PSGCN, PSGCNConfig
from models.rtcn import RTCN, RTCNConfig
from models.stgcn import STGCN, STGCNConfig


@dataclass(frozen=True)
class Model:
    """One registered model: its name (and ``[<name>]`` config section), the class it is built
    from and the config dataclass that class takes.

    ``defaults`` are the config values that make the name (TCN = RTCN without relational
    pooling); ``nested`` the config sections whose tables fill a nested config field (the fused
    model's skeleton stream reads ``[psgcn]``, its appearance streams ``[rtcn]``). A checkpoint
    names the class by its ``arch``; the model whose name is that arch rebuilds it.
    """

    name: str
    cls: type[nn.Module]
    config: type
    defaults: tuple[tuple[str, Any], ...] = ()
    nested: tuple[tuple[str, type], ...] = ()

    @property
    def input_kind(self) -> str:
        """What the class takes: "skeleton", "sequence" or "multimodal" (its ``input_kind``)."""
        return self.cls.input_kind

    def build(self, **overrides: Any) -> nn.Module:
        """The model with its config's defaults, the name's ``defaults``, then ``overrides``."""
        return self.cls(self.config(**{**dict(self.defaults), **_tuples(overrides)}))


# One registration per model. Baselines and ablations that are a switch of another model's
# config (tcn = rtcn without relational pooling) get their own name where the paper names them;
# the ablation switches themselves are config fields.
MODELS: dict[str, Model] = {
    m.name: m
    for m in (
        Model("psgcn", PSGCN, PSGCNConfig),
        Model("stgcn", STGCN, STGCNConfig),
        Model("rtcn", RTCN, RTCNConfig),
        Model("tcn", RTCN, RTCNConfig, defaults=(("relational_pooling", False),)),
        Model("lstm", LSTMRegressor, LSTMConfig),
        Model("multimodal", MultiModalModel, MultiModalConfig, nested=(("psgcn", PSGCNConfig), ("rtcn", RTCNConfig))),
    )
}


def registered(name: str) -> Model:
    """The registration of model ``name``; an unknown name raises ValueError listing the known."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(MODELS)}")
    return MODELS[name]


def taking(input_kind: str) -> tuple[str, ...]:
    """The names of the models whose input is ``input_kind``, in registration order."""
    return tuple(n for n, m in MODELS.items() if m.input_kind == input_kind)


def sections() -> dict[str, type]:
    """config section -> config dataclass, one per registered model (``[psgcn]``, ``[tcn]``, ...)."""
    return {n: m.config for n, m in MODELS.items()}


def _architecture(arch: Any) -> Model | None:
    """The registration that rebuilds a checkpoint of ``arch`` (the model named like its class's arch)."""
    found = MODELS.get(arch) if isinstance(arch, str) else None
    return found if found is not None and found.cls.arch == arch else None


CHECKPOINT_VERSION = 2  # 2: one format for every model and for training (architecture, configs, states)


def _tuples(overrides: dict[str, Any]) -> dict[str, Any]:
    # TOML and JSON give lists; config dataclasses are frozen and hold tuples
    return {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with config fields ``overrides`` (unknown fields raise)."""
    return registered(name).build(**overrides)


def model_config(name: str, config: dict[str, Any] | None = None, **overrides: Any) -> Any:
    """The config dataclass of model ``name`` from a run's configuration, then ``overrides``.

    ``config`` is the whole TOML mapping (:func:`pipeline.sections.load_config`); the model's own
    ``[<name>]`` table is read. The multi-modal model
    also takes its skeleton stream from ``[psgcn]`` and its appearance streams from ``[rtcn]``,
    a nested ``psgcn``/``rtcn`` table of ``[multimodal]`` winning key by key. ``overrides`` that
    are None are ignored; a dict override of a nested config is merged into it. Unknown keys
    raise :class:`pipeline.core.config.ConfigError` naming the section.
    """
    from pipeline.core.config import ConfigError, stage_config

    model = registered(name)
    config = config or {}
    cls = model.config
    values = dict(config.get(name, {}))
    stage_config(cls, {name: values}, name)  # validates the keys against the dataclass
    for nested, nested_cls in model.nested:
        merged = dict(config.get(nested, {}))
        stage_config(nested_cls, {nested: merged}, nested)
        merged.update(values.get(nested, {}))
        merged.update(overrides.pop(nested, None) or {})
        values[nested] = _tuples(merged)
    for key, value in model.defaults:
        values.setdefault(key, value)
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
    return build_with(name, model_config(name, config, **overrides))


def build_with(name: str, config: Any) -> nn.Module:
    """The registered model ``name`` built with the config dataclass ``config`` as it is."""
    return registered(name).cls(config)


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
    from pipeline.core.tables import atomic_write

    arch = getattr(model, "arch", None)
    if _architecture(arch) is None:
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
    if not isinstance(ckpt, dict) or _architecture(ckpt.get("arch")) is None:
        raise ValueError(f"{path} is not a vdv model checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint format {ckpt.get('version')}, this code reads {CHECKPOINT_VERSION}")
    ckpt = upgrade_checkpoint(ckpt)
    rebuilt = _architecture(ckpt["arch"])
    model = rebuilt.cls(rebuilt.config(**_tuples(ckpt["config"])))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model.to(map_location), ckpt


def upgrade_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint as today's code names things. One written before the models and the pipeline
    shared one name per modality calls the skeleton stream ``skeletal`` (its streams, module
    names, train config and dims) and gives the fused model's widths as ``holistic_dim``,
    ``facial_dim`` and ``scenic_dim``; they are read as ``pose`` and ``dims``. A current
    checkpoint comes back unchanged."""
    from pipeline.modalities import registry

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

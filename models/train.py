"""Training of the virality models (paper section 4.3, SPEC section 5 "Training").

Adam, batch 8, learning rate 1e-4 halved every 10 epochs (StepLR). The loss is
``a * MSE(final) + b * Rank(final) + c * sum_m Rank(stream_m)`` (SPEC section 5) with pairwise
margin ranking over the batch; the weights a, b, c are balanced by GradNorm (Chen et al., 2018)
and logged per step to ``<out>/train_log.jsonl``. Ablations drop the MSE or the ranking terms
(their weight is fixed at 0).

The model is built from the run's model sections (``[psgcn]``, ``[rtcn]``, ``[multimodal]``,
... as :func:`models.model_config` reads them for ``vdv models``), with the training config's
ablation switches on top. The checkpoint (``<out>/checkpoint.pt``) is the one format of
:func:`models.save_checkpoint`: architecture, full model config, train and data configs, stream
dimensions, model, optimizer, scheduler and GradNorm states, epoch, step and RNG state. Train,
resume, evaluate and feedback all read it with :func:`models.load_checkpoint`.

Profiles (``[train] profile``): ``paper`` (the default) is SPEC section 5 exactly. ``small-data``
is for a few hundred clips or fewer, where the paper's settings learn too slowly to be useful
within a short run (measured by ``bench/learning_check.py``, docs/RESULTS.md "Learning check"): see
:data:`PROFILES`. A profile sets the fields left at the paper's default; a field set to another
value in ``[train]`` or on the command line wins.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from models.data import DataConfig, ViralityDataset, collate, side_ids, track_split
from models.fusion import streams
from pipeline.modalities import registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training run parameters. Config section ``[train]``; defaults are the paper's."""

    profile: str = "paper"  # paper | small-data (see PROFILES)
    # multimodal | psgcn | stgcn (skeleton) | rtcn | tcn | lstm (one stream); svr (vdv evaluate only)
    model: str = "multimodal"
    modalities: tuple[str, ...] = field(default_factory=streams)  # registered modalities; default: all
    epochs: int = 30
    batch_size: int = 8  # paper section 5.1
    lr: float = 1e-4
    lr_step_epochs: int = 10  # StepLR: lr halved every 10 epochs
    lr_gamma: float = 0.5
    weight_decay: float = 0.0
    margin: float = 0.05  # margin of the pairwise ranking loss, in score units (scores in [0, 1])
    mse: bool = True  # False: the "w/o MSE" ablation
    ranking: bool = True  # False: the "w/o ranking" ablation (both ranking terms)
    gradnorm: bool = True  # balance a, b, c by GradNorm; False keeps them at 1
    gradnorm_alpha: float = 1.5  # restoring-force strength (Chen et al., 2018, section 3)
    gradnorm_lr: float = 0.025  # learning rate of the loss weights
    # ablation switches; None keeps the model section's own value ([psgcn] downsample, ...)
    downsample: bool | None = None  # False: PSGCN without graph down-sampling
    relational_pooling: bool | None = None  # False: RTCN without relational pooling
    fusion: str = "attention"  # attention | average ("average fusion" ablation)
    dropout: float | None = None  # None: the model's own (0.5, SPEC section 5)
    seed: int = 0
    device: str = "auto"  # auto: CUDA when present, else CPU
    num_workers: int = 0

    def __post_init__(self):
        # older configs and checkpoints name the skeleton stream "skeletal"
        object.__setattr__(self, "modalities", tuple(registry.canonical(m) for m in self.modalities))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resolved(self) -> TrainConfig:
        """This config with its profile's values in the fields left at the paper's default."""
        if self.profile not in PROFILES:
            raise ValueError(f"unknown training profile {self.profile!r}; one of {sorted(PROFILES)}")
        defaults = TrainConfig()
        change = {k: v for k, v in PROFILES[self.profile].items() if getattr(self, k) == getattr(defaults, k)}
        return dataclasses.replace(self, **change)


# Named training profiles. "paper" is SPEC section 5. "small-data" is what the learning check
# (bench/learning_check.py, docs/RESULTS.md "Learning check") needed to learn a movement-structure score
# from a few real clips within a short run: a 10x learning rate held constant (the paper halves
# it every 10 epochs of 4,292 clips), batches of 32 (more ranking pairs per step) and no dropout
# (with dropout 0.1, a run left the constant predictor anywhere from epoch 30 to never within
# 160 epochs, and the late ones scored low held out). The loss (MSE, ranking, GradNorm) is the
# paper's in both.
PROFILES: dict[str, dict] = {
    "paper": {},
    "small-data": {"lr": 1e-3, "batch_size": 32, "dropout": 0.0, "lr_step_epochs": 1000},
}


def pick_device(name: str = "auto"):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Outputs(NamedTuple):
    final: object  # (N,) fused score
    streams: object  # (N, M) per-stream scores
    stream_mask: object  # (N, M) bool
    weights: object  # (N, M) modality weights (None for one stream)


# -- models ---------------------------------------------------------------------------------------


def build(config: TrainConfig, dims: dict[str, int], sections: dict | None = None):
    """The model a config asks for, from the run's model ``sections`` (the TOML mapping: its
    ``[psgcn]``, ``[rtcn]``, ``[multimodal]``, ... tables) with the training switches on top;
    ``dims`` gives each appearance stream's feature size."""
    from models.registry import build_with, model_config, taking

    kinds = [registry.get(m).stream for m in config.modalities]
    if config.model in taking("skeleton"):
        if kinds != ["skeleton"]:
            skeletons = registry.with_stream("skeleton")
            raise ValueError(f"{config.model} is a skeleton model; modalities must be one of {skeletons}")
        extra = {"downsample": config.downsample} if config.model == "psgcn" else {}
        cfg = model_config(config.model, sections, dropout=config.dropout, **extra)
    elif config.model in taking("sequence"):
        if kinds != ["sequence"]:
            raise ValueError(f"{config.model} takes exactly one sequence modality, got {config.modalities}")
        extra = {"relational_pooling": config.relational_pooling} if config.model == "rtcn" else {}
        cfg = model_config(
            config.model, sections, input_dim=dims[config.modalities[0]], dropout=config.dropout, **extra
        )
    elif config.model == "multimodal":
        psgcn = {"dropout": config.dropout, "downsample": config.downsample}
        rtcn = {"dropout": config.dropout, "relational_pooling": config.relational_pooling}
        cfg = model_config(
            "multimodal",
            sections,
            streams=tuple(config.modalities),
            dims={m: dims[m] for m, kind in zip(config.modalities, kinds, strict=True) if kind == "sequence"},
            psgcn={k: v for k, v in psgcn.items() if v is not None},
            rtcn={k: v for k, v in rtcn.items() if v is not None},
            average_fusion=True if config.fusion == "average" else None,
        )
    elif config.model == "svr":
        raise ValueError("the SVR baseline has no network to train: fit it per track with vdv evaluate --model svr")
    else:
        raise ValueError(
            f"unknown model {config.model!r}; one of {taking('skeleton') + taking('sequence') + taking('multimodal')}"
        )
    return build_with(config.model, cfg)


def forward(model, batch: dict, config: TrainConfig, device) -> Outputs:
    """Run ``model`` on a collated batch; one output layout for single streams and fusion."""

    mods = config.modalities
    stream_mask = batch["stream_mask"].to(device)
    if config.model == "multimodal":
        inputs = {m: (batch[m].to(device), batch[f"{m}_mask"].to(device)) for m in mods}
        out = model(inputs, stream_mask)  # models.fusion.FusionOutput
        return Outputs(out.score, out.stream_scores, stream_mask, out.weights)
    m = mods[0]
    out = model(batch[m].to(device), batch[f"{m}_mask"].to(device))
    return Outputs(out.score, out.score[:, None], stream_mask, None)


# -- losses ---------------------------------------------------------------------------------------


def make_loss(config: TrainConfig):
    """Eq. 14 of the paper with GradNorm-balanced weights (:mod:`models.losses`)."""
    from models.losses import LossConfig, ViralityLoss

    return ViralityLoss(
        LossConfig(
            margin=config.margin,
            # only the fused model has per-stream scores; a single stream has two terms
            stream_ranking=config.model == "multimodal",
            use_mse=config.mse,
            use_ranking=config.ranking,
            gradnorm=config.gradnorm,
            alpha=config.gradnorm_alpha,
            gradnorm_lr=config.gradnorm_lr,
        )
    )


# -- the loop -------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    model: object
    history: list[dict]
    checkpoint: Path | None


@dataclass
class _Run:
    """The moving parts of one training run, and where it stands."""

    model: Any
    optimizer: Any
    scheduler: Any
    loss: Any  # models.losses.ViralityLoss
    device: Any
    epoch: int = 0  # the next epoch to train
    step: int = 0  # optimizer steps taken


def _make_loader(ds, config: TrainConfig, shuffle: bool, seed: int):
    import torch
    from torch.utils.data import DataLoader

    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=config.batch_size,
        shuffle=shuffle,
        generator=g,
        num_workers=config.num_workers,
        drop_last=False,
        collate_fn=collate,
    )


def fit(
    train_ds: ViralityDataset,
    config: TrainConfig = TrainConfig(),
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    data_config: DataConfig | None = None,
    sections: dict | None = None,
) -> TrainResult:
    """Train on ``train_ds``; with ``out_dir``, write a checkpoint per epoch and the JSONL log.

    ``sections`` is the run's TOML mapping, for the model's own sections (:func:`build`). With
    ``resume`` the model is rebuilt from the checkpoint's architecture and config, not from
    ``sections``, so a resumed run continues exactly the model it saved.
    """
    import torch

    from pipeline.core.progress import track  # a bar with a rate and time left, on a terminal only

    config = config.resolved()
    if not (config.mse or config.ranking):
        raise ValueError("every loss term is disabled (mse=False and ranking=False)")
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    dims = {m: train_ds.dims[m] for m in config.modalities}
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / "checkpoint.pt" if out else None
    run = _start(config, dims, sections, ckpt_path if resume else None)
    if out:
        out.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    with open(out / "train_log.jsonl", "a") if out else contextlib.nullcontext() as step_log:
        for epoch in track(range(run.epoch, config.epochs), "train", unit="epoch"):
            summary = _train_epoch(run, train_ds, config, epoch, step_log)
            history.append(summary)
            log.info("epoch %d: loss %.4f (%.1f clips/s)", epoch, summary["loss"], summary["clips_per_s"])
            if ckpt_path is not None:
                _save(ckpt_path, run, config, data_config or train_ds.config, dims)
    return TrainResult(run.model, history, ckpt_path)


def _start(config: TrainConfig, dims: dict[str, int], sections: dict | None, checkpoint: Path | None) -> _Run:
    """A fresh model, optimizer, scheduler and loss, or those saved in ``checkpoint`` when it exists."""
    import torch

    from models import load_checkpoint

    device = pick_device(config.device)
    state = None
    if checkpoint is not None and checkpoint.exists():
        model, state = load_checkpoint(checkpoint, device)
        saved, now = state["train_config"], json.loads(json.dumps(config.as_dict()))
        if saved != now:
            log.warning(
                "resuming with a config that differs from the checkpoint's: %s",
                {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v},
            )
    else:
        model = build(config, dims, sections).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step_epochs, gamma=config.lr_gamma)
    loss = make_loss(config)
    if loss.gradnorm is not None:
        loss.gradnorm.to(device)
    run = _Run(model, optimizer, scheduler, loss, device)
    if state is not None:
        _restore(run, state)
        log.info("resumed from %s at epoch %d", checkpoint, run.epoch)
    return run


def _restore(run: _Run, state: dict) -> None:
    """Optimizer, scheduler, GradNorm and RNG states, epoch and step of a checkpoint."""
    import torch

    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.loss.gradnorm is not None and state["gradnorm"]:
        run.loss.gradnorm.load_state_dict(state["gradnorm"]["module"])
        run.loss.gradnorm.optimizer.load_state_dict(state["gradnorm"]["optimizer"])
    run.epoch, run.step = int(state["epoch"]), int(state["step"])
    torch.set_rng_state(state["rng"])


def _train_epoch(run: _Run, ds: ViralityDataset, config: TrainConfig, epoch: int, step_log: IO[str] | None) -> dict:
    """One pass over ``ds`` in a fresh seeded order; returns the epoch's summary."""
    run.model.train()
    loader = _make_loader(ds, config, shuffle=True, seed=config.seed + epoch)
    t0, losses, seen = time.perf_counter(), [], 0
    for batch in loader:
        if len(batch["score"]) < 2:
            continue  # a ranking loss and BatchNorm need two clips
        losses.append(_train_step(run, batch, config, epoch, step_log))
        seen += len(batch["score"])
    run.scheduler.step()
    run.epoch = epoch + 1
    return {
        "epoch": epoch,
        "loss": float(np.mean(losses)) if losses else float("nan"),
        "clips_per_s": seen / max(time.perf_counter() - t0, 1e-9),
    }


def _train_step(run: _Run, batch: dict, config: TrainConfig, epoch: int, step_log: IO[str] | None) -> float:
    """One optimizer step on ``batch`` (and GradNorm's weight update); logs it; returns the loss."""
    import torch

    target = batch["score"].to(device=run.device, dtype=torch.float32)
    outputs = forward(run.model, batch, config, run.device)
    multi = outputs.weights is not None
    total, figures = run.loss.step_loss(
        outputs.final,
        target,
        outputs.streams if multi else None,
        outputs.stream_mask if multi else None,
        run.model.shared_parameters(),
    )
    run.optimizer.zero_grad(set_to_none=True)
    total.backward()
    run.optimizer.step()
    run.step += 1
    if step_log is not None:
        a, b, c = (float(w) for w in run.loss.weights())
        # GradNorm's (a, b, c) after this step's update, logged every step
        record = {
            "epoch": epoch,
            "step": run.step,
            "lr": run.optimizer.param_groups[0]["lr"],
            "weights": {"a": a, "b": b, "c": c},
            **figures,
        }
        step_log.write(json.dumps(record) + "\n")
        step_log.flush()
    return float(total.detach())


def _save(path: Path, run: _Run, config: TrainConfig, data_config: DataConfig, dims: dict[str, int]) -> None:
    from models import save_checkpoint

    save_checkpoint(
        path,
        run.model,
        train_config=config.as_dict(),
        data_config=dataclasses.asdict(data_config),
        dims=dims,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        gradnorm=run.loss.gradnorm,
        epoch=run.epoch,
        step=run.step,
    )


def _config_from(cls, values: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})


def load_checkpoint(path: str | Path, device: str = "auto"):
    """A training checkpoint: (model in eval mode, TrainConfig, DataConfig, dims).

    The model is rebuilt by :func:`models.load_checkpoint` from the checkpoint's own
    architecture and config; a checkpoint saved by :func:`models.save_checkpoint` outside
    training (no train config) reads as the defaults with ``model`` set to its architecture.
    """
    from models import load_checkpoint as load

    model, state = load(path, pick_device(device))
    train = dict(state.get("train_config") or {})
    if not train:
        train = {"model": state["arch"]}
    config = _config_from(TrainConfig, train)
    data_config = DataConfig.from_dict(state.get("data_config") or {})
    return model, config, data_config, dict(state.get("dims") or {})


def predict(model, ds: ViralityDataset, config: TrainConfig, *, batch_size: int | None = None) -> dict[str, np.ndarray]:
    """Scores of every clip of ``ds``: ``final`` (N,), ``streams`` (N, M), ``weights`` or None."""
    import torch

    device = next(model.parameters()).device
    model.eval()
    finals, streams, weights = [], [], []
    loader = _make_loader(
        ds, dataclasses.replace(config, batch_size=batch_size or config.batch_size), shuffle=False, seed=0
    )
    with torch.no_grad():
        for batch in loader:
            out = forward(model, batch, config, device)
            finals.append(out.final.cpu().numpy())
            streams.append(out.streams.cpu().numpy())
            if out.weights is not None:
                weights.append(out.weights.cpu().numpy())
    return {
        "final": np.concatenate(finals) if finals else np.zeros(0, np.float32),
        "streams": np.concatenate(streams) if streams else np.zeros((0, len(config.modalities)), np.float32),
        "weights": np.concatenate(weights) if weights else None,
    }


def train_track(
    source,
    track: str,
    out_dir: str | Path,
    config: TrainConfig,
    data_config: DataConfig | None = None,
    *,
    resume: bool = False,
    modalities: Sequence[str] | None = None,
    sections: dict | None = None,
) -> TrainResult:
    """Train on the train side of ``track`` (``all`` or ``challenge-<name>``, SPEC section 6).

    ``sections``: the run's TOML mapping, for the model's own sections (``[psgcn]``, ...)."""
    data_config = data_config or DataConfig()
    train_ids = side_ids(track_split(source, track), "train")
    ds = ViralityDataset(source, modalities or config.modalities, clip_ids=train_ids, config=data_config)
    if not len(ds):
        raise ValueError(
            f"track {track}: none of its {len(train_ids)} training clip(s) has a {' or '.join(ds.modalities)} shard"
            " (run `vdv extract` first)"
        )
    return fit(ds, config, out_dir=out_dir, resume=resume, data_config=data_config, sections=sections)

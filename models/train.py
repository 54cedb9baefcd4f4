"""Training of the virality models (paper section 4.3, SPEC section 5 "Training").

Adam, batch 8, learning rate 1e-4 halved every 10 epochs (StepLR). The loss is
``a * MSE(final) + b * Rank(final) + c * sum_m Rank(stream_m)`` (SPEC section 5) with pairwise
margin ranking over the batch; the weights a, b, c are balanced by GradNorm (Chen et al., 2018)
and logged per step to ``<out>/train_log.jsonl``. Ablations drop the MSE or the ranking terms
(their weight is fixed at 0).

A checkpoint (``<out>/checkpoint.pt``) carries everything needed to rebuild the model exactly
and to resume: the train config, the data config, the stream dimensions, model, optimizer,
scheduler and GradNorm states, the epoch and the RNG state. Checkpoints hold plain tensors and
Python scalars only, so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from models.data import DataConfig, ViralityDataset

log = logging.getLogger(__name__)

SKELETON_MODELS = ("psgcn", "stgcn")
SEQUENCE_MODELS = ("rtcn", "tcn", "lstm")


@dataclass(frozen=True)
class TrainConfig:
    """Training run parameters. Config section ``[train]``; defaults are the paper's."""

    model: str = "multimodal"  # multimodal | psgcn | stgcn (skeleton) | rtcn | tcn | lstm (one stream)
    modalities: tuple[str, ...] = ("skeletal", "holistic", "facial", "scenic")
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
    downsample: bool = True  # PSGCN graph down-sampling ("w/o down-sampling" ablation)
    relational_pooling: bool = True  # RTCN relational pooling ("w/o relational pooling")
    fusion: str = "attention"  # attention | average ("average fusion" ablation)
    dropout: float = 0.5
    seed: int = 0
    device: str = "auto"  # auto: CUDA when present, else CPU
    num_workers: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


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


def build(config: TrainConfig, dims: dict[str, int]):
    """The model a config asks for; ``dims`` gives each appearance stream's feature size."""
    from models import build_model

    common = {"dropout": config.dropout}
    if config.model in SKELETON_MODELS:
        if config.modalities != ("skeletal",):
            raise ValueError(f"{config.model} is a skeleton model; modalities must be ('skeletal',)")
        extra = {"downsample": config.downsample} if config.model == "psgcn" else {}
        return build_model(config.model, **common, **extra)
    if config.model in SEQUENCE_MODELS:
        if len(config.modalities) != 1 or config.modalities[0] == "skeletal":
            raise ValueError(f"{config.model} takes exactly one appearance modality, got {config.modalities}")
        extra = {"relational_pooling": config.relational_pooling} if config.model == "rtcn" else {}
        return build_model(config.model, input_dim=dims[config.modalities[0]], **common, **extra)
    if config.model == "multimodal":
        return build_model(
            "multimodal",
            streams=tuple(config.modalities),
            **{f"{m}_dim": dims[m] for m in config.modalities if m != "skeletal"},
            psgcn={"downsample": config.downsample, "dropout": config.dropout},
            rtcn={"relational_pooling": config.relational_pooling, "dropout": config.dropout},
            average_fusion=config.fusion == "average",
        )
    raise ValueError(f"unknown model {config.model!r}")


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


def _make_loader(ds, config: TrainConfig, shuffle: bool, seed: int):
    import torch
    from torch.utils.data import DataLoader

    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(
        ds, batch_size=config.batch_size, shuffle=shuffle, generator=g, num_workers=config.num_workers, drop_last=False
    )


def fit(
    train_ds: ViralityDataset,
    config: TrainConfig = TrainConfig(),
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    data_config: DataConfig | None = None,
) -> TrainResult:
    """Train on ``train_ds``; with ``out_dir``, write a checkpoint per epoch and the JSONL log."""
    import torch

    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    dims = {m: train_ds.dims[m] for m in config.modalities}
    model = build(config, dims).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step_epochs, gamma=config.lr_gamma)
    if not (config.mse or config.ranking):
        raise ValueError("every loss term is disabled (mse=False and ranking=False)")
    loss = make_loss(config)
    if loss.gradnorm is not None:
        loss.gradnorm.to(device)
    start_epoch, step = 0, 0
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / "checkpoint.pt" if out else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        saved = state["train_config"]
        if saved != json.loads(json.dumps(config.as_dict())):
            log.warning(
                "resuming with a config that differs from the checkpoint's: %s",
                {k: (saved.get(k), v) for k, v in config.as_dict().items() if saved.get(k) != v},
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if loss.gradnorm is not None and state["gradnorm"]:
            loss.gradnorm.load_state_dict(state["gradnorm"]["module"])
            loss.gradnorm.optimizer.load_state_dict(state["gradnorm"]["optimizer"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        torch.set_rng_state(state["rng"])
        log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)
    if out:
        out.mkdir(parents=True, exist_ok=True)
    log_fh = open(out / "train_log.jsonl", "a") if out else None  # noqa: SIM115 - closed below
    history: list[dict] = []
    try:
        for epoch in range(start_epoch, config.epochs):
            model.train()
            loader = _make_loader(train_ds, config, shuffle=True, seed=config.seed + epoch)
            t0, losses, seen = time.perf_counter(), [], 0
            for batch in loader:
                if len(batch["score"]) < 2:
                    continue  # a ranking loss and BatchNorm need two clips
                target = batch["score"].to(device=device, dtype=torch.float32)
                outputs = forward(model, batch, config, device)
                multi = outputs.weights is not None
                total, figures = loss.step_loss(
                    outputs.final,
                    target,
                    outputs.streams if multi else None,
                    outputs.stream_mask if multi else None,
                    model.shared_parameters(),
                )
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                step += 1
                seen += len(target)
                losses.append(float(total.detach()))
                a, b, c = (float(w) for w in loss.weights())
                # GradNorm's (a, b, c) after this step's update, logged every step (SPEC section 5)
                record = {
                    "epoch": epoch,
                    "step": step,
                    "lr": optimizer.param_groups[0]["lr"],
                    "weights": {"a": a, "b": b, "c": c},
                    **figures,
                }
                if log_fh:
                    log_fh.write(json.dumps(record) + "\n")
                    log_fh.flush()
            scheduler.step()
            summary = {
                "epoch": epoch,
                "loss": float(np.mean(losses)) if losses else float("nan"),
                "clips_per_s": seen / max(time.perf_counter() - t0, 1e-9),
            }
            history.append(summary)
            log.info("epoch %d: loss %.4f (%.1f clips/s)", epoch, summary["loss"], summary["clips_per_s"])
            if ckpt_path is not None:
                save_checkpoint(
                    ckpt_path,
                    model,
                    config,
                    dims,
                    data_config or train_ds.config,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    gradnorm=loss.gradnorm,
                    epoch=epoch + 1,
                    step=step,
                )
    finally:
        if log_fh:
            log_fh.close()
    return TrainResult(model, history, ckpt_path)


def save_checkpoint(
    path,
    model,
    config: TrainConfig,
    dims,
    data_config: DataConfig,
    *,
    optimizer=None,
    scheduler=None,
    gradnorm=None,
    epoch=0,
    step=0,
) -> Path:
    import torch

    from pipeline.tables import atomic_write

    state = {
        "train_config": json.loads(json.dumps(config.as_dict())),
        "data_config": json.loads(json.dumps(dataclasses.asdict(data_config))),
        "dims": dict(dims),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer else {},
        "scheduler": scheduler.state_dict() if scheduler else {},
        "gradnorm": {"module": gradnorm.state_dict(), "optimizer": gradnorm.optimizer.state_dict()}
        if gradnorm is not None
        else {},
        "epoch": epoch,
        "step": step,
        "rng": torch.get_rng_state(),
    }
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def _config_from(cls, values: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})


def load_checkpoint(path: str | Path, device: str = "auto"):
    """Rebuild the model of a checkpoint exactly; returns (model in eval mode, TrainConfig, DataConfig, dims)."""
    import torch

    dev = pick_device(device)
    state = torch.load(path, map_location=dev, weights_only=True)
    config = _config_from(TrainConfig, state["train_config"])
    data_config = _config_from(DataConfig, state["data_config"])
    model = build(config, state["dims"]).to(dev)
    model.load_state_dict(state["model"])
    model.eval()
    return model, config, data_config, dict(state["dims"])


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


def split_records(ds_records, split: dict[str, str]) -> tuple[list[str], list[str]]:
    train = [r.clip_id for r in ds_records if split.get(r.clip_id) == "train"]
    test = [r.clip_id for r in ds_records if split.get(r.clip_id) == "test"]
    return train, test


def train_track(
    source,
    track: str,
    out_dir: str | Path,
    config: TrainConfig,
    data_config: DataConfig | None = None,
    *,
    resume: bool = False,
    modalities: Sequence[str] | None = None,
) -> TrainResult:
    """Train on the train side of ``track`` (``all`` or ``challenge-<name>``, SPEC section 6)."""
    data_config = data_config or DataConfig()
    from models.evaluate import track_splits

    splits = track_splits(source)
    if track not in splits:
        raise ValueError(f"unknown track {track!r}; tracks: {sorted(splits)}")
    train_ids = [c for c, s in splits[track].items() if s == "train"]
    ds = ViralityDataset(source, modalities or config.modalities, clip_ids=train_ids, config=data_config)
    return fit(ds, config, out_dir=out_dir, resume=resume, data_config=data_config)

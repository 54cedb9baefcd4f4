"""Attentive modality fusion and the multi-modal model (paper section 4.4, Fig. 2).

Each stream predicts its own score. The video-level features of the streams are concatenated
and go through FC -> ReLU -> FC -> softmax, giving one weight per modality (paper eq. 12); the
final score is the weighted sum of the stream scores (eq. 13). A stream can be missing for a
clip (no face found): its feature enters the concatenation as zeros and its weight is removed
by a masked softmax, so the present streams' weights still sum to one. ``average=True`` is the
"w/o modality attention" baseline: equal weights over the present streams.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from models.psgcn import PSGCN, PSGCNConfig
from models.rtcn import RTCN, RTCNConfig
from models.units import StreamOutput
from pipeline.modalities import registry


def streams() -> tuple[str, ...]:
    """The streams a fused model can have: the registered modalities, in their order (the paper's
    order of S for the four built in: pose, holistic, facial, scenic)."""
    return registry.names()


class FusionOutput(NamedTuple):
    """``score`` (N,), ``weights`` (N, M) (zero for missing streams), ``stream_scores`` (N, M)."""

    score: torch.Tensor
    weights: torch.Tensor
    stream_scores: torch.Tensor


def _check_present(present: torch.Tensor, n: int, m: int) -> torch.Tensor:
    if present.shape != (n, m):
        raise ValueError(f"stream mask has shape {tuple(present.shape)}, expected {(n, m)}")
    present = present.to(torch.bool)
    empty = ~present.any(dim=1)
    if empty.any():
        rows = torch.nonzero(empty).flatten().tolist()
        raise ValueError(f"samples {rows} have no stream present; such clips cannot be scored")
    return present


def average_fusion(stream_scores: torch.Tensor, present: torch.Tensor | None = None) -> FusionOutput:
    """Mean of the present streams' scores (paper Table 5 "w/o modality attention")."""
    n, m = stream_scores.shape
    if present is None:
        present = torch.ones(n, m, dtype=torch.bool, device=stream_scores.device)
    present = _check_present(present, n, m)
    weights = present.to(stream_scores.dtype)
    weights = weights / weights.sum(dim=1, keepdim=True)
    scores = stream_scores.masked_fill(~present, 0.0)
    return FusionOutput((weights * scores).sum(dim=1), weights, scores)


class AttentiveFusion(nn.Module):
    """Modality attention over M streams (paper eq. 12-13).

    ``forward(features, stream_scores, present)``: ``features`` a list of M tensors (N, F_m),
    ``stream_scores`` (N, M), ``present`` (N, M) bool or None. Returns :class:`FusionOutput`.
    """

    def __init__(self, feature_dims: tuple[int, ...], hidden: int = 128, average: bool = False):
        super().__init__()
        self.feature_dims = tuple(feature_dims)
        self.average = average
        if not average:
            self.fc1 = nn.Linear(sum(self.feature_dims), hidden)
            self.fc2 = nn.Linear(hidden, len(self.feature_dims))

    def forward(
        self, features: list[torch.Tensor], stream_scores: torch.Tensor, present: torch.Tensor | None = None
    ) -> FusionOutput:
        N, M = stream_scores.shape
        if M != len(self.feature_dims) or len(features) != M:
            raise ValueError(
                f"fusion built for {len(self.feature_dims)} streams, got {M} scores, {len(features)} features"
            )
        if self.average:
            return average_fusion(stream_scores, present)
        if present is None:
            present = torch.ones(N, M, dtype=torch.bool, device=stream_scores.device)
        present = _check_present(present, N, M)
        # a missing stream's feature (computed on zeros) must not steer the weights
        feats = [f * present[:, i : i + 1].to(f.dtype) for i, f in enumerate(features)]
        logits = self.fc2(torch.relu(self.fc1(torch.cat(feats, dim=1))))
        weights = torch.softmax(logits.masked_fill(~present, float("-inf")), dim=1)
        scores = stream_scores.masked_fill(~present, 0.0)
        return FusionOutput((weights * scores).sum(dim=1), weights, scores)


def _as_config(value, cls):
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; known: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    raise TypeError(f"expected {cls.__name__} or a dict, got {type(value).__name__}")


@dataclass(frozen=True)
class MultiModalConfig:
    # registered modalities (pipeline.modalities.registry); drop one for the "w/o <stream>" ablations; sports: pose, holistic
    streams: tuple[str, ...] = field(default_factory=streams)
    # per-sample width of each sequence stream (``dims = {facial = 2048}``); a stream not named has
    # its modality's (holistic 2,048, facial 512, scenic 512: SPEC section 4)
    dims: dict[str, int] = field(default_factory=dict)
    psgcn: PSGCNConfig = field(default_factory=PSGCNConfig)  # the skeleton stream
    rtcn: RTCNConfig = field(default_factory=RTCNConfig)  # every sequence stream; input_dim is set per stream
    fusion_hidden: int = 128  # width of the modality attention's hidden FC layer
    average_fusion: bool = False  # True: the "w/o modality attention" ablation

    def __post_init__(self):
        # nested tables from TOML or a checkpoint arrive as dicts; older names ("skeletal") are read
        try:
            names = tuple(registry.canonical(s) for s in self.streams)
            dims = {registry.canonical(s): int(d) for s, d in dict(self.dims).items()}
        except ValueError as err:
            raise ValueError(f"streams must be registered modalities: {err}") from None
        if not names or len(set(names)) != len(names):
            raise ValueError(f"streams must be distinct names from {streams()}, got {self.streams}")
        object.__setattr__(self, "streams", names)
        object.__setattr__(self, "dims", dims)
        object.__setattr__(self, "psgcn", _as_config(self.psgcn, PSGCNConfig))
        object.__setattr__(self, "rtcn", _as_config(self.rtcn, RTCNConfig))

    def input_dim(self, stream: str) -> int:
        """The per-sample width of a sequence stream."""
        return self.dims.get(stream, registry.get(stream).dim)


class MultiModalModel(nn.Module):
    """The full framework: PSGCN on skeletons, an RTCN per appearance stream, attentive fusion.

    ``forward(inputs, present=None)``: ``inputs`` maps each configured stream name to
    ``(x, mask)``, a skeleton stream's ``x`` (N, 3, T, 16), a sequence stream's ``x`` (N, T, D), ``mask`` (N, T)
    bool or None; streams may have different T. ``present`` (N, M) bool, M streams in
    ``config.streams`` order; None derives it from the frame masks (a stream is present when it
    has a valid frame). Returns :class:`FusionOutput`; ``forward_streams`` also gives each
    stream's :class:`StreamOutput` (the multi-dimensional recommendation of paper section 5.3).
    """

    arch = "multimodal"
    input_kind = "multimodal"

    def __init__(self, config: MultiModalConfig):
        super().__init__()
        self.config = config
        built = {}
        for name in config.streams:
            if registry.get(name).stream == "skeleton":
                built[name] = PSGCN(config.psgcn)
            else:
                built[name] = RTCN(dataclasses.replace(config.rtcn, input_dim=config.input_dim(name)))
        self.streams = nn.ModuleDict(built)
        self.feature_dim = sum(s.feature_dim for s in self.streams.values())
        self.fusion = AttentiveFusion(
            tuple(s.feature_dim for s in self.streams.values()), config.fusion_hidden, config.average_fusion
        )

    def shared_parameters(self) -> list[nn.Parameter]:
        """The stream heads: the last layers every loss term (fused MSE, fused and per-stream ranking) reaches."""
        return [p for s in self.streams.values() for p in s.shared_parameters()]

    def forward_streams(
        self, inputs: dict[str, tuple[torch.Tensor, torch.Tensor | None]], present: torch.Tensor | None = None
    ) -> tuple[FusionOutput, dict[str, StreamOutput]]:
        missing = [s for s in self.config.streams if s not in inputs]
        if missing:
            raise ValueError(f"inputs lack streams {missing}; this model uses {self.config.streams}")
        outputs, frame_present = {}, []
        for name, model in self.streams.items():
            x, mask = inputs[name]
            outputs[name] = model(x, mask)
            n = x.shape[0]
            frame_present.append(torch.ones(n, dtype=torch.bool, device=x.device) if mask is None else mask.any(dim=1))
        if present is None:
            present = torch.stack(frame_present, dim=1)
        scores = torch.stack([o.score for o in outputs.values()], dim=1)
        fused = self.fusion([o.feature for o in outputs.values()], scores, present)
        return fused, outputs

    def forward(
        self, inputs: dict[str, tuple[torch.Tensor, torch.Tensor | None]], present: torch.Tensor | None = None
    ) -> FusionOutput:
        return self.forward_streams(inputs, present)[0]

"""Units shared by the stream models: the output type, masking, graph and temporal convolutions.

Masks: a frame mask is ``(N, T)`` bool, True where the frame is valid (a person or face was
found, or the frame is not padding). The convolutional units zero invalid frames before every
temporal convolution, so padding at the end of a sequence acts exactly like the convolution's
own zero padding: in eval mode a padded clip scores the same as the clip alone.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from models.graph import NUM_JOINTS


class StreamOutput(NamedTuple):
    """What every stream model returns: ``score`` (N,) and the video-level ``feature`` (N, F)."""

    score: torch.Tensor
    feature: torch.Tensor


def check_mask(mask: torch.Tensor | None, n: int, t: int, device: torch.device) -> torch.Tensor:
    """The frame mask as (N, T) bool; None means every frame is valid."""
    if mask is None:
        return torch.ones(n, t, dtype=torch.bool, device=device)
    if mask.shape != (n, t):
        raise ValueError(f"frame mask has shape {tuple(mask.shape)}, expected {(n, t)}")
    return mask.to(device=device, dtype=torch.bool)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of ``x`` over ``dim`` counting only valid positions; ``mask`` broadcasts against ``x``.

    A sequence with no valid frame pools to zeros rather than NaN (the stream mask of the fusion
    is what marks such a stream as missing).
    """
    m = mask.to(x.dtype)
    return (x * m).sum(dim) / m.sum(dim).clamp_min(1.0)


def stride_mask(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """Frame mask after a temporal convolution with ``stride`` and 'same' padding (output t <- input t*stride)."""
    return mask[:, ::stride] if stride > 1 else mask


class GraphConv(nn.Module):
    """Spatial graph convolution over K subsets (paper eq. 4): ``sum_k (X W_k)(A_k + B_k)``.

    ``adjacency`` is (K, V_in, V_out) in the einsum layout of :mod:`models.graph`; V_out < V_in
    makes this the graph down-sampling operator (paper eq. 5). ``learnable`` adds the per-block
    connectivity ``B`` (paper section 4.1, ``A = A_norm + B``), initialised at zero so training
    starts from the skeleton. ``importance`` instead multiplies ``A`` elementwise by a learnable
    mask initialised at one (ST-GCN's edge importance weighting).
    """

    def __init__(self, in_channels: int, out_channels: int, adjacency: torch.Tensor, edge_mode: str = "add"):
        super().__init__()
        if edge_mode not in ("add", "multiply", "fixed"):
            raise ValueError(f"edge_mode must be add, multiply or fixed, not {edge_mode!r}")
        self.k, self.v_in, self.v_out = adjacency.shape
        self.out_channels = out_channels
        self.edge_mode = edge_mode
        self.register_buffer("A", adjacency.clone())
        if edge_mode == "add":
            self.B = nn.Parameter(torch.zeros_like(adjacency))
        elif edge_mode == "multiply":
            self.M = nn.Parameter(torch.ones_like(adjacency))
        self.conv = nn.Conv2d(in_channels, out_channels * self.k, kernel_size=1)

    def graph(self) -> torch.Tensor:
        if self.edge_mode == "add":
            return self.A + self.B
        if self.edge_mode == "multiply":
            return self.A * self.M
        return self.A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, T, V = x.shape
        y = self.conv(x).view(N, self.k, self.out_channels, T, V)
        return torch.einsum("nkctv,kvw->nctw", y, self.graph())


class TemporalConv(nn.Module):
    """Convolution along time only, same length up to ``stride`` (paper section 4.1, kernel K_t)."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"temporal kernel must be odd to keep frames centred, got {kernel}")
        pad = (kernel - 1) // 2 * dilation
        self.conv = nn.Conv2d(
            channels_in, channels_out, (kernel, 1), stride=(stride, 1), padding=(pad, 0), dilation=(dilation, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class STGCNBlock(nn.Module):
    """Graph convolution, then temporal convolution, with a residual (paper Fig. 5).

    Input (N, C_in, T, V_in) and frame mask (N, T); output (N, C_out, ceil(T / stride), V_out)
    and its mask. ``pool`` (V_out, V_in) is the down-sampling interpolation, needed when
    V_out < V_in so that the residual path reaches the coarse vertices too. The residual is the
    identity when nothing changes, else a 1x1 convolution (strided) with batch norm.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        adjacency: torch.Tensor,
        *,
        kernel: int = 7,
        stride: int = 1,
        dropout: float = 0.5,
        edge_mode: str = "add",
        pool: torch.Tensor | None = None,
        residual: bool = True,
    ):
        super().__init__()
        k, v_in, v_out = adjacency.shape
        if v_out != v_in and (pool is None or tuple(pool.shape) != (v_out, v_in)):
            raise ValueError(f"a down-sampling block ({v_in} -> {v_out} vertices) needs a ({v_out}, {v_in}) pool")
        self.stride = stride
        self.gcn = GraphConv(in_channels, out_channels, adjacency, edge_mode)
        self.gcn_bn = nn.BatchNorm2d(out_channels)
        self.tcn = TemporalConv(out_channels, out_channels, kernel, stride)
        self.tcn_bn = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.relu = nn.ReLU(inplace=True)
        if pool is not None and v_out != v_in:
            self.register_buffer("pool", pool.clone())
        else:
            self.pool = None
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1)), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        N, C, T, V = x.shape
        frames = mask[:, None, :, None].to(x.dtype)
        y = self.relu(self.gcn_bn(self.gcn(x))) * frames
        y = self.dropout(self.tcn_bn(self.tcn(y)))
        out_mask = stride_mask(mask, self.stride)
        if self.residual is not None:
            r = x if self.pool is None else torch.einsum("nctv,wv->nctw", x, self.pool)
            y = y + self.residual(r)
        y = self.relu(y) * out_mask[:, None, :, None].to(x.dtype)
        return y, out_mask


class StreamModel(nn.Module):
    """The base of every stream model: one input, a frame mask, a linear head to the score.

    A subclass sets ``arch`` (its checkpoint name), ``input_kind`` ("skeleton": ``x`` (N, C, T, V)
    with C = ``config.in_channels`` and V = ``joints``; "sequence": ``x`` (N, T, D) with
    D = ``config.input_dim``) and ``title`` (its name in error messages), builds ``self.head``
    (``nn.Linear(feature_dim, 1)``) and calls :meth:`frame_mask` first in ``forward``.
    """

    arch: str
    input_kind: str
    title: str
    joints = NUM_JOINTS  # vertices of a skeleton input, in MPII order
    head: nn.Linear

    def __init__(self, config):
        super().__init__()
        self.config = config

    def expected_shape(self) -> tuple[int | str, ...]:
        """The input's shape, symbols for the sizes that may vary."""
        if self.input_kind == "skeleton":
            return ("N", self.config.in_channels, "T", self.joints)
        return ("N", "T", self.config.input_dim)

    def frame_mask(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Check ``x`` against :meth:`expected_shape` and return the frame mask (N, T) bool."""
        expected = self.expected_shape()
        if x.dim() != len(expected) or any(
            isinstance(e, int) and e != s for e, s in zip(expected, x.shape, strict=True)
        ):
            shown = ", ".join(str(e) for e in expected)
            raise ValueError(f"{self.title} expects ({shown}), got {tuple(x.shape)}")
        return check_mask(mask, x.shape[0], x.shape[expected.index("T")], x.device)

    def scored(self, feature: torch.Tensor, head_input: torch.Tensor | None = None) -> StreamOutput:
        """The stream's output: the head's score of ``head_input`` (default ``feature``), and ``feature``."""
        return StreamOutput(self.head(feature if head_input is None else head_input).squeeze(1), feature)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The last layer every loss term reaches (GradNorm's shared layer W): the head."""
        return list(self.head.parameters())


class SkeletonModel(StreamModel):
    """A stream model on joints: ``data_bn`` normalises each joint coordinate over the batch
    (ST-GCN's input batch norm) and nothing of an invalid frame reaches the network."""

    input_kind = "skeleton"

    def __init__(self, config):
        super().__init__(config)
        self.data_bn = nn.BatchNorm1d(config.in_channels * self.joints)

    def normalised(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, T, V) with invalid frames zeroed, batch-normalised per joint coordinate."""
        N, C, T, V = x.shape
        frames = mask[:, None, :, None].to(x.dtype)
        x = self.data_bn((x * frames).permute(0, 3, 1, 2).reshape(N, V * C, T))
        return x.view(N, V, C, T).permute(0, 2, 3, 1) * frames

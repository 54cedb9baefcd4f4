"""RTCN: relational temporal convolutional network, one per appearance stream (paper section 4.3).

A 1x1 convolution reduces the frame features (2,048 holistic, 512 facial or scenic) to the
first block's width; six residual temporal blocks follow (paper Fig. 6a), block i holding two
dilated convolution -> batch norm -> ReLU -> dropout sequences with dilation 2^i, kernel 7, and
a 1x1 convolution on the residual where the width changes; channels 256, 256, 512, 512, 1024,
1024. A relational pooling block follows blocks 2, 4 and 6: temporal max pooling (kernel 2,
stride 2) then multi-head self-attention with H = 4 heads, a residual connection and LayerNorm,
``O = LayerNorm(Concat(Attention(I W_q, I W_k, I W_v)) W_o + I)`` (paper eq. 10-11).

Ablation ``relational_pooling=False`` removes the three relational pooling blocks: that is the
TCN baseline of the paper (same depth and widths as RTCN), registered as ``tcn``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.units import StreamModel, StreamOutput, masked_mean


@dataclass(frozen=True)
class RTCNConfig:
    input_dim: int = 2048  # frame feature size: holistic 2048, facial 512 (or 2048), scenic 512
    channels: tuple[int, ...] = (256, 256, 512, 512, 1024, 1024)  # one residual block each
    kernel: int = 7
    dropout: float = 0.5
    relational_pooling: bool = True  # False: the TCN baseline / "w/o relational pooling" ablation
    pool_after: tuple[int, ...] = (2, 4, 6)  # 1-based block numbers followed by relational pooling
    heads: int = 4  # H of paper eq. 11
    pool_size: int = 2  # temporal max pooling kernel and stride


class TemporalBlock(nn.Module):
    """Two dilated conv-BN-ReLU-dropout sequences plus a residual; (N, C_in, T) -> (N, C_out, T)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"temporal kernel must be odd, got {kernel}")
        pad = (kernel - 1) // 2 * dilation
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, padding=pad, dilation=dilation)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=pad, dilation=dilation)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.dropout = nn.Dropout(dropout)
        self.residual = nn.Identity() if c_in == c_out else nn.Conv1d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        N, C, T = x.shape
        m = mask[:, None, :].to(x.dtype)
        # zero invalid frames before each convolution so they act like its zero padding
        y = self.dropout(F.relu(self.bn1(self.conv1(x * m)))) * m
        y = self.dropout(F.relu(self.bn2(self.conv2(y))))
        return F.relu(y + self.residual(x)) * m


class RelationalPooling(nn.Module):
    """Temporal max pooling, then multi-head self-attention with residual and LayerNorm (eq. 11).

    (N, C, T) and mask (N, T) -> (N, C, ceil(T / pool)) and its mask; invalid frames never win
    the max and are never attended to.
    """

    def __init__(self, channels: int, heads: int, pool: int, dropout: float):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.pool = pool
        self.attention = nn.MultiheadAttention(channels, heads, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        N, C, T = x.shape
        x = x.masked_fill(~mask[:, None, :], float("-inf"))
        x = F.max_pool1d(x, self.pool, self.pool, ceil_mode=True)
        mask = F.max_pool1d(mask[:, None, :].float(), self.pool, self.pool, ceil_mode=True)[:, 0] > 0
        i = x.transpose(1, 2).masked_fill(~mask[:, :, None], 0.0)  # (N, T', C)
        # a sequence with no valid frame attends to its zeros instead of producing NaN
        ignore = ~mask & mask.any(dim=1, keepdim=True)
        o, _ = self.attention(i, i, i, key_padding_mask=ignore, need_weights=False)
        o = self.norm(self.dropout(o) + i) * mask[:, :, None].to(i.dtype)
        return o.transpose(1, 2), mask


class RTCN(StreamModel):
    """Appearance feature sequence -> virality score.

    Input: ``x`` (N, T, D) frame features, ``mask`` (N, T) bool (True = valid frame, e.g. a face
    was found; None = all valid). Output: :class:`StreamOutput` with ``score`` (N,) and
    ``feature`` (N, channels[-1]), the masked temporal mean of the last block.
    """

    arch = "rtcn"
    input_kind = "sequence"
    title = "RTCN"

    def __init__(self, config: RTCNConfig):
        super().__init__(config)
        self.reduce = nn.Conv1d(config.input_dim, config.channels[0], 1)
        blocks, pools = [], {}
        c_in = config.channels[0]
        for i, c_out in enumerate(config.channels):
            blocks.append(TemporalBlock(c_in, c_out, config.kernel, 2**i, config.dropout))
            if config.relational_pooling and (i + 1) in config.pool_after:
                pools[str(i)] = RelationalPooling(c_out, config.heads, config.pool_size, config.dropout)
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.pools = nn.ModuleDict(pools)
        self.feature_dim = c_in
        self.head = nn.Linear(c_in, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> StreamOutput:
        mask = self.frame_mask(x, mask)
        x = self.reduce(x.transpose(1, 2) * mask[:, None, :].to(x.dtype))
        for i, block in enumerate(self.blocks):
            x = block(x, mask)
            if str(i) in self.pools:
                x, mask = self.pools[str(i)](x, mask)
        feature = masked_mean(x, mask[:, None, :], dim=2)
        return self.scored(feature)

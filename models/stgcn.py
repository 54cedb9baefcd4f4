"""ST-GCN baseline (Yan et al. 2018), the skeleton competitor of paper Table 3, on the MPII graph.

The published layout: ten blocks with 64 x4, 128 x3, 256 x3 channels, temporal kernel 9,
temporal stride 2 entering the 128 and 256 stages, dropout 0.5 and edge importance weighting
(a learnable mask multiplying the normalised adjacency) instead of PSGCN's additive ``B``. It
shares PSGCN's units and graph, and has no graph down-sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.graph import NUM_JOINTS, mpii_graph
from models.units import STGCNBlock, StreamOutput, check_mask, masked_mean


@dataclass(frozen=True)
class STGCNConfig:
    in_channels: int = 3
    channels: tuple[int, ...] = (64, 64, 64, 64, 128, 128, 128, 256, 256, 256)  # one entry per block
    temporal_kernel: int = 9
    dropout: float = 0.5
    center: str = "thorax"
    edge_importance: bool = True  # ST-GCN's multiplicative edge weights


class STGCN(nn.Module):
    """Skeleton sequence -> virality score.

    Input: ``x`` (N, C=3, T, V=16), ``mask`` (N, T) bool or None. Output: :class:`StreamOutput`
    with ``score`` (N,) and ``feature`` (N, channels[-1]).
    """

    arch = "stgcn"
    input_kind = "skeleton"

    def __init__(self, config: STGCNConfig):
        super().__init__()
        self.config = config
        adjacency = torch.from_numpy(mpii_graph(config.center).adjacency())
        self.data_bn = nn.BatchNorm1d(config.in_channels * NUM_JOINTS)
        blocks = []
        c_in = config.in_channels
        for i, c_out in enumerate(config.channels):
            # stride 2 where the width grows, as in the published model (not at the input block)
            stride = 2 if i > 0 and c_out != c_in else 1
            blocks.append(
                STGCNBlock(
                    c_in,
                    c_out,
                    adjacency,
                    kernel=config.temporal_kernel,
                    stride=stride,
                    dropout=config.dropout,
                    edge_mode="multiply" if config.edge_importance else "fixed",
                    residual=i > 0,
                )
            )
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.feature_dim = c_in
        self.head = nn.Linear(c_in, 1)

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> StreamOutput:
        N, C, T, V = x.shape
        if C != self.config.in_channels or V != NUM_JOINTS:
            raise ValueError(f"ST-GCN expects (N, {self.config.in_channels}, T, {NUM_JOINTS}), got {tuple(x.shape)}")
        mask = check_mask(mask, N, T, x.device)
        frames = mask[:, None, :, None].to(x.dtype)
        x = self.data_bn((x * frames).permute(0, 3, 1, 2).reshape(N, V * C, T))
        x = x.view(N, V, C, T).permute(0, 2, 3, 1) * frames
        for block in self.blocks:
            x, mask = block(x, mask)
        feature = masked_mean(x.mean(dim=3), mask[:, None, :], dim=2)
        return StreamOutput(self.head(feature).squeeze(1), feature)


def build_stgcn(**overrides) -> STGCN:
    return STGCN(STGCNConfig(**overrides))

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

from models.graph import mpii_graph
from models.units import SkeletonModel, STGCNBlock, StreamOutput, masked_mean


@dataclass(frozen=True)
class STGCNConfig:
    in_channels: int = 3
    channels: tuple[int, ...] = (64, 64, 64, 64, 128, 128, 128, 256, 256, 256)  # one entry per block
    temporal_kernel: int = 9
    dropout: float = 0.5
    center: str = "thorax"
    edge_importance: bool = True  # ST-GCN's multiplicative edge weights


class STGCN(SkeletonModel):
    """Skeleton sequence -> virality score.

    Input: ``x`` (N, C=3, T, V=16), ``mask`` (N, T) bool or None. Output: :class:`StreamOutput`
    with ``score`` (N,) and ``feature`` (N, channels[-1]).
    """

    arch = "stgcn"
    title = "ST-GCN"

    def __init__(self, config: STGCNConfig):
        super().__init__(config)
        adjacency = torch.from_numpy(mpii_graph(config.center).adjacency())
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

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> StreamOutput:
        mask = self.frame_mask(x, mask)
        x = self.normalised(x, mask)
        for block in self.blocks:
            x, mask = block(x, mask)
        feature = masked_mean(x.mean(dim=3), mask[:, None, :], dim=2)
        return self.scored(feature)

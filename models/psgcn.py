"""PSGCN: pyramidal skeleton graph convolutional network, the skeletal stream (paper section 4.1).

Nine ST-GCN blocks (graph convolution over K = 3 spatial subsets, temporal kernel 7, residual,
learnable ``B`` per block) in three stages of three blocks, 64, 128 and 256 channels. The first
block of stages 2 and 3 is a graph down-sampling module (paper eq. 5-6): its graph operator maps
the finer vertex set onto the coarser one (16 -> 7 -> 4, :func:`models.graph.pyramid`) and its
temporal convolution has stride 2, making the pyramid of paper Fig. 5.

Ablation ``downsample=False`` (paper Table 5, "w/o graph down-sampling"): every block stays on
the 16-joint graph; the temporal strides and channels are kept, so only the pyramid is removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.graph import downsample_adjacency, pyramid
from models.units import SkeletonModel, STGCNBlock, StreamOutput, masked_mean


@dataclass(frozen=True)
class PSGCNConfig:
    in_channels: int = 3  # x, y, confidence per joint (SPEC section 4)
    channels: tuple[int, int, int] = (64, 128, 256)  # per pyramid stage, three blocks each
    blocks_per_stage: int = 3  # 3 stages x 3 = the paper's 9 blocks
    temporal_kernel: int = 7
    temporal_stride: int = 2  # at the first block of stages 2 and 3
    dropout: float = 0.5
    downsample: bool = True  # False: the "w/o graph down-sampling" ablation
    center: str = "thorax"  # graph centre for the spatial partition; "thorax" or "pelvis"
    learnable_edges: bool = True  # A = A_norm + B per block (paper section 4.1)


class PSGCN(SkeletonModel):
    """Skeleton sequence -> virality score.

    Input: ``x`` (N, C=3, T, V=16) joints in MPII order, ``mask`` (N, T) bool (True = a person
    was found; None = all valid). Output: :class:`StreamOutput` with ``score`` (N,) and
    ``feature`` (N, 256), the masked mean of the last stage over time and vertices.
    """

    arch = "psgcn"
    title = "PSGCN"

    def __init__(self, config: PSGCNConfig):
        super().__init__(config)
        levels = pyramid(config.center)
        edge_mode = "add" if config.learnable_edges else "fixed"
        blocks = []
        c_in = config.in_channels
        level = 0
        for stage, c_out in enumerate(config.channels):
            for b in range(config.blocks_per_stage):
                stride, pool = 1, None
                fine = levels[level].graph
                adjacency = fine.adjacency()
                if stage > 0 and b == 0:
                    stride = config.temporal_stride
                    if config.downsample:
                        level += 1
                        pool = torch.from_numpy(levels[level].pool).float()
                        adjacency = downsample_adjacency(fine, levels[level].pool)
                blocks.append(
                    STGCNBlock(
                        c_in,
                        c_out,
                        torch.from_numpy(adjacency),
                        kernel=config.temporal_kernel,
                        stride=stride,
                        dropout=config.dropout,
                        edge_mode=edge_mode,
                        pool=pool,
                        # the very first block sees raw coordinates: no residual (as ST-GCN)
                        residual=bool(blocks),
                    )
                )
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.feature_dim = c_in
        self.head = nn.Linear(c_in, 1)

    @property
    def vertices(self) -> list[int]:
        """Vertex count after each block (16 ... 7 ... 4 with down-sampling)."""
        return [blk.gcn.v_out for blk in self.blocks]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> StreamOutput:
        mask = self.frame_mask(x, mask)
        x = self.normalised(x, mask)
        for block in self.blocks:
            x, mask = block(x, mask)
        feature = masked_mean(x.mean(dim=3), mask[:, None, :], dim=2)  # (N, C_out)
        return self.scored(feature)

"""Baselines of paper section 5.1 that are not variants of PSGCN or RTCN.

- :class:`LSTMRegressor`: two recurrent layers, hidden size 512 (the paper's LSTM baseline).
- :class:`SVRBaseline`: support vector regression (scikit-learn) on pooled sequence features,
  the classic "features + SVR" paradigm of the C3D/I3D baselines; here the features are a
  stream's own frame features (or flattened joints), pooled over valid frames.
- :func:`average_fusion`: the "w/o modality attention" baseline, re-exported from
  :mod:`models.fusion` where it lives next to the attentive fusion it replaces.

The ST-GCN and TCN baselines live in :mod:`models.stgcn` and :mod:`models.rtcn`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from models.fusion import average_fusion
from models.units import StreamModel, StreamOutput

__all__ = ["LSTMConfig", "LSTMRegressor", "SVRBaseline", "average_fusion", "pool_sequence"]


@dataclass(frozen=True)
class LSTMConfig:
    input_dim: int = 2048  # frame feature size; 48 for flattened skeletons (16 joints x 3)
    hidden: int = 512
    layers: int = 2
    dropout: float = 0.5  # between the recurrent layers and before the head


class LSTMRegressor(StreamModel):
    """Feature sequence -> virality score with a 2-layer LSTM.

    Input: ``x`` (N, T, D), ``mask`` (N, T) bool or None. Invalid frames are zeroed and the
    sequence runs up to its last valid frame (trailing padding is never read). Output:
    :class:`StreamOutput` with ``score`` (N,) and ``feature`` (N, hidden), the last layer's
    final hidden state.
    """

    arch = "lstm"
    input_kind = "sequence"
    title = "LSTM"

    def __init__(self, config: LSTMConfig):
        super().__init__(config)
        self.lstm = nn.LSTM(
            config.input_dim,
            config.hidden,
            num_layers=config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.feature_dim = config.hidden
        self.head = nn.Linear(config.hidden, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> StreamOutput:
        mask = self.frame_mask(x, mask)
        x = x * mask[:, :, None].to(x.dtype)
        # length = last valid frame + 1 (at least 1, so an empty sequence reads one zero frame)
        steps = torch.arange(1, x.shape[1] + 1, device=x.device)
        lengths = (mask * steps).amax(dim=1).clamp_min(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        feature = h[-1]
        return self.scored(feature, self.dropout(feature))


POOLINGS = ("mean", "std", "max")


def pool_sequence(x: np.ndarray, mask: np.ndarray | None = None, poolings: tuple[str, ...] = POOLINGS) -> np.ndarray:
    """(T, D) frame features -> (len(poolings) * D,) video-level vector over the valid frames.

    A sequence with no valid frame pools to zeros (the caller decides whether to keep it).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a (T, D) sequence, got shape {x.shape}")
    valid = x[np.asarray(mask, dtype=bool)] if mask is not None else x
    if len(valid) == 0:
        return np.zeros(len(poolings) * x.shape[1])
    parts = []
    for name in poolings:
        if name == "mean":
            parts.append(valid.mean(axis=0))
        elif name == "std":
            parts.append(valid.std(axis=0))
        elif name == "max":
            parts.append(valid.max(axis=0))
        else:
            raise ValueError(f"unknown pooling {name!r}; one of {POOLINGS}")
    return np.concatenate(parts)


class SVRBaseline:
    """Standardised pooled features -> RBF support vector regression (scikit-learn).

    ``fit(sequences, scores, masks=None)`` and ``predict(sequences, masks=None)`` take lists of
    (T_i, D) arrays (lengths may differ) or an already pooled (N, F) matrix.
    """

    def __init__(
        self,
        *,
        C: float = 1.0,
        epsilon: float = 0.05,  # scores live in [0, 1] (SPEC section 3)
        kernel: str = "rbf",
        gamma: str | float = "scale",
        poolings: tuple[str, ...] = POOLINGS,
    ):
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVR

        self.poolings = tuple(poolings)
        self.model = make_pipeline(StandardScaler(), SVR(C=C, epsilon=epsilon, kernel=kernel, gamma=gamma))
        self.fitted = False

    def features(self, sequences, masks=None) -> np.ndarray:
        if isinstance(sequences, np.ndarray) and sequences.ndim == 2:
            return sequences.astype(np.float64)
        masks = masks if masks is not None else [None] * len(sequences)
        if len(masks) != len(sequences):
            raise ValueError(f"{len(sequences)} sequences but {len(masks)} masks")
        return np.stack([pool_sequence(s, m, self.poolings) for s, m in zip(sequences, masks, strict=True)])

    def fit(self, sequences, scores, masks=None) -> SVRBaseline:
        x = self.features(sequences, masks)
        y = np.asarray(scores, dtype=np.float64)
        if len(x) != len(y) or len(y) < 2:
            raise ValueError(f"need at least two sequences with one score each, got {len(x)} and {len(y)}")
        self.model.fit(x, y)
        self.fitted = True
        return self

    def predict(self, sequences, masks=None) -> np.ndarray:
        if not self.fitted:
            raise RuntimeError("SVRBaseline.predict called before fit")
        return self.model.predict(self.features(sequences, masks))

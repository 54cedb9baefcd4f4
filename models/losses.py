"""Training loss (paper eq. 14, SPEC section 5) and GradNorm loss balancing (Chen et al., ICML 2018).

``L = a * MSE(final) + b * MarginRanking(final) + c * sum_m MarginRanking(stream_m)``. The
ranking terms compare every pair (i, j) of the batch with ``sign(y_i - y_j)``:
``max(0, -sign(y_i - y_j) * (p_i - p_j) + margin)``, averaged over the pairs whose targets
differ (tied targets say nothing about order). A stream's ranking term uses only the pairs where
that stream is present for both clips.

The weights (a, b, c) are not tuned by hand: :class:`GradNorm` learns them so that each
weighted term's gradient on a shared layer grows in proportion to how slowly that term trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

TERMS: tuple[str, ...] = ("mse", "rank_final", "rank_streams")


def margin_ranking(
    pred: torch.Tensor, target: torch.Tensor, margin: float = 0.0, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Pairwise margin ranking loss over a batch (paper eq. 14); ``valid`` (N,) bool limits the clips.

    Returns a scalar; zero (still attached to ``pred``) when no pair has differing targets.
    """
    if pred.shape != target.shape or pred.dim() != 1:
        raise ValueError(f"pred and target must both be (N,), got {tuple(pred.shape)} and {tuple(target.shape)}")
    sign = torch.sign(target[:, None] - target[None, :])  # (N, N): +1 where clip i should rank above j
    pairs = torch.triu(sign != 0, diagonal=1)
    if valid is not None:
        valid = valid.to(torch.bool)
        pairs = pairs & valid[:, None] & valid[None, :]
    if not pairs.any():
        return pred.sum() * 0.0
    diff = pred[:, None] - pred[None, :]
    losses = F.relu(-sign * diff + margin)
    return losses[pairs].mean()


class LossTerms(NamedTuple):
    """The unweighted terms of eq. 14 as one (3,) tensor in :data:`TERMS` order, and by name."""

    values: torch.Tensor
    mse: torch.Tensor
    rank_final: torch.Tensor
    rank_streams: torch.Tensor


@dataclass(frozen=True)
class LossConfig:
    margin: float = 0.05  # ranking margin, in score units (scores are in [0, 1], SPEC section 3)
    use_mse: bool = True  # False: the "w/o MSE" ablation
    use_ranking: bool = True  # False: the "w/o ranking loss" ablation (both ranking terms)
    gradnorm: bool = True  # False: fixed weights, initial_weights
    initial_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # a, b, c before GradNorm moves them
    alpha: float = 1.5  # GradNorm asymmetry (Chen et al. use 0.5 to 3; 1.5 for regression tasks)
    gradnorm_lr: float = 0.025  # learning rate of GradNorm's own optimiser on the weights
    # False for a single-stream model: it has no per-stream scores, so the third term does not
    # exist and must not take part in GradNorm (counting it drags the other weights down)
    stream_ranking: bool = True

    def active(self) -> tuple[bool, bool, bool]:
        return (self.use_mse, self.use_ranking, self.use_ranking and self.stream_ranking)


def virality_terms(
    final: torch.Tensor,
    target: torch.Tensor,
    stream_scores: torch.Tensor | None = None,
    present: torch.Tensor | None = None,
    margin: float = 0.05,
) -> LossTerms:
    """MSE and ranking on the fused score, and the sum of each stream's ranking loss.

    ``final`` and ``target`` (N,); ``stream_scores`` (N, M) and ``present`` (N, M) bool, or None
    for a single-stream model (then the stream term is zero).
    """
    mse = F.mse_loss(final, target)
    rank_final = margin_ranking(final, target, margin)
    if stream_scores is None:
        rank_streams = final.sum() * 0.0
    else:
        if present is None:
            present = torch.ones_like(stream_scores, dtype=torch.bool)
        rank_streams = sum(
            margin_ranking(stream_scores[:, m], target, margin, present[:, m]) for m in range(stream_scores.shape[1])
        )
    return LossTerms(torch.stack([mse, rank_final, rank_streams]), mse, rank_final, rank_streams)


class GradNorm(nn.Module):
    """Learnable loss weights balanced by gradient normalisation (Chen et al. 2018, Algorithm 1).

    Per step, with ``L_i`` the unweighted terms and ``W`` a shared layer:

    - ``G_i = || d(w_i L_i) / dW ||``, ``G_bar`` their mean;
    - inverse training rate ``r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0))``;
    - ``L_grad = sum_i | G_i - G_bar * r_i^alpha |`` with the target held constant;
    - one step of GradNorm's own optimiser on ``w`` w.r.t. ``L_grad`` only, then the weights are
      renormalised to sum to the number of active terms.

    Use: ``total = gn.weighted(terms)``; ``gn.update(terms, shared_params)``; ``total.backward()``.
    ``update`` differentiates the terms with ``retain_graph`` so the model's backward still runs;
    the model's own gradients never include ``L_grad``. ``history`` holds the weights after each
    step (a list of lists, in :data:`TERMS` order, inactive terms at 0).
    """

    def __init__(
        self,
        num_terms: int = 3,
        *,
        alpha: float = 1.5,
        lr: float = 0.025,
        initial: tuple[float, ...] | None = None,
        active: tuple[bool, ...] | None = None,
    ):
        super().__init__()
        active = tuple(active) if active is not None else (True,) * num_terms
        initial = tuple(initial) if initial is not None else (1.0,) * num_terms
        if len(active) != num_terms or len(initial) != num_terms:
            raise ValueError(f"need {num_terms} initial weights and active flags, got {initial} and {active}")
        if not any(active):
            raise ValueError("at least one loss term must be active")
        if any(w <= 0 for w, a in zip(initial, active, strict=True) if a):
            raise ValueError(f"initial weights of active terms must be positive: {initial}")
        self.alpha = alpha
        self.register_buffer("active", torch.tensor(active, dtype=torch.bool))
        w = torch.tensor(initial, dtype=torch.float32) * self.active
        w = w * self.active.sum() / w.sum()  # start normalised, as the update keeps them
        self.weights = nn.Parameter(w)
        self.register_buffer("initial_losses", torch.full((num_terms,), float("nan")))
        self.optimizer = torch.optim.Adam([self.weights], lr=lr)
        self.history: list[list[float]] = []

    def weighted(self, terms: torch.Tensor) -> torch.Tensor:
        """``sum_i w_i L_i`` with the weights as constants (the model's training loss)."""
        return (self.weights.detach() * self.active * terms).sum()

    def update(self, terms: torch.Tensor, shared: list[torch.Tensor]) -> dict[str, float]:
        """One GradNorm step on the weights; returns the step's figures (also appended to history)."""
        k = int(self.active.sum())
        idx = torch.nonzero(self.active).flatten().tolist()
        with torch.no_grad():
            if torch.isnan(self.initial_losses).any():
                self.initial_losses.copy_(terms.detach().clamp_min(1e-12))
        # norms of the unweighted terms' gradients on the shared layer (constants for the update)
        norms = []
        for i in idx:
            grads = torch.autograd.grad(terms[i], shared, retain_graph=True, allow_unused=True)
            sq = sum((g.detach() ** 2).sum() for g in grads if g is not None)
            norms.append(torch.sqrt(torch.as_tensor(sq, dtype=torch.float32, device=self.weights.device)))
        norms = torch.stack(norms)
        w = self.weights[idx]
        g = w * norms  # G_i(t) = || grad_W (w_i L_i) || = w_i ||grad_W L_i||, w_i > 0
        ratio = terms.detach()[idx] / self.initial_losses[idx]
        rate = ratio / ratio.mean().clamp_min(1e-12)
        target = (g.mean() * rate**self.alpha).detach()
        loss_grad = (g - target).abs().sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss_grad.backward(inputs=[self.weights])
        self.optimizer.step()
        with torch.no_grad():
            w = self.weights.clamp_min(1e-4) * self.active
            self.weights.copy_(w * k / w.sum())
        record = self.weights.detach().cpu().tolist()
        self.history.append(record)
        return {
            "gradnorm_loss": float(loss_grad.detach()),
            **{f"w_{n}": v for n, v in zip(TERMS, record, strict=False)},
        }


@dataclass
class ViralityLoss:
    """Eq. 14 with fixed or GradNorm-balanced weights; one object per training run.

    ``step_loss(final, target, stream_scores, present, shared)`` returns the scalar to
    backpropagate and a dict of figures to log (terms, weights).
    """

    config: LossConfig = field(default_factory=LossConfig)
    gradnorm: GradNorm | None = None

    def __post_init__(self):
        if self.config.gradnorm and self.gradnorm is None:
            self.gradnorm = GradNorm(
                len(TERMS),
                alpha=self.config.alpha,
                lr=self.config.gradnorm_lr,
                initial=self.config.initial_weights,
                active=self.config.active(),
            )
        if not any(self.config.active()):
            raise ValueError("the loss needs MSE or ranking terms")

    def weights(self) -> torch.Tensor:
        if self.gradnorm is not None:
            return self.gradnorm.weights.detach()
        return torch.tensor(self.config.initial_weights) * torch.tensor(self.config.active())

    def step_loss(
        self,
        final: torch.Tensor,
        target: torch.Tensor,
        stream_scores: torch.Tensor | None = None,
        present: torch.Tensor | None = None,
        shared: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted loss; with GradNorm and ``shared`` given (training), also one weight update."""
        if self.config.stream_ranking and self.config.use_ranking and stream_scores is None:
            raise ValueError("this loss ranks per-stream scores (stream_ranking=True) but none were given")
        terms = virality_terms(final, target, stream_scores, present, self.config.margin)
        log = {name: float(v) for name, v in zip(TERMS, terms.values.detach(), strict=True)}
        if self.gradnorm is None:
            total = (self.weights().to(terms.values) * terms.values).sum()
        else:
            total = self.gradnorm.weighted(terms.values)
            if shared is not None and torch.is_grad_enabled() and total.requires_grad:
                log.update(self.gradnorm.update(terms.values, shared))
        log["loss"] = float(total.detach())
        return total, log

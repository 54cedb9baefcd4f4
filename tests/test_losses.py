"""Eq. 14 loss terms and GradNorm loss balancing (models/losses.py)."""

from __future__ import annotations

import pytest
import torch

from models.losses import TERMS, GradNorm, LossConfig, ViralityLoss, margin_ranking, virality_terms


def test_margin_ranking_by_hand():
    pred = torch.tensor([0.2, 0.5, 0.1])
    target = torch.tensor([1.0, 0.0, 0.5])
    # pairs (i < j), sign(y_i - y_j), loss max(0, -sign * (p_i - p_j) + 0.1):
    # (0,1) +1: max(0, -(0.2-0.5)+0.1) = 0.4; (0,2) +1: max(0, -(0.2-0.1)+0.1) = 0.0;
    # (1,2) -1: max(0, (0.5-0.1)+0.1) = 0.5  -> mean 0.3
    assert float(margin_ranking(pred, target, margin=0.1)) == pytest.approx(0.3)
    # the same as torch's loss on the explicit pairs
    i, j = torch.triu_indices(3, 3, offset=1)
    ref = torch.nn.functional.margin_ranking_loss(pred[i], pred[j], torch.sign(target[i] - target[j]), margin=0.1)
    assert float(margin_ranking(pred, target, 0.1)) == pytest.approx(float(ref))
    # correctly ordered with room to spare: no loss
    assert float(margin_ranking(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([0.9, 0.5, 0.1]), 0.5)) == 0.0


def test_ties_and_absent_clips_make_no_pairs():
    pred = torch.tensor([0.9, 0.1, 0.5], requires_grad=True)
    tied = margin_ranking(pred, torch.tensor([0.5, 0.5, 0.5]), 0.1)
    assert float(tied.detach()) == 0.0
    tied.backward()  # still part of the graph, so a batch of ties does not break training
    assert torch.equal(pred.grad, torch.zeros(3))
    target = torch.tensor([0.0, 1.0, 0.2])
    only_pair = margin_ranking(pred, target, 0.0, valid=torch.tensor([True, True, False]))
    assert float(only_pair.detach()) == pytest.approx(0.8)  # pair (0, 1) alone: -(-1)(0.9 - 0.1)
    with pytest.raises(ValueError, match=r"\(N,\)"):
        margin_ranking(torch.zeros(3, 1), torch.zeros(3, 1))


def test_virality_terms_sum_the_streams_and_respect_missing_ones():
    final = torch.tensor([0.3, 0.6, 0.2])
    target = torch.tensor([0.2, 0.8, 0.4])
    streams = torch.tensor([[0.1, 0.9], [0.5, 0.2], [0.3, 0.4]])
    present = torch.tensor([[True, True], [True, False], [True, True]])
    t = virality_terms(final, target, streams, present, margin=0.0)
    assert t.values.shape == (3,)
    assert float(t.mse) == pytest.approx(float(((final - target) ** 2).mean()))
    expected = margin_ranking(streams[:, 0], target, 0.0) + margin_ranking(streams[:, 1], target, 0.0, present[:, 1])
    assert float(t.rank_streams) == pytest.approx(float(expected))
    assert float(t.rank_streams) > 0
    assert float(virality_terms(final, target).rank_streams) == 0.0


def shared_task(seed: int = 0):
    """A shared layer feeding three heads whose targets differ in scale by 100x, so the raw
    terms' gradients on the shared layer differ by orders of magnitude."""
    torch.manual_seed(seed)
    shared = torch.nn.Linear(4, 16)
    heads = torch.nn.ModuleList(torch.nn.Linear(16, 1) for _ in range(3))
    x = torch.randn(64, 4)
    w_true = torch.randn(4, 1)
    targets = [x @ w_true * s for s in (1.0, 10.0, 0.1)]

    def terms():
        h = torch.relu(shared(x))
        return torch.stack([((head(h) - y) ** 2).mean() for head, y in zip(heads, targets, strict=True)])

    params = list(shared.parameters()) + list(heads.parameters())
    return shared, terms, params


def test_gradnorm_moves_the_weights_when_gradient_scales_differ():
    shared, terms, params = shared_task()
    gn = GradNorm(3, alpha=1.5, lr=0.05)
    opt = torch.optim.SGD(params, lr=1e-3)
    initial = gn.weights.detach().clone()
    torch.testing.assert_close(initial, torch.ones(3))
    for _ in range(40):
        t = terms()
        total = gn.weighted(t)
        figures = gn.update(t, list(shared.parameters()))
        opt.zero_grad()
        total.backward()
        opt.step()
    assert len(gn.history) == 40 and all(len(h) == 3 for h in gn.history)
    assert set(figures) == {"gradnorm_loss", *(f"w_{n}" for n in TERMS)}
    final = torch.tensor(gn.history[-1])
    assert (final - initial).abs().max() > 0.5  # the weights have moved well away from 1
    assert final.sum() == pytest.approx(3.0, abs=1e-5)  # renormalised to the number of terms
    assert all(sum(h) == pytest.approx(3.0, abs=1e-5) for h in gn.history)
    # the term with the largest gradient (10x targets) is turned down, the smallest turned up
    assert final[1] < 1.0 < final[2]
    # the history is a record: successive steps differ
    assert gn.history[0] != gn.history[-1]


def test_gradnorm_equalises_weighted_gradient_norms():
    shared, terms, params = shared_task()

    def norms(weights):
        t = terms()
        out = []
        for i in range(3):
            g = torch.autograd.grad(weights[i] * t[i], list(shared.parameters()), retain_graph=True)
            out.append(float(torch.sqrt(sum((x**2).sum() for x in g))))
        return torch.tensor(out)

    before = norms(torch.ones(3))
    gn = GradNorm(3, alpha=0.0, lr=0.05)  # alpha 0: the target is equal norms for every term
    for _ in range(150):
        gn.update(terms(), list(shared.parameters()))  # weights only; the network is held fixed
    after = norms(gn.weights.detach())
    spread = lambda n: float(n.max() / n.min())  # noqa: E731
    assert spread(before) > 20
    assert spread(after) < spread(before) / 5


def test_gradnorm_update_leaves_the_model_gradient_alone():
    shared, terms, params = shared_task()
    gn = GradNorm(3)
    t = terms()
    weights = gn.weights.detach().clone()
    total = gn.weighted(t)
    gn.update(t, list(shared.parameters()))
    assert all(p.grad is None for p in params)  # GradNorm's own step touches only its weights
    total.backward()
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    (weights * terms()).sum().backward()  # the weights of this step, held constant
    for g, p in zip(grads, params, strict=True):
        torch.testing.assert_close(g, p.grad)


def test_inactive_terms_stay_at_zero_for_the_ablations():
    shared, terms, _ = shared_task()
    gn = GradNorm(3, active=(False, True, True))
    assert gn.weights.tolist() == [0.0, 1.0, 1.0]
    for _ in range(5):
        gn.update(terms(), list(shared.parameters()))
    assert all(h[0] == 0.0 and sum(h) == pytest.approx(2.0, abs=1e-5) for h in gn.history)
    with pytest.raises(ValueError, match="active"):
        GradNorm(3, active=(False, False, False))
    with pytest.raises(ValueError, match="positive"):
        GradNorm(3, initial=(1.0, 0.0, 1.0))


def test_virality_loss_on_a_model_logs_terms_and_weights():
    from models import build_model

    torch.manual_seed(0)
    model = build_model(
        "multimodal",
        streams=("holistic", "scenic"),
        dims={"holistic": 8, "scenic": 8},
        rtcn={"channels": (8, 8, 8, 8, 16, 16)},
        fusion_hidden=8,
    )
    inputs = {"holistic": (torch.randn(4, 12, 8), None), "scenic": (torch.randn(4, 3, 8), None)}
    target = torch.tensor([0.1, 0.9, 0.4, 0.6])
    loss = ViralityLoss(LossConfig(margin=0.05))
    out = model(inputs)
    total, log = loss.step_loss(out.score, target, out.stream_scores, None, model.shared_parameters())
    total.backward()
    assert {"mse", "rank_final", "rank_streams", "loss", "w_mse", "gradnorm_loss"} <= set(log)
    assert len(loss.gradnorm.history) == 1
    assert all(p.grad is not None for p in model.shared_parameters())
    fixed = ViralityLoss(LossConfig(gradnorm=False, use_mse=False))
    total, log = fixed.step_loss(out.score.detach(), target, out.stream_scores.detach())
    assert "w_mse" not in log
    assert float(total) == pytest.approx(log["rank_final"] + log["rank_streams"])
    with pytest.raises(ValueError, match="MSE or ranking"):
        ViralityLoss(LossConfig(use_mse=False, use_ranking=False, gradnorm=False))


def test_a_single_stream_loss_balances_only_the_two_terms_it_has():
    """For PSGCN alone there are no stream scores: GradNorm must work on MSE and the fused
    ranking only, exactly as a two-term GradNorm on those terms would (not as three terms with
    a zero one, which drags both weights down)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    x, y = torch.randn(16, 6), torch.rand(16)
    loss = ViralityLoss(LossConfig(stream_ranking=False, gradnorm_lr=0.05))
    reference = GradNorm(2, lr=0.05)
    shared = list(model[2].parameters())
    for _ in range(30):
        pred = model(x).squeeze(1)
        total, log = loss.step_loss(pred, y, None, None, shared)
        terms = virality_terms(pred, y)
        reference.update(terms.values[:2], shared)
        total.backward()
        model.zero_grad()
    history = torch.tensor(loss.gradnorm.history)
    assert (history[:, 2] == 0).all()
    torch.testing.assert_close(history[:, :2].sum(dim=1), torch.full((30,), 2.0))
    torch.testing.assert_close(history[:, :2], torch.tensor(reference.history))
    assert log["w_rank_streams"] == 0.0
    # a multi-stream loss asked to rank streams it is not given is an error, not a silent zero
    with pytest.raises(ValueError, match="stream"):
        ViralityLoss(LossConfig()).step_loss(pred.detach(), y)

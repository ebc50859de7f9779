"""EquilibriumLoss equals the paper's Eq. 3-4 (computed by hand in float64), reduces to softmax CE
for equal scores, stays finite for scores near 0, and refuses a mean score nobody supplies."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS

import loce.models  # noqa: F401  (registers EquilibriumLoss)
from loce.models.equilibrium_loss import EquilibriumLoss


def _batch(seed=0, num=24, num_classes=6):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num, num_classes + 1, generator=g) * 3
    labels = torch.randint(0, num_classes + 1, (num,), generator=g)
    labels[:3] = num_classes  # background labels included for sure
    scores = torch.rand(num_classes + 1, generator=g) * 0.9 + 0.005
    scores[-1] = 0.01
    weights = (torch.rand(num, generator=g) > 0.2).float()
    return logits, labels, scores, weights


def _by_hand(logits, labels, scores, weights, avg_factor):
    """Eq. 3 with delta = log(s_j / s_y), written as in the paper, in float64; and its gradient
    d/dz_ij = w_i / avg * (P_ij - [j == y_i]) with P = s e^z / sum(s e^z)."""
    z, s, w = logits.double(), scores.double(), weights.double()
    z_y = z.gather(1, labels[:, None])
    s_y = s[labels][:, None]
    margins = torch.log(s[None, :] / s_y)
    terms = torch.exp(z - z_y + margins)
    terms[torch.arange(len(z)), labels] = 0  # the sum runs over y' != y
    per_sample = torch.log1p(terms.sum(1))
    loss = (w * per_sample).sum() / avg_factor
    p = s * torch.exp(z)
    p = p / p.sum(1, keepdim=True)
    grad = (p - F.one_hot(labels, z.shape[1]).double()) * (w / avg_factor)[:, None]
    return loss, grad


def test_value_and_gradient_match_eq3_by_hand():
    logits, labels, scores, weights = _batch()
    loss_fn = EquilibriumLoss()
    avg_factor = 17.0
    z = logits.clone().requires_grad_(True)
    with loss_fn.supplied_scores(scores):
        loss = loss_fn(z, labels, weights, avg_factor=avg_factor)
    loss.backward()
    expected, expected_grad = _by_hand(logits, labels, scores, weights, avg_factor)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(z.grad.double(), expected_grad, rtol=1e-5, atol=1e-7)


def test_reduction_override_none_and_sum():
    logits, labels, scores, weights = _batch(seed=1)
    loss_fn = EquilibriumLoss(loss_weight=2.0)
    with loss_fn.supplied_scores(scores):
        per_sample = loss_fn(logits, labels, reduction_override='none')
        total = loss_fn(logits, labels, weights, reduction_override='sum')
    by_hand = torch.stack([_by_hand(logits[i:i + 1], labels[i:i + 1], scores,
                                    torch.ones(1), 1.0)[0] for i in range(len(labels))])
    torch.testing.assert_close(per_sample.double(), 2 * by_hand, rtol=1e-5, atol=1e-6)
    assert total.item() == pytest.approx((per_sample * weights).sum().item(), rel=1e-5)


def test_equal_scores_give_plain_cross_entropy():
    logits, labels, _, weights = _batch(seed=2)
    loss_fn = EquilibriumLoss()
    with loss_fn.supplied_scores(torch.full((logits.shape[1],), 0.37)):
        loss = loss_fn(logits, labels, weights, avg_factor=9.0)
    ce = MODELS.build(dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0))
    assert loss.item() == pytest.approx(ce(logits, labels, weights, avg_factor=9.0).item(),
                                        rel=1e-6)


@pytest.mark.parametrize('tiny', [1e-12, 0.0])
def test_loss_and_gradient_for_a_score_near_zero_equal_eq3_with_the_floor(tiny):
    """A GT class with a (near) zero score: log(s_j / s_y) is huge. The value and gradient are
    Eq. 3 in float64 with s floored at 1e-12, not just finite."""
    logits, labels, scores, _ = _batch(seed=3)
    scores[labels[5]] = tiny
    z = logits.clone().requires_grad_(True)
    loss_fn = EquilibriumLoss(reduction='none')
    with loss_fn.supplied_scores(scores):
        loss = loss_fn(z, labels)
    loss.sum().backward()
    z64 = logits.double().clone().requires_grad_(True)
    s = scores.double().clamp(min=1e-12)
    terms = s * torch.exp(z64 - z64.max(dim=1, keepdim=True).values)
    by_hand = -torch.log(terms[torch.arange(len(labels)), labels] / terms.sum(dim=1))
    by_hand.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all()
    torch.testing.assert_close(loss.double(), by_hand.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z.grad.double(), z64.grad, rtol=1e-5, atol=1e-6)
    assert loss[5].item() > 20  # the huge margin is really there: -log(1e-12 ...) ~ 27


def test_prior_indicator_works_in_a_stock_bbox_head():
    counts = [50, 20, 5, 1, 0, 300]
    head = MODELS.build(dict(
        type='Shared2FCBBoxHead', in_channels=8, fc_out_channels=16, roi_feat_size=2,
        num_classes=6, loss_cls=dict(type='EquilibriumLoss', indicator='prior',
                                     class_counts=counts, bg_score=0.02)))
    logits, labels, _, _ = _batch(seed=4)
    prior = torch.tensor(counts, dtype=torch.float32) / sum(counts)
    scores = torch.cat([prior, torch.tensor([0.02])])
    expected = F.cross_entropy(logits + scores.clamp(min=1e-12).log(), labels)
    loss = head.loss_cls(logits, labels, torch.ones(len(labels)), avg_factor=len(labels))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_mean_score_outside_loce_roi_head_fails_naming_it():
    head = MODELS.build(dict(
        type='Shared2FCBBoxHead', in_channels=8, fc_out_channels=16, roi_feat_size=2,
        num_classes=6, loss_cls=dict(type='EquilibriumLoss')))
    logits, labels, _, _ = _batch()
    with pytest.raises(RuntimeError, match='LOCERoIHead'):
        head.loss_cls(logits, labels)


def test_bad_configurations_fail_loudly():
    with pytest.raises(ValueError, match='class_counts'):
        EquilibriumLoss(indicator='prior')
    with pytest.raises(ValueError, match='indicator.bg_score'):
        EquilibriumLoss(bg_score=0.001)
    loss_fn = EquilibriumLoss()
    logits, labels, scores, _ = _batch()
    with loss_fn.supplied_scores(scores[:-1]), pytest.raises(ValueError, match='num_classes'):
        loss_fn(logits, labels)

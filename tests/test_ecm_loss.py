"""EffectiveClassMarginLoss is ECM: value and gradient against the reference's exponential form
by hand in float64; in a stock bbox head it has C + 1 sigmoid outputs and is scored
sigmoid x (1 - background); it needs the instance counts of every class."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope

import loce.models  # noqa: F401  (registers EffectiveClassMarginLoss)

INSTANCE_COUNTS = [12, 3, 480, 57, 1, 160, 20, 8]
NUM_CLASSES, FG_BG = len(INSTANCE_COUNTS), 6.3313


def _batch(seed=61, num=21):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num, NUM_CLASSES + 1, generator=g) * 2
    labels = torch.randint(0, NUM_CLASSES + 1, (num,), generator=g)
    labels[:4] = NUM_CLASSES
    return logits, labels


def _by_hand(logits, labels):
    """ECM (Cho & Kraehenbuehl), as effective_class_margin_loss.py computes it, float64:
    n = counts + [6.3313 * sum], n' = sum(n) - n, m+ = -log(n'^1/4 / (n^1/4 + n'^1/4)),
    m- = -log(n^1/4 / (n^1/4 + n'^1/4)), p = e^(z + m+) / (e^(z + m+) + e^(-z + m-)),
    loss = -sum w (y log p + (1 - y) log(1 - p)) / N with w = a log((1 + a) / a), a = n' / n.
    Gradient: dp/dz = 2 p (1 - p), so d loss / dz = 2 w (p - y) / N."""
    z = logits.double()
    n = torch.tensor(INSTANCE_COUNTS, dtype=torch.float64)
    n = torch.cat([n, n.sum()[None] * FG_BG])
    others = n.sum() - n
    m_pos = -torch.log(others ** 0.25 / (n ** 0.25 + others ** 0.25))
    m_neg = -torch.log(n ** 0.25 / (n ** 0.25 + others ** 0.25))
    e_pos, e_neg = torch.exp(z + m_pos), torch.exp(-z + m_neg)
    p = e_pos / (e_pos + e_neg)
    y = F.one_hot(labels, NUM_CLASSES + 1).double()
    a = others / n
    w = a * torch.log((1 + a) / a)
    loss = -(w * (y * torch.log(p) + (1 - y) * torch.log(e_neg / (e_pos + e_neg)))).sum()
    return loss / len(z), 2 * w * (p - y) / len(z)


def _loss():
    loss = MODELS.build(dict(type='EffectiveClassMarginLoss', num_classes=NUM_CLASSES))
    loss.set_class_statistics(image_counts=INSTANCE_COUNTS, instance_counts=INSTANCE_COUNTS,
                              num_images=100)
    return loss


def test_value_and_gradient_match_ecm_by_hand():
    logits, labels = _batch()
    z = logits.clone().requires_grad_(True)
    loss = _loss()(z, labels, torch.ones(len(z)), avg_factor=len(z))
    loss.backward()
    expected, expected_grad = _by_hand(logits, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(z.grad.double(), expected_grad, rtol=1e-5, atol=1e-8)


def test_large_logits_stay_finite():
    logits, labels = _batch(seed=62)
    z = (logits * 100).requires_grad_(True)  # the reference's exp() overflows here
    loss = _loss()(z, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_in_a_stock_bbox_head_it_is_scored_sigmoid_times_foreground():
    init_default_scope('mmdet')
    torch.manual_seed(63)
    head = MODELS.build(dict(
        type='Shared2FCBBoxHead', in_channels=4, fc_out_channels=16, roi_feat_size=3,
        num_classes=NUM_CLASSES, cls_predictor_cfg=dict(type='NormedLinear', tempearture=20),
        loss_cls=dict(type='EffectiveClassMarginLoss', num_classes=NUM_CLASSES)))
    assert head.fc_cls.out_features == NUM_CLASSES + 1
    head.loss_cls.set_class_statistics(image_counts=INSTANCE_COUNTS,
                                       instance_counts=INSTANCE_COUNTS, num_images=100)
    cls_score, bbox_pred = head(torch.randn(9, 4, 3, 3))
    rois = torch.cat([torch.zeros(9, 1), torch.rand(9, 2) * 20, torch.rand(9, 2) * 20 + 30], 1)
    raw = head.predict_by_feat((rois,), (cls_score,), (bbox_pred,),
                               [dict(img_shape=(64, 64), scale_factor=(1.0, 1.0))],
                               rcnn_test_cfg=None)[0]
    p = cls_score.sigmoid()
    torch.testing.assert_close(raw.scores, torch.cat([p[:, :-1] * (1 - p[:, -1:]), p[:, -1:]], 1))
    _, labels = _batch(seed=64, num=9)
    losses = head.loss(cls_score, bbox_pred, rois, labels, torch.ones(9), torch.zeros(9, 4),
                       torch.ones(9, 4))
    assert losses['loss_cls'].item() == pytest.approx(
        _by_hand(cls_score.detach(), labels)[0].item(), rel=1e-5)
    assert set(losses) == {'loss_cls', 'acc_objectness', 'acc_classes', 'loss_bbox'}


def test_it_needs_the_instance_counts_of_every_class():
    logits, labels = _batch()
    bare = MODELS.build(dict(type='EffectiveClassMarginLoss', num_classes=NUM_CLASSES))
    with pytest.raises(RuntimeError, match='ClassStatisticsHook'):
        bare(logits, labels)
    with pytest.raises(ValueError, match='no instance'):
        bare.set_class_statistics(image_counts=INSTANCE_COUNTS,
                                  instance_counts=[0] + INSTANCE_COUNTS[1:], num_images=100)
    restored = MODELS.build(dict(type='EffectiveClassMarginLoss', num_classes=NUM_CLASSES))
    restored.load_state_dict(_loss().state_dict())
    assert restored(logits, labels).item() == pytest.approx(_loss()(logits, labels).item())

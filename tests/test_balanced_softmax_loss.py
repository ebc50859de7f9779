"""BalancedSoftmaxLoss is BALMS's Balanced Softmax (sigmoid variant, no meta re-weighter): value
and gradient against the formula by hand in float64; in a stock bbox head it has C outputs, is
scored with the plain sigmoid (no shift) and a zero background column, and it needs every class
in the training set."""
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope

import loce.models  # noqa: F401  (registers BalancedSoftmaxLoss)

IMAGE_COUNTS = [3, 250, 40, 1, 77, 9]
NUM_CLASSES, NUM_IMAGES = len(IMAGE_COUNTS), 500


def _batch(seed=51, num=19):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num, NUM_CLASSES, generator=g) * 3
    labels = torch.randint(0, NUM_CLASSES + 1, (num,), generator=g)
    labels[:3] = NUM_CLASSES
    return logits, labels


def _by_hand(logits, labels):
    """Ren et al.'s Balanced Softmax as BALMS's fast_rcnn.py writes it for detection, float64:
    foreground RoIs' logits z_j - log((1 - f_j) / f_j), background RoIs' z_j; BCE against the
    one-hot target (background: all 0) summed over classes, averaged over RoIs. Gradient:
    (sigmoid(z') - y) / N."""
    z = logits.double().clone()
    f = torch.tensor(IMAGE_COUNTS, dtype=torch.float64) / NUM_IMAGES
    y = torch.zeros_like(z)
    for i, label in enumerate(labels.tolist()):
        if label < NUM_CLASSES:
            y[i, label] = 1
            z[i] = z[i] - torch.log((1 - f) / f)
    p = torch.sigmoid(z)
    loss = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).sum() / len(z)
    return loss, (p - y) / len(z)


def _loss():
    loss = MODELS.build(dict(type='BalancedSoftmaxLoss', num_classes=NUM_CLASSES))
    loss.set_class_statistics(image_counts=IMAGE_COUNTS, instance_counts=IMAGE_COUNTS,
                              num_images=NUM_IMAGES)
    return loss


def test_value_and_gradient_match_balanced_softmax_by_hand():
    logits, labels = _batch()
    z = logits.clone().requires_grad_(True)
    loss = _loss()(z, labels, torch.ones(len(z)), avg_factor=len(z))
    loss.backward()
    expected, expected_grad = _by_hand(logits, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(z.grad.double(), expected_grad, rtol=1e-5, atol=1e-8)


def test_in_a_stock_bbox_head_it_is_scored_with_the_plain_sigmoid():
    init_default_scope('mmdet')
    torch.manual_seed(52)
    head = MODELS.build(dict(
        type='Shared2FCBBoxHead', in_channels=4, fc_out_channels=16, roi_feat_size=3,
        num_classes=NUM_CLASSES, loss_cls=dict(type='BalancedSoftmaxLoss',
                                               num_classes=NUM_CLASSES)))
    assert head.fc_cls.out_features == NUM_CLASSES
    head.loss_cls.set_class_statistics(image_counts=IMAGE_COUNTS, instance_counts=IMAGE_COUNTS,
                                       num_images=NUM_IMAGES)
    cls_score, bbox_pred = head(torch.randn(7, 4, 3, 3))
    rois = torch.cat([torch.zeros(7, 1), torch.rand(7, 2) * 20, torch.rand(7, 2) * 20 + 30], 1)
    raw = head.predict_by_feat((rois,), (cls_score,), (bbox_pred,),
                               [dict(img_shape=(64, 64), scale_factor=(1.0, 1.0))],
                               rcnn_test_cfg=None)[0]
    torch.testing.assert_close(raw.scores, torch.cat([cls_score.sigmoid(),
                                                      torch.zeros(7, 1)], dim=1))
    _, labels = _batch(seed=53, num=7)
    losses = head.loss(cls_score, bbox_pred, rois, labels, torch.ones(7), torch.zeros(7, 4),
                       torch.ones(7, 4))
    assert losses['loss_cls'].item() == pytest.approx(
        _by_hand(cls_score.detach(), labels)[0].item(), rel=1e-5)
    assert set(losses) == {'loss_cls', 'acc_classes', 'loss_bbox'}


def test_it_needs_frequencies_of_every_class():
    logits, labels = _batch()
    bare = MODELS.build(dict(type='BalancedSoftmaxLoss', num_classes=NUM_CLASSES))
    with pytest.raises(RuntimeError, match='ClassStatisticsHook'):
        bare(logits, labels)
    with pytest.raises(ValueError, match=r'classes \[3\] have no image'):
        bare.set_class_statistics(image_counts=[3, 250, 40, 0, 77, 9],
                                  instance_counts=IMAGE_COUNTS, num_images=NUM_IMAGES)
    restored = MODELS.build(dict(type='BalancedSoftmaxLoss', num_classes=NUM_CLASSES))
    restored.load_state_dict(_loss().state_dict())
    assert restored(logits, labels).item() == pytest.approx(_loss()(logits, labels).item())

"""EqualizationLoss equals EQL's formula (computed by hand in float64), value and gradient; in a
stock bbox head it has C sigmoid outputs, is scored with a sigmoid and a zero background column
at test time, and refuses to train without the image-count frequencies."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope

import loce.models  # noqa: F401  (registers EqualizationLoss)

NUM_CLASSES = 7


def _batch(seed=11, num=29):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num, NUM_CLASSES, generator=g) * 2.5
    labels = torch.randint(0, NUM_CLASSES + 1, (num,), generator=g)
    labels[:4] = NUM_CLASSES  # background RoIs for sure
    labels[4:8] = torch.tensor([0, 1, 5, 6])  # rare and frequent classes among the positives
    image_counts = torch.tensor([1, 2, 40, 300, 9, 0, 120])
    return logits, labels, image_counts, 1000


def _by_hand(logits, labels, image_counts, num_images, lambda_):
    """EQL (Tan et al. Eq. 5-6): L = -sum_j w_j [y_j log p_j + (1 - y_j) log(1 - p_j)],
    w_j = 1 - E(r) T(f_j) (1 - y_j), averaged over RoIs; d/dz_j = w_j (p_j - y_j) / N."""
    z = logits.double()
    p = torch.sigmoid(z)
    y = torch.zeros_like(z)
    for i, label in enumerate(labels.tolist()):
        if label < NUM_CLASSES:
            y[i, label] = 1
    e = (labels < NUM_CLASSES).double()[:, None]
    t = ((image_counts.double() / num_images) < lambda_).double()[None, :]
    w = 1 - e * t * (1 - y)
    loss = -(w * (y * torch.log(p) + (1 - y) * torch.log(1 - p))).sum() / len(z)
    return loss, w * (p - y) / len(z)


def _loss(lambda_=0.01):
    return MODELS.build(dict(type='EqualizationLoss', num_classes=NUM_CLASSES, lambda_=lambda_))


def test_value_and_gradient_match_eql_by_hand():
    logits, labels, counts, num_images = _batch()
    loss_fn = _loss()
    loss_fn.set_class_statistics(image_counts=counts.tolist(), instance_counts=counts.tolist(),
                                 num_images=num_images)
    z = logits.clone().requires_grad_(True)
    loss = loss_fn(z, labels, torch.ones(len(z)), avg_factor=len(z))
    loss.backward()
    expected, expected_grad = _by_hand(logits, labels, counts, num_images, 0.01)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(z.grad.double(), expected_grad, rtol=1e-5, atol=1e-8)


def test_rare_classes_get_no_negative_gradient_from_other_foreground_rois():
    logits, labels, counts, num_images = _batch(seed=12)
    loss_fn = _loss(lambda_=0.005)  # classes 0, 1 and 5 (0.1%, 0.2%, 0%) are rare; 4 (0.9%) not
    loss_fn.set_class_statistics(image_counts=counts, instance_counts=counts,
                                 num_images=num_images)
    z = logits.clone().requires_grad_(True)
    loss_fn(z, labels).backward()
    fg = labels < NUM_CLASSES
    for j in (0, 1, 5):
        other = fg & (labels != j)
        assert (z.grad[other, j] == 0).all()
        assert (z.grad[~fg, j] > 0).all()  # background RoIs still push every class down
    assert (z.grad[fg & (labels != 4), 4] > 0).all()


def test_a_class_exactly_at_the_threshold_is_not_rare():
    """The reference's T_lambda(f) = 1 for f < lambda: class 2, in exactly 1/16 of the images with
    lambda = 1/16 (both exact in binary), keeps the negative gradients of other foreground RoIs."""
    logits, labels, _, _ = _batch(seed=14)
    counts, num_images = torch.tensor([1, 2, 64, 300, 9, 0, 120]), 1024
    loss_fn = _loss(lambda_=1 / 16)  # classes 0, 1, 4 and 5 are rare, 2 is at the threshold
    loss_fn.set_class_statistics(image_counts=counts, instance_counts=counts,
                                 num_images=num_images)
    z = logits.clone().requires_grad_(True)
    loss = loss_fn(z, labels, avg_factor=len(z))
    loss.backward()
    expected, expected_grad = _by_hand(logits, labels, counts, num_images, 1 / 16)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(z.grad.double(), expected_grad, rtol=1e-5, atol=1e-8)
    other_fg = (labels < NUM_CLASSES) & (labels != 2)
    assert other_fg.sum() >= 3 and (z.grad[other_fg, 2] > 0).all()
    assert (z.grad[other_fg & (labels != 4), 4] == 0).all()  # rare


def test_a_loss_without_frequencies_refuses_to_train():
    logits, labels, _, _ = _batch()
    with pytest.raises(RuntimeError, match='ClassStatisticsHook'):
        _loss()(logits, labels)
    with pytest.raises(ValueError, match='num_classes'):
        _loss().set_class_statistics(image_counts=[1, 2], instance_counts=[1, 2], num_images=3)


def _head():
    init_default_scope('mmdet')
    return MODELS.build(dict(
        type='Shared2FCBBoxHead', in_channels=4, fc_out_channels=16, roi_feat_size=3,
        num_classes=NUM_CLASSES,
        loss_cls=dict(type='EqualizationLoss', num_classes=NUM_CLASSES, lambda_=1.1e-3)))


def test_in_a_stock_bbox_head_it_trains_and_is_scored_with_a_sigmoid():
    torch.manual_seed(13)
    head = _head()
    assert head.fc_cls.out_features == NUM_CLASSES  # no background logit
    _, labels, counts, num_images = _batch(seed=13, num=10)
    head.loss_cls.set_class_statistics(image_counts=counts, instance_counts=counts,
                                       num_images=num_images)
    feats = torch.randn(10, 4, 3, 3)
    cls_score, bbox_pred = head(feats)
    rois = torch.cat([torch.zeros(10, 1), torch.rand(10, 2) * 20,
                      torch.rand(10, 2) * 20 + 30], dim=1)
    losses = head.loss(cls_score, bbox_pred, rois, labels, torch.ones(10),
                       torch.zeros(10, 4), torch.ones(10, 4))
    assert losses['loss_cls'].item() == pytest.approx(
        _by_hand(cls_score.detach(), labels, counts, num_images, 1.1e-3)[0].item(), rel=1e-5)
    assert set(losses) == {'loss_cls', 'acc_classes', 'loss_bbox'}
    losses['loss_cls'].backward()
    assert head.fc_cls.weight.grad.abs().sum() > 0

    img_meta = dict(img_shape=(64, 64), scale_factor=(1.0, 1.0))
    raw = head.predict_by_feat((rois,), (cls_score,), (bbox_pred,), [img_meta],
                               rcnn_test_cfg=None)[0]
    expected = torch.cat([cls_score.sigmoid(), torch.zeros(10, 1)], dim=1)
    torch.testing.assert_close(raw.scores, expected)
    assert not torch.allclose(raw.scores, F.softmax(torch.cat(
        [cls_score, torch.zeros(10, 1)], dim=1), dim=1))
    test_cfg = ConfigDict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
                          max_per_img=100)
    dets = head.predict_by_feat((rois,), (cls_score,), (bbox_pred,), [img_meta],
                                rcnn_test_cfg=test_cfg)[0]
    assert (dets.labels < NUM_CLASSES).all()
    assert set(dets.scores.tolist()) <= set(cls_score.sigmoid().flatten().tolist())


def test_frequencies_are_in_the_state_dict():
    loss_fn = _loss()
    loss_fn.set_class_statistics(image_counts=[1, 2, 3, 4, 5, 6, 7],
                                 instance_counts=[1] * 7, num_images=10)
    restored = _loss()
    restored.load_state_dict(loss_fn.state_dict())
    torch.testing.assert_close(restored.image_frequency, torch.arange(1, 8) / 10.0)

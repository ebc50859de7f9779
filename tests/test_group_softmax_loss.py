"""GroupSoftmaxLoss is BAGS: its groups and channel layout, its value and gradient against the
paper's group-wise softmax computed by hand in float64, its "others" sampling, and its test-time
scores (group softmax x foreground probability, C + 1 columns) through a stock bbox head; the
grouping comes back from a state dict."""
import bisect

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope

import loce.models  # noqa: F401  (registers GroupSoftmaxLoss)
from loce.models.group_softmax_loss import group_layout, sample_others

COUNTS = [5, 1000, 12, 0, 150, 99, 9, 3000, 100, 10]  # instances per class, unsorted
NUM_CLASSES = len(COUNTS)
BINS = (10, 100, 1000)


def _groups_by_hand():
    """[0, 10), [10, 100), [100, 1000), [1000, inf): each group's classes in class order, and
    each group's first channel (its "others"); the background group's 2 channels come last."""
    members = [[c for c, n in enumerate(COUNTS) if bisect.bisect_right(BINS, n) == g]
               for g in range(len(BINS) + 1)]
    starts, start = [], 0
    for classes in members:
        starts.append(start)
        start += len(classes) + 1
    return members, starts, start


def test_groups_and_channels_follow_bisect_right_on_instance_counts():
    members, starts, bg_start = _groups_by_hand()
    assert members == [[0, 3, 6], [2, 5, 9], [4, 8], [1, 7]]
    group, channel, start, width = group_layout(torch.tensor(COUNTS, dtype=torch.float), BINS)
    assert start.tolist() == starts and width.tolist() == [len(m) + 1 for m in members]
    for g, classes in enumerate(members):
        for k, c in enumerate(classes):
            assert (group[c].item(), channel[c].item()) == (g, starts[g] + 1 + k)
    assert bg_start + 2 == NUM_CLASSES + 1 + 5


def _batch(seed=41, num=31):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num, NUM_CLASSES + 1 + 5, generator=g) * 2
    labels = torch.randint(0, NUM_CLASSES + 1, (num,), generator=g)
    labels[:5] = NUM_CLASSES
    labels[5:9] = torch.tensor([0, 3, 6, 0])  # group 0 has positives; group 2 (4, 8) has none
    labels[(labels == 4) | (labels == 8)] = 1
    return logits, labels


def _by_hand(logits, labels):
    """BAGS (Li et al. Eq. 4-5) with every "others" RoI kept, float64: a softmax CE per group over
    [others, its classes], RoIs outside the group labelled others, averaged over the group's RoIs
    if it has a positive; plus the background group [foreground, background] over all RoIs.
    Gradient: (softmax - one-hot) / RoIs counted, per group block."""
    members, starts, bg_start = _groups_by_hand()
    z = logits.double()
    n = len(z)
    loss, grad = z.new_zeros(()), torch.zeros_like(z)
    blocks = [(starts[g], [1 + members[g].index(c) if c in members[g] else 0
                           for c in labels.tolist()], len(members[g]) + 1)
              for g in range(len(members))]
    blocks.append((bg_start, [int(c == NUM_CLASSES) for c in labels.tolist()], 2))
    for first, label, width in blocks:
        label = torch.tensor(label)
        if first != bg_start and not (label > 0).any():
            continue
        block = z[:, first:first + width]
        loss = loss - block.log_softmax(1)[torch.arange(n), label].mean()
        grad[:, first:first + width] = (block.softmax(1) - torch.eye(width)[label].double()) / n
    return loss, grad


def _loss(beta=8):
    loss = MODELS.build(dict(type='GroupSoftmaxLoss', num_classes=NUM_CLASSES, beta=beta,
                             bin_split=BINS))
    loss.set_class_statistics(image_counts=COUNTS, instance_counts=COUNTS, num_images=100)
    return loss


def test_value_and_gradient_match_bags_by_hand():
    logits, labels = _batch()
    z = logits.clone().requires_grad_(True)
    loss = _loss(beta=1000)(z, labels, torch.ones(len(z)), avg_factor=len(z))
    loss.backward()
    expected, expected_grad = _by_hand(logits, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(z.grad.double(), expected_grad, rtol=1e-5, atol=1e-8)


def test_others_are_sampled_at_beta_per_positive_without_replacement():
    torch.manual_seed(42)
    label = torch.zeros(40, dtype=torch.long)
    label[[3, 17]] = torch.tensor([1, 2])
    weight = sample_others(label, beta=8)
    assert weight.sum() == 2 + 16 and weight[[3, 17]].tolist() == [1, 1]
    assert set(weight.tolist()) <= {0.0, 1.0}
    assert sample_others(torch.zeros(9, dtype=torch.long), beta=8).sum() == 0
    few = torch.tensor([1, 0, 0, 2, 0])
    assert sample_others(few, beta=8).tolist() == [1.0] * 5


def test_test_time_scores_through_a_stock_bbox_head():
    init_default_scope('mmdet')
    torch.manual_seed(43)
    head = MODELS.build(dict(
        type='Shared2FCBBoxHead', in_channels=4, fc_out_channels=16, roi_feat_size=3,
        num_classes=NUM_CLASSES,
        loss_cls=dict(type='GroupSoftmaxLoss', num_classes=NUM_CLASSES, beta=8)))
    assert head.fc_cls.out_features == NUM_CLASSES + 1 + 5
    head.loss_cls.set_class_statistics(image_counts=COUNTS, instance_counts=COUNTS,
                                       num_images=100)
    cls_score, bbox_pred = head(torch.randn(6, 4, 3, 3))
    rois = torch.cat([torch.zeros(6, 1), torch.rand(6, 2) * 20, torch.rand(6, 2) * 20 + 30], 1)
    raw = head.predict_by_feat((rois,), (cls_score,), (bbox_pred,),
                               [dict(img_shape=(64, 64), scale_factor=(1.0, 1.0))],
                               rcnn_test_cfg=None)[0]
    members, starts, bg_start = _groups_by_hand()
    z = cls_score.detach().double()
    bg_block = z[:, bg_start:].softmax(1)
    expected = torch.zeros(6, NUM_CLASSES + 1, dtype=torch.float64)
    for g, classes in enumerate(members):
        block = z[:, starts[g]:starts[g] + len(classes) + 1].softmax(1)
        for k, c in enumerate(classes):
            expected[:, c] = block[:, 1 + k] * bg_block[:, 0]
    expected[:, -1] = bg_block[:, 1]
    torch.testing.assert_close(raw.scores.double(), expected, rtol=1e-5, atol=1e-7)

    labels = torch.tensor([NUM_CLASSES, 0, 7, NUM_CLASSES, 2, 4])
    losses = head.loss(cls_score, bbox_pred, rois, labels, torch.ones(6), torch.zeros(6, 4),
                       torch.ones(6, 4))
    assert set(losses) == {'loss_cls', 'acc_objectness', 'acc_classes', 'loss_bbox'}


def test_the_grouping_is_in_the_state_dict_and_required():
    trained = _loss()
    restored = MODELS.build(dict(type='GroupSoftmaxLoss', num_classes=NUM_CLASSES))
    logits, labels = _batch(seed=45)
    with pytest.raises(RuntimeError, match='ClassStatisticsHook'):
        restored.get_activation(logits)
    with pytest.raises(RuntimeError, match='ClassStatisticsHook'):
        restored(logits, labels)
    restored.load_state_dict(trained.state_dict())
    torch.testing.assert_close(restored.get_activation(logits), trained.get_activation(logits))


def test_bad_configurations_fail_loudly():
    loss = _loss()
    logits, labels = _batch()
    with pytest.raises(ValueError, match='logits'):
        loss(logits[:, :-1], labels)
    with pytest.raises(ValueError, match='num_classes'):
        loss.get_cls_channels(NUM_CLASSES + 1)
    with pytest.raises(ValueError, match='increasing'):
        MODELS.build(dict(type='GroupSoftmaxLoss', bin_split=(100, 10)))

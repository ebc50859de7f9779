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
from loce.models.group_softmax_loss import group_layout

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


def _block_labels(labels):
    """Per foreground group: (first channel, width, label within the group: 0 for "others")."""
    members, starts, _ = _groups_by_hand()
    return [(starts[g], len(classes) + 1,
             torch.tensor([1 + classes.index(c) if c in classes else 0 for c in labels.tolist()]))
            for g, classes in enumerate(members)]


def test_with_others_sampled_away_value_and_gradient_match_bags_by_hand():
    """beta = 1: a group with p positives counts p of its "others" RoIs, drawn without
    replacement, not all of them. With the others made alike in each group's block, the group's
    loss is (sum of its positives' CE + p CE_others) / 2p whichever are drawn, and exactly p
    others get the gradient (softmax - one-hot) / 2p."""
    logits, labels = _batch()
    z = logits.clone()
    blocks = _block_labels(labels)
    for first, width, label in blocks:
        others = (label == 0).nonzero().flatten()
        z[others, first:first + width] = z[others[0], first:first + width]
    x = z.clone().requires_grad_(True)
    torch.manual_seed(46)
    loss = _loss(beta=1)(x, labels, torch.ones(len(z)), avg_factor=len(z))
    loss.backward()
    rois = torch.arange(len(z))
    bg = z[:, -2:].double()
    expected = -bg.log_softmax(1)[rois, (labels == NUM_CLASSES).long()].mean()
    sampled_away = 0
    for first, width, label in blocks:
        block, grad = z[:, first:first + width].double(), x.grad[:, first:first + width].double()
        positive = label > 0
        num_pos, num_others = int(positive.sum()), int((~positive).sum())
        if num_pos == 0:
            assert (grad == 0).all()
            continue
        drawn = min(num_pos, num_others)
        sampled_away += num_others - drawn
        ce = -block.log_softmax(1)[rois, label]
        expected = expected + (ce[positive].sum() + drawn * ce[~positive][0]) / (num_pos + drawn)
        step = (block.softmax(1) - torch.eye(width, dtype=torch.float64)[label]) / (num_pos + drawn)
        counted = (grad != 0).any(1)
        assert int((counted & ~positive).sum()) == drawn and counted[positive].all()
        torch.testing.assert_close(grad[counted], step[counted], rtol=1e-5, atol=1e-7)
    assert sampled_away > 10
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(x.grad[:, -2:].double(), (bg.softmax(1) - torch.eye(
        2, dtype=torch.float64)[(labels == NUM_CLASSES).long()]) / len(z), rtol=1e-5, atol=1e-8)


def test_forward_draws_beta_others_per_positive_without_replacement():
    """Through forward, the RoIs that get a gradient in a group's block: its positives and beta
    (8) times as many distinct others, all of them if there are fewer, none without a positive."""
    labels = torch.full((40, ), NUM_CLASSES)
    labels[:3] = torch.tensor([0, 3, 2])  # 2 positives of group 0, 1 of group 1
    labels[3:8] = 4  # 5 positives of group 2: 40 others wanted, 35 there
    expected = [2 + 16, 1 + 8, 40, 0]  # group 3 (classes 1 and 7) has no positive
    for seed in (47, 48):
        torch.manual_seed(seed)
        x = (torch.randn(40, NUM_CLASSES + 1 + 5) * 2).requires_grad_(True)
        _loss(beta=8)(x, labels).backward()
        counted = [int((x.grad[:, first:first + width] != 0).any(1).sum())
                   for first, width, _ in _block_labels(labels)]
        assert counted == expected


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

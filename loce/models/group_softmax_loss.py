"""Balanced Group Softmax (BAGS, Li et al., CVPR 2020) as a bbox-head classification loss.

Follows the LVIS v1 port in tztztztztz/eqlv2 (mmdet/models/losses/group_softmax.py), which is
FishYuLi/BalancedGroupSoftmax's GSBBoxHeadWith0 (mmdet 1.0rc0, LVIS v0.5) with the group order
reversed:
- Classes are grouped by training instance count with bins (10, 100, 1000): [0, 10), [10, 100),
  [100, 1000), [1000, inf) (bisect_right, as both references), plus a background group.
- The classifier has C + 1 + G channels, G = 5 groups. Foreground group g owns an "others"
  logit followed by its classes in class order; the background group owns [others, background],
  its "others" meaning "some foreground class".
- Each group has its own softmax cross-entropy. In a foreground group, RoIs of a class outside
  it are labelled "others"; all of the group's own positives count, and beta (8) times as many
  "others" RoIs are drawn uniformly without replacement (all of them if there are fewer); a
  group without positives in the batch contributes nothing. The background group takes every
  RoI. Each group's loss is averaged over its counted RoIs, and the groups' losses are summed.
- Test-time score of class c: its probability in its group's softmax times the background
  group's foreground probability; background score: the background group's background
  probability (C + 1 columns for mmdet's NMS).
The references ignore the head's label weights and avg_factor, and so does this loss.
The instance counts come from ClassStatisticsHook and are a buffer, so a checkpoint carries the
grouping its classifier was trained with.
"""
import torch
import torch.nn.functional as F
from mmdet.models.losses import accuracy
from mmdet.registry import MODELS
from torch import nn

from .class_statistics import as_counts, check_channels, require_statistics


def group_layout(instance_counts, bin_split):
    """(group of each class, channel of each class, first channel of each group, width of each
    group) for the foreground groups; the background group's two channels come last."""
    bins = torch.as_tensor(bin_split, dtype=instance_counts.dtype, device=instance_counts.device)
    group = torch.bucketize(instance_counts, bins, right=True)
    num_groups = len(bin_split) + 1
    width = torch.bincount(group, minlength=num_groups) + 1  # + "others"
    start = torch.cumsum(width, 0) - width
    position = F.one_hot(group, num_groups).cumsum(0).gather(1, group[:, None]).squeeze(1)
    return group, start[group] + position, start, width


def sample_others(label, beta):
    """Weights 1 for the group's positives (label > 0) and for beta times as many "others",
    drawn uniformly without replacement; all zero if the group has no positive."""
    positive = label > 0
    num_pos = int(positive.sum())
    if num_pos == 0:
        return torch.zeros_like(label, dtype=torch.float)
    others = (~positive).nonzero().flatten()
    num_drawn = int(num_pos * beta)
    if num_drawn >= len(others):
        return torch.ones_like(label, dtype=torch.float)
    weight = positive.float()
    drawn = others[torch.randperm(len(others), device=label.device)[:num_drawn]]
    weight[drawn] = 1
    return weight


@MODELS.register_module()
class GroupSoftmaxLoss(nn.Module):
    """BAGS loss. Args: num_classes (C, as the bbox head's), beta (others per positive, 8),
    bin_split (instance-count bin edges, (10, 100, 1000)), loss_weight."""

    custom_cls_channels = True
    custom_activation = True
    custom_accuracy = True

    def __init__(self, num_classes=1203, beta=8, bin_split=(10, 100, 1000), loss_weight=1.0):
        super().__init__()
        if list(bin_split) != sorted(bin_split):
            raise ValueError(f'GroupSoftmaxLoss bin_split={bin_split}: must be increasing')
        self.num_classes = num_classes
        self.beta = beta
        self.bin_split = tuple(bin_split)
        self.num_groups = len(self.bin_split) + 2  # + the background group
        self.loss_weight = loss_weight
        self.register_buffer('instance_counts', torch.zeros(num_classes))

    @torch.no_grad()
    def set_class_statistics(self, image_counts, instance_counts, num_images):
        self.instance_counts.copy_(
            as_counts(instance_counts, self.num_classes, 'instance_counts', self))

    def get_cls_channels(self, num_classes):
        check_channels(num_classes, self.num_classes, self)
        return num_classes + 1 + self.num_groups

    def _layout(self, cls_score):
        require_statistics(self.instance_counts, self)
        if cls_score.shape[1] != self.num_classes + 1 + self.num_groups:
            raise ValueError(f'GroupSoftmaxLoss got {cls_score.shape[1]} logits, expects '
                             f'num_classes + 1 + {self.num_groups} groups')
        return group_layout(self.instance_counts.to(cls_score.device), self.bin_split)

    def forward(self, cls_score, labels, weight=None, avg_factor=None, reduction_override=None):
        if reduction_override not in (None, 'mean'):
            raise ValueError('GroupSoftmaxLoss averages each group over its sampled RoIs; '
                             f'reduction_override={reduction_override!r} is not supported')
        group, channel, start, width = self._layout(cls_score)
        cls_score = cls_score.float()
        foreground = labels < self.num_classes
        fg_labels = labels.clamp(max=self.num_classes - 1)
        losses = []
        for g in range(len(start)):
            in_group = foreground & (group[fg_labels] == g)
            label = torch.where(in_group, channel[fg_labels] - start[g], 0)
            logits = cls_score[:, start[g]:start[g] + width[g]]
            counted = sample_others(label, self.beta)
            loss = F.cross_entropy(logits, label, reduction='none')
            losses.append((loss * counted).sum() / counted.sum().clamp(min=1))
        background = F.cross_entropy(cls_score[:, -2:], (~foreground).long())
        return self.loss_weight * (sum(losses) + background)

    def get_activation(self, cls_score):
        group, channel, start, width = self._layout(cls_score)
        probs = torch.cat([block.softmax(dim=1) for block in
                           cls_score.split([*width.tolist(), 2], dim=1)], dim=1)
        return torch.cat([probs[:, channel] * probs[:, -2:-1], probs[:, -1:]], dim=1)

    def get_accuracy(self, cls_score, labels):
        """Background-group accuracy (foreground vs background) and the accuracy of the merged
        class scores over the foreground RoIs."""
        foreground = labels < self.num_classes
        scores = self.get_activation(cls_score)
        return dict(
            acc_objectness=accuracy(cls_score[:, -2:], (~foreground).long()),
            acc_classes=accuracy(scores[foreground, :-1], labels[foreground]))

    def extra_repr(self):
        return (f'num_classes={self.num_classes}, beta={self.beta}, '
                f'bin_split={self.bin_split}')

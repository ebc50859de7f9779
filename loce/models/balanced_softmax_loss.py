"""Balanced Softmax (Ren et al., NeurIPS 2020), the "BalancedSoftmax" row of BALMS's LVIS results,
without its meta re-weighter.

BALMS's detection code (cunjunyu/BalancedMetaSoftmax-InstanceSeg, projects/BALMS/balms/
fast_rcnn.py, `balanced_softmax_loss`) implements the "sigmoid variant" on a sigmoid classifier
over C classes (no background logit): for a foreground RoI every logit is shifted by the class
prior as odds,
    z'_j = z_j - log((1 - f_j) / f_j),
f_j the fraction of training images containing class j; background RoIs keep z. Then binary
cross-entropy against the one-hot target (background RoIs: all 0), summed over classes and
averaged over RoIs. At test time nothing is shifted: the sigmoid of z with a background score
of 0 (the reference's dummy column), so the shift a rare class got in training raises its score.
BALMS's own row adds a meta-learned sample re-weighter (bilevel, `higher`); it is not here.
"""
import torch
import torch.nn.functional as F
from mmdet.models.losses import accuracy
from mmdet.models.losses.utils import weight_reduce_loss
from mmdet.registry import MODELS
from torch import nn

from .class_statistics import as_counts, check_channels, require_every_class, require_statistics


def balanced_softmax_loss(cls_score, labels, frequency):
    """Per-RoI loss (summed over the C classes)."""
    num_classes = cls_score.shape[1]
    target = F.one_hot(labels, num_classes + 1)[:, :num_classes].to(cls_score.dtype)
    foreground = (labels < num_classes)[:, None]
    shift = torch.log((1 - frequency) / frequency).to(cls_score.dtype)
    logits = torch.where(foreground, cls_score - shift[None, :], cls_score)
    return F.binary_cross_entropy_with_logits(logits, target, reduction='none').sum(1)


@MODELS.register_module()
class BalancedSoftmaxLoss(nn.Module):
    """Balanced Softmax, sigmoid variant (C output channels); frequencies from
    ClassStatisticsHook. Args: num_classes (C, as the bbox head's), reduction, loss_weight."""

    custom_cls_channels = True
    custom_activation = True
    custom_accuracy = True

    def __init__(self, num_classes=1230, reduction='mean', loss_weight=1.0):
        super().__init__()
        self.num_classes = num_classes
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.register_buffer('image_frequency', torch.zeros(num_classes))

    @torch.no_grad()
    def set_class_statistics(self, image_counts, instance_counts, num_images):
        counts = as_counts(image_counts, self.num_classes, 'image_counts', self)
        require_every_class(counts, 'image', self)
        if (counts >= num_images).any():
            raise ValueError('BalancedSoftmaxLoss: a class is in every training image, its '
                             'prior odds (1 - f) / f are 0')
        self.image_frequency.copy_(counts / num_images)

    def get_cls_channels(self, num_classes):
        check_channels(num_classes, self.num_classes, self)
        return num_classes

    def get_activation(self, cls_score):
        scores = cls_score.sigmoid()
        return torch.cat([scores, scores.new_zeros(len(scores), 1)], dim=1)

    def get_accuracy(self, cls_score, labels):
        """Class accuracy over the foreground RoIs (there is no background score to rank)."""
        foreground = labels < self.num_classes
        return dict(acc_classes=accuracy(cls_score[foreground], labels[foreground]))

    def forward(self, cls_score, labels, weight=None, avg_factor=None, reduction_override=None):
        require_statistics(self.image_frequency, self)
        reduction = reduction_override or self.reduction
        loss = balanced_softmax_loss(cls_score.float(), labels, self.image_frequency.float())
        return self.loss_weight * weight_reduce_loss(
            loss, weight=None if weight is None else weight.float(), reduction=reduction,
            avg_factor=avg_factor)

    def extra_repr(self):
        return f'num_classes={self.num_classes}'

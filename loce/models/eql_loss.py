"""Equalization Loss (EQL, Tan et al., CVPR 2020) for a sigmoid classifier over C classes.

As tztztztztz/eqlv2 mmdet/models/losses/eql.py (and eql.detectron2's EQLFastRCNNOutputs): one
sigmoid per class, no background logit; a background RoI has all targets 0. The binary
cross-entropy of class j on RoI i is weighted by
    w_ij = 1 - E(r_i) * T_lambda(f_j) * (1 - y_ij),
E = 1 for a foreground RoI, T_lambda(f) = 1 for f < lambda, f_j the fraction of training images
that contain class j. So the negative gradients that foreground RoIs of other classes send to a
rare class (f_j < lambda) are dropped; background RoIs still push every class down.
Reduction as the reference: summed over classes, averaged over the RoIs (the bbox head's
avg_factor counts them). At test time: the sigmoid, with a background score of 0 (the
reference's dummy column), so mmdet's multiclass NMS sees C + 1 columns.
"""
import torch
import torch.nn.functional as F
from mmdet.models.losses import accuracy
from mmdet.models.losses.utils import weight_reduce_loss
from mmdet.registry import MODELS
from torch import nn

from .class_statistics import as_counts, check_channels, require_statistics


def eql_loss(cls_score, labels, frequency, lambda_):
    """Per-RoI EQL (summed over the C classes)."""
    num_classes = cls_score.shape[1]
    target = F.one_hot(labels, num_classes + 1)[:, :num_classes].to(cls_score.dtype)
    foreground = (labels < num_classes).to(cls_score.dtype)[:, None]
    rare = (frequency < lambda_).to(cls_score.dtype)[None, :]
    weight = 1 - foreground * rare * (1 - target)
    bce = F.binary_cross_entropy_with_logits(cls_score, target, reduction='none')
    return (bce * weight).sum(1)


@MODELS.register_module()
class EqualizationLoss(nn.Module):
    """EQL as an mmdet bbox-head classification loss (C output channels).

    Args:
        num_classes (int): C, as the bbox head's.
        lambda_ (float): the frequency threshold: 1.1e-3 on LVIS v1 (eqlv2
            configs/end2end/eql_r50_8x2_1x.py), 1.77e-3 on v0.5 (eql.detectron2 cfg.py).
        reduction, loss_weight: as mmdet's losses.

    The image-count frequencies come from ClassStatisticsHook (`set_class_statistics`).
    """

    custom_cls_channels = True
    custom_activation = True
    custom_accuracy = True

    def __init__(self, num_classes=1203, lambda_=1.77e-3, reduction='mean', loss_weight=1.0):
        super().__init__()
        self.num_classes = num_classes
        self.lambda_ = lambda_
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.register_buffer('image_frequency', torch.zeros(num_classes))

    @torch.no_grad()
    def set_class_statistics(self, image_counts, instance_counts, num_images):
        counts = as_counts(image_counts, self.num_classes, 'image_counts', self)
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
        loss = eql_loss(cls_score.float(), labels, self.image_frequency, self.lambda_)
        return self.loss_weight * weight_reduce_loss(
            loss, weight=None if weight is None else weight.float(), reduction=reduction,
            avg_factor=avg_factor)

    def extra_repr(self):
        return f'num_classes={self.num_classes}, lambda_={self.lambda_}'

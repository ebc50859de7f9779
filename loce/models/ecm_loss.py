"""Effective Class-Margin Loss (ECM, Cho & Krähenbühl, ECCV 2022), later than LOCE.

As janghyuncho/ECM-Loss (mmdet 2.24) mmdet/models/losses/effective_class_margin_loss.py and
ecm_utils.py. A sigmoid classifier over C + 1 channels, the last an objectness-like background
channel. With n_j the training instances of class j (the repository's lvis_v1_image_count.pkl
holds LVIS's instance_count, despite its name), n_bg = fg_bg_ratio * sum_j n_j (6.3313, the
authors' empirical background-to-foreground ratio for Mask R-CNN), N = sum over all C + 1
entries and n'_j = N - n_j:
    m+_j = log((n_j^1/4 + n'_j^1/4) / n'_j^1/4),   m-_j = log((n_j^1/4 + n'_j^1/4) / n_j^1/4)
    p_ij = e^(z_ij + m+_j) / (e^(z_ij + m+_j) + e^(-z_ij + m-_j))
    loss = sum_ij w_j BCE(p_ij, y_ij) / #RoIs,   w_j = a_j log((1 + a_j) / a_j),  a_j = n'_j / n_j.
p_ij is sigmoid(2 z_ij + m+_j - m-_j), which is how it is computed here (the reference
exponentiates, which overflows for large logits). Test time: sigmoid(z_j) * (1 - sigmoid(z_bg)).
The reference ignores the head's label weights and avg_factor, and so does this loss.
"""
import torch
import torch.nn.functional as F
from mmdet.models.losses import accuracy
from mmdet.registry import MODELS
from torch import nn

from .class_statistics import as_counts, check_channels, require_every_class, require_statistics


def ecm_terms(instance_counts, fg_bg_ratio):
    """(m+ - m-, class weight w), both over the C + 1 channels."""
    n = instance_counts.double()
    n = torch.cat([n, n.sum()[None] * fg_bg_ratio])
    others = n.sum() - n
    root_pos, root_neg = n.pow(0.25), others.pow(0.25)
    margin_pos = torch.log((root_pos + root_neg) / root_neg)
    margin_neg = torch.log((root_pos + root_neg) / root_pos)
    ratio = others / n
    return margin_pos - margin_neg, ratio * torch.log((1 + ratio) / ratio)


@MODELS.register_module()
class EffectiveClassMarginLoss(nn.Module):
    """ECM loss (C + 1 output channels); instance counts from ClassStatisticsHook.
    Args: num_classes (C, as the bbox head's), fg_bg_ratio (6.3313), loss_weight."""

    custom_cls_channels = True
    custom_activation = True
    custom_accuracy = True

    def __init__(self, num_classes=1203, fg_bg_ratio=6.3313, loss_weight=1.0):
        super().__init__()
        self.num_classes = num_classes
        self.fg_bg_ratio = fg_bg_ratio
        self.loss_weight = loss_weight
        self.register_buffer('instance_counts', torch.zeros(num_classes))

    @torch.no_grad()
    def set_class_statistics(self, image_counts, instance_counts, num_images):
        counts = as_counts(instance_counts, self.num_classes, 'instance_counts', self)
        require_every_class(counts, 'instance', self)
        self.instance_counts.copy_(counts)

    def get_cls_channels(self, num_classes):
        check_channels(num_classes, self.num_classes, self)
        return num_classes + 1

    def get_activation(self, cls_score):
        scores = cls_score.sigmoid()
        return torch.cat([scores[:, :-1] * (1 - scores[:, -1:]), scores[:, -1:]], dim=1)

    def get_accuracy(self, cls_score, labels):
        """Objectness (sigmoid of the background channel against 0.5) and class accuracy over
        the foreground RoIs, as the reference's get_accuracy."""
        background = cls_score[:, -1:].sigmoid()
        foreground = labels < self.num_classes
        return dict(
            acc_objectness=accuracy(torch.cat([1 - background, background], dim=1),
                                    (~foreground).long()),
            acc_classes=accuracy(cls_score[foreground, :-1], labels[foreground]))

    def forward(self, cls_score, labels, weight=None, avg_factor=None, reduction_override=None):
        if reduction_override not in (None, 'mean'):
            raise ValueError('EffectiveClassMarginLoss averages over RoIs as the reference; '
                             f'reduction_override={reduction_override!r} is not supported')
        require_statistics(self.instance_counts, self)
        margin, class_weight = ecm_terms(self.instance_counts, self.fg_bg_ratio)
        cls_score = cls_score.float()
        target = F.one_hot(labels, self.num_classes + 1).float()
        loss = F.binary_cross_entropy_with_logits(
            2 * cls_score + margin.float(), target, reduction='none')
        return self.loss_weight * (loss * class_weight.float()).sum() / len(cls_score)

    def extra_repr(self):
        return f'num_classes={self.num_classes}, fg_bg_ratio={self.fg_bg_ratio}'

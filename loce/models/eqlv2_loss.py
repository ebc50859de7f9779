"""EQL v2 (Tan et al., CVPR 2021) as the original trains and scores it: MMDetection 3.3's
EQLV2Loss with the two things it lost in the port.

1. Test-time scoring. The original (tztztztztz/eqlv2 mmdet/models/losses/eqlv2.py) marks the loss
   as a group activation, so its bbox head scores RoIs with sigmoid(z_j) * (1 - sigmoid(z_bg))
   over C + 1 channels (the last an objectness-like background channel). mmdet 3.3's BBoxHead
   asks the loss for `custom_cls_channels` / `get_cls_channels` / `get_activation` (and
   `custom_activation` / `get_accuracy` for the logged accuracy); EQLV2Loss has none of them,
   so the stock head scores it with a softmax over the C + 1 logits at test time.
2. Gradient statistics. The original all-reduces the accumulated positive and negative
   gradients of every class across GPUs at each step, so every rank reweighs with the same
   statistics; EQLV2Loss does so only with use_distributed=True, default False, so each rank
   reweighs with its own 1/world_size share of the data.
The loss itself (mu 0.8, alpha 4, gamma 12, BCE summed over classes and averaged over RoIs) is
mmdet's, unchanged.
"""
import torch
import torch.distributed as dist
from mmdet.models.losses import EQLV2Loss, accuracy
from mmdet.registry import MODELS

from .class_statistics import check_channels


@MODELS.register_module()
class EqualizationLossV2(EQLV2Loss):
    """mmdet's EQLV2Loss with sigmoid x (1 - background) scoring and synchronised statistics."""

    custom_cls_channels = True
    custom_activation = True
    custom_accuracy = True

    def __init__(self, **kwargs):
        if 'use_distributed' in kwargs:
            raise TypeError('EqualizationLossV2 always all-reduces its gradient statistics when '
                            'training is distributed, as the original; drop use_distributed')
        if not kwargs.get('test_with_obj', True):
            raise ValueError('EqualizationLossV2 scores as the original, with the background '
                             'channel (test_with_obj=True); use EQLV2Loss otherwise')
        super().__init__(**kwargs)

    def get_cls_channels(self, num_classes):
        check_channels(num_classes, self.num_classes, self)
        return self.get_channel_num(num_classes)

    def get_accuracy(self, cls_score, labels):
        """Objectness (sigmoid of the background channel against 0.5) and class accuracy over
        the foreground RoIs, as mmdet logs them for Seesaw Loss."""
        background = cls_score[:, -1:].sigmoid()
        objectness = torch.cat([1 - background, background], dim=1)
        foreground = labels < self.num_classes
        return dict(
            acc_objectness=accuracy(objectness, (~foreground).long()),
            acc_classes=accuracy(cls_score[foreground, :-1], labels[foreground]))

    def collect_grad(self, pred, target, weight):
        prob = torch.sigmoid(pred)
        grad = torch.abs(target * (prob - 1) + (1 - target) * prob)
        # the background (objectness) channel keeps no statistics
        pos_grad = torch.sum(grad * target * weight, dim=0)[:-1]
        neg_grad = torch.sum(grad * (1 - target) * weight, dim=0)[:-1]
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(pos_grad)
            dist.all_reduce(neg_grad)
        self.pos_grad += pos_grad
        self.neg_grad += neg_grad
        self.pos_neg = self.pos_grad / (self.neg_grad + 1e-10)

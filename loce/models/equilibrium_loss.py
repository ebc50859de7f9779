"""Equilibrium Loss (EBL, paper Eq. 3-4): softmax cross-entropy with a score-guided margin.

With logits z and indicator scores s (C+1 entries, background last), EBL is
    -log( s_y e^{z_y} / sum_j s_j e^{z_j} )  =  CE(z + log s, y),
i.e. CE with margin log(s_j / s_y) added to every non-target logit j. A weak GT class (small
s_y) facing a strong class (large s_j) gets a large margin. Nothing changes at test time: the
bbox head's plain softmax over z then implicitly subtracts log s, which favours weak classes.
"""
from contextlib import contextmanager

import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from mmdet.registry import MODELS
from torch import nn

from .indicator import ClassPrior

SCORE_FLOOR = 1e-12  # log(1e-12) = -27.6: a score at or near 0 still gives a finite loss


def equilibrium_loss(cls_score, labels, scores):
    """Per-sample EBL. Shifting logits by log s and using log-softmax (log-sum-exp) is the
    numerically safe form of the authors' s*exp(z - max) / sum(...), which takes log of a
    product that underflows when a score is near 0."""
    if scores.shape != cls_score.shape[-1:]:
        raise ValueError(f'EquilibriumLoss got {scores.numel()} indicator scores for '
                         f'{cls_score.shape[-1]} logits: the indicator needs num_classes + 1 '
                         'entries (background last)')
    log_scores = scores.detach().float().clamp(min=SCORE_FLOOR).log()
    return F.cross_entropy(cls_score.float() + log_scores, labels, reduction='none')


@MODELS.register_module()
class EquilibriumLoss(nn.Module):
    """EBL as an mmdet classification loss.

    indicator='mean_score' (default): the scores are the mean classification score that
    LOCERoIHead tracks and supplies at every iteration (its background entry is
    roi_head.indicator.bg_score); used elsewhere it raises, since nothing tracks the score.
    indicator='prior': the scores are P(y) from `class_counts` (instances per class, C entries)
    with background `bg_score`; this works in any bbox head.
    """

    def __init__(self, indicator='mean_score', class_counts=None, bg_score=None,
                 reduction='mean', loss_weight=1.0):
        super().__init__()
        if indicator not in ('mean_score', 'prior'):
            raise ValueError(f"EquilibriumLoss indicator={indicator!r}: use 'mean_score' or "
                             "'prior'")
        if reduction not in ('none', 'mean', 'sum'):
            raise ValueError(f"EquilibriumLoss reduction={reduction!r}: use 'none', 'mean' or "
                             "'sum'")
        self.indicator = indicator
        self.reduction = reduction
        self.loss_weight = loss_weight
        self._supplied = None
        if indicator == 'prior':
            if class_counts is None:
                raise ValueError("EquilibriumLoss(indicator='prior') needs class_counts: the "
                                 'number of training instances of each class')
            self.prior = ClassPrior(len(class_counts), 0.01 if bg_score is None else bg_score,
                                    class_counts)
        elif class_counts is not None or bg_score is not None:
            raise ValueError("EquilibriumLoss(indicator='mean_score') takes no class_counts or "
                             'bg_score: the background score is roi_head.indicator.bg_score of '
                             "LOCERoIHead; for a fixed prior use indicator='prior'")

    @contextmanager
    def supplied_scores(self, scores):
        """Scores for the losses computed inside the block (how LOCERoIHead passes its
        indicator through the bbox head, whose loss call has no slot for it)."""
        self._supplied = scores
        try:
            yield self
        finally:
            self._supplied = None

    def _scores(self):
        if self._supplied is not None:
            return self._supplied
        if self.indicator == 'prior':
            return self.prior.scores
        raise RuntimeError(
            "EquilibriumLoss(indicator='mean_score') needs the mean classification score, which "
            "only LOCERoIHead tracks: use roi_head=dict(type='LOCERoIHead', "
            "indicator=dict(type='MeanScore', ...)), or give the loss indicator='prior' and "
            'class_counts to use it in another head')

    def forward(self, cls_score, label, weight=None, avg_factor=None, reduction_override=None,
                **kwargs):
        if reduction_override not in (None, 'none', 'mean', 'sum'):
            raise ValueError(f'reduction_override={reduction_override!r}')
        reduction = reduction_override or self.reduction
        loss = equilibrium_loss(cls_score, label, self._scores().to(cls_score.device))
        if weight is not None:
            weight = weight.float()
        return self.loss_weight * weight_reduce_loss(
            loss, weight=weight, reduction=reduction, avg_factor=avg_factor)

    def extra_repr(self):
        return f'indicator={self.indicator!r}, loss_weight={self.loss_weight}'

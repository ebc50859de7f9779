"""LOCERoIHead: the Mask R-CNN RoI head that fine-tunes with LOCE (indicator + EBL + MFS).

One training iteration, in the authors' order:
1. enqueue RoI features of 16 jittered boxes per GT of this batch into the feature memory;
2. sample memory features with the indicator as it was before this iteration;
3. forward the bbox head on the RPN RoI features with the memory features appended (before
   the shared FCs), so both take part in the classification and the box regression losses;
4. update the indicator (the mean score) from this forward's softmax probabilities;
5. compute the losses, EBL using the updated indicator.
The mask head sees the RPN positives only. Prediction is the stock one: plain softmax, no
adjustment at test time.

Differences from the authors' code, on purpose: the rows of each image are located from the
sampling results, not assumed to be 512 per image; the indicator is a registered buffer (in the
checkpoint); the memory is allocated lazily (never at test time).
"""
from contextlib import nullcontext

import torch
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox2roi, get_box_tensor

from .equilibrium_loss import EquilibriumLoss
from .indicator import MeanScore, build_indicator, group_means
from .mfs import BOXES_PER_GT, FeatureMemory, jitter_boxes, sample_classes


@MODELS.register_module()
class LOCERoIHead(StandardRoIHead):
    """StandardRoIHead plus the LOCE state.

    Args:
        indicator (dict): a registered indicator, built with the head's num_classes:
            type='MeanScore' (alpha=0.9, bg_score=0.01) or type='ClassPrior' (bg_score=0.01,
            class_counts=None: counted from the training set by MemoryWarmupHook). It guides
            EBL (if bbox_head.loss_cls is EquilibriumLoss) and MFS.
        mfs (dict | None): memory_size (M=80), sampled_classes (k=8), features_per_class (m=4),
            device ('cpu' | 'cuda'), dtype ('float32' | 'float16'); None disables MFS.
    """

    def __init__(self, *args, indicator=dict(type='MeanScore'), mfs=None, **kwargs):
        super().__init__(*args, **kwargs)
        num_classes = self.bbox_head.num_classes
        self.indicator = build_indicator(indicator, num_classes)
        self.memory = None
        if mfs is not None:
            mfs = dict(mfs)
            self.sampled_classes = mfs.pop('sampled_classes', 8)
            self.features_per_class = mfs.pop('features_per_class', 4)
            if self.sampled_classes < 0 or self.features_per_class < 0:
                raise ValueError('roi_head.mfs.sampled_classes and features_per_class must be >= 0')
            try:
                self.memory = FeatureMemory(num_classes, size=mfs.pop('memory_size', 80), **mfs)
            except TypeError as err:
                raise TypeError(f'roi_head.mfs: {err}; the keys are memory_size, '
                                'sampled_classes, features_per_class, device, dtype') from err
        self._check_bbox_head()

    def _check_bbox_head(self):
        head = self.bbox_head
        if getattr(head, 'custom_cls_channels', False):
            raise ValueError('LOCERoIHead needs a softmax classifier over num_classes + 1 logits; '
                             f'{type(head.loss_cls).__name__} changes the classifier channels')
        if self.memory is not None and head.reg_decoded_bbox:
            raise ValueError('roi_head.mfs needs bbox_head.reg_decoded_bbox=False: memory '
                             'features carry encoded regression targets, not boxes')
        loss = head.loss_cls
        if isinstance(loss, EquilibriumLoss) and loss.indicator != 'mean_score':
            raise ValueError("inside LOCERoIHead, EquilibriumLoss takes its scores from "
                             "roi_head.indicator: remove the loss's indicator/class_counts and "
                             "set roi_head.indicator=dict(type='ClassPrior', ...) instead")

    def loss(self, x, rpn_results_list, batch_data_samples):
        if self.memory is not None:
            self._enqueue(x, batch_data_samples)
        return super().loss(x, rpn_results_list, batch_data_samples)

    @torch.no_grad()
    def _enqueue(self, x, batch_data_samples):
        """Step 1: RoI features, labels and encoded targets of the jittered GT boxes."""
        boxes, gt_boxes, labels = [], [], []
        for sample in batch_data_samples:
            gt = get_box_tensor(sample.gt_instances.bboxes)
            boxes.append(jitter_boxes(gt, sample.metainfo['img_shape']))
            gt_boxes.append(gt.float().repeat_interleave(BOXES_PER_GT, dim=0))
            labels.append(sample.gt_instances.labels.repeat_interleave(BOXES_PER_GT))
        rois, gt_boxes, labels = bbox2roi(boxes), torch.cat(gt_boxes), torch.cat(labels)
        keep = self.memory.kept_rows(labels).to(rois.device)
        if len(keep) == 0:
            return
        rois, gt_boxes, labels = rois[keep], gt_boxes[keep], labels[keep]
        feats = self.bbox_roi_extractor(x[:self.bbox_roi_extractor.num_inputs], rois)
        targets = self.bbox_head.bbox_coder.encode(rois[:, 1:], gt_boxes)
        self.memory.push(feats, labels, targets)

    def _sample_memory(self):
        """Step 2, with the indicator before this iteration's update."""
        classes = sample_classes(self.indicator.scores, self.sampled_classes,
                                 available=self.memory.filled > 0)
        return self.memory.sample(classes, self.features_per_class)

    def bbox_loss(self, x, sampling_results):
        if self.memory is not None:
            mem_feats, mem_labels, mem_targets = self._sample_memory()
        rois = bbox2roi([res.priors for res in sampling_results])
        feats = self.bbox_roi_extractor(x[:self.bbox_roi_extractor.num_inputs], rois)
        num_rois = len(feats)
        labels, label_weights, bbox_targets, bbox_weights = self.bbox_head.get_targets(
            sampling_results, self.train_cfg, concat=True)
        if self.memory is not None and len(mem_labels) > 0:
            feats = torch.cat([feats, mem_feats.to(feats)])
            labels = torch.cat([labels, mem_labels.to(labels.device)])
            label_weights = torch.cat([label_weights, label_weights.new_ones(len(mem_labels))])
            bbox_targets = torch.cat([bbox_targets, mem_targets.to(bbox_targets)])
            bbox_weights = torch.cat([bbox_weights, bbox_weights.new_ones(mem_targets.shape)])
        if self.with_shared_head:
            feats = self.shared_head(feats)
        cls_score, bbox_pred = self.bbox_head(feats)

        self._update_indicator(cls_score, sampling_results, labels[num_rois:])

        loss_cls = self.bbox_head.loss_cls
        scores_in_loss = (loss_cls.supplied_scores(self.indicator.scores)
                          if isinstance(loss_cls, EquilibriumLoss) else nullcontext())
        with scores_in_loss:
            loss_bbox = self.bbox_head.loss(cls_score, bbox_pred, rois, labels, label_weights,
                                            bbox_targets, bbox_weights)
        return dict(cls_score=cls_score, bbox_pred=bbox_pred, bbox_feats=feats[:num_rois],
                    loss_bbox=loss_bbox)

    def _update_indicator(self, cls_score, sampling_results, memory_labels):
        """Step 4: one entry per GT instance (mean GT-class softmax probability over its positive
        RoIs, raw logits with background) and one per memory class sampled this iteration."""
        if not isinstance(self.indicator, MeanScore):
            return
        probs = cls_score.detach().float().softmax(dim=-1)
        rows, labels, instances = [], [], []
        start = gt_offset = 0
        for res in sampling_results:
            num_pos = len(res.pos_priors)  # positives come first in each image's rows
            rows.append(torch.arange(start, start + num_pos, device=probs.device))
            labels.append(res.pos_gt_labels.long())
            instances.append(res.pos_assigned_gt_inds.long() + gt_offset)
            start += len(res.priors)
            gt_offset += res.num_gts
        rows, labels, instances = torch.cat(rows), torch.cat(labels), torch.cat(instances)
        gt_labels, gt_values = group_means(probs[rows, labels], labels, instances)
        memory_rows = torch.arange(start, start + len(memory_labels), device=probs.device)
        mem_labels, mem_values = group_means(probs[memory_rows, memory_labels], memory_labels,
                                             memory_labels)
        self.indicator.update(torch.cat([gt_labels, mem_labels]),
                              torch.cat([gt_values, mem_values]))

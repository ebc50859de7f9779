"""Per-class classification quality on ground-truth boxes (the paper's Figures 1 and 4).

LOCE's argument rests on the mean classification score tracking per-class accuracy. Both are
measured here on the val set's GT boxes, so detection quality (proposals, NMS) does not enter:
each GT box is pooled from the detector's own features and classified by its box head.
"""
from typing import Dict, Iterable, Optional, Sequence

import numpy as np
import torch

from mmdet.structures.bbox import bbox2roi, get_box_tensor


def _annotations_follow_resize(dataset) -> bool:
    """True when the pipeline loads GT after resizing, leaving boxes in original coordinates.

    mmdet's test pipelines load annotations after ``Resize`` (so evaluation sees original
    boxes); training-style pipelines load them first and the boxes are scaled with the image.
    """
    names = [type(t).__name__ for t in dataset.pipeline.transforms]
    if 'LoadAnnotations' not in names:
        raise ValueError('the dataloader pipeline has no LoadAnnotations; GT boxes are needed '
                         'for classification statistics. Add it to the val pipeline.')
    load = names.index('LoadAnnotations')
    return any('Resize' in name for name in names[:load])


def _class_names(dataset, num_classes: int) -> Sequence[str]:
    classes = tuple(getattr(dataset, 'metainfo', {}).get('classes', ()))
    return classes if len(classes) == num_classes else tuple(str(i) for i in range(num_classes))


def gt_classification_stats(model,
                            dataloader: Iterable[dict],
                            cat_ids: Optional[Sequence[int]] = None,
                            gt_in_original_scale: Optional[bool] = None) -> Dict[str, np.ndarray]:
    """Classify every GT box of ``dataloader`` with ``model``'s box head (softmax over C+1).

    Per class c (label index 0..C-1): ``val_instances`` GT boxes, ``score_sum`` of the softmax
    probability of c on them, ``correct`` boxes whose argmax over all C+1 logits (background
    included) is c, ``correct_fg`` boxes whose argmax over the C foreground logits is c;
    ``mean_score`` = score_sum / val_instances, ``accuracy`` = correct / val_instances (a box
    called background is wrong, as the detector's softmax scores it) and ``accuracy_fg`` =
    correct_fg / val_instances (which class wins among the foreground ones: EBL trains z + log s
    with the background score pinned, so plain z at test time often puts background first on GT
    boxes, and only this one says how well the classes are told apart); NaN where a class has
    no GT. ``cat_ids`` maps label i to its LVIS id.

    ``cat_ids`` and ``gt_in_original_scale`` default to what ``dataloader.dataset`` says (its
    ``cat_ids`` and pipeline order); pass them for a plain iterable of batches. Leaves the
    model in eval mode; runs in one process (sums over a non-distributed dataloader).
    """
    dataset = getattr(dataloader, 'dataset', None)
    if gt_in_original_scale is None:
        if dataset is None:
            raise ValueError('gt_in_original_scale is needed when the dataloader has no dataset')
        gt_in_original_scale = _annotations_follow_resize(dataset)
    roi_head = model.roi_head
    num_classes = roi_head.bbox_head.num_classes
    if cat_ids is None:
        if dataset is None or not hasattr(dataset, 'cat_ids'):
            raise ValueError('cat_ids is needed when the dataset does not provide them')
        cat_ids = dataset.cat_ids
    if len(cat_ids) != num_classes:
        raise ValueError(f'{len(cat_ids)} category ids for a box head of {num_classes} classes; '
                         'the checkpoint and the annotation file disagree.')

    score_sum = torch.zeros(num_classes, dtype=torch.float64)
    correct = torch.zeros(num_classes, dtype=torch.float64)
    correct_fg = torch.zeros(num_classes, dtype=torch.float64)
    count = torch.zeros(num_classes, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        for data in dataloader:
            data = model.data_preprocessor(data, False)
            samples = data['data_samples']
            boxes, labels = [], []
            for sample in samples:
                box = get_box_tensor(sample.gt_instances.bboxes).to(data['inputs'].device)
                if gt_in_original_scale:
                    scale_w, scale_h = sample.metainfo['scale_factor']
                    box = box * box.new_tensor([scale_w, scale_h, scale_w, scale_h])
                boxes.append(box.float())
                labels.append(sample.gt_instances.labels.to(box.device))
            labels = torch.cat(labels)
            if labels.numel() == 0:
                continue
            feats = model.extract_feat(data['inputs'])
            rois = bbox2roi(boxes)
            roi_feats = roi_head.bbox_roi_extractor(
                feats[:roi_head.bbox_roi_extractor.num_inputs], rois)
            if roi_head.with_shared_head:
                roi_feats = roi_head.shared_head(roi_feats)
            cls_score = roi_head.bbox_head(roi_feats)[0]
            if cls_score.shape[1] != num_classes + 1:
                raise ValueError(f'box head gives {cls_score.shape[1]} logits, expected '
                                 f'{num_classes + 1} (C classes + background softmax)')
            probs = cls_score.double().softmax(dim=1)
            gt_prob = probs[torch.arange(len(labels), device=probs.device), labels]
            hits = (cls_score.argmax(dim=1) == labels).double()
            hits_fg = (cls_score[:, :num_classes].argmax(dim=1) == labels).double()
            labels = labels.cpu()
            score_sum += torch.bincount(labels, weights=gt_prob.cpu(), minlength=num_classes)
            correct += torch.bincount(labels, weights=hits.cpu(), minlength=num_classes)
            correct_fg += torch.bincount(labels, weights=hits_fg.cpu(), minlength=num_classes)
            count += torch.bincount(labels, minlength=num_classes).double()

    count_np = count.numpy()
    with np.errstate(invalid='ignore', divide='ignore'):
        mean_score = np.where(count_np > 0, score_sum.numpy() / count_np, np.nan)
        accuracy = np.where(count_np > 0, correct.numpy() / count_np, np.nan)
        accuracy_fg = np.where(count_np > 0, correct_fg.numpy() / count_np, np.nan)
    return {
        'cat_ids': np.asarray(cat_ids, dtype=np.int64),
        'classes': np.asarray(_class_names(dataset, num_classes)),
        'val_instances': count_np.astype(np.int64),
        'score_sum': score_sum.numpy(),
        'correct': correct.numpy().astype(np.int64),
        'mean_score': mean_score,
        'accuracy': accuracy,
        'correct_fg': correct_fg.numpy().astype(np.int64),
        'accuracy_fg': accuracy_fg,
    }

"""LVIS box and mask AP computed by faster-coco-eval's C++ evaluator, equal to the lvis-api.

The official lvis-api evaluates in pure Python (minutes per evaluation on LVIS v1 val, and it
breaks on numpy 2). faster-coco-eval in LVIS mode gives the same numbers once its inputs are
read as the lvis-api reads them (``lvis_inputs``: the 300-per-image cap, areas, crowd flags).
What makes it fast at LVIS scale without changing any number:

- detections the federated protocol ignores are dropped before evaluation;
- categories are evaluated in groups, each over only the images where they occur, with its
  own small index (faster-coco-eval otherwise walks the whole image x category grid and
  rescans every image's annotations for each group);
- masks go to pycocotools' IoU as they are: faster-coco-eval would decode and re-encode every
  detection mask first, most of them never compared with any GT, then match them in threads
  that only contend for the GIL;
- groups, box and mask alike, are shared out to forked processes.

Per-category precision depends only on that category's GT and detections, so neither the
grouping nor the number of processes changes a bit of the result.
"""
import contextlib
import ctypes
import gc
import json
import multiprocessing
import os
import os.path as osp
import signal
import tempfile
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_utils
from faster_coco_eval import COCO, COCOeval_faster
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from mmdet.registry import METRICS
from mmdet.structures.mask import encode_mask_results
from .lvis_inputs import (PathOrDetections, annotated_categories, check_mask_size,
                          load_detections, load_lvis_gt, require_evaluable_gt, select_detections)

AP_KEYS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf')
MAX_DEFAULT_PROCESSES = 8
DETECTIONS_PER_DEFAULT_PROCESS = 100_000
MAX_CELLS = 2000  # images x categories per group (see _category_chunks)


def default_processes(num_detections: int) -> int:
    """One process per usable CPU (affinity, not the machine's count), at most
    ``MAX_DEFAULT_PROCESSES`` (each holds its own copy of the annotations it touches), and one
    per ``DETECTIONS_PER_DEFAULT_PROCESS`` evaluated detections: a small evaluation is over
    before forked processes would have started."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return max(1, min(usable, MAX_DEFAULT_PROCESSES,
                      1 + num_detections // DETECTIONS_PER_DEFAULT_PROCESS))


def _check_processes(processes: Optional[int]) -> Optional[int]:
    if processes is not None and (not isinstance(processes, int) or isinstance(processes, bool)
                                  or processes < 1):
        raise ValueError(f'processes must be a positive integer (1: in this process) or None '
                         f'(see default_processes), got {processes!r}')
    return processes


def _category_chunks(cat_images: Dict[int, set], max_cells: int) -> List[tuple]:
    """Group categories so that each group's (images x categories) grid stays small.

    faster-coco-eval walks the full image x category grid in Python and C++ (24 M pairs on
    LVIS v1 val, nearly all empty); evaluating groups of categories on just the images
    where they have GT or detections skips the empty pairs.
    """
    chunks, cats, images = [], [], set()
    for cat in sorted(cat_images, key=lambda c: (-len(cat_images[c]), c)):
        union = images | cat_images[cat]
        if cats and len(union) * (len(cats) + 1) > max_cells:
            chunks.append((cats, images))
            cats, union = [], set(cat_images[cat])
        cats.append(cat)
        images = union
    if cats:
        chunks.append((cats, images))
    return chunks


@contextlib.contextmanager
def _cyclic_gc_paused():
    """Evaluation allocates millions of small acyclic objects, and every burst of them makes
    the cyclic collector rescan the whole heap (a third of the box evaluation time, measured).
    Keep the working set inside the paused block (in a function called there), so that it is
    gone when the collector resumes: its first pass would scan all of it (1.5 s, measured)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _mean_defined(values: np.ndarray) -> float:
    """The lvis-api's summary: mean over defined entries (> -1), -1 when there are none."""
    values = values[values > -1]
    return float(np.mean(values)) if values.size else -1.0


class _GroupEval(COCOeval_faster):
    """faster-coco-eval's LVIS matching and accumulation on one prepared group of categories.

    The group arrives as its own GT and detections, already filtered the federated way, so
    ``_prepare`` only registers them: faster-coco-eval's own would build a COCO index per group,
    rescan each image's annotations for the group's categories and check every id again.

    IoUs are pycocotools', the lvis-api's own. Masks: detections carry compressed RLE already;
    faster-coco-eval would re-encode each one (decode, encode, a new dict) before matching,
    though many are never compared with any GT, and spread the IoUs over threads that hold
    the GIL. Here they go to the IoU as they are, with GT polygons merged as
    ``LVIS.ann_to_rle`` does, only where an image has both GT and detections of the category.
    """

    def __init__(self, iou_type: str, cats: List[int], images: List[int], imgs: Dict[int, dict],
                 gt_anns: List[dict], dt_anns: List[dict], columns: dict, max_dets: int):
        super().__init__(None, None, iou_type, lvis_style=True, print_function=_silent,
                         rle_iou_max_workers=1)
        self.params.catIds, self.params.imgIds = cats, images
        self.params.maxDets = [max_dets]
        self.params.compute_rle = False  # masks are read in computeIoU below
        self._imgs, self._gt_anns, self._dt_anns = imgs, gt_anns, dt_anns
        self._columns = columns

    def _prepare(self):
        self.gt_dataset.clean()
        self.dt_dataset.clean()
        gt_pairs, dt_pairs = set(), set()
        for dataset, anns, pairs in ((self.gt_dataset, self._gt_anns, gt_pairs),
                                     (self.dt_dataset, self._dt_anns, dt_pairs)):
            append, add = dataset.append_ref, pairs.add
            for ann in anns:
                img_id, cat_id = ann['image_id'], ann['category_id']
                append(img_id, cat_id, ann)
                add((img_id, cat_id))
        self._nonempty_iou_pairs = gt_pairs & dt_pairs

    def computeIoU(self, img_id, cat_id):
        gt = self.gt_dataset.get_instances([img_id], [cat_id], True)[0][0]
        dt = self.dt_dataset.get_instances([img_id], [cat_id], True)[0][0]
        if not gt or not dt:
            return []
        order = np.argsort([-d['score'] for d in dt], kind='mergesort')[:self.params.maxDets[-1]]
        rows = [dt[i]['row'] for i in order]
        if self.params.iouType == 'bbox':
            return mask_utils.iou(self._columns['bbox'][rows],
                                  np.asarray([g['bbox'] for g in gt], np.float64), [0] * len(gt))
        img, masks = self._imgs[img_id], self._columns['segmentation']
        return mask_utils.iou([masks[row] for row in rows],
                              [_gt_rle(g['segmentation'], img) for g in gt], [0] * len(gt))


def _gt_rle(segm, img: dict) -> dict:
    """``lvis.LVIS.ann_to_rle``: polygons merged into one mask, uncompressed RLE compressed."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, img['height'], img['width']))
    if isinstance(segm['counts'], list):
        return mask_utils.frPyObjects(segm, img['height'], img['width'])
    return segm


# Set for the life of one evaluation: forked workers inherit it instead of unpickling it.
_WORK: Optional[dict] = None


def _group_detections(iou_type: str, cats: List[int]) -> List[dict]:
    """The group's detections as faster-coco-eval reads them, made here from the columns.

    Made in the process that evaluates the group: forked workers then write only to memory of
    their own (touching the parent's objects would copy their pages, a fifth more CPU time,
    measured). ``row`` is the detection's row in the columns, where ``computeIoU`` finds its
    box or mask; ``id`` a match marker (0: unmatched), unique within the group; ``lvis_mark``:
    unmatched, the detection is ignored (category not exhaustively annotated in that image).
    """
    columns = _WORK['columns'][iou_type]
    rows = np.concatenate([columns['by_category'].get(c, _NONE) for c in cats])
    marks = _in_sorted(columns['pair'][rows], _WORK['not_exhaustive_pairs'])
    return [dict(image_id=img_id, category_id=cat_id, score=score, area=area, id=number,
                 lvis_mark=mark, row=row)
            for number, img_id, cat_id, score, area, mark, row in zip(
                range(1, len(rows) + 1), columns['image_id'][rows].tolist(),
                columns['category_id'][rows].tolist(), columns['score'][rows].tolist(),
                columns['area'][rows].tolist(), marks.tolist(), rows.tolist())]


def _in_sorted(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``np.isin`` against a sorted table, by binary search: np.isin would sort or hash the
    table again for every group (a tenth of the evaluation time, measured)."""
    if not len(table):
        return np.zeros(len(values), bool)
    return table[np.minimum(np.searchsorted(table, values), len(table) - 1)] == values


_NONE = np.zeros(0, np.int64)


def _evaluate_group(index: int) -> Tuple[int, np.ndarray, np.ndarray]:
    """Precision [T, R, K, A] and recall [T, K, A] of one group of categories of one type."""
    iou_type, cats, images = _WORK['groups'][index]
    evaluator = _GroupEval(iou_type, cats, images, _WORK['gt'].imgs,
                           [a for c in cats for a in _WORK['gt_by_cat'].get(c, ())],
                           _group_detections(iou_type, cats), _WORK['columns'][iou_type],
                           _WORK['max_dets'])
    evaluator.evaluate()
    evaluator.accumulate()
    return index, evaluator.eval['precision'][..., -1], evaluator.eval['recall'][..., -1]


def _run_groups(work: dict, processes: int) -> list:
    """Every group's result, in group order."""
    global _WORK
    processes = min(processes, len(work['groups']))
    if processes > 1 and 'fork' not in multiprocessing.get_all_start_methods():
        MMLogger.get_current_instance().info(
            'LVIS evaluation: no fork on this platform, evaluating in one process.')
        processes = 1
    _WORK = work
    try:
        if processes <= 1:
            return [_evaluate_group(i)[1:] for i in range(len(work['groups']))]
        return _run_in_processes(work, processes)
    finally:
        _WORK = None


def _run_in_processes(work: dict, processes: int) -> list:
    """Forked workers take the groups largest first, as they free up. An executor rather
    than a Pool: a worker that dies (out of memory) is an error here, not a hang."""
    results = [None] * len(work['groups'])
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context('fork'),
                               initializer=_die_with_parent, initargs=(os.getpid(), ))
    try:
        futures = [pool.submit(_evaluate_group, i)
                   for i in sorted(range(len(results)), key=lambda i: -work['costs'][i])]
        for future in as_completed(futures):
            index, precision, recall = future.result()
            results[index] = (precision, recall)
    except BrokenProcessPool as err:
        raise RuntimeError(f'an LVIS evaluation process died ({err}); out of memory? Each one '
                           'holds a copy of what it touches: evaluate with fewer processes '
                           '(processes=1 evaluates in this one).') from err
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _die_with_parent(parent: int) -> None:
    """A worker must not outlive its evaluation: if the parent is killed (a SIGKILLed stage or
    test job), workers waiting for their next group would wait forever. Linux kills them."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: no such guard
        return
    if os.getppid() != parent:  # the parent died before the guard was set
        os._exit(1)


def _columns(image_id, category_id, score, area, bbox=None, segmentation=None) -> dict:
    """Detections as columns: numpy arrays, and the list of their masks for segm."""
    return dict(image_id=np.asarray(image_id, np.int64), category_id=np.asarray(
        category_id, np.int64), score=np.asarray(score, np.float64),
        area=np.asarray(area, np.float64), bbox=None if bbox is None else np.asarray(
            bbox, np.float64).reshape(-1, 4), segmentation=segmentation)


def _selected_columns(selected: List[Tuple[dict, float]], iou_type: str) -> dict:
    dets = [d for d, _ in selected]
    return _columns([d['image_id'] for d in dets], [d['category_id'] for d in dets],
                    [d['score'] for d in dets], [a for _, a in selected],
                    bbox=[d['bbox'] for d in dets] if iou_type == 'bbox' else None,
                    segmentation=[d['segmentation'] for d in dets] if iou_type == 'segm'
                    else None)


def _evaluate_types(gt: COCO, columns: Dict[str, dict], max_dets: int, max_cells: int,
                    processes: Optional[int], classwise: bool = False
                    ) -> Dict[str, Dict[str, float]]:
    """Stats per iou type of detections already selected (see ``select_detections``), given
    as ``_columns`` with the area the lvis-api gives each; with ``classwise`` also
    ``AP_cls{id}`` per category (``_per_class_ap``)."""
    work = _plan(gt, columns, max_dets, max_cells)
    if processes is None:
        processes = default_processes(sum(len(c['score']) for c in columns.values()))
    results = _run_groups(work, processes)

    cat_ids = sorted(gt.cats)
    cat_index = {cat_id: k for k, cat_id in enumerate(cat_ids)}
    frequencies = [gt.cats[c]['frequency'] for c in cat_ids]
    stats = {}
    for iou_type in columns:
        params = COCOeval_faster(iouType=iou_type, lvis_style=True, print_function=_silent).params
        num_t, num_r, num_a = len(params.iouThrs), len(params.recThrs), len(params.areaRng)
        precision = -np.ones((num_t, num_r, len(cat_ids), num_a))  # -1: no GT, undefined
        recall = -np.ones((num_t, len(cat_ids), num_a))
        for (kind, cats, _), (group_precision, group_recall) in zip(work['groups'], results):
            if kind == iou_type:
                index = [cat_index[c] for c in cats]
                precision[:, :, index] = group_precision
                recall[:, index] = group_recall
        stats[iou_type] = _summarize(precision, recall, params, frequencies, max_dets)
        if classwise:
            stats[iou_type].update(_per_class_ap(precision, params, cat_ids))
    return stats


def _plan(gt: COCO, columns: Dict[str, dict], max_dets: int, max_cells: int) -> dict:
    """The groups of categories to evaluate, with their costs and what their processes need:
    GT per category, per type the columns and each category's rows in them (categories
    without GT stay undefined), and the not exhaustively annotated (image, category) pairs;
    a pair is one integer, image index * categories + category index."""
    img_ids, cat_ids = np.asarray(sorted(gt.imgs), np.int64), np.asarray(sorted(gt.cats))
    img_index = {img_id: k for k, img_id in enumerate(img_ids.tolist())}
    cat_index = {cat_id: k for k, cat_id in enumerate(cat_ids.tolist())}
    gt_by_cat, cat_gt_images = defaultdict(list), defaultdict(set)
    for ann in gt.dataset['annotations']:
        gt_by_cat[ann['category_id']].append(ann)
        cat_gt_images[ann['category_id']].add(ann['image_id'])
    not_exhaustive_pairs = [img_index[img['id']] * len(cat_ids) + cat_index[cat]
                            for img in gt.dataset['images']
                            for cat in img['not_exhaustive_category_ids'] if cat in cat_index]
    work = dict(gt=gt, max_dets=max_dets, gt_by_cat=gt_by_cat, columns={}, groups=[], costs=[],
                not_exhaustive_pairs=np.unique(np.asarray(not_exhaustive_pairs, np.int64)))
    for iou_type, cols in columns.items():
        cat_of = np.searchsorted(cat_ids, cols['category_id'])
        rows = np.flatnonzero(np.isin(cols['category_id'], list(cat_gt_images)))
        rows = rows[np.argsort(cat_of[rows], kind='stable')]  # by category, order kept
        cats, starts = np.unique(cat_of[rows], return_index=True)
        by_category = {int(cat_ids[c]): part for c, part in zip(cats, np.split(rows, starts[1:]))}
        pair = np.searchsorted(img_ids, cols['image_id']) * len(cat_ids) + cat_of
        work['columns'][iou_type] = dict(cols, by_category=by_category, pair=pair)
        cat_images = {cat: images | set(np.unique(cols['image_id'][by_category[cat]]).tolist())
                      if cat in by_category else set(images)
                      for cat, images in cat_gt_images.items()}
        for group_cats, images in _category_chunks(cat_images, max_cells):
            group_cats = sorted(group_cats)
            work['groups'].append((iou_type, group_cats, sorted(images)))
            work['costs'].append(len(images) * len(group_cats) + sum(
                len(gt_by_cat[c]) + len(by_category.get(c, ())) for c in group_cats))
    return work


def evaluate_lvis(gt: COCO, detections: PathOrDetections, iou_type: str, max_dets: int = 300,
                  max_cells: int = MAX_CELLS, processes: Optional[int] = None
                  ) -> Dict[str, float]:
    """LVIS AP/AR of COCO-format ``detections`` ('bbox', or 'segm' with RLE masks).

    ``gt`` comes from ``load_lvis_gt``; ``detections`` is a list or a result file (JSON list,
    as mmdet's ``format_only`` writes). Returns the lvis-api's keys (AP, AP50, AP75, APs, APm,
    APl, APr, APc, APf, AR@300, ARs@300, ARm@300, ARl@300) as fractions; -1 where undefined
    (no GT in that group). ``processes``: 1 evaluates here, N in N forked processes, None as
    ``default_processes`` chooses; the numbers are the same to the bit.
    """
    if iou_type not in ('bbox', 'segm'):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    processes = _check_processes(processes)
    detections, source = load_detections(detections)
    if not detections:
        raise ValueError(f'{source}: no detections at all; the lvis-api refuses this too. '
                         'Check that the model was run on the images of the annotation file.')
    require_evaluable_gt(gt, [iou_type])
    with _cyclic_gc_paused():  # its working set is freed before the collector runs again
        return _evaluate_selected(gt, detections, source, iou_type, max_dets, max_cells,
                                  processes)


def _evaluate_selected(gt, detections, source, iou_type, max_dets, max_cells, processes):
    columns = _selected_columns(select_detections(gt, detections, max_dets, iou_type, source),
                                iou_type)
    return _evaluate_types(gt, {iou_type: columns}, max_dets, max_cells, processes)[iou_type]


def _summarize(precision, recall, params, frequencies, max_dets) -> Dict[str, float]:
    """lvis-api ``LVISEval.summarize`` on precision [T, R, K, A] and recall [T, K, A]."""
    iou = params.iouThrs
    area = {label: i for i, label in enumerate(params.areaRngLbl)}
    t50, t75 = np.where(iou == 0.5)[0], np.where(iou == 0.75)[0]
    frequencies = np.asarray(frequencies)
    out = {
        'AP': _mean_defined(precision[..., area['all']]),
        'AP50': _mean_defined(precision[t50][..., area['all']]),
        'AP75': _mean_defined(precision[t75][..., area['all']]),
        'APs': _mean_defined(precision[..., area['small']]),
        'APm': _mean_defined(precision[..., area['medium']]),
        'APl': _mean_defined(precision[..., area['large']]),
    }
    for group in ('r', 'c', 'f'):
        out[f'AP{group}'] = _mean_defined(precision[:, :, frequencies == group, area['all']])
    for key, label in (('AR', 'all'), ('ARs', 'small'), ('ARm', 'medium'), ('ARl', 'large')):
        out[f'{key}@{max_dets}'] = _mean_defined(recall[..., area[label]])
    return out


def _per_class_ap(precision, params, cat_ids) -> Dict[str, float]:
    """mmdet's classwise AP (detectron2's): a category's precision [T, R] at area 'all',
    averaged over its defined entries; -1 for a category without GT, as the summary keys."""
    precision = precision[..., list(params.areaRngLbl).index('all')]
    return {f'AP_cls{cat_id}': _mean_defined(precision[:, :, k])
            for k, cat_id in enumerate(cat_ids)}


def check_prediction(pred: dict, img: dict, num_classes: int, source: str) -> None:
    """One image's predictions (numpy arrays, masks as RLE or an [N, H, W] array) are
    complete and at the image's size; what would otherwise score wrong or crash later."""
    where = f"{source}: image {pred['img_id']}"
    bboxes, scores, labels = pred['bboxes'], pred['scores'], pred['labels']
    if bboxes.ndim != 2 or bboxes.shape[1] != 4:
        raise ValueError(f'{where}: pred_instances.bboxes has shape {tuple(bboxes.shape)}, '
                         'expected [N, 4] (x1, y1, x2, y2).')
    counts = {'bboxes': len(bboxes), 'scores': len(scores), 'labels': len(labels)}
    for key in ('masks', 'mask_scores'):
        if key in pred:
            counts[key] = len(pred[key])
    if len(set(counts.values())) > 1:
        raise ValueError(f'{where}: pred_instances disagree in length ({counts}); every '
                         'detection needs its box, score, label and (for segm) mask. Check '
                         "the model's predict/test_step.")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f'{where}: predicted labels span {int(labels.min())}..'
                         f'{int(labels.max())} but the annotation file has {num_classes} '
                         'categories; the model num_classes and the val_evaluator ann_file '
                         'disagree.')
    if not np.isfinite(scores).all():
        raise ValueError(f'{where}: non-finite scores; check the model (a NaN loss?).')
    masks = pred.get('masks')
    if masks is None or not len(masks):
        return
    if isinstance(masks, np.ndarray) or hasattr(masks, 'shape'):
        check_mask_size(list(masks.shape[1:]), img, where)
        return
    expected = [img['height'], img['width']]
    for mask in masks:
        if list(mask['size']) != expected:
            check_mask_size(mask['size'], img, where)


def _prediction_columns(preds: Sequence[dict], cat_ids: Sequence[int], iou_type: str,
                        max_dets: int, allowed: Optional[Dict[int, set]]) -> dict:
    """``_columns`` of per-image predictions, field for field what mmdet's
    ``CocoMetric.results2json`` writes (xywh boxes, mask score falling back to the box score).
    The evaluated ones (``max_dets`` >= 0 and ``allowed``): each image's ``max_dets`` best (as
    ``LVISResults``), in a category present or negative there, area (box w*h) > 0."""
    evaluated = allowed is not None and max_dets >= 0
    cat_ids = np.asarray(cat_ids)
    parts = defaultdict(list)
    masks = [] if iou_type == 'segm' else None
    for pred in preds:
        labels = pred['labels']
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(cat_ids)):
            raise ValueError(f'predicted label {int(labels.max())} but the annotation file has '
                             f'{len(cat_ids)} categories; the model num_classes and the '
                             'val_evaluator ann_file disagree.')
        if iou_type == 'segm' and 'masks' not in pred:
            raise ValueError("FastLVISMetric: 'segm' requested but the predictions carry no "
                             "masks; drop 'segm' from val_evaluator.metric.")
        scores = pred.get('mask_scores', pred['scores']) if iou_type == 'segm' else pred['scores']
        cats = cat_ids[labels]
        keep = np.arange(len(scores))
        if 0 <= max_dets < len(scores):  # stable, like LVISResults' sorted(reverse=True)
            keep = np.argsort(-scores, kind='stable')[:max_dets]
        if allowed is not None:
            if pred['img_id'] not in allowed:
                raise ValueError(f"image {pred['img_id']} is absent from the annotation file; "
                                 'the val dataloader and val_evaluator.ann_file must match.')
            keep = keep[np.isin(cats[keep], list(allowed[pred['img_id']]))]
        boxes = pred['bboxes'][keep].astype(np.float64)
        boxes[:, 2:] -= boxes[:, :2]
        areas = boxes[:, 2] * boxes[:, 3]
        if evaluated:  # the lvis-api leaves out area 0 (a box clamped flat at the border)
            positive = areas > 0
            keep, boxes, areas = keep[positive], boxes[positive], areas[positive]
        parts['image_id'].append(np.full(len(keep), pred['img_id'], np.int64))
        parts['category_id'].append(cats[keep])
        parts['score'].append(scores[keep])
        parts['area'].append(areas)
        parts['bbox'].append(boxes)
        if masks is not None:
            image_masks = pred['masks']
            masks.extend(image_masks[i] for i in keep.tolist())
    return _columns(*(np.concatenate(parts[key]) if parts[key] else np.zeros(0)
                      for key in ('image_id', 'category_id', 'score', 'area', 'bbox')),
                    segmentation=masks)


def predictions_to_lvis(preds: Sequence[dict], cat_ids: Sequence[int], iou_type: str,
                        max_dets: int = -1,
                        allowed: Optional[Dict[int, set]] = None) -> List[dict]:
    """COCO-format detections of type 'bbox' or 'segm' from per-image predictions.

    Field for field what mmdet's ``CocoMetric.results2json`` writes (xywh boxes, mask score
    falling back to the box score), kept in memory instead of a json round trip. With
    ``max_dets`` >= 0 and ``allowed`` (see ``annotated_categories``) only what LVIS evaluation
    looks at (as ``evaluated_detections``).
    """
    cols = _prediction_columns(preds, cat_ids, iou_type, max_dets, allowed)
    dets = [dict(image_id=img_id, bbox=box, score=score, category_id=cat)
            for img_id, box, score, cat in zip(cols['image_id'].tolist(), cols['bbox'].tolist(),
                                              cols['score'].tolist(),
                                              cols['category_id'].tolist())]
    if iou_type == 'segm':
        for det, mask in zip(dets, cols['segmentation']):
            det['segmentation'] = mask
    return dets


def _silent(*args, **kwargs) -> None:
    """faster-coco-eval prints a summary per call; the metric logs its own table."""


def _bytes_as_str(obj):
    """RLE counts are bytes in memory (pycocotools' form) and str in json files (mmdet's)."""
    if isinstance(obj, bytes):
        return obj.decode()
    raise TypeError(f'{type(obj).__name__} is not JSON serializable')


def _dump_json_atomic(obj, path: str) -> None:
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp_', suffix='.json')
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(obj, f, default=_bytes_as_str)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@METRICS.register_module()
class FastLVISMetric(BaseMetric):
    """Drop-in for mmdet's ``LVISMetric`` (same config keys and result names), 10x+ faster.

    Results are ``lvis/{bbox,segm}_{AP,AP50,AP75,APs,APm,APl,APr,APc,APf}`` as fractions at
    full precision (mmdet rounds to 3 decimals; the pipeline wants the raw numbers); -1 marks
    a group with no ground truth, as in the lvis-api. With ``classwise=True`` also
    ``lvis/{bbox,segm}_AP_cls{id}`` per category id of the annotation file: mmdet's classwise AP
    (precision at area 'all' over IoU thresholds and recall points), -1 for a category without
    GT. Keyed by id, not by mmdet's ``{name}_precision``: names may repeat across box and mask
    (mmdet's keys collide there) and hold any character. Predictions are checked as they arrive
    (image in the annotation file, one mask per box at the image's size), so a wrong test
    pipeline stops at its first batch rather than scoring AP 0 at the end.

    Args:
        ann_file: LVIS annotation file of the evaluated split (federated fields required).
        metric: 'bbox', 'segm' or both.
        classwise: also return each category's AP (as mmdet's ``LVISMetric``, keys above).
        max_dets: detections kept per image (LVIS rule: 300).
        format_only: only dump the detections (needs ``outfile_prefix``).
        outfile_prefix: if set, detections go to ``{prefix}.bbox.json`` / ``{prefix}.segm.json``.
        processes: evaluation processes (forked; box and mask are evaluated together): 1 in
            this process, None one per usable CPU, at most 8 and one per 100,000 evaluated
            detections (``default_processes``). Same numbers to the bit.
    """

    default_prefix: Optional[str] = 'lvis'

    def __init__(self,
                 ann_file: str,
                 metric: Union[str, List[str]] = 'bbox',
                 classwise: bool = False,
                 max_dets: int = 300,
                 format_only: bool = False,
                 outfile_prefix: Optional[str] = None,
                 processes: Optional[int] = None,
                 backend_args: Optional[dict] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.metrics = metric if isinstance(metric, list) else [metric]
        for name in self.metrics:
            if name not in ('bbox', 'segm'):
                raise KeyError(f"FastLVISMetric: metric must be 'bbox' or 'segm', got {name!r}")
        if format_only and outfile_prefix is None:
            raise ValueError('FastLVISMetric: format_only=True needs outfile_prefix, '
                             'otherwise nothing is kept.')
        self.classwise = classwise
        self.max_dets = max_dets
        self.format_only = format_only
        self.outfile_prefix = outfile_prefix
        self.processes = _check_processes(processes)
        self.ann_file = ann_file
        self._gt = load_lvis_gt(ann_file, backend_args)
        # Label i is the i-th category of the file, as in mmdet's LVIS datasets.
        self.cat_ids = [c['id'] for c in self._gt.dataset['categories']]
        self._allowed = annotated_categories(self._gt)
        require_evaluable_gt(self._gt, self.metrics)

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Keep each image's predictions as numpy arrays, masks already RLE-encoded."""
        for sample in data_samples:
            img = self._image(sample['img_id'])
            pred = sample['pred_instances']
            result = dict(img_id=sample['img_id'],
                          bboxes=pred['bboxes'].cpu().numpy(),
                          scores=pred['scores'].cpu().numpy(),
                          labels=pred['labels'].cpu().numpy())
            if 'masks' in pred:
                result['masks'] = pred['masks'].detach().cpu().numpy()
            if 'mask_scores' in pred:
                result['mask_scores'] = pred['mask_scores'].cpu().numpy()
            source = f'FastLVISMetric ({self.ann_file})'
            if 'segm' in self.metrics and 'masks' not in result:
                raise ValueError(f"{source}: image {sample['img_id']}: 'segm' requested but the "
                                 "model predicts no masks; drop 'segm' from the evaluator's "
                                 'metric or use a model with a mask head.')
            check_prediction(result, img, len(self.cat_ids), source)
            if 'masks' in result:
                result['masks'] = encode_mask_results(result['masks'])
            self.results.append(result)

    def _image(self, img_id) -> dict:
        img = self._gt.imgs.get(img_id)
        if img is None:
            raise ValueError(f'FastLVISMetric: image {img_id} is absent from {self.ann_file}; '
                             'the test dataloader and the evaluator ann_file must be the same '
                             'split.')
        return img

    def compute_metrics(self, results: list) -> Dict[str, float]:
        with _cyclic_gc_paused():
            return self._compute_metrics(results)

    def _compute_metrics(self, results: list) -> Dict[str, float]:
        logger = MMLogger.get_current_instance()
        source = f'FastLVISMetric ({self.ann_file})'
        if not results:
            raise ValueError(f'{source}: no predictions reached the metric (process() never '
                             'ran, or the results were lost in collection); check that the '
                             'test dataloader yields batches (dataset not empty, ann_file and '
                             'data_prefix pointing at the data).')
        seen = set()
        for result in results:
            if result['img_id'] in seen:
                raise ValueError(f"{source}: image {result['img_id']} was predicted twice; "
                                 'each image must be evaluated once (check the sampler and '
                                 'the dataset for duplicates).')
            seen.add(result['img_id'])
            check_prediction(result, self._image(result['img_id']), len(self.cat_ids), source)
        if not any(len(result['scores']) for result in results):
            logger.warning(f'{source}: no detections in any of {len(results)} images; every '
                           'defined AP is 0.')
        if self.outfile_prefix is not None:
            for name in self.metrics:
                _dump_json_atomic(predictions_to_lvis(results, self.cat_ids, name),
                                  f'{self.outfile_prefix}.{name}.json')
        eval_results = {}
        if self.format_only:
            logger.info(f'detections saved under {self.outfile_prefix}.*.json')
            return eval_results
        columns = {name: _prediction_columns(results, self.cat_ids, name, self.max_dets,
                                             self._allowed)
                   for name in self.metrics}
        stats = _evaluate_types(self._gt, columns, self.max_dets, MAX_CELLS, self.processes,
                                self.classwise)
        for name in self.metrics:
            logger.info(f'LVIS {name} (faster-coco-eval, {self.ann_file}): ' + ' '.join(
                f'{key}={stats[name][key]:.4f}' for key in AP_KEYS))
            keys = AP_KEYS + tuple(k for k in stats[name] if k.startswith('AP_cls'))
            for key in keys:
                eval_results[f'{name}_{key}'] = float(stats[name][key])
        return eval_results

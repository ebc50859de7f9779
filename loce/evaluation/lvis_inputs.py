"""LVIS ground truth and detections as the lvis-api reads them, or a clear error.

faster-coco-eval and the lvis-api disagree on inputs a real evaluation meets, and each
disagreement is a silently different number. The lvis-api (0.5.3, ``LVIS.get_ann_ids``,
``LVISResults``, ``LVISEval._prepare``):

- evaluates only annotations with 0 < area < inf, GT and detections alike, and a category
  counts as present in an image only through such GT;
- sets a detection's area to its box w*h (segm too; mask area only when results carry no box),
  after keeping each image's 300 best detections, so a flat box still takes one of the 300;
- ignores ``iscrowd`` (a crowd region is an ordinary instance to it) and honours ``ignore``.

Here the area and crowd rules are reproduced. ``ignore`` is refused: the lvis-api excludes such
GT from recall and ignores detections matched to it, which faster-coco-eval cannot express (its
ignore flag is iscrowd, with crowd matching). What neither evaluator can score correctly
(masks not at image size, a detection without its mask) is refused too, naming the file,
image or detection and the fix.
"""
import json
import math
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import pycocotools.mask as mask_utils
from faster_coco_eval import COCO
from mmengine.fileio import get_local_path
from mmengine.logging import MMLogger

PathOrDetections = Union[str, Sequence[dict]]


def load_lvis_gt(ann_file: str, backend_args: Optional[dict] = None) -> COCO:
    """Load an LVIS annotation file with exactly the GT the lvis-api evaluates.

    Refuses files that lack the federated fields (faster-coco-eval would treat a missing
    ``neg_category_ids`` as empty and drop every false positive on absent classes, so a
    COCO-format file must not pass for LVIS), and annotations that one of the evaluators would
    miscount: ids 0 or repeated, unknown images or categories, ``ignore`` flags, no area, masks
    not at the image size. GT with area <= 0 is left out and ``iscrowd`` cleared, as the
    lvis-api does; both are logged, since a converted dataset may rely on COCO's crowd
    handling.
    """
    with get_local_path(ann_file, backend_args=backend_args) as local_path:
        dataset = _read_json(local_path, ann_file, 're-download or re-generate the annotation '
                             'file')
    if not isinstance(dataset, dict):
        raise ValueError(f'{ann_file}: an LVIS annotation file is a JSON object, got '
                         f'{type(dataset).__name__}; pass e.g. annotations/lvis_v1_val.json.')
    for key in ('images', 'annotations', 'categories'):
        if key not in dataset:
            raise ValueError(f"{ann_file}: no '{key}' list; pass an LVIS annotation file "
                             '(e.g. annotations/lvis_v1_val.json).')
    bad_cats = [c['id'] for c in dataset['categories'] if c.get('frequency') not in ('r', 'c', 'f')]
    if bad_cats:
        raise ValueError(f"{ann_file}: categories {bad_cats[:5]} have no 'frequency' in r/c/f; "
                         'LVIS evaluation needs it for APr/APc/APf. Use an LVIS annotation file.')
    for img in dataset['images']:
        for key in ('neg_category_ids', 'not_exhaustive_category_ids'):
            if key not in img:
                raise ValueError(f"{ann_file}: image {img.get('id')} has no '{key}'; LVIS "
                                 'evaluation needs it. Use an LVIS annotation file.')
    dataset['annotations'] = _evaluated_gt(dataset, ann_file)
    return COCO(dataset)


def _read_json(path: str, name: str, fix: str):
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f'{name}: not valid JSON ({err}); {fix}.') from err


def _evaluated_gt(dataset: dict, ann_file: str) -> List[dict]:
    images = {img['id']: img for img in dataset['images']}
    cat_ids = {c['id'] for c in dataset['categories']}
    seen_ids, kept, no_area, crowd = set(), [], [], []
    for ann in dataset['annotations']:
        ann_id = ann.get('id')
        where = f'{ann_file}: annotation {ann_id} (image {ann.get("image_id")})'
        if not isinstance(ann_id, int) or isinstance(ann_id, bool) or ann_id <= 0:
            raise ValueError(f'{where}: ids must be positive integers (both evaluators use the '
                             'id as a match marker, 0 meaning unmatched); renumber from 1.')
        if ann_id in seen_ids:
            raise ValueError(f'{where}: id {ann_id} is used twice; the lvis-api would score one '
                             'of them twice. Give every annotation its own id.')
        seen_ids.add(ann_id)
        if ann.get('image_id') not in images:
            raise ValueError(f'{where}: the image is not in the file\'s images; fix or drop the '
                             'annotation.')
        if ann.get('category_id') not in cat_ids:
            raise ValueError(f'{where}: category {ann.get("category_id")} is not in the file\'s '
                             'categories; fix or drop the annotation.')
        if ann.get('ignore'):
            raise ValueError(f'{where}: ignore={ann["ignore"]}. The lvis-api leaves such GT out of '
                             'recall and ignores the detections matched to it; faster-coco-eval '
                             'cannot reproduce that. Remove the annotation or its ignore flag.')
        area = ann.get('area')
        if not isinstance(area, (int, float)) or isinstance(area, bool):
            raise ValueError(f"{where}: no numeric 'area' (got {area!r}); LVIS GT needs its mask "
                             'area (pycocotools.mask.area of the mask).')
        segm = ann.get('segmentation')
        img = images[ann['image_id']]
        if isinstance(segm, dict) and list(segm.get('size', ())) != [img['height'], img['width']]:
            raise ValueError(f"{where}: mask size {segm.get('size')} but the image is "
                             f"{img['height']}x{img['width']} (height x width); encode GT masks "
                             'at the image size.')
        if not 0 < area < math.inf:
            no_area.append(ann_id)
            continue
        if ann.get('iscrowd'):
            crowd.append(ann_id)
            ann['iscrowd'] = 0
        kept.append(ann)
    logger = MMLogger.get_current_instance()
    if no_area:
        logger.warning(f'{ann_file}: {len(no_area)} GT annotations with area <= 0 are not '
                       f'evaluated (e.g. id {no_area[0]}), as in the lvis-api, which keeps '
                       '0 < area < inf.')
    if crowd:
        logger.warning(f'{ann_file}: {len(crowd)} GT annotations have iscrowd=1 (e.g. id '
                       f'{crowd[0]}); evaluated as ordinary instances, as the lvis-api does. '
                       'For COCO crowd handling use a COCO evaluator instead.')
    return kept


def require_evaluable_gt(gt: COCO, iou_types: Sequence[str]) -> None:
    """Refuse a GT the evaluator would score differently from the lvis-api (one not loaded
    by ``load_lvis_gt`` that still holds GT with area <= 0, crowd or ignore flags), or one
    without masks for a mask evaluation."""
    masks = 'segm' in iou_types
    for ann in gt.dataset['annotations']:
        area = ann.get('area')
        if not (isinstance(area, (int, float)) and 0 < area < math.inf) or ann.get(
                'iscrowd') or ann.get('ignore'):
            raise ValueError(f"GT annotation {ann.get('id')} (image {ann.get('image_id')}) has "
                             f"area={area!r}, iscrowd={ann.get('iscrowd')}, "
                             f"ignore={ann.get('ignore')}: the GT was not loaded with "
                             'loce.evaluation.load_lvis_gt, which applies the lvis-api\'s rules; '
                             'load it with that.')
        if masks and not ann.get('segmentation'):
            raise ValueError(f"GT annotation {ann.get('id')} (image {ann.get('image_id')}) has no "
                             "'segmentation'; mask AP needs GT masks. Evaluate 'bbox' only, or "
                             'use an annotation file with masks.')


def load_detections(detections: PathOrDetections) -> Tuple[Sequence[dict], str]:
    """A detection list and the name to blame in errors: the result file, or 'evaluate_lvis'."""
    if not isinstance(detections, str):
        return detections, 'evaluate_lvis'
    with get_local_path(detections) as local_path:
        dets = _read_json(local_path, detections, 'write the result file again')
    if not isinstance(dets, list):
        raise ValueError(f'{detections}: a result file is a JSON list of detections, got '
                         f'{type(dets).__name__}.')
    return dets, detections


def annotated_categories(gt: COCO) -> Dict[int, set]:
    """Per image, the categories LVIS evaluates there: present in its GT or listed negative."""
    allowed = {img['id']: set(img['neg_category_ids']) for img in gt.dataset['images']}
    for ann in gt.dataset['annotations']:
        allowed[ann['image_id']].add(ann['category_id'])
    return allowed


def _top_per_image(detections: Sequence[dict], max_dets: int, source: str = 'evaluate_lvis'
                   ) -> Iterator[Tuple[int, List[dict]]]:
    """Per image (in order of first appearance), its detections as ``LVISResults`` keeps them."""
    by_image = defaultdict(list)
    try:
        for det in detections:
            by_image[det['image_id']].append(det)
    except (KeyError, TypeError) as err:
        raise ValueError(f'{source}: a detection is not a dict with an image_id '
                         f'({type(err).__name__}: {err}); write detections as mmdet\'s '
                         'results2json does.') from err
    for img_id, dets in by_image.items():
        try:
            finite = math.isfinite(sum([d['score'] for d in dets]))  # one NaN/inf spoils it
        except (KeyError, TypeError):
            finite = False
        if not finite:
            _check_scores(img_id, dets, source)
        if 0 <= max_dets < len(dets):
            dets = sorted(dets, key=lambda d: d['score'], reverse=True)[:max_dets]
        yield img_id, dets


def _check_scores(img_id, dets: List[dict], source: str) -> None:
    for det in dets:
        score = det.get('score')
        if not (isinstance(score, (int, float)) and math.isfinite(score)):
            raise ValueError(f'{source}: a detection of image {img_id} (category '
                             f"{det.get('category_id')}) has score {score!r}; every detection "
                             'needs a finite numeric score (the 300 kept per image are the '
                             'best-scored).')


def cap_detections_per_image(detections: Sequence[dict], max_dets: int = 300) -> List[dict]:
    """Keep the ``max_dets`` highest-scoring detections of each image, across categories.

    Same selection and output order as ``lvis.LVISResults.limit_dets_per_image`` (stable sort,
    images in order of first appearance), so detection ids, and hence tie-breaking inside the
    evaluator, agree with the lvis-api. Returns shallow copies: the evaluator annotates them.
    """
    return [dict(d) for _, dets in _top_per_image(detections, max_dets) for d in dets]


def select_detections(gt: COCO, detections: Sequence[dict], max_dets: int, iou_type: str,
                      source: str = 'evaluate_lvis') -> List[Tuple[dict, float]]:
    """The detections LVIS evaluation scores, each with the area the lvis-api gives it.

    Per image the ``max_dets`` best (as ``LVISResults``), then only those with area > 0 and a
    category present or negative in that image (the evaluator drops the rest; dropping early
    keeps the relative order, hence tie-breaking, and changes no number). The kept ones are
    checked: what a wrong box or mask would silently score is refused instead.
    """
    allowed = annotated_categories(gt)
    kept, box_area, segm = [], None, iou_type == 'segm'
    for img_id, dets in _top_per_image(detections, max_dets, source):
        if img_id not in allowed:
            raise ValueError(f'{source}: detections name image {img_id}, absent from the '
                             'annotation file; evaluate against the same file the images came '
                             'from.')
        if box_area is None:  # LVISResults decides on the first result it keeps
            box_area = 'bbox' in dets[0]
        img, cats = gt.imgs[img_id], allowed[img_id]
        size = [img['height'], img['width']]
        for det in dets:
            if det.get('category_id') not in cats:
                continue
            if segm:
                rle = det.get('segmentation')
                if not (type(rle) is dict and rle.get('size') == size
                        and isinstance(rle.get('counts'), (str, bytes))):
                    _check_rle(rle, img, _where(source, det))
            if box_area or not segm:
                try:
                    x, y, w, h = det['bbox']
                    valid = w >= 0 and h >= 0 and math.isfinite(x + y + w + h)
                except (KeyError, TypeError, ValueError):
                    valid = False
                if not valid:
                    raise ValueError(f"{_where(source, det)}: bbox {det.get('bbox')!r} is not "
                                     '[x, y, w, h] with finite values and w, h >= 0'
                                     + (' (the first result has a box, so every result needs '
                                        'one, as in LVISResults)' if box_area and segm else '')
                                     + '; write boxes as mmdet\'s results2json does.')
                area = w * h if box_area else float(mask_utils.area(det['segmentation']))
            else:
                area = float(mask_utils.area(det['segmentation']))
            if 0 < area < math.inf:
                kept.append((det, area))
    return kept


def _where(source: str, det: dict) -> str:
    return (f"{source}: detection of image {det['image_id']} (category {det['category_id']}, "
            f"score {det['score']})")


def _check_rle(rle, img: dict, where: str) -> None:
    if not (isinstance(rle, dict) and isinstance(rle.get('counts'), (str, bytes))):
        raise ValueError(f'{where}: segmentation must be a compressed RLE '
                         "{'size': [h, w], 'counts': str} (pycocotools.mask.encode, as mmdet "
                         f'writes it), got {type(rle).__name__}.')
    check_mask_size(rle.get('size'), img, where)


def check_mask_size(size, img: dict, where: str) -> None:
    """A mask scores against GT only at the image's own size; any other is an error here
    (pycocotools would give IoU -1, i.e. AP 0 without a word)."""
    expected = [img['height'], img['width']]
    size = [int(v) for v in size] if isinstance(size, (list, tuple)) else size
    if size == expected:
        return
    hint = ''
    if size == expected[::-1]:
        hint = (' It is transposed: the image was probably decoded with its EXIF rotation; load '
                "it with LoadImageFromFile(color_type='color_ignore_orientation').")
    raise ValueError(f'{where}: mask is {size} (height, width) but the image is {expected} in '
                     f'the annotation file.{hint} Masks must be at the original image size: keep '
                     'rescale=True in predict/test_step, and evaluate the images of this '
                     'annotation file.')


def evaluated_detections(gt: COCO, detections: Sequence[dict], max_dets: int = 300,
                         iou_type: str = 'bbox') -> List[dict]:
    """The detections LVIS evaluation looks at (see ``select_detections``), shallow copies."""
    return [dict(d) for d, _ in select_detections(gt, detections, max_dets, iou_type)]

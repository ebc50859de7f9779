"""FastLVISMetric equals the official lvis-api on a federated GT with detections of every kind.

The GT is built here: images with present, negative and not-exhaustive categories, all three
frequencies, polygon masks of small/medium/large areas, an image with no GT. Detections:
jittered GT at several noise levels, wrong classes, random false positives, and one image with
more than 300 detections whose low-scored true positives must be cut as ``LVISResults`` does.
"""
import copy
import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from loce.evaluation import (AP_KEYS, FastLVISMetric, annotated_categories,
                             cap_detections_per_image, evaluate_lvis, evaluated_detections,
                             load_lvis_gt)
from loce.evaluation.fast_lvis_metric import _category_chunks

# Category ids deliberately unsorted in the file: labels follow file order, groups sorted ids.
CATEGORIES = [(17, 'f'), (3, 'r'), (8, 'c'), (1, 'f'), (25, 'c'), (12, 'r'), (30, 'f'),
              (6, 'c'), (21, 'r'), (40, 'c')]  # 21 (rare) never appears: APr averages the rest
AR_KEYS = ('AR@300', 'ARs@300', 'ARm@300', 'ARl@300')


def _polygon(rng, x, y, w, h, vertices):
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radius = rng.uniform(0.75, 1.0, vertices)
    px = x + w / 2 + np.cos(angles) * radius * w / 2
    py = y + h / 2 + np.sin(angles) * radius * h / 2
    return np.stack([px, py], 1).ravel().tolist()


def _rle(poly, height, width):
    rle = mask_utils.merge(mask_utils.frPyObjects([poly], height, width))
    rle['counts'] = rle['counts'].decode()
    return rle


def _bbox_of(poly, height, width):
    xs = np.clip(poly[0::2], 0, width)
    ys = np.clip(poly[1::2], 0, height)
    x, y = float(xs.min()), float(ys.min())
    return [x, y, float(xs.max()) - x, float(ys.max()) - y]


def make_lvis_gt(rng, n_images=10):
    images, annotations = [], []
    cat_ids = [c for c, _ in CATEGORIES]
    present_pool = [c for c in cat_ids if c != 21]
    for img_id in range(1, n_images + 1):
        height, width = int(rng.integers(200, 321)), int(rng.integers(200, 321))
        present = [] if img_id == n_images else list(
            rng.choice(present_pool, size=int(rng.integers(1, 5)), replace=False))
        others = [c for c in cat_ids if c not in present]
        neg = list(rng.choice(others, size=3, replace=False))
        not_exhaustive = present[:1] if img_id % 3 == 0 else []
        for cat in present:
            for _ in range(int(rng.integers(1, 5))):
                size = rng.choice([16, 50, 130])  # small, medium, large
                w = float(np.clip(size * rng.uniform(0.7, 1.4), 6, width - 2))
                h = float(np.clip(size * rng.uniform(0.7, 1.4), 6, height - 2))
                x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
                poly = _polygon(rng, x, y, w, h, int(rng.integers(5, 10)))
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=img_id, category_id=int(cat),
                    segmentation=[poly], bbox=_bbox_of(poly, height, width),
                    area=float(mask_utils.area(_rle(poly, height, width)))))
        images.append(dict(id=img_id, height=height, width=width, file_name=f'{img_id:012d}.jpg',
                           neg_category_ids=[int(c) for c in neg],
                           not_exhaustive_category_ids=[int(c) for c in not_exhaustive]))
    categories = [dict(id=c, name=f'cat{c}', frequency=f, synset=f'cat{c}.n.01')
                  for c, f in CATEGORIES]
    return dict(images=images, annotations=annotations, categories=categories)


def make_detections(rng, gt):
    """Box and mask detections (same boxes; masks follow the jittered polygons)."""
    imgs = {img['id']: img for img in gt['images']}
    cat_ids = [c['id'] for c in gt['categories']]
    dets = []

    def add(img_id, poly, cat, score):
        img = imgs[img_id]
        dets.append(dict(image_id=img_id, category_id=int(cat), score=float(score),
                         bbox=_bbox_of(poly, img['height'], img['width']),
                         segmentation=_rle(poly, img['height'], img['width'])))

    for ann in gt['annotations']:
        img = imgs[ann['image_id']]
        noise = [0.02, 0.1, 0.3][ann['image_id'] % 3]
        poly = np.asarray(ann['segmentation'][0]).reshape(-1, 2)
        for _ in range(int(rng.integers(0, 4))):
            x, y, w, h = ann['bbox']
            shift = rng.normal(0, noise, 2) * [w, h]
            scale = 1 + rng.normal(0, noise)
            center = poly.mean(0)
            moved = (poly - center) * scale + center + shift
            cat = ann['category_id']
            if rng.random() < 0.15:  # wrong class: negative, unknown or not-exhaustive
                cat = rng.choice(cat_ids)
            score = np.clip(1 - noise * 2 + rng.normal(0, 0.2), 0.01, 1)
            if ann['image_id'] == 1:  # cut by the 300 cap on the crowded image
                score = rng.uniform(0.01, 0.1)
            add(ann['image_id'], moved.ravel().tolist(), cat, score)
    for img in gt['images']:
        n_fp = 350 if img['id'] == 1 else int(rng.integers(0, 12))
        for _ in range(n_fp):
            w, h = rng.uniform(8, img['width'] / 2), rng.uniform(8, img['height'] / 2)
            x, y = rng.uniform(0, img['width'] - w), rng.uniform(0, img['height'] - h)
            score = rng.uniform(0.15, 0.9) if img['id'] == 1 else rng.uniform(0, 0.7)
            add(img['id'], _polygon(rng, x, y, w, h, 6), rng.choice(cat_ids), score)
    order = rng.permutation(len(dets))
    return [dets[i] for i in order]


def lvis_api(gt_path, dets, iou_type):
    """Official lvis-api 0.5.3 numbers (np.float, removed in numpy 1.24, patched back here)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(np, 'float', float, raising=False)
        from lvis import LVIS, LVISEval, LVISResults
        gt = LVIS(str(gt_path))
        ev = LVISEval(gt, LVISResults(gt, copy.deepcopy(dets)), iou_type)
        ev.run()
        return {k: float(v) for k, v in ev.get_results().items()}


def _split(dets):
    boxes = [{k: v for k, v in d.items() if k != 'segmentation'} for d in dets]
    return {'bbox': boxes, 'segm': dets}


@pytest.fixture(scope='module')
def case(tmp_path_factory):
    rng = np.random.default_rng(0)
    gt = make_lvis_gt(rng)
    path = tmp_path_factory.mktemp('lvis') / 'lvis_v1_val.json'
    path.write_text(json.dumps(gt))
    dets = _split(make_detections(rng, gt))
    official = {t: lvis_api(path, dets[t], t) for t in ('bbox', 'segm')}
    return gt, path, dets, official


def test_fixture_covers_the_federated_cases(case):
    gt, _, dets, official = case
    per_image = np.bincount([d['image_id'] for d in dets['bbox']])
    assert per_image.max() > 300
    assert any(img['not_exhaustive_category_ids'] for img in gt['images'])
    areas = [a['area'] for a in gt['annotations']]
    assert min(areas) < 32 ** 2 < np.median(areas) and max(areas) > 96 ** 2
    for t in ('bbox', 'segm'):  # every AP is defined and non-trivial
        assert all(0 < official[t][k] < 1 for k in AP_KEYS), official[t]


@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
@pytest.mark.parametrize('max_cells', [1, 60, 10 ** 6])  # one category per group ... one group
def test_equals_lvis_api(case, iou_type, max_cells):
    gt, path, dets, official = case
    fast = evaluate_lvis(load_lvis_gt(str(path)), dets[iou_type], iou_type, max_cells=max_cells)
    for key in AP_KEYS + AR_KEYS:
        assert fast[key] == pytest.approx(official[iou_type][key], abs=1e-10), key


def test_category_groups_cover_each_category_once():
    cat_images = {1: {1, 2, 3}, 2: {3}, 3: {4, 5}, 4: {9}}
    chunks = _category_chunks(cat_images, max_cells=6)
    assert sorted(c for cats, _ in chunks for c in cats) == [1, 2, 3, 4]
    for cats, images in chunks:
        assert images == set().union(*(cat_images[c] for c in cats))
        assert len(cats) == 1 or len(images) * len(cats) <= 6
    assert len(_category_chunks(cat_images, max_cells=10 ** 6)) == 1


def test_evaluated_detections_cap_then_keep_annotated_categories(case):
    gt, path, dets, _ = case
    api = load_lvis_gt(str(path))
    kept = evaluated_detections(api, dets['bbox'])
    allowed = annotated_categories(api)
    capped = cap_detections_per_image(dets['bbox'])
    assert kept == [d for d in capped if d['category_id'] in allowed[d['image_id']]]
    assert len(kept) < len(capped)
    assert evaluated_detections(api, kept) == kept
    with pytest.raises(ValueError, match='absent from the annotation file'):
        evaluated_detections(api, [dict(image_id=999, category_id=1, score=1.0)])


def test_cap_is_what_makes_it_match(case):
    """Without the per-image cap faster-coco-eval scores the crowded image differently."""
    _, path, dets, official = case
    uncapped = evaluate_lvis(load_lvis_gt(str(path)), dets['bbox'], 'bbox', max_dets=10_000)
    assert max(abs(uncapped[k] - official['bbox'][k]) for k in AP_KEYS) > 1e-4


def test_cap_keeps_top_scores_in_lvis_order():
    dets = [dict(image_id=i, score=s) for i, s in
            [(2, .1), (1, .5), (2, .9), (1, .7), (2, .5), (1, .7), (1, .1)]]
    capped = cap_detections_per_image(dets, max_dets=2)
    assert [(d['image_id'], d['score']) for d in capped] == [(2, .9), (2, .5), (1, .7), (1, .7)]
    assert capped[2] is not dets[3] and capped[2] == dets[3]
    assert len(cap_detections_per_image(dets, max_dets=-1)) == len(dets)


def test_rejects_non_lvis_annotations(tmp_path):
    coco = dict(images=[dict(id=1, height=10, width=10)], annotations=[],
                categories=[dict(id=1, name='a', frequency='r')])
    path = tmp_path / 'coco.json'
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match='neg_category_ids'):
        load_lvis_gt(str(path))


def _data_samples(gt, dets, cat_ids, mask_scores=False):
    """mmdet-style predictions per image (xyxy boxes, bool masks) from the COCO-format dets;
    optionally mask scores that rank differently from the box scores."""
    imgs = {img['id']: img for img in gt['images']}
    samples = []
    for img_id, img in imgs.items():
        mine = [d for d in dets if d['image_id'] == img_id]
        boxes = torch.tensor([[d['bbox'][0], d['bbox'][1], d['bbox'][0] + d['bbox'][2],
                               d['bbox'][1] + d['bbox'][3]] for d in mine], dtype=torch.float32)
        masks = np.stack([mask_utils.decode(d['segmentation']) for d in mine]).astype(bool) \
            if mine else np.zeros((0, img['height'], img['width']), bool)
        samples.append(dict(
            img_id=img_id, ori_shape=(img['height'], img['width']),
            pred_instances=dict(
                bboxes=boxes.reshape(-1, 4),
                scores=torch.tensor([d['score'] for d in mine], dtype=torch.float32),
                labels=torch.tensor([cat_ids.index(d['category_id']) for d in mine],
                                    dtype=torch.int64),
                masks=torch.from_numpy(masks))))
        if mask_scores:
            order = torch.arange(len(mine), dtype=torch.float32)
            samples[-1]['pred_instances']['mask_scores'] = (order * 0.618) % 1
    return samples


def test_metric_interface_matches_mmdet_lvis_metric(case, tmp_path):
    """Same keys as mmdet's LVISMetric; same detection files; numbers equal the lvis-api's
    on exactly those files."""
    from mmdet.evaluation import LVISMetric

    gt, path, dets, _ = case
    cat_ids = [c['id'] for c in gt['categories']]
    samples = _data_samples(gt, dets['segm'], cat_ids, mask_scores=True)

    fast = FastLVISMetric(ann_file=str(path), metric=['bbox', 'segm'],
                          outfile_prefix=str(tmp_path / 'fast'))
    for i in range(0, len(samples), 3):
        fast.process({}, samples[i:i + 3])
    fast_results = fast.evaluate(size=len(samples))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(np, 'float', float, raising=False)
        ref = LVISMetric(ann_file=str(path), metric=['bbox', 'segm'],
                         outfile_prefix=str(tmp_path / 'mmdet'))
        ref.process({}, samples)
        ref_results = ref.evaluate(size=len(samples))

    assert set(fast_results) == set(ref_results)
    assert set(fast_results) == {f'lvis/{t}_{k}' for t in ('bbox', 'segm') for k in AP_KEYS}
    for key, value in ref_results.items():  # mmdet rounds to 3 decimals
        assert abs(fast_results[key] - value) <= 5e-4 + 1e-12, key
    for t in ('bbox', 'segm'):
        mine = json.loads((tmp_path / f'fast.{t}.json').read_text())
        theirs = json.loads((tmp_path / f'mmdet.{t}.json').read_text())
        assert mine == theirs
        official = lvis_api(path, theirs, t)
        for key in AP_KEYS:
            assert fast_results[f'lvis/{t}_{key}'] == pytest.approx(official[key], abs=1e-10)


def test_format_only_dumps_without_evaluating(case, tmp_path):
    gt, path, dets, _ = case
    cat_ids = [c['id'] for c in gt['categories']]
    metric = FastLVISMetric(ann_file=str(path), metric='bbox', format_only=True,
                            outfile_prefix=str(tmp_path / 'out'))
    metric.process({}, _data_samples(gt, dets['segm'][:40], cat_ids))
    assert metric.evaluate(size=len(gt['images'])) == {}
    dumped = json.loads((tmp_path / 'out.bbox.json').read_text())
    assert len(dumped) == 40 and not list(tmp_path.glob('.tmp_*'))

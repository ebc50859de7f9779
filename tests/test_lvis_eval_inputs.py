"""Inputs real evaluations meet: equal to the lvis-api where it is legal, a clear error where not.

Each legal case goes through both entry points (``evaluate_lvis`` on COCO-format results and
``FastLVISMetric`` inside MMDetection, compared with the lvis-api on the very file the metric
dumps) and is checked to matter: plain faster-coco-eval, without the rule, scores it
differently.
"""
import copy
import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from faster_coco_eval import COCO, COCOeval_faster
from test_fast_lvis_metric import (AR_KEYS, _data_samples, _split, lvis_api, make_detections,
                                   make_lvis_gt)

from loce.evaluation import (AP_KEYS, FastLVISMetric, cap_detections_per_image, evaluate_lvis,
                             load_lvis_gt)


@pytest.fixture(scope='module')
def base():
    rng = np.random.default_rng(0)
    gt = make_lvis_gt(rng)
    return gt, make_detections(rng, gt)


def _write(tmp_path, gt, name='lvis_v1_val.json'):
    path = tmp_path / name
    path.write_text(json.dumps(gt))
    return path


def _assert_equal(fast, official, keys=AP_KEYS + AR_KEYS):
    for key in keys:
        assert fast[key] == pytest.approx(official[key], abs=1e-10), key


def _plain_faster_coco_eval(path, dets, iou_type):
    """What faster-coco-eval alone gives (capped like the lvis-api, no input rules)."""
    gt = COCO(str(path))
    dt = gt.loadRes(cap_detections_per_image(copy.deepcopy(dets)))
    ev = COCOeval_faster(gt, dt, iou_type, lvis_style=True, print_function=lambda *a: None)
    ev.params.maxDets = [300]
    ev.evaluate()
    ev.accumulate()
    precision = ev.eval['precision'][..., 0, -1]
    return float(np.mean(precision[precision > -1]))


def _metric_vs_lvis_api(gt, path, dets, tmp_path, processes=1):
    """FastLVISMetric on mmdet-style predictions, and the lvis-api on the files it dumps."""
    cat_ids = [c['id'] for c in gt['categories']]
    samples = _data_samples(gt, dets, cat_ids)
    metric = FastLVISMetric(ann_file=str(path), metric=['bbox', 'segm'], processes=processes,
                            outfile_prefix=str(tmp_path / 'fast'))
    for i in range(0, len(samples), 4):
        metric.process({}, samples[i:i + 4])
    results = metric.evaluate(size=len(samples))
    for iou_type in ('bbox', 'segm'):
        dumped = json.loads((tmp_path / f'fast.{iou_type}.json').read_text())
        official = lvis_api(path, dumped, iou_type)
        _assert_equal({k: results[f'lvis/{iou_type}_{k}'] for k in AP_KEYS}, official, AP_KEYS)
    return results


def _both_entry_points(gt, path, dets, tmp_path):
    for iou_type, mine in _split(dets).items():
        official = lvis_api(path, mine, iou_type)
        _assert_equal(evaluate_lvis(load_lvis_gt(str(path)), mine, iou_type), official)
        yield iou_type, official
    _metric_vs_lvis_api(gt, path, dets, tmp_path)


def _flatten_some_boxes(gt, dets, rng, share=0.08):
    """Boxes clamped flat at the image border (x1 = x2 = width), masks left as they were;
    the lvis-api leaves them out because LVISResults sets area = w*h, for segm too."""
    imgs = {img['id']: img for img in gt['images']}
    dets = copy.deepcopy(dets)
    flat = rng.random(len(dets)) < share
    for det, is_flat in zip(dets, flat):
        if is_flat:
            img = imgs[det['image_id']]
            x, y, w, h = det['bbox']
            det['bbox'] = [float(img['width']), y, 0.0, h] if det['image_id'] % 2 else [
                x, float(img['height']), w, 0.0]
            det['score'] = min(1.0, det['score'] + 0.3)  # among the 300 kept on the full image
    return dets, int(flat.sum())


def test_zero_area_detections_are_left_out_as_in_the_lvis_api(base, tmp_path):
    gt, dets = base
    dets, n_flat = _flatten_some_boxes(gt, dets, np.random.default_rng(1))
    path = _write(tmp_path, gt)
    assert n_flat > 20
    for iou_type, official in _both_entry_points(gt, path, dets, tmp_path):
        plain = _plain_faster_coco_eval(path, _split(dets)[iou_type], iou_type)
        assert abs(plain - official['AP']) > 1e-4, iou_type  # the rule matters


def test_zero_area_gt_is_left_out_as_in_the_lvis_api(base, tmp_path):
    gt, dets = copy.deepcopy(base)
    by_cat = {}
    for ann in gt['annotations']:
        by_cat.setdefault(ann['category_id'], []).append(ann)
    # every GT of category 3 (rare): it becomes undefined, its detections drop out where it
    # is not negative; plus single annotations of other categories
    for ann in by_cat[3]:
        ann['area'] = 0.0
    for cat in (17, 8, 30):
        by_cat[cat][0]['area'] = 0
    path = _write(tmp_path, gt)
    loaded = load_lvis_gt(str(path))
    assert len(loaded.dataset['annotations']) == len(gt['annotations']) - len(by_cat[3]) - 3
    for iou_type, official in _both_entry_points(gt, path, dets, tmp_path):
        plain = _plain_faster_coco_eval(path, _split(dets)[iou_type], iou_type)
        assert abs(plain - official['AP']) > 1e-4, iou_type


def test_crowd_gt_counts_as_an_ordinary_instance_as_in_the_lvis_api(base, tmp_path):
    """Decision: match the lvis-api (it ignores iscrowd), with a warning; faster-coco-eval
    would make those GT ignore regions that any number of detections may match."""
    gt, dets = copy.deepcopy(base)
    for ann in gt['annotations'][::4]:
        ann['iscrowd'] = 1
    path = _write(tmp_path, gt)
    for iou_type, official in _both_entry_points(gt, path, dets, tmp_path):
        plain = _plain_faster_coco_eval(path, _split(dets)[iou_type], iou_type)
        assert abs(plain - official['AP']) > 1e-4, iou_type


def test_mask_results_without_boxes_take_the_mask_area_as_in_the_lvis_api(base, tmp_path):
    """LVISResults gives results without a box their mask area (and the mask's box); when the
    first result has a box, every one needs it."""
    gt, dets = base
    path = _write(tmp_path, gt)
    no_boxes = [{k: v for k, v in d.items() if k != 'bbox'} for d in dets]
    _assert_equal(evaluate_lvis(load_lvis_gt(str(path)), no_boxes, 'segm'),
                  lvis_api(path, no_boxes, 'segm'))
    mixed = [dict(d) for d in dets]
    present = {(a['image_id'], a['category_id']) for a in gt['annotations']}
    del next(d for d in mixed if (d['image_id'], d['category_id']) in present
             and d['image_id'] != 1)['bbox']  # evaluated: not cut by the 300 cap
    with pytest.raises(ValueError, match='the first result has a box, so every result needs one'):
        evaluate_lvis(load_lvis_gt(str(path)), mixed, 'segm')


def test_some_images_without_detections_stay_legal(base, tmp_path):
    gt, dets = base
    dets = [d for d in dets if d['image_id'] not in (2, 5, 7)]
    path = _write(tmp_path, gt)
    list(_both_entry_points(gt, path, dets, tmp_path))


def test_a_metric_whose_images_have_no_detections_scores_zero(base, tmp_path):
    """The lvis-api cannot score this at all (IndexError); every defined AP is 0 here."""
    gt, _ = base
    path = _write(tmp_path, gt)
    samples = _data_samples(gt, [], [c['id'] for c in gt['categories']])
    metric = FastLVISMetric(ann_file=str(path), metric=['bbox', 'segm'], processes=1)
    metric.process({}, samples)
    results = metric.evaluate(size=len(samples))
    assert set(results.values()) == {0.0}


def test_result_files_are_accepted_and_named_in_errors(base, tmp_path):
    gt, dets = base
    path = _write(tmp_path, gt)
    boxes = _split(dets)['bbox']
    result_file = tmp_path / 'results.bbox.json'
    result_file.write_text(json.dumps(boxes))
    api = load_lvis_gt(str(path))
    assert evaluate_lvis(api, str(result_file), 'bbox') == evaluate_lvis(api, boxes, 'bbox')
    (tmp_path / 'broken.json').write_text('[{"image_id": 1,')
    with pytest.raises(ValueError, match='broken.json: not valid JSON'):
        evaluate_lvis(api, str(tmp_path / 'broken.json'), 'bbox')
    bad = copy.deepcopy(boxes)
    bad[0]['bbox'] = [1.0, 2.0, -3.0, 4.0]
    result_file.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r'results.bbox.json: detection of image \d+ .*w, h >= 0'):
        evaluate_lvis(api, str(result_file), 'bbox')


# Errors: each names what is wrong and the fix.

def test_gt_with_ignore_flags_is_refused(base, tmp_path):
    gt = copy.deepcopy(base[0])
    gt['annotations'][5]['ignore'] = 1
    path = _write(tmp_path, gt)
    with pytest.raises(ValueError, match=r'annotation 6 \(image \d+\): ignore=1.*Remove'):
        load_lvis_gt(str(path))


@pytest.mark.parametrize('change, message', [
    (lambda anns: anns[0].update(id=0), 'positive integers'),
    (lambda anns: anns[1].update(id=anns[0]['id']), 'used twice'),
    (lambda anns: anns[0].update(image_id=999), 'not in the file\'s images'),
    (lambda anns: anns[0].update(category_id=999), 'not in the file\'s categories'),
    (lambda anns: anns[0].pop('area'), "no numeric 'area'"),
])
def test_malformed_gt_is_refused(base, tmp_path, change, message):
    gt = copy.deepcopy(base[0])
    change(gt['annotations'])
    with pytest.raises(ValueError, match=message):
        load_lvis_gt(str(_write(tmp_path, gt)))


def test_gt_not_loaded_by_load_lvis_gt_is_refused_when_it_would_differ(base, tmp_path):
    gt = copy.deepcopy(base[0])
    gt['annotations'][0]['iscrowd'] = 1
    raw = COCO(str(_write(tmp_path, gt)))
    with pytest.raises(ValueError, match='load it with'):
        evaluate_lvis(raw, _split(base[1])['bbox'], 'bbox')


def _resized_rle(det, img, shape):
    mask = np.zeros(shape, np.uint8, order='F')
    mask[:shape[0] // 2, :shape[1] // 2] = 1
    rle = mask_utils.encode(mask)
    rle['counts'] = rle['counts'].decode()
    return dict(det, segmentation=rle)


@pytest.mark.parametrize('shape_of, message', [
    (lambda h, w: (h // 2, w // 2), r'mask is \[\d+, \d+\] \(height, width\) but the image is'),
    (lambda h, w: (w, h), 'transposed'),
])
def test_masks_of_the_wrong_size_are_refused(base, tmp_path, shape_of, message):
    gt, dets = base
    path = _write(tmp_path, gt)
    imgs = {img['id']: img for img in gt['images']}
    img = imgs[dets[0]['image_id']]
    wrong = [_resized_rle(d, img, shape_of(img['height'], img['width']))
             if d['image_id'] == img['id'] else d for d in dets]
    with pytest.raises(ValueError, match=message):
        evaluate_lvis(load_lvis_gt(str(path)), wrong, 'segm')

    cat_ids = [c['id'] for c in gt['categories']]
    samples = _data_samples(gt, [d for d in dets if d['image_id'] == img['id']], cat_ids)
    sample = next(s for s in samples if s['img_id'] == img['id'])
    masks = sample['pred_instances']['masks']
    sample['pred_instances']['masks'] = torch.zeros(
        (len(masks), ) + shape_of(img['height'], img['width']), dtype=torch.bool)
    metric = FastLVISMetric(ann_file=str(path), metric=['bbox', 'segm'])
    with pytest.raises(ValueError, match=message) as error:
        metric.process({}, [sample])
    assert f'{path}): image {img["id"]}: mask is' in str(error.value)


def test_a_missing_mask_is_refused(base, tmp_path):
    gt, dets = base
    path = _write(tmp_path, gt)
    cat_ids = [c['id'] for c in gt['categories']]
    sample = _data_samples(gt, dets, cat_ids)[0]
    sample['pred_instances']['masks'] = sample['pred_instances']['masks'][:-1]
    metric = FastLVISMetric(ann_file=str(path), metric=['bbox', 'segm'])
    with pytest.raises(ValueError, match=r"image 1: pred_instances disagree in length \(.*'masks'"):
        metric.process({}, [sample])

    no_mask = copy.deepcopy(dets)
    target = next(d for d in no_mask if d['image_id'] == 2)
    del target['segmentation']
    with pytest.raises(ValueError, match='detection of image 2 .*compressed RLE'):
        evaluate_lvis(load_lvis_gt(str(path)), no_mask, 'segm')


def test_segm_without_masks_is_refused_at_the_first_batch(base, tmp_path):
    gt, dets = base
    path = _write(tmp_path, gt)
    sample = _data_samples(gt, dets, [c['id'] for c in gt['categories']])[0]
    del sample['pred_instances']['masks']
    metric = FastLVISMetric(ann_file=str(path), metric=['bbox', 'segm'])
    with pytest.raises(ValueError, match="'segm' requested but the model predicts no masks"):
        metric.process({}, [sample])


def test_no_predictions_at_all_is_an_error(base, tmp_path):
    gt, _ = base
    path = _write(tmp_path, gt)
    metric = FastLVISMetric(ann_file=str(path), metric=['bbox', 'segm'])
    with pytest.raises(ValueError, match='no predictions reached the metric'):
        metric.evaluate(size=len(gt['images']))
    with pytest.raises(ValueError, match='no detections at all'):
        evaluate_lvis(load_lvis_gt(str(path)), [], 'bbox')


def test_an_image_predicted_twice_is_an_error(base, tmp_path):
    gt, dets = base
    path = _write(tmp_path, gt)
    samples = _data_samples(gt, dets, [c['id'] for c in gt['categories']])
    metric = FastLVISMetric(ann_file=str(path), metric='bbox')
    metric.process({}, samples + samples[:1])
    with pytest.raises(ValueError, match='image 1 was predicted twice'):
        metric.evaluate(size=len(samples) + 1)


def test_unknown_images_and_bad_scores_are_refused(base, tmp_path):
    gt, dets = base
    path = _write(tmp_path, gt)
    sample = _data_samples(gt, dets, [c['id'] for c in gt['categories']])[0]
    metric = FastLVISMetric(ann_file=str(path), metric='bbox')
    with pytest.raises(ValueError, match='image 999 is absent from'):
        metric.process({}, [dict(sample, img_id=999)])
    sample['pred_instances']['scores'][0] = float('nan')
    with pytest.raises(ValueError, match='image 1: non-finite scores'):
        metric.process({}, [sample])
    nan_score = copy.deepcopy(_split(dets)['bbox'])
    nan_score[3]['score'] = float('nan')
    with pytest.raises(ValueError, match='has score nan'):
        evaluate_lvis(load_lvis_gt(str(path)), nan_score, 'bbox')

"""LVIS evaluation time: official lvis-api 0.5.3 against FastLVISMetric's evaluator.

Same generated GT and detections for both, box and mask, at LVIS-val-like scale by default
(5,000 images, 1,203 classes with r/c/f, 300 detections per image). Prints both AP tables,
their largest difference and the time ratio measured in this one run.

    .venv/bin/python benchmarks/bench_lvis_eval.py                 # full scale (long)
    .venv/bin/python benchmarks/bench_lvis_eval.py --images 500    # quick check

The lvis-api uses ``np.float`` (removed in numpy 1.24); it is restored to ``float`` here, for
this benchmark only. Masks are rectangles (RLE from boxes), which keeps generation cheap while
both evaluators still do full mask IoU.
"""
import argparse
import json
import os
import resource
import tempfile
import time

import numpy as np
import pycocotools.mask as mask_utils

from loce.evaluation import AP_KEYS, evaluate_lvis, load_lvis_gt

AR_KEYS = ('AR@300', 'ARs@300', 'ARm@300', 'ARl@300')
# LVIS v1 val proportions of rare / common / frequent classes (337 / 461 / 405 of 1,203).
FREQ_SHARES = (('f', 405 / 1203), ('c', 461 / 1203), ('r', 337 / 1203))


def make_gt(rng, n_images, n_classes):
    """Federated GT: long-tailed class popularity, frequency by popularity, rectangle masks."""
    popularity = 1.0 / np.arange(1, n_classes + 1) ** 1.1
    popularity /= popularity.sum()
    bounds = np.cumsum([share for _, share in FREQ_SHARES]) * n_classes
    freq = [next(f for (f, _), b in zip(FREQ_SHARES, bounds) if rank < b)
            for rank in range(n_classes)]
    cat_ids = rng.permutation(n_classes) + 1  # popularity rank -> id, ids not in rank order
    images, annotations = [], []
    for img_id in range(1, n_images + 1):
        h, w = int(rng.integers(360, 481)), 640
        present = rng.choice(n_classes, int(rng.integers(1, 7)), replace=False, p=popularity)
        negative = np.setdiff1d(
            rng.choice(n_classes, 10, replace=False, p=popularity), present)
        not_exhaustive = present[:1] if rng.random() < 0.3 else present[:0]
        for rank in present:
            for _ in range(1 + rng.poisson(1.5)):
                bw, bh = np.exp(rng.uniform(np.log(8), np.log(300), 2))
                bw, bh = min(bw, w - 1), min(bh, h - 1)
                x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=img_id, category_id=int(cat_ids[rank]),
                    bbox=[x, y, bw, bh], area=bw * bh,
                    segmentation=[[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]))
        images.append(dict(id=img_id, height=h, width=w,
                           neg_category_ids=[int(cat_ids[r]) for r in negative],
                           not_exhaustive_category_ids=[int(cat_ids[r]) for r in not_exhaustive]))
    categories = [dict(id=int(cat_ids[rank]), name=f'class{cat_ids[rank]}', frequency=freq[rank])
                  for rank in range(n_classes)]
    categories.sort(key=lambda c: c['id'])
    return dict(images=images, annotations=annotations, categories=categories), popularity, cat_ids


def make_detections(rng, gt, popularity, cat_ids, dets_per_image):
    """Per image: jittered GT (some with a wrong class), false positives on annotated classes,
    filled up to ``dets_per_image`` with low-scored random classes (what a detector emits)."""
    by_image = {}
    for ann in gt['annotations']:
        by_image.setdefault(ann['image_id'], []).append(ann)
    box_dets, segm_dets = [], []
    for img in gt['images']:
        anns = by_image.get(img['id'], [])
        boxes, cats, scores = [], [], []
        for ann in anns:
            x, y, bw, bh = ann['bbox']
            for _ in range(int(rng.integers(1, 3))):
                noise = rng.uniform(0.02, 0.25)
                dx, dy = rng.normal(0, noise, 2) * [bw, bh]
                sw, sh = np.exp(rng.normal(0, noise, 2))
                boxes.append([x + dx, y + dy, bw * sw, bh * sh])
                wrong = rng.random() < 0.1
                cats.append(int(cat_ids[rng.choice(len(cat_ids), p=popularity)]) if wrong
                            else ann['category_id'])
                scores.append(rng.uniform(0.3, 1.0))
        annotated = [a['category_id'] for a in anns] + img['neg_category_ids']
        n_rest = max(dets_per_image - len(boxes), 0)
        n_fp = min(30, n_rest)
        rest_cats = np.concatenate([
            rng.choice(annotated, n_fp),
            cat_ids[rng.choice(len(cat_ids), n_rest - n_fp, p=popularity)]]).astype(int)
        wh = np.exp(rng.uniform(np.log(8), np.log(300), (n_rest, 2)))
        xy = rng.uniform(0, 1, (n_rest, 2)) * [img['width'], img['height']]
        boxes = np.concatenate([np.asarray(boxes).reshape(-1, 4), np.hstack([xy, wh])])
        cats = np.concatenate([np.asarray(cats, int), rest_cats])
        scores = np.concatenate([scores, rng.uniform(0, 0.6, n_fp),
                                 rng.uniform(0, 0.3, n_rest - n_fp)])[:dets_per_image]
        boxes, cats = boxes[:dets_per_image], cats[:dets_per_image]
        x1 = np.clip(boxes[:, 0], 0, img['width'] - 1)
        y1 = np.clip(boxes[:, 1], 0, img['height'] - 1)
        x2 = np.clip(boxes[:, 0] + boxes[:, 2], x1 + 1, img['width'])
        y2 = np.clip(boxes[:, 1] + boxes[:, 3], y1 + 1, img['height'])
        xywh = np.stack([x1, y1, x2 - x1, y2 - y1], 1)
        rles = mask_utils.frPyObjects(xywh, img['height'], img['width'])
        for box, cat, score, rle in zip(xywh.tolist(), cats.tolist(), scores.tolist(), rles):
            box_dets.append(dict(image_id=img['id'], category_id=cat, bbox=box, score=score))
            segm_dets.append(dict(image_id=img['id'], category_id=cat, bbox=box, score=score,
                                  segmentation=dict(size=rle['size'],
                                                    counts=rle['counts'].decode())))
    return {'bbox': box_dets, 'segm': segm_dets}


def run_lvis_api(gt_path, dets):
    np.float = float  # lvis 0.5.3 on numpy 2; benchmark-only patch
    from lvis import LVIS, LVISEval, LVISResults

    times, results = {}, {}
    start = time.perf_counter()
    gt = LVIS(gt_path)
    times['load_gt'] = time.perf_counter() - start
    for iou_type, anns in dets.items():
        anns = [dict(d) for d in anns]  # LVISResults annotates its input
        start = time.perf_counter()
        ev = LVISEval(gt, LVISResults(gt, anns), iou_type)
        ev.run()
        times[iou_type] = time.perf_counter() - start
        results[iou_type] = {k: float(v) for k, v in ev.get_results().items()}
        del ev, anns
    return times, results


def run_fast(gt_path, dets):
    times, results = {}, {}
    start = time.perf_counter()
    gt = load_lvis_gt(gt_path)
    times['load_gt'] = time.perf_counter() - start
    for iou_type, anns in dets.items():
        start = time.perf_counter()
        results[iou_type] = evaluate_lvis(gt, anns, iou_type)
        times[iou_type] = time.perf_counter() - start
    return times, results


def per_image_predictions(gt, dets):
    """The detections as mmdet metrics hold them after ``process``: per image, xyxy float32
    boxes, float32 scores, label indices (file order of categories), RLE masks."""
    label_of = {c['id']: i for i, c in enumerate(gt['categories'])}
    by_image = {img['id']: [] for img in gt['images']}
    for det in dets['segm']:
        by_image[det['image_id']].append(det)
    preds = []
    for img_id, mine in by_image.items():
        xywh = np.asarray([d['bbox'] for d in mine], np.float64).reshape(-1, 4)
        preds.append(dict(img_id=img_id,
                          bboxes=np.hstack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]).astype(
                              np.float32),
                          scores=np.asarray([d['score'] for d in mine], np.float32),
                          labels=np.asarray([label_of[d['category_id']] for d in mine], np.int64),
                          masks=[d['segmentation'] for d in mine]))
    return preds


def run_metrics(gt_path, gt, dets, with_lvis_api):
    """compute_metrics of mmdet's LVISMetric and of FastLVISMetric on the same predictions."""
    import contextlib
    import io

    from loce.evaluation import FastLVISMetric

    preds = per_image_predictions(gt, dets)
    sizes = {img['id']: img for img in gt['images']}
    times, results = {}, {}
    fast = FastLVISMetric(ann_file=gt_path, metric=['bbox', 'segm'])
    start = time.perf_counter()
    results['fast'] = fast.compute_metrics(preds)
    times['fast'] = time.perf_counter() - start
    if with_lvis_api:
        np.float = float  # lvis 0.5.3 on numpy 2; benchmark-only patch
        from mmdet.evaluation import LVISMetric

        ref = LVISMetric(ann_file=gt_path, metric=['bbox', 'segm'])
        pairs = [(dict(img_id=p['img_id'], width=sizes[p['img_id']]['width'],
                       height=sizes[p['img_id']]['height']), p) for p in preds]
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            results['lvis-api'] = ref.compute_metrics(pairs)
        times['lvis-api'] = time.perf_counter() - start
    return times, results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=5000)
    parser.add_argument('--classes', type=int, default=1203)
    parser.add_argument('--dets', type=int, default=300, help='detections per image')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--skip-lvis-api', action='store_true', help='time the fast one only')
    parser.add_argument('--metric-level', action='store_true',
                        help="also time mmdet's LVISMetric against FastLVISMetric "
                             '(compute_metrics on per-image predictions, json dump included)')
    parser.add_argument('--json', help='also write the measurements to this file')
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    gt, popularity, cat_ids = make_gt(rng, args.images, args.classes)
    dets = make_detections(rng, gt, popularity, cat_ids, args.dets)
    with tempfile.TemporaryDirectory() as tmp:
        gt_path = os.path.join(tmp, 'lvis_val.json')
        with open(gt_path, 'w') as f:
            json.dump(gt, f)
        print(f'generated {args.images} images, {args.classes} classes, '
              f'{len(gt["annotations"])} GT, {len(dets["bbox"])} detections per type '
              f'in {time.perf_counter() - start:.1f} s', flush=True)
        fast_t, fast_r = run_fast(gt_path, dets)
        print('fast: ' + ', '.join(f'{k} {v:.1f} s' for k, v in fast_t.items()), flush=True)
        if args.skip_lvis_api:
            ref_t, ref_r = None, None
        else:
            ref_t, ref_r = run_lvis_api(gt_path, dets)
            print('lvis-api: ' + ', '.join(f'{k} {v:.1f} s' for k, v in ref_t.items()),
                  flush=True)
        if args.metric_level:
            metric_t, metric_r = run_metrics(gt_path, gt, dets, not args.skip_lvis_api)

    report = dict(args=vars(args), fast_seconds=fast_t, lvis_api_seconds=ref_t,
                  fast=fast_r, lvis_api=ref_r,
                  peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20)
    for iou_type in dets:
        print(f'\n{iou_type:5s} {"key":8s} {"lvis-api":>10s} {"fast":>10s} {"|diff|":>9s}')
        for key in AP_KEYS + AR_KEYS:
            ref = ref_r[iou_type][key] if ref_r else float('nan')
            fast = fast_r[iou_type][key]
            print(f'{"":5s} {key:8s} {ref:10.6f} {fast:10.6f} {abs(ref - fast):9.2e}')
    print()
    print(f'{"":18s} {"lvis-api s":>11s} {"fast s":>8s} {"ratio":>7s}')
    for part in ('load_gt', 'bbox', 'segm'):
        ref = ref_t[part] if ref_t else float('nan')
        print(f'{part:18s} {ref:11.2f} {fast_t[part]:8.2f} {ref / fast_t[part]:6.1f}x')
    if ref_r:
        diff = max(abs(ref_r[t][k] - fast_r[t][k]) for t in dets for k in AP_KEYS + AR_KEYS)
        ref_eval, fast_eval = ref_t['bbox'] + ref_t['segm'], fast_t['bbox'] + fast_t['segm']
        ref_all, fast_all = ref_eval + ref_t['load_gt'], fast_eval + fast_t['load_gt']
        print(f'{"bbox+segm":18s} {ref_eval:11.2f} {fast_eval:8.2f} {ref_eval / fast_eval:6.1f}x')
        print(f'{"with GT loading":18s} {ref_all:11.2f} {fast_all:8.2f} '
              f'{ref_all / fast_all:6.1f}x')
        print(f'max |AP/AR difference| over bbox and segm: {diff:.2e}')
        report.update(max_abs_diff=diff, ratio_eval=ref_eval / fast_eval,
                      ratio_with_gt_loading=ref_all / fast_all)
    if args.metric_level:
        print('\nmetric level (compute_metrics, bbox+segm): ' + ', '.join(
            f'{k} {v:.2f} s' for k, v in metric_t.items()))
        if 'lvis-api' in metric_t:
            diff = max(abs(metric_r['fast'][k] - v) for k, v in metric_r['lvis-api'].items())
            print(f"LVISMetric / FastLVISMetric: {metric_t['lvis-api'] / metric_t['fast']:.1f}x, "
                  f'max |difference| {diff:.1e} (LVISMetric rounds to 3 decimals)')
        report.update(metric_seconds=metric_t, metric_results=metric_r)
    print(f'peak RSS {report["peak_rss_gib"]:.1f} GiB')
    if args.json:
        tmp = args.json + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, args.json)


if __name__ == '__main__':
    main()

"""LVIS evaluation time, end to end: mmdet's LVISMetric (the lvis-api 0.5.3) against FastLVISMetric.

Same generated GT and per-image predictions for both, box and mask, at LVIS-val-like scale by
default (5,000 images, 1,203 classes with r/c/f, 300 detections per image). What is timed is
``compute_metrics`` on the predictions an MMDetection test loop collects, as a user meets it
(mmdet's json dump included for LVISMetric, box and mask evaluated in one call), and
FastLVISMetric once per number of processes. The lvis-api runs once, box and mask in one
LVISMetric call: its per-type times are its LVISResults + LVISEval for that type (its shared
json dump counted only in box+mask). Its full-precision results are captured there and
compared key by key (AP and AR) with ``evaluate_lvis`` on the very result files it read, and
(AP keys) with FastLVISMetric. Prints both tables, the largest difference, the time ratios
measured in this one run and the machine load.

    .venv/bin/python benchmarks/bench_lvis_eval.py                      # full scale (long)
    .venv/bin/python benchmarks/bench_lvis_eval.py --images 500         # quick check
    .venv/bin/python benchmarks/bench_lvis_eval.py --skip-lvis-api --processes 1,2,4

The lvis-api uses ``np.float`` (removed in numpy 1.24); it is restored to ``float`` here, for
this benchmark only. Masks are rectangles (RLE from boxes), which keeps generation cheap while
both evaluators still do full mask IoU.
"""
import argparse
import contextlib
import io
import json
import os
import platform
import resource
import tempfile
import time

import numpy as np
import pycocotools.mask as mask_utils

from loce.evaluation import AP_KEYS, FastLVISMetric, evaluate_lvis, load_lvis_gt

AR_KEYS = ('AR@300', 'ARs@300', 'ARm@300', 'ARl@300')
TYPES = {'bbox': ['bbox'], 'segm': ['segm'], 'bbox+segm': ['bbox', 'segm']}
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


def cpu_seconds(who=(resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)):
    """CPU time of this process and of its finished children: on a shared machine it says
    what the work cost, where wall time also says what others left of the cores."""
    return sum(getattr(resource.getrusage(w), field) for w in who
               for field in ('ru_utime', 'ru_stime'))


def run_lvis_api(gt_path, gt, preds, outfile_prefix):
    """mmdet's LVISMetric, box and mask in one compute_metrics call. Returns its times (total,
    GT loading, and per type LVISResults + LVISEval) and the lvis-api's full-precision
    results, captured from the LVISEval it runs; its result files stay at outfile_prefix."""
    np.float = float  # lvis 0.5.3 on numpy 2; benchmark-only patch
    import mmdet.evaluation.metrics.lvis_metric as mmdet_lvis

    times, results, starts = {}, {}, []
    real_results, real_eval = mmdet_lvis.LVISResults, mmdet_lvis.LVISEval

    def timed_results(*args, **kwargs):
        starts.append(time.perf_counter())
        return real_results(*args, **kwargs)

    class CapturingEval(real_eval):
        def get_results(self):
            out = super().get_results()
            if self.params.iou_type not in results:
                times[self.params.iou_type] = time.perf_counter() - starts[-1]
                results[self.params.iou_type] = {k: float(v) for k, v in out.items()}
            return out

    sizes = {img['id']: img for img in gt['images']}
    pairs = [(dict(img_id=p['img_id'], width=sizes[p['img_id']]['width'],
                   height=sizes[p['img_id']]['height']), p) for p in preds]
    mmdet_lvis.LVISResults, mmdet_lvis.LVISEval = timed_results, CapturingEval
    try:
        start = time.perf_counter()
        ref = mmdet_lvis.LVISMetric(ann_file=gt_path, metric=['bbox', 'segm'],
                                    outfile_prefix=outfile_prefix)
        times['load_gt'] = time.perf_counter() - start
        start, cpu = time.perf_counter(), cpu_seconds()
        with contextlib.redirect_stdout(io.StringIO()):
            ref.compute_metrics(pairs)
        times['bbox+segm'] = time.perf_counter() - start
        times['cpu/bbox+segm'] = cpu_seconds() - cpu
    finally:
        mmdet_lvis.LVISResults, mmdet_lvis.LVISEval = real_results, real_eval
    return times, results


def run_fast(gt_path, preds, processes):
    """FastLVISMetric.compute_metrics per type and on both, for each number of processes."""
    times, results = {}, {}
    for n in processes:
        for name, metric in TYPES.items():
            start = time.perf_counter()
            fast = FastLVISMetric(ann_file=gt_path, metric=metric, processes=n)
            times[f'load_gt/{n}'] = time.perf_counter() - start
            start, cpu = time.perf_counter(), cpu_seconds()
            workers = cpu_seconds([resource.RUSAGE_CHILDREN])
            out = fast.compute_metrics(preds)
            times[f'{name}/{n}'] = time.perf_counter() - start
            times[f'cpu/{name}/{n}'] = cpu_seconds() - cpu
            times[f'cpu_workers/{name}/{n}'] = cpu_seconds([resource.RUSAGE_CHILDREN]) - workers
            results[f'{name}/{n}'] = out
            print(f'fast {name:9s} processes={n}: {times[f"{name}/{n}"]:.1f} s, CPU '
                  f'{times[f"cpu/{name}/{n}"]:.1f} s (workers '
                  f'{times[f"cpu_workers/{name}/{n}"]:.1f} s), load {os.getloadavg()[0]:.1f}',
                  flush=True)
    return times, results


def run_fast_result_files(gt_path, outfile_prefix, processes):
    """evaluate_lvis on the result files LVISMetric wrote (JSON loading included)."""
    gt = load_lvis_gt(gt_path)
    times, results = {}, {}
    for n in processes:
        for iou_type in ('bbox', 'segm'):
            start = time.perf_counter()
            results[f'{iou_type}/{n}'] = evaluate_lvis(gt, f'{outfile_prefix}.{iou_type}.json',
                                                       iou_type, processes=n)
            times[f'{iou_type}/{n}'] = time.perf_counter() - start
    return times, results


def machine():
    load = os.getloadavg()
    return dict(cpus=len(os.sched_getaffinity(0)), load_1_5_15=[round(v, 2) for v in load],
                python=platform.python_version(), processor=platform.processor() or 'unknown')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=5000)
    parser.add_argument('--classes', type=int, default=1203)
    parser.add_argument('--dets', type=int, default=300, help='detections per image')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--processes', default='1,2',
                        help='comma-separated numbers of FastLVISMetric processes to time')
    parser.add_argument('--skip-lvis-api', action='store_true', help='time the fast one only')
    parser.add_argument('--json', help='also write the measurements to this file')
    args = parser.parse_args()
    processes = [int(n) for n in args.processes.split(',')]

    report = dict(args=vars(args), machine_at_start=machine())
    print(f'machine: {report["machine_at_start"]}', flush=True)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    gt, popularity, cat_ids = make_gt(rng, args.images, args.classes)
    dets = make_detections(rng, gt, popularity, cat_ids, args.dets)
    preds = per_image_predictions(gt, dets)
    del dets
    with tempfile.TemporaryDirectory() as tmp:
        gt_path = os.path.join(tmp, 'lvis_val.json')
        with open(gt_path, 'w') as f:
            json.dump(gt, f)
        print(f'generated {args.images} images, {args.classes} classes, '
              f'{len(gt["annotations"])} GT, {sum(len(p["scores"]) for p in preds)} detections '
              f'per type in {time.perf_counter() - start:.1f} s', flush=True)
        fast_t, fast_r = run_fast(gt_path, preds, processes)
        ref_t = ref_r = files_t = files_r = None
        if not args.skip_lvis_api:
            prefix = os.path.join(tmp, 'results')
            ref_t, ref_r = run_lvis_api(gt_path, gt, preds, prefix)
            print('lvis-api: ' + ', '.join(f'{k} {v:.1f} s' for k, v in ref_t.items()),
                  flush=True)
            files_t, files_r = run_fast_result_files(gt_path, prefix, processes)
    report.update(fast_seconds=fast_t, fast=fast_r, lvis_api_seconds=ref_t, lvis_api=ref_r,
                  fast_result_files_seconds=files_t, fast_result_files=files_r,
                  machine_at_end=machine(), peak_rss_gib=dict(
                      main=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
                      largest_child=resource.getrusage(
                          resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20))
    print_report(report, processes)
    if args.json:
        tmp = args.json + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, args.json)


def print_report(report, processes):
    ref_r, ref_t, fast_r, fast_t = (report['lvis_api'], report['lvis_api_seconds'],
                                    report['fast'], report['fast_seconds'])
    files_r = report['fast_result_files']
    if ref_r:
        diffs = []
        for iou_type in ('bbox', 'segm'):
            print(f'\n{iou_type:5s} {"key":8s} {"lvis-api":>10s} {"files":>10s} {"metric":>10s}'
                  f' {"|diff|":>9s}')
            for key in AP_KEYS + AR_KEYS:
                ref = ref_r[iou_type][key]
                mine = [files_r[f'{iou_type}/{n}'][key] for n in processes]
                if key in AP_KEYS:
                    mine += [fast_r[f'{name}/{n}'][f'{iou_type}_{key}']
                             for name, metric in TYPES.items() if iou_type in metric
                             for n in processes]
                diff = max(abs(ref - v) for v in mine)
                diffs.append(diff)
                metric_value = fast_r[f'{iou_type}/{processes[0]}'].get(f'{iou_type}_{key}',
                                                                         float('nan'))
                print(f'{"":5s} {key:8s} {ref:10.6f} {mine[0]:10.6f} {metric_value:10.6f} '
                      f'{diff:9.2e}')
        report['max_abs_diff'] = max(diffs)
        print('(files: evaluate_lvis on the result files LVISMetric read; metric: '
              'FastLVISMetric; |diff|: largest over both, every process count and run)')
    print(f'\nend to end, compute_metrics wall seconds ({", ".join(map(str, processes))} '
          'processes)')
    header = f'{"":10s} {"lvis-api":>9s}' + ''.join(f' {f"fast/{n}":>8s} {"ratio":>6s}'
                                                   for n in processes)
    print(header)
    for name in TYPES:
        ref = ref_t[name] if ref_t else float('nan')
        row = f'{name:10s} {ref:9.1f}'
        for n in processes:
            row += f' {fast_t[f"{name}/{n}"]:8.1f} {ref / fast_t[f"{name}/{n}"]:5.1f}x'
        print(row)
    if ref_t:
        row = f'{"GT load":10s} {ref_t["load_gt"]:9.1f}'
        for n in processes:
            fast = fast_t[f'load_gt/{n}']
            row += f' {fast:8.1f} {ref_t["load_gt"] / fast:5.1f}x'
        print(row)
        print('(lvis-api bbox, segm: its LVISResults + LVISEval of that type, without the json '
              'dump that bbox+segm includes)')
        row = f'{"CPU s":10s} {ref_t["cpu/bbox+segm"]:9.1f}'
        for n in processes:
            cpu = fast_t[f'cpu/bbox+segm/{n}']
            row += f' {cpu:8.1f} {ref_t["cpu/bbox+segm"] / cpu:5.1f}x'
        print(row + '   (bbox+segm, this process and its workers)')
        print(f'{"of which":10s} {"":9s}' + ''.join(
            f' {fast_t[f"cpu_workers/bbox+segm/{n}"]:8.1f} {"":6s}' for n in processes)
            + '   in worker processes')
        print('result files (evaluate_lvis, JSON loading included): ' + ', '.join(
            f'{k} {v:.1f} s' for k, v in report['fast_result_files_seconds'].items()))
    if ref_r:
        print(f'max |AP/AR difference| over bbox and segm: {report["max_abs_diff"]:.2e}')
    print(f'peak RSS GiB: {report["peak_rss_gib"]}')
    print(f'machine at start: {report["machine_at_start"]}, at end: {report["machine_at_end"]}')


if __name__ == '__main__':
    main()

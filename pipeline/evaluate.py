"""Stage `evaluate`: LVIS box and mask AP of one run and seed, with provenance.

Runs the resolved config's test evaluator (FastLVISMetric: faster-coco-eval in LVIS mode, top
300 detections per image) on the run's final checkpoint and writes
work/<scale>/results/metrics/<run>/seed<k>.json, AP in percent, per class too (classwise is set
here at run time, so the resolved configs and their hashes stay as they are).
"""
from __future__ import annotations

import json
import logging
import re
import time

from . import provenance, records, runconfig
from . import matrix as mx
from .train import loss_curve, read_identity


def trained(matrix: dict, scale: str, run: str, seed: int):
    """(resolved config, its hash, checkpoint, identity) of a finished run whose weights were
    trained under exactly the current config, training code and data; anything else stops."""
    cfg, sha = runconfig.load(scale, run, seed)
    work = mx.work_dir(scale, run, seed)
    ckpt = runconfig.require_own_checkpoint(mx.checkpoint(scale, run, seed),
                                            f'checkpoint of run {run!r} seed {seed}')
    identity = provenance.identity(matrix, scale, run, sha)
    made_under = read_identity(work) or {}
    stale = [k.removesuffix('_sha256') for k in identity if made_under.get(k) != identity[k]]
    if stale:
        raise SystemExit(f'{mx.rel(ckpt)}: trained under another {"/".join(stale)} than run '
                         f'{run!r} seed {seed} has now; retrain it (`python -m pipeline train '
                         f'--scale {scale} --run {run} --seed {seed}`)')
    return cfg, sha, ckpt, identity


PER_CLASS_ITEM = re.compile(r'\s+lvis/(?:bbox|segm)_AP_cls\d+: \S+')


def fold_per_class(record: logging.LogRecord) -> bool:
    """mmengine logs every metric of the test epoch on one line: at LVIS's 1,203 classes the
    per-class AP made it 50 kB. They are in the metrics record; the line keeps a count."""
    message = record.getMessage()
    folded, count = PER_CLASS_ITEM.subn('', message)
    if count:
        record.msg, record.args = f'{folded}  (and {count} per-class APs: in the metrics record)', ()
    return True


def evaluate(scale: str, run: str, seed: int, out: str | None = None) -> dict:
    """out: a file prefix; the detections also go to {out}.bbox.json and {out}.segm.json."""
    from mmengine.runner import Runner

    from loce.evaluation import AP_KEYS

    matrix = mx.load()
    spec = mx.run_spec(matrix, run, scale)
    cfg, sha, ckpt, identity = trained(matrix, scale, run, seed)
    cfg.load_from, cfg.resume = str(ckpt), False
    cfg.work_dir = str(mx.work_dir(scale, run, seed) / 'eval')
    cfg.test_evaluator.classwise = True
    if out:
        cfg.test_evaluator.outfile_prefix = out
    start = time.perf_counter()
    runner = Runner.from_cfg(cfg)
    runner.logger.addFilter(fold_per_class)
    raw = runner.test()
    wall = time.perf_counter() - start
    train_summary = mx.work_dir(scale, run, seed) / 'train.json'
    train_wall = json.loads(train_summary.read_text())['train_wall_s'] if train_summary.is_file() else None
    train = mx.annotation_file(matrix, scale, spec['dataset'], 'train')
    categories = sorted(json.loads(train.read_text())['categories'], key=lambda c: c['id'])
    result = records.metrics(
        run=run, seed=seed, scale=scale, dataset=spec['dataset'], raw=raw, keys=AP_KEYS,
        provenance=provenance.record(
            config=mx.config_path(matrix, scale, spec['config']), config_sha256=sha, seed=seed,
            resolved_config=mx.rel(mx.resolved_config(scale, run, seed)), identity=identity,
            eval_code_sha256=provenance.code_sha256('evaluate'), train_wall_s=train_wall,
            eval_wall_s=round(wall, 2), checkpoint=mx.rel(ckpt)),
        classes=[dict(c, train_instances=c['instance_count']) for c in categories])
    trace = indicator_trace(scale, run, seed, categories)
    if trace:
        result['diagnostics'] = dict(indicator_trace=trace)
    curve = loss_curve(mx.work_dir(scale, run, seed))
    if curve:
        result.setdefault('diagnostics', {})['loss_curve'] = curve
    records.write(mx.metrics_path(scale, run, seed), result)
    if out:
        print(f'[evaluate] {run} seed {seed}: detections saved to {out}.bbox.json and '
              f'{out}.segm.json')
    return result


def indicator_trace(scale: str, run: str, seed: int, categories: list[dict]) -> dict | None:
    """The mean score through fine-tuning (IndicatorTraceHook), averaged within each frequency
    group of the training `categories` (by id): {iterations, mean_score: {r, c, f}}; None for a
    run without a LOCE head."""
    path = mx.work_dir(scale, run, seed) / 'indicator_trace.json'
    if not path.is_file():
        return None
    trace = json.loads(path.read_text())
    groups = [c['frequency'] for c in categories]
    means = {}
    for group in 'rcf':
        members = [i for i, g in enumerate(groups) if g == group]
        means[group] = [round(sum(s[i] for i in members) / len(members), 6) if members else None
                        for s in trace['scores']]
    return dict(iterations=trace['iterations'], mean_score=means)

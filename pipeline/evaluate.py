"""Stage `evaluate`: LVIS box and mask AP of one run and seed, with provenance.

Runs the config's test evaluator (FastLVISMetric: faster-coco-eval in LVIS mode, top 300
detections per image) and writes results/<profile>/metrics/<run>/seed<k>.json, AP in percent.
"""
from __future__ import annotations

import json
import math
import time

from . import atomic, provenance, runconfig
from . import matrix as mx

KEYS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf')


def evaluate(profile: str, run: str, seed: int) -> dict:
    from mmengine.runner import Runner

    matrix = mx.load()
    spec = mx.run_spec(matrix, run)
    cfg, path = runconfig.build(matrix, profile, run, seed)
    ckpt = runconfig.require_own_checkpoint(mx.checkpoint(profile, run, seed),
                                            f'checkpoint of run {run!r} seed {seed}')
    cfg.load_from, cfg.resume = str(ckpt), False
    cfg.work_dir = str(mx.work_dir(profile, run, seed) / 'eval')
    start = time.perf_counter()
    with runconfig.own_checkpoints():
        raw = Runner.from_cfg(cfg).test()
    wall = time.perf_counter() - start
    train_summary = mx.work_dir(profile, run, seed) / 'train.json'
    train_wall = json.loads(train_summary.read_text())['train_wall_s'] if train_summary.is_file() else None
    result = dict(run=run, seed=seed, profile=profile, dataset=spec['dataset'],
                  **{iou: percent_metrics(raw, iou) for iou in ('bbox', 'segm')},
                  provenance=provenance.record(
                      config_text=runconfig.dump_text(cfg), config=path, seed=seed,
                      train_wall_s=train_wall, eval_wall_s=round(wall, 2),
                      checkpoint=str(ckpt.relative_to(mx.ROOT))))
    atomic.write_json(mx.metrics_path(profile, run, seed), result)
    return result


def percent_metrics(raw: dict, iou_type: str) -> dict:
    """'lvis/bbox_APr' -> {'APr': 12.3}; undefined values (-1, NaN: no GT in a group) -> None."""
    out = {}
    for key in KEYS:
        name = f'lvis/{iou_type}_{key}'
        if name not in raw:
            raise SystemExit(f'evaluator returned no {name!r} (got {sorted(raw)}); the config\'s '
                             "test_evaluator must be FastLVISMetric with metric=['bbox', 'segm']")
        value = float(raw[name])
        out[key] = None if value < 0 or math.isnan(value) else round(100 * value, 2)
    return out

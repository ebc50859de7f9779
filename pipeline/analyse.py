"""Stage `analyse`: per-class mean classification score and accuracy on the val set (Figure 4).

Each val GT box is classified by the trained box head; classes are listed in order of their
training instance count, the paper's x-axis.
"""
from __future__ import annotations

import json
import math

from . import atomic, runconfig
from . import matrix as mx


def _finite(value):
    """NaN (no val GT, or a diverged model) is written as null: JSON has no NaN."""
    value = float(value)
    return value if math.isfinite(value) else None


def analyse(profile: str, run: str, seed: int) -> dict:
    from mmengine.runner import Runner

    from loce.evaluation.classification_stats import gt_classification_stats

    matrix = mx.load()
    spec = mx.run_spec(matrix, run)
    cfg, _ = runconfig.build(matrix, profile, run, seed)
    ckpt = runconfig.require_own_checkpoint(mx.checkpoint(profile, run, seed),
                                            f'checkpoint of run {run!r} seed {seed}')
    cfg.work_dir = str(mx.work_dir(profile, run, seed) / 'analyse')
    runner = Runner.from_cfg(cfg)
    with runconfig.own_checkpoints():
        runner.load_checkpoint(str(ckpt), map_location='cpu')
    loader = Runner.build_dataloader(cfg.test_dataloader)
    stats = gt_classification_stats(runner.model, loader)

    train_json = mx.data_root(matrix, profile, spec['dataset']) / 'annotations' / f'{spec["dataset"]}_train.json'
    categories = {c['id']: c for c in json.loads(train_json.read_text())['categories']}
    classes = []
    for cat_id, score, acc, n_val in zip(stats['cat_ids'], stats['mean_score'],
                                          stats['accuracy'], stats['val_instances']):
        cat = categories[int(cat_id)]
        classes.append(dict(id=int(cat_id), name=cat['name'], frequency=cat['frequency'],
                            train_instances=int(cat['instance_count']), val_instances=int(n_val),
                            mean_score=_finite(score), accuracy=_finite(acc)))
    classes.sort(key=lambda c: (-c['train_instances'], c['id']))
    result = dict(run=run, seed=seed, profile=profile, classes=classes)
    atomic.write_json(mx.analysis_path(profile, run, seed), result)
    return result

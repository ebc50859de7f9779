"""Stage `analyse`: per-class mean classification score and accuracy on the val set (Figure 4).

Each val GT box is classified by the trained box head; classes are listed in order of their
training instance count, the paper's x-axis.
"""
from __future__ import annotations

import json

from . import provenance, records
from . import matrix as mx
from .evaluate import trained


def analyse(scale: str, run: str, seed: int) -> dict:
    from mmengine.runner import Runner

    from loce.evaluation.classification_stats import gt_classification_stats

    matrix = mx.load()
    spec = mx.run_spec(matrix, run, scale)
    cfg, sha, ckpt, identity = trained(matrix, scale, run, seed)
    cfg.work_dir = str(mx.work_dir(scale, run, seed) / 'analyse')
    runner = Runner.from_cfg(cfg)
    runner.load_checkpoint(str(ckpt), map_location='cpu')
    loader = Runner.build_dataloader(cfg.test_dataloader)
    stats = gt_classification_stats(runner.model, loader)

    train_json = mx.data_root(matrix, scale, spec['dataset']) / 'annotations' / f'{spec["dataset"]}_train.json'
    categories = {c['id']: c for c in json.loads(train_json.read_text())['categories']}
    classes = []
    for cat_id, score, acc, acc_fg, n_val in zip(stats['cat_ids'], stats['mean_score'],
                                                  stats['accuracy'], stats['accuracy_fg'],
                                                  stats['val_instances']):
        cat = categories[int(cat_id)]
        classes.append(dict(id=int(cat_id), name=cat['name'], frequency=cat['frequency'],
                            train_instances=int(cat['instance_count']), val_instances=int(n_val),
                            mean_score=score, accuracy=acc, accuracy_fg=acc_fg))
    result = records.analysis(
        run=run, seed=seed, scale=scale, classes=classes,
        provenance=dict(config_sha256=sha, identity=identity,
                        analyse_code_sha256=provenance.code_sha256('analyse')))
    records.write(mx.analysis_path(scale, run, seed), result)
    return result

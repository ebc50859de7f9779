"""Stage `train`: one run and seed through the mmengine Runner.

Resumable: a killed job rerun with the same arguments continues from its last checkpoint.
Fine-tune runs start from their pretrain run's final checkpoint (same seed), handed in as
load_from: configs never name a checkpoint.
"""
from __future__ import annotations

import os
import time
from contextlib import nullcontext

from . import atomic, distributed, provenance, runconfig
from . import matrix as mx


def train(profile: str, run: str, seed: int, *, launcher: str = 'none',
          cfg_options: dict | None = None) -> dict:
    """cfg_options: extra overrides on top of the matrix's (recorded in the provenance)."""
    from mmengine.runner import Runner, find_latest_checkpoint

    from . import rng_state  # noqa: F401  (registers RNGStateHook)

    matrix = mx.load()
    spec = mx.run_spec(matrix, run)
    cfg, path = runconfig.build(matrix, profile, run, seed)
    cfg.merge_from_dict(cfg_options or {})
    cfg.launcher = launcher
    distributed.prepare(cfg, launcher)
    cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='RNGStateHook')]
    work = mx.work_dir(profile, run, seed)
    final = mx.checkpoint(profile, run, seed)
    if final.is_file():
        print(f'[train] {run} seed {seed}: {final} exists; nothing to do')
        return _read_summary(work)

    latest = find_latest_checkpoint(str(work)) if work.is_dir() else None
    if latest:
        cfg.resume, cfg.load_from = True, latest
        print(f'[train] {run} seed {seed}: resuming from {latest}')
    elif spec['stage'] == 'finetune':
        parent = mx.checkpoint(profile, spec['pretrain'], seed)
        cfg.load_from = str(runconfig.require_own_checkpoint(parent, f'pretrain run {spec["pretrain"]!r}'))
    start = time.perf_counter()
    with runconfig.own_checkpoints() if cfg.get('load_from') else nullcontext():
        runner = Runner.from_cfg(cfg)
        runner.train()
    wall = time.perf_counter() - start
    if runner.rank != 0:
        return {}
    last = find_latest_checkpoint(str(work))
    if not last:
        raise SystemExit(f'{work}: training ended without a checkpoint; check the config\'s '
                         'default_hooks.checkpoint')
    summary = dict(run=run, seed=seed, profile=profile, checkpoint=os.path.basename(last),
                   train_wall_s=round(wall, 2), resumed_from=latest,
                   provenance=provenance.record(config_text=runconfig.dump_text(cfg), config=path,
                                                seed=seed))
    atomic.write_json(work / 'train.json', summary)
    tmp = final.with_suffix('.pth.tmp')
    tmp.unlink(missing_ok=True)
    os.link(last, tmp)
    os.replace(tmp, final)
    return summary


def _read_summary(work) -> dict:
    import json
    path = work / 'train.json'
    return json.loads(path.read_text()) if path.is_file() else {}


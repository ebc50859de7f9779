"""Stage `train`: one run and seed through the mmengine Runner.

The run's resolved config is (re)written first (pipeline/runconfig.py) and its identity (config,
training code, data: pipeline/provenance.py) is kept in the work dir. A work dir made under
another identity is never resumed or reused: it is moved aside, intact, and training starts
fresh. Under the same identity a killed job rerun with the same arguments resumes from its last
checkpoint, and a finished one is left alone. Fine-tune runs start from their pretrain run's
final checkpoint (same seed), named in the resolved config's load_from.
"""
from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

from . import atomic, distributed, provenance, runconfig
from . import matrix as mx

IDENTITY = 'identity.json'
CHECKPOINT_NAME = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


def check_annotations(paths, scale: str) -> None:
    """Every annotation file parses as JSON, before mmdet would fail on it deep inside."""
    for path in paths:
        try:
            json.loads(Path(path).read_bytes())
        except (OSError, ValueError) as err:
            raise SystemExit(f'{mx.rel(path)}: not a readable annotation file ({err}); rerun the '
                             f'data stage (`python -m pipeline data --scale {scale}`)') from None


def checkpoints(work: Path) -> list[Path]:
    """The epoch/iteration checkpoints in `work`, oldest first (by number: iter_94 before
    iter_188, which names alone would not sort)."""
    found = sorted((int(m.group(2)), p) for p in work.glob('*.pth')
                   if (m := CHECKPOINT_NAME.match(p.name)))
    return [p for _, p in found]


def good_checkpoint(work: Path) -> Path | None:
    """The newest epoch/iteration checkpoint in `work` that loads; unreadable ones (a job killed
    while writing) are renamed to *.corrupt and the previous one is taken, saying so."""
    import torch

    import loce  # noqa: F401  (lets torch load mmengine's checkpoints weights-only)

    for path in reversed(checkpoints(work)):
        try:
            torch.load(path, map_location='cpu', weights_only=True)
            return path
        except Exception as err:  # noqa: BLE001  (any unpickling failure means unusable)
            bad = path.with_name(path.name + '.corrupt')
            os.replace(path, bad)
            print(f'[train] {mx.rel(path)} cannot be loaded ({type(err).__name__}: '
                  f'{str(err)[:120]}); set aside as {bad.name}, falling back to the previous '
                  'checkpoint')
    return None


def read_identity(work: Path) -> dict | None:
    path = work / IDENTITY
    return json.loads(path.read_text()) if path.is_file() else None


def set_aside(work: Path, made_under: dict | None, now: dict) -> Path | None:
    """Move a work dir made under another identity (with checkpoints or an identity of its own)
    out of the way, kept intact; its new path."""
    trained = work.is_dir() and ((work / IDENTITY).is_file() or any(work.glob('*.pth')))
    if not trained or made_under == now:
        return None
    stamp = datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    old = (made_under or {}).get('config_sha256', 'unknown')[:12]
    dest = work.with_name(f'{work.name}.stale-{stamp}-{old}')
    os.replace(work, dest)
    changed = [k.removesuffix('_sha256') for k in now if (made_under or {}).get(k) != now[k]]
    print(f'[train] {work.parent.name} {work.name}: work dir was made under another '
          f'{"/".join(changed) or "identity"} (config {old}, now {now["config_sha256"][:12]}); '
          f'moved it to {mx.rel(dest)} and training afresh')
    return dest


def check_parent(matrix: dict, scale: str, spec: dict, seed: int, cfg) -> None:
    """The pretrain run's weights must come from the config this run's config names."""
    seed = mx.pretrain_seed(matrix, scale, seed)
    parent_work = mx.work_dir(scale, spec['pretrain'], seed)
    made_under = read_identity(parent_work) or {}
    if made_under.get('config_sha256') != cfg.pretrain_config_sha256:
        raise SystemExit(
            f'{mx.rel(parent_work)}: pretrain run {spec["pretrain"]!r} seed {seed} was trained '
            f'under config {str(made_under.get("config_sha256"))[:12]}, but this run starts from '
            f'config {cfg.pretrain_config_sha256[:12]}; retrain it first (`python -m pipeline '
            f'train --scale {scale} --run {spec["pretrain"]} --seed {seed}`)')


def train(scale: str, run: str, seed: int, *, launcher: str = 'none',
          cfg_options: dict | None = None, verbose: bool = False,
          tensorboard: bool = False) -> dict:
    """cfg_options: extra overrides on top of the matrix's (part of the resolved config).
    verbose: mmengine's whole log on the console too, not only in its log file. tensorboard:
    also log the scalars for TensorBoard (a run-time addition, like the hooks below: it is not
    part of the resolved config or its hash)."""
    if tensorboard:
        try:  # what mmengine's TensorboardVisBackend imports, only once training has started
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError as err:
            raise SystemExit(f'--tensorboard needs the tensorboard package ({err}); '
                             'pip install tensorboard') from None
    from mmengine.runner import Runner

    from . import train_hooks  # also registers the hooks added below

    matrix = mx.load()
    spec = mx.run_spec(matrix, run, scale)
    config_file, sha = runconfig.resolve_and_write(matrix, scale, run, seed, cfg_options)
    cfg, _ = runconfig.load(scale, run, seed)
    check_annotations(mx.annotation_files(matrix, scale, spec['dataset']), scale)
    identity = provenance.identity(matrix, scale, run, sha)
    work, final = mx.work_dir(scale, run, seed), mx.checkpoint(scale, run, seed)
    rank = int(os.environ.get('RANK', 0))
    if rank == 0:
        set_aside(work, read_identity(work), identity)
    distributed.barrier_if_launched(launcher)
    if final.is_file():
        print(f'[train] {run} seed {seed}: {mx.rel(final)} exists for this config; nothing to do')
        return _read_summary(work)
    if spec['pretrain']:
        check_parent(matrix, scale, spec, seed, cfg)
        runconfig.require_own_checkpoint(mx.ROOT / cfg.load_from, f'pretrain run {spec["pretrain"]!r}')
    if rank == 0:
        atomic.write_json(work / IDENTITY, identity)

    cfg.launcher = launcher
    # The evaluate stage evaluates the final weights; validating inside training too would
    # only repeat it (an hour per run on LVIS).
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    distributed.prepare(cfg, launcher)
    cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='RNGStateHook'),
                        dict(type='DataCheckHook', scale=scale),
                        dict(type='FiniteLossHook', run=run, seed=seed),
                        dict(type='StopOnSigtermHook')]
    if cfg.model.roi_head.get('type') == 'LOCERoIHead':
        cfg.custom_hooks.append(dict(type='IndicatorTraceHook'))
    if not verbose:
        cfg.custom_hooks.append(dict(type='ProgressHook', name=f'{run} seed {seed}'))
    # mmengine keeps one visualizer per name in a process: under the configs' fixed name, a
    # second seed trained in this process would log its losses into the first seed's dir.
    cfg.visualizer.pop('name', None)
    if tensorboard:
        cfg.visualizer.vis_backends = [*cfg.visualizer.vis_backends,
                                       dict(type='TensorboardVisBackend')]
    latest = good_checkpoint(work) if work.is_dir() else None
    if latest:
        cfg.resume, cfg.load_from = True, str(latest)
        print(f'[train] {run} seed {seed}: resuming from {mx.rel(latest)}')
    start = time.perf_counter()
    runner = (Runner if verbose else train_hooks.QuietRunner).from_cfg(cfg)
    runner.logger.addFilter(train_hooks.not_an_mmengine_notice)
    if runner.rank == 0:
        print(f"[train] {run} seed {seed}: training; mmengine's log: "
              f'{mx.rel(runner.logger.log_file)}')
    runner.train()
    wall = time.perf_counter() - start
    if runner.rank != 0:
        return {}
    last = good_checkpoint(work)
    if not last:
        raise SystemExit(f'{work}: training ended without a checkpoint; check the config\'s '
                         'default_hooks.checkpoint')
    summary = dict(run=run, seed=seed, scale=scale, checkpoint=last.name,
                   train_wall_s=round(wall, 2), resumed_from=latest and mx.rel(latest),
                   identity=identity,
                   provenance=provenance.record(config=mx.config_path(matrix, scale, spec['config']),
                                                config_sha256=sha, seed=seed,
                                                resolved_config=mx.rel(config_file)))
    atomic.write_json(work / 'train.json', summary)
    tmp = final.with_suffix('.pth.tmp')
    tmp.unlink(missing_ok=True)
    os.link(last, tmp)
    os.replace(tmp, final)
    print(f'[train] {run} seed {seed}: done; final checkpoint {mx.rel(final)}, log '
          f'{mx.rel(runner.logger.log_file)}')
    return summary


def _read_summary(work) -> dict:
    path = work / 'train.json'
    return json.loads(path.read_text()) if path.is_file() else {}


def loss_curve(work: Path, points: int = 200) -> dict | None:
    """The training losses mmengine logged in the run's work dir (LocalVisBackend,
    <timestamp>/vis_data/scalars.json), for the loss-curve figure: {iterations, loss, loss_cls,
    ...}, at most `points` evenly spaced iterations (the last kept); None if none were logged.

    A resumed run has one file per start; an iteration logged twice (after the checkpoint it
    resumed from, before the kill) is taken from the later start, which the weights continue.
    A line cut short by a kill is skipped."""
    logged = {}
    for path in sorted(work.glob('*/vis_data/scalars.json')):  # timestamp names: start order
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if 'loss' in row:
                logged[row['step']] = {k: round(v, 6) for k, v in row.items()
                                       if k.startswith('loss')}
    if not logged:
        return None
    iterations = sorted(logged)
    if len(iterations) > points:
        step = (len(iterations) - 1) / (points - 1)
        iterations = [iterations[round(i * step)] for i in range(points)]
    terms = dict.fromkeys(k for i in iterations for k in logged[i])
    return dict(iterations=iterations, **{k: [logged[i].get(k) for i in iterations]
                                          for k in terms})

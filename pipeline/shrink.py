"""A scale's shrink: the one file (configs/<scale>/shrink.py, named by `shrink:` of the scale in
pipeline/experiments.yaml) that turns any full config into its run at that scale.

It merges the scale's model, memory, class count, pipelines and loaders into the full config and
scales its schedule: the length comes from the full schedule's length (`lengths`), the steps keep
their fractions, the warm-up is the scale's for the run's kind (stage 1 or fine-tune), and
everything the full config does not size (losses, samplers, hooks, wrappers) stays as it is. So
a new config needs no twin: it runs at every scale as soon as the matrix names it.
"""
from __future__ import annotations

import functools
from pathlib import Path

ITER_LOOP = 'IterBasedTrainLoop'
NEVER = 10 ** 6  # val_begin of a loop that must not validate (the pipeline evaluates apart)


@functools.lru_cache(maxsize=None)
def _load(path: Path, mtime_ns: int) -> dict:
    from mmengine.config import Config
    return Config.fromfile(str(path)).to_dict()


def load(path: Path) -> dict:
    """The shrink file as a plain dict, parsed once per file version."""
    if not path.is_file():
        raise SystemExit(f'{path}: shrink file of a scale does not exist; fix `shrink:` of the '
                         'scale in pipeline/experiments.yaml')
    return _load(path, path.stat().st_mtime_ns)


def _half_up(x: float) -> int:
    return int(x + 0.5)


def apply(cfg, shrink: dict, where: str) -> None:
    """Shrink `cfg` (a full config, its data already relocated) in place; `where` names it in
    errors."""
    # A decoupled stage-2 run freezes its representation; it takes the fine-tune warm-up.
    finetune = any(h['type'] == 'FreezeRepresentationHook' for h in cfg.get('custom_hooks', []))
    _model(cfg, shrink)
    subset, iters, epochs = _length(cfg, shrink, where)
    if epochs is not None and cfg.train_dataloader.dataset.type == 'ClassBalancedDataset':
        # An RFS epoch's length follows the repeats in the data; the scale runs as many
        # iterations as a plain epoch of its set, so the steps fall where it says.
        iters, epochs = epochs * _epoch_iters(shrink, subset, where), None
    _datasets(cfg, shrink, subset)
    if epochs is None:
        _iteration_schedule(cfg, shrink, iters, finetune)
    else:
        _epoch_schedule(cfg, shrink, subset, epochs, finetune, where)
    cfg.merge_from_dict(dict(auto_scale_lr=shrink['auto_scale_lr']))


def _model(cfg, shrink: dict) -> None:
    full_depth = cfg.model.backbone.depth
    cfg.merge_from_dict(dict(model=shrink['model']))
    cfg.model.backbone.depth = shrink['depths'][full_depth]
    roi_head = cfg.model.roi_head
    if roi_head.get('mfs') is not None:
        cfg.merge_from_dict({'model.roi_head.mfs': shrink['mfs']})
    loss_cls = roi_head.bbox_head.get('loss_cls', {})
    if 'num_classes' in loss_cls:  # losses that size class buffers take the scale's class count
        loss_cls.num_classes = len(shrink['classes'])


def _length(cfg, shrink: dict, where: str) -> tuple[str, int | None, int | None]:
    """(train subset, iterations, epochs) of the run at this scale: one of the last two is
    None."""
    loop = cfg.train_cfg
    key = 'iters' if loop.get('type') == ITER_LOOP else loop.max_epochs
    if key not in shrink['lengths']:
        raise SystemExit(f'{where}: the shrink has no length for a schedule of '
                         f'{key if key == "iters" else f"{key} epochs"}; add it to `lengths`')
    length = shrink['lengths'][key]
    return length.get('subset', 'train'), length.get('iters'), length.get('epochs')


def _datasets(cfg, shrink: dict, subset: str) -> None:
    metainfo = dict(classes=shrink['classes'])
    loader = cfg.train_dataloader
    _merge(loader, shrink['loader'])
    dataset = loader.dataset
    if dataset.type == 'ClassBalancedDataset':
        dataset.oversample_thr = shrink['rfs_thr']
        dataset = dataset.dataset
    _merge(dataset, dict(metainfo=metainfo, pipeline=shrink['train_pipeline']))
    if subset != 'train':
        path = Path(dataset.ann_file)
        dataset.ann_file = str(path.with_name(f'{path.stem}_{subset}{path.suffix}'))
    for name in ('val_dataloader', 'test_dataloader'):
        _merge(cfg[name], shrink['loader'])
        _merge(cfg[name].dataset, dict(metainfo=metainfo, pipeline=shrink['test_pipeline']))


def _merge(node, values: dict) -> None:
    """Merge `values` into a config node as mmengine's inheritance does (dicts recursively,
    anything else replaced)."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(node.get(key), dict):
            _merge(node[key], value)
        else:
            node[key] = value


def _scheduler(cfg, kind: str):
    found = [s for s in cfg.param_scheduler if s['type'] == kind]
    if len(found) != 1:
        raise SystemExit(f'{cfg.filename}: the shrink scales a LinearLR warm-up and a MultiStepLR '
                         f'schedule; this config has {[s["type"] for s in cfg.param_scheduler]}')
    return found[0]


def _schedule(cfg, warmup: int, iters: int, milestones: list[int]) -> list[dict]:
    return [
        dict(type='LinearLR', start_factor=_scheduler(cfg, 'LinearLR')['start_factor'],
             by_epoch=False, begin=0, end=warmup),
        dict(type='MultiStepLR', by_epoch=False, begin=0, end=iters, milestones=milestones,
             gamma=_scheduler(cfg, 'MultiStepLR')['gamma']),
    ]


def _epoch_iters(shrink: dict, subset: str, where: str) -> int:
    if subset not in shrink.get('epoch_iters', {}):
        raise SystemExit(f'{where}: the shrink has no `epoch_iters` for {subset!r}')
    return shrink['epoch_iters'][subset]


def _epoch_schedule(cfg, shrink, subset, epochs, finetune, where) -> None:
    """`epochs` epochs of the (sub)set; the steps, counted in iterations, at the full schedule's
    fractions of them."""
    iters, full_epochs = epochs * _epoch_iters(shrink, subset, where), cfg.train_cfg.max_epochs
    milestones = _scheduler(cfg, 'MultiStepLR')['milestones']
    steps = [_half_up(m / full_epochs * iters) for m in milestones]
    warmup = shrink['warmup']['finetune' if finetune else 'pretrain']
    cfg.param_scheduler = _schedule(cfg, warmup, iters, steps)
    _merge(cfg.train_cfg, dict(max_epochs=epochs, val_begin=epochs + 1))
    _merge(cfg.default_hooks, shrink['hooks'])
    cfg.default_hooks.checkpoint.interval = 1


def _iteration_schedule(cfg, shrink, iters, finetune) -> None:
    """`iters` iterations; steps at the full schedule's fractions. A full schedule counted in
    iterations scales its warm-up too; one counted in epochs takes the scale's warm-up."""
    step = _scheduler(cfg, 'MultiStepLR')
    if cfg.train_cfg.get('type') == ITER_LOOP:
        full = cfg.train_cfg.max_iters
        warmup = _half_up(_scheduler(cfg, 'LinearLR')['end'] / full * iters)
    else:
        full = cfg.train_cfg.max_epochs
        warmup = shrink['warmup']['finetune' if finetune else 'pretrain']
    steps = [_half_up(m / full * iters) for m in step['milestones']]
    cfg.param_scheduler = _schedule(cfg, warmup, iters, steps)
    cfg.train_cfg = dict(type=ITER_LOOP, max_iters=iters, val_begin=NEVER, val_interval=NEVER)
    _merge(cfg.default_hooks, shrink['hooks'])
    _merge(cfg.default_hooks.checkpoint, dict(interval=_half_up(iters / 2), by_epoch=False))
    _merge(cfg.log_processor, dict(by_epoch=False))

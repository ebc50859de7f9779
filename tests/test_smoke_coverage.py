"""The smoke reaches every code path a user of the full scale meets: every run of the matrix,
and in each the same components as its full run (model parts, loss and indicator, MFS, samplers,
dataset wrappers, hooks, evaluator), only smaller. A shrink that dropped one (a hook, a wrapper,
the memory) would make the smoke stop testing it; this fails first."""
from functools import lru_cache

import pytest

from pipeline import matrix as mx
from pipeline import runconfig

MATRIX = mx.load()
RUNS = mx.runs_at(MATRIX, 'smoke')

# Paths whose type may differ at the smoke scale, each for a stated reason.
SHRUNK = {
    'model.backbone.init_cfg': 'no ImageNet weights: the smoke trains from scratch',
    'train_cfg': 'long epoch-based schedules run as iteration loops at the smoke scale',
}


def _types(node, path=''):
    """{dotted path of each `type` key: its value}, list items by index."""
    found = {}
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, (list, tuple)) else ()
    for key, value in items:
        where = f'{path}.{key}' if path else str(key)
        if key == 'type' and isinstance(value, str):
            found[path] = value
        else:
            found.update(_types(value, where))
    return found


# What the Runner builds from (a config's other top-level names are its bases' variables).
RUNNER_KEYS = ('model', 'train_dataloader', 'test_dataloader', 'test_evaluator', 'optim_wrapper',
               'param_scheduler', 'custom_hooks', 'default_hooks', 'train_cfg', 'test_cfg')


@lru_cache(maxsize=None)
def _resolved(scale, run):
    return runconfig.resolve(MATRIX, scale, run, 0)


def _components(scale, run):
    cfg = _resolved(scale, run)
    used = {key: cfg.get(key) for key in RUNNER_KEYS}
    return {path: kind for path, kind in _types(used).items()
            if not any(path == p or path.startswith(p + '.') for p in SHRUNK)}


def test_the_smoke_runs_every_run_of_the_full_matrix():
    assert RUNS == mx.runs_at(MATRIX, 'full')


@pytest.mark.parametrize('run', RUNS)
def test_a_smoke_run_has_its_full_runs_components(run):
    smoke, full = _components('smoke', run), _components('full', run)
    assert smoke == full


# LOCE's fine-tunes with the memory (by name: resolving every config at collection is slow).
MFS_RUNS = [run for run in RUNS if run.startswith(('mfs', 'loce'))]


def test_the_smoke_has_mfs_runs():
    assert len(MFS_RUNS) >= 5  # MFS, LOCE and its ablations of Tables 1-4


@pytest.mark.parametrize('run', MFS_RUNS)
def test_mfs_runs_fill_and_sample_their_memory(run):
    """The warm-up fills the memory before the first iteration and the fine-tune samples from
    it: the memory holds at least the features one step samples of a class."""
    cfg = _resolved('smoke', run)
    mfs = cfg.model.roi_head.mfs
    hooks = [h['type'] for h in cfg.custom_hooks]
    assert 'MemoryWarmupHook' in hooks
    assert mfs.memory_size >= mfs.features_per_class


def _length(cfg):
    loop = cfg.train_cfg
    return loop.max_iters if loop.type == 'IterBasedTrainLoop' else None


@pytest.mark.parametrize('run', RUNS)
def test_a_smoke_run_reaches_its_warm_up_steps_and_a_checkpoint(run):
    """Short as the smoke's schedules are, each passes its warm-up, takes every lr step of its
    full schedule inside the run and writes a checkpoint before its end (what a resume reads)."""
    cfg = _resolved('smoke', run)
    warmup, steps = cfg.param_scheduler
    assert 0 < warmup.end < steps.milestones[0]
    assert steps.milestones == sorted(set(steps.milestones)) and steps.milestones[-1] < steps.end
    assert len(steps.milestones) == len(_resolved('full', run).param_scheduler[1].milestones)
    length = _length(cfg)
    if length is None:  # one epoch, checkpointed at its end
        assert cfg.train_cfg.max_epochs == 1 and cfg.default_hooks.checkpoint.interval == 1
    else:
        assert steps.end == length and cfg.default_hooks.checkpoint.interval < length


def test_the_smoke_runs_both_train_loops_as_the_full_scale_does():
    loops = {_resolved('smoke', run).train_cfg.type for run in RUNS}
    assert loops == {'EpochBasedTrainLoop', 'IterBasedTrainLoop'}
